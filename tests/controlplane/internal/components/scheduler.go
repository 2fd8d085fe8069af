package components

import (
	"context"
	"fmt"

	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// RunScheduler runs kube-scheduler with the given flags until ctx is cancelled, so that pods without a
// nodeName (Deployments, ReplicaSets) are bound to the fake nodes as on a real cluster.
func RunScheduler(ctx context.Context, args []string) error {
	opts := options.NewOptions()
	if err := parse("kube-scheduler", *opts.Flags, args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-scheduler feature gates: %w", err)
	}
	name, err := cache.NewInformerName("kube-scheduler")
	if err != nil {
		return fmt.Errorf("kube-scheduler informer name: %w", err)
	}
	opts.InformerName = name
	cc, sched, err := app.Setup(ctx, opts)
	if err != nil {
		return fmt.Errorf("kube-scheduler setup: %w", err)
	}
	if err := app.Run(ctx, cc, sched); err != nil {
		return fmt.Errorf("kube-scheduler: %w", err)
	}
	return nil
}
