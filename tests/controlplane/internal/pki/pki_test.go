package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func parse(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateAndIssue(t *testing.T) {
	dir := t.TempDir()
	ca, files, err := Generate(dir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{files.CACert, files.CAKey, files.ServingCert, files.ServingKey, files.SAPublic, files.SAPrivate} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", filepath.Base(f), st, err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(parse(t, ca.CertPEM))

	servingPEM, err := os.ReadFile(files.ServingCert)
	if err != nil {
		t.Fatal(err)
	}
	serving := parse(t, servingPEM)
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("serving cert for 127.0.0.1: %v", err)
	}

	client, err := ca.Client(Identity{User: "vp-admin", Groups: []string{"system:masters"}})
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, client.CertPEM)
	if c.Subject.CommonName != "vp-admin" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:masters" {
		t.Errorf("subject %v", c.Subject)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
}

func TestLoadIssuesForTheSameCluster(t *testing.T) {
	dir := t.TempDir()
	ca, files, err := Generate(dir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if files != FilesIn(dir) {
		t.Fatalf("Generate wrote %+v, FilesIn names %+v", files, FilesIn(dir))
	}
	loaded, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parse(t, ca.CertPEM))
	node, err := loaded.Client(Identity{User: "system:node:n1", Groups: []string{"system:nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parse(t, node.CertPEM).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a certificate of the loaded CA does not verify against the original: %v", err)
	}

	if err := os.WriteFile(files.CAKey, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(files); err == nil {
		t.Error("Load accepted a CA key file without a PEM key")
	}
	if _, err := Load(FilesIn(filepath.Join(dir, "missing"))); err == nil {
		t.Error("Load accepted a missing directory")
	}
}
