// Package kubeconfig writes self-contained kubeconfig files (CA and client certificate embedded) so that every
// client of the test control plane -- kubectl, helm, the Rust tests, the embedded components -- reads one file.
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"variant-parallel/tests/controlplane/internal/pki"
)

// ContextName is the single context in every kubeconfig written here.
const ContextName = "vp-test"

// Build returns a kubeconfig for server, trusting caPEM and authenticating with the client certificate.
func Build(server string, caPEM []byte, user string, cert pki.ClientCert) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ContextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert.CertPEM, ClientKeyData: cert.KeyPEM}
	cfg.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = ContextName
	return cfg
}

// Write builds a kubeconfig (see Build) and writes it to path with owner-only permissions.
func Write(path, server string, caPEM []byte, user string, cert pki.ClientCert) error {
	if err := clientcmd.WriteToFile(*Build(server, caPEM, user, cert), path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
