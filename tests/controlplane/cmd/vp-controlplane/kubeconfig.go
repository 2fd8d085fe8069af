package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"variant-parallel/tests/controlplane/internal/cluster"
	"variant-parallel/tests/controlplane/internal/kubeconfig"
	"variant-parallel/tests/controlplane/internal/pki"
)

// issueKubeconfig writes a kubeconfig for another identity of a running control plane, signed by its CA: a real
// node's kubelet (system:node:NAME in system:nodes, which the Node authorizer and NodeRestriction expect) or
// kube-proxy (system:kube-proxy).
func issueKubeconfig(args []string) error {
	fs := flag.NewFlagSet("kubeconfig", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "data directory of the running control plane (required)")
	user := fs.String("user", "", "user name (certificate CN) (required)")
	out := fs.String("out", "", "file to write (required)")
	var groups repeated
	fs.Var(&groups, "group", "group (certificate O; repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *user == "" || *out == "" || fs.NArg() != 0 {
		return fmt.Errorf("kubeconfig: usage: kubeconfig --data-dir DIR --user NAME [--group G]... --out FILE")
	}
	st, err := cluster.ReadState(*dir)
	if err != nil {
		return err
	}
	ca, err := pki.Load(pki.FilesIn(filepath.Join(st.DataDir, "pki")))
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cert, err := ca.Client(pki.Identity{User: *user, Groups: groups})
	if err != nil {
		return err
	}
	return kubeconfig.Write(*out, st.Server, ca.CertPEM, *user, cert)
}
