// Command vp-controlplane runs a real Kubernetes control plane for tests in one process: embedded etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler (upstream k8s.io/kubernetes code) plus a node
// simulator for kubelet-less edge nodes, all on loopback. Its `node` subcommands drive the simulator.
//
//	vp-controlplane up --data-dir DIR [--nodes 3] [--address IP] [--port N] [--stop-on-stdin-close] [--remove-data-dir]
//	                   [--apiserver-arg=--flag=value ...] [--controller-manager-arg=...] [--scheduler-arg=...]
//	vp-controlplane node --data-dir DIR list|add|kill|partition|revive|remove [NAME] [--label k=v ...]
//	                   [--cpu 4] [--memory 4Gi] [--pods 110] [--arch arm64]
//	vp-controlplane state --data-dir DIR
//	vp-controlplane kubeconfig --data-dir DIR --user NAME [--group G]... --out FILE
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "node":
		err = node(os.Args[2:])
	case "state":
		err = state(os.Args[2:])
	case "kubeconfig":
		err = issueKubeconfig(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vp-controlplane:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  vp-controlplane up --data-dir DIR [--nodes N] [--address IP] [--port N] [--stop-on-stdin-close] [--remove-data-dir]
                     [--apiserver-arg=--flag=value]... [--controller-manager-arg=...]... [--scheduler-arg=...]...
  vp-controlplane node --data-dir DIR list
  vp-controlplane node --data-dir DIR add NAME [--label k=v]... [--cpu 4] [--memory 4Gi] [--pods 110] [--arch arm64]
  vp-controlplane node --data-dir DIR kill|partition|revive|remove NAME
  vp-controlplane state --data-dir DIR
  vp-controlplane kubeconfig --data-dir DIR --user NAME [--group G]... --out FILE
`)
	os.Exit(2)
}
