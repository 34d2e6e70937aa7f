package heraldctl

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/heraldctl/migrate"
)

func newMigrateCommand(g *globalOptions, s Streams) *cobra.Command {
	migrateCmd := &cobra.Command{
		Use:   "migrate",
		Short: "Translate another load balancer's configuration into Herald objects",
	}
	var (
		files     []string
		namespace string
		lbClass   string
	)
	metallb := &cobra.Command{
		Use:   "metallb",
		Short: "Print MetalLB's configuration as Herald objects (YAML on stdout, findings on stderr)",
		Long: `Reads MetalLB's custom resources (metallb.io: IPAddressPool, L2Advertisement, BGPAdvertisement,
BGPPeer, Community, BFDProfile) and the Services of type LoadBalancer, from the cluster or from
files, and prints the equivalent Herald objects as YAML on standard output, ready for
kubectl apply -f -. Everything that does not carry over as-is is reported on standard error,
with what to do by hand. Services need no change: Herald reads MetalLB's annotations.`,
		Example: `  heraldctl migrate metallb > herald.yaml
  heraldctl migrate metallb -f metallb-config/ -f services.yaml
  kubectl get ipaddresspools.metallb.io,l2advertisements.metallb.io -A -o yaml | heraldctl migrate metallb -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var inputs []migrate.Input
			var err error
			if len(files) > 0 {
				inputs, err = migrate.ReadFiles(files, s.In)
			} else {
				inputs, err = readClusterInputs(cmd, g, namespace)
			}
			if err != nil {
				return err
			}
			res := migrate.Translate(inputs, migrate.Options{LoadBalancerClass: lbClass})
			out, err := res.YAML()
			if err != nil {
				return fmt.Errorf("rendering YAML: %w", err)
			}
			if _, err := s.Out.Write(out); err != nil {
				return err
			}
			return reportFindings(s, res)
		},
	}
	metallb.Flags().StringArrayVarP(&files, "filename", "f", nil, "read MetalLB manifests from FILE or DIR (recursively; - for stdin) instead of the cluster; repeatable")
	metallb.Flags().StringVarP(&namespace, "namespace", "n", "", "read MetalLB's objects from this namespace only (default: all namespaces)")
	metallb.Flags().StringVar(&lbClass, "lb-class", config.DefaultLoadBalancerClass, "the loadBalancerClass Herald will be installed with (chart value loadBalancerClass)")
	migrateCmd.AddCommand(metallb)
	return migrateCmd
}

func readClusterInputs(cmd *cobra.Command, g *globalOptions, namespace string) ([]migrate.Input, error) {
	cfg, err := g.restConfig()
	if err != nil {
		return nil, fmt.Errorf("%w; or translate saved manifests with -f FILE|DIR", err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return migrate.ReadCluster(cmd.Context(), client, namespace)
}

// reportFindings prints the findings and a summary to stderr, so stdout stays pure YAML.
func reportFindings(s Streams, res migrate.Result) error {
	counts := map[migrate.Severity]int{}
	for _, f := range res.Findings {
		counts[f.Severity]++
		fmt.Fprintln(s.Err, f.String())
	}
	fmt.Fprintf(s.Err, "heraldctl: %d Herald objects written; %d untranslated, %d warnings, %d notes\n",
		len(res.Objects), counts[migrate.Untranslated], counts[migrate.Warning], counts[migrate.Note])
	if counts[migrate.Untranslated] > 0 {
		fmt.Fprintln(s.Err, "heraldctl: review the untranslated items above before applying; docs/migrating-from-metallb.md has the cut-over steps")
	}
	return nil
}
