package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"variant-parallel/tests/controlplane/internal/cluster"
)

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// up runs the control plane in the foreground until SIGINT/SIGTERM or, with --stop-on-stdin-close, until its
// standard input closes (so a test harness that dies, however it dies, takes the control plane with it).
func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	var opts cluster.Options
	fs.StringVar(&opts.DataDir, "data-dir", "", "directory for etcd, certificates, kubeconfig and state.json (required)")
	fs.IntVar(&opts.Nodes, "nodes", 0, "simulated nodes to register at start (edge-0, edge-1, ...)")
	fs.StringVar(&opts.Address, "address", "127.0.0.1", "IP address the API server binds to and advertises")
	fs.IntVar(&opts.Port, "port", 0, "API server port (0: a free one)")
	stdinStop := fs.Bool("stop-on-stdin-close", false, "stop when standard input reaches end of file")
	removeDir := fs.Bool("remove-data-dir", false, "delete the data directory on stop")
	fs.Var((*repeated)(&opts.APIServerArgs), "apiserver-arg", "extra kube-apiserver flag (repeatable)")
	fs.Var((*repeated)(&opts.ControllerManagerArgs), "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	fs.Var((*repeated)(&opts.SchedulerArgs), "scheduler-arg", "extra kube-scheduler flag (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if opts.DataDir == "" {
		return fmt.Errorf("up: --data-dir is required")
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return fmt.Errorf("up: --port %d: must be between 0 and 65535", opts.Port)
	}
	if opts.Nodes < 0 || opts.Nodes > 254 {
		return fmt.Errorf("up: --nodes %d: must be between 0 and 254", opts.Nodes)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *stdinStop {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	cp, err := cluster.Start(ctx, opts)
	if err != nil {
		if *removeDir {
			_ = os.RemoveAll(opts.DataDir)
		}
		return err
	}
	fmt.Printf("vp-controlplane: ready in %.1fs: export KUBECONFIG=%s\n", cp.State.StartSeconds, cp.State.Kubeconfig)
	var failure error
	select {
	case <-ctx.Done():
	case failure = <-cp.Failed():
		klog.ErrorS(failure, "component failed; stopping")
	}
	cp.Stop()
	if *removeDir {
		if err := os.RemoveAll(opts.DataDir); err != nil {
			return fmt.Errorf("remove data dir: %w", err)
		}
	}
	fmt.Println("vp-controlplane: stopped")
	return failure
}
