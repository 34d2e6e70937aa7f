// Package heraldctl is the operator's command line: `status` (what Herald is doing) and
// `migrate metallb` (MetalLB's configuration as Herald objects). cmd/heraldctl only calls Execute.
package heraldctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Streams are where a command reads and writes; tests pass buffers.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	kubeconfig string
	context    string
}

// restConfig loads the kubeconfig the way kubectl does: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, else the in-cluster configuration.
func (g *globalOptions) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: g.context}).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no cluster configured: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config")
		}
		return nil, fmt.Errorf("loading the kubeconfig: %w; check --kubeconfig and --context", err)
	}
	cfg.UserAgent = "heraldctl"
	return cfg, nil
}

// NewCommand builds the heraldctl command tree.
func NewCommand(s Streams) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "heraldctl",
		Short:         "Inspect Herald and migrate to it from MetalLB",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	root.PersistentFlags().StringVar(&g.context, "context", "", "kubeconfig context to use (default: the current context)")
	root.AddCommand(newStatusCommand(g, s), newMigrateCommand(g, s), newUninstallCommand(g, s))
	return root
}

// Execute runs heraldctl with args and returns the process exit code, having printed any error
// to s.Err.
func Execute(ctx context.Context, args []string, s Streams) int {
	// The subcommands take ctx through cobra (ExecuteContext, then cmd.Context()), which
	// contextcheck cannot follow.
	cmd := NewCommand(s) //nolint:contextcheck // ctx reaches the commands as cmd.Context()
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(s.Err, "heraldctl: "+err.Error())
		return 1
	}
	return 0
}

// StdStreams are the process's standard streams.
func StdStreams() Streams { return Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr} }
