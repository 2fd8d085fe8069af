// Package components runs the real Kubernetes control plane components (kube-apiserver,
// kube-controller-manager, kube-scheduler) inside this process, from the upstream k8s.io/kubernetes code.
//
// The upstream cobra commands each install a process-wide signal handler (which panics when done twice), so
// each component is started here from its exported options and Run function instead, under a context that the
// caller cancels. Flags are the upstream flags, parsed from the same strings one would pass on a command line.
package components

import (
	"fmt"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// parse parses args into a fresh flag set holding every named flag set of one component.
func parse(component string, sets cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	for _, name := range sets.Order {
		fs.AddFlagSet(sets.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags %v: %w", component, args, err)
	}
	return nil
}
