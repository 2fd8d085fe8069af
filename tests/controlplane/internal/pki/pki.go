// Package pki generates the throw-away certificates and keys a loopback test control plane needs: a cluster CA,
// the API server's serving certificate, client certificates for the admin and each component, and the service
// account signing key. Everything is generated at start, so nothing secret is ever checked in or reused.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity is how long generated certificates are valid: long enough for any test run, short enough to be
// obviously throw-away.
const validity = 7 * 24 * time.Hour

// Identity is a client certificate subject: the user name (CN) and the groups (O).
type Identity struct {
	User   string
	Groups []string
}

// Files names the PEM files written by Generate.
type Files struct {
	CACert, CAKey           string
	ServingCert, ServingKey string
	SAPublic, SAPrivate     string
}

// ClientCert is a client certificate and key in PEM form, ready to embed in a kubeconfig.
type ClientCert struct {
	CertPEM, KeyPEM []byte
}

// Authority is the in-memory cluster CA that signs the serving and client certificates.
type Authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewAuthority creates a fresh self-signed CA.
func NewAuthority() (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "vp-test-controlplane-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	return &Authority{cert: cert, key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Serving issues a TLS serving certificate for the given DNS names and IP addresses.
func (a *Authority) Serving(cn string, dnsNames []string, ips []net.IP) (ClientCert, error) {
	return a.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// Client issues a client certificate for an identity (user and groups), as the API server's x509 authenticator
// reads it.
func (a *Authority) Client(id Identity) (ClientCert, error) {
	return a.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: id.User, Organization: id.Groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (a *Authority) issue(tmpl *x509.Certificate) (ClientCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ClientCert{}, fmt.Errorf("generate key for %q: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return ClientCert{}, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return ClientCert{}, err
	}
	return ClientCert{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// ServiceAccountKey returns a fresh signing key pair for service account tokens as PEM (private, public).
func ServiceAccountKey() (private, public []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate service account key: %w", err)
	}
	private, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode service account public key: %w", err)
	}
	return private, pemBlock("PUBLIC KEY", pubDER), nil
}

// Generate writes the CA, the API server serving pair and the service account key pair into dir and returns the
// authority (to issue client certificates) and the file names.
func Generate(dir string, dnsNames []string, ips []net.IP) (*Authority, Files, error) {
	ca, err := NewAuthority()
	if err != nil {
		return nil, Files{}, err
	}
	serving, err := ca.Serving("kube-apiserver", dnsNames, ips)
	if err != nil {
		return nil, Files{}, err
	}
	saPriv, saPub, err := ServiceAccountKey()
	if err != nil {
		return nil, Files{}, err
	}
	caKey, err := encodeKey(ca.key)
	if err != nil {
		return nil, Files{}, err
	}
	f := FilesIn(dir)
	for path, data := range map[string][]byte{
		f.CACert: ca.CertPEM, f.CAKey: caKey, f.ServingCert: serving.CertPEM, f.ServingKey: serving.KeyPEM,
		f.SAPublic: saPub, f.SAPrivate: saPriv,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, Files{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return ca, f, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand never fails on Linux; a fixed serial would still give a valid (if less unique) cert.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// Load reads back the authority that Generate wrote (files.CACert and files.CAKey), so that a later command can
// issue more client certificates for the same cluster (for example one per real node's kubelet).
func Load(files Files) (*Authority, error) {
	certPEM, err := os.ReadFile(files.CACert)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(files.CAKey)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	certBlock, _ := pem.Decode(certPEM)
	if certBlock == nil || certBlock.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", files.CACert)
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", files.CACert, err)
	}
	keyBlock, _ := pem.Decode(keyPEM)
	if keyBlock == nil || keyBlock.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM EC private key", files.CAKey)
	}
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", files.CAKey, err)
	}
	return &Authority{cert: cert, key: key, CertPEM: certPEM}, nil
}

// FilesIn names the files Generate writes into dir.
func FilesIn(dir string) Files {
	return Files{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"), ServingKey: filepath.Join(dir, "apiserver.key"),
		SAPublic: filepath.Join(dir, "sa.pub"), SAPrivate: filepath.Join(dir, "sa.key"),
	}
}
