package heraldctl

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/heraldctl/status"
)

func newStatusCommand(g *globalOptions, s Streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show pools and their usage, Services with their IPs and announcing nodes, and BGP/BFD sessions",
		Long: `Shows what Herald is doing: each IPAddressPool with used/free addresses (as the controller
counted them), each Service of type LoadBalancer with its IPs, pool, the nodes announcing it and
how (L2 or BGP), or why it is pending, and each node's speaker with its BGP/BFD sessions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: want json or yaml (or nothing, for tables)", output)
			}
			cfg, err := g.restConfig()
			if err != nil {
				return err
			}
			scheme := runtime.NewScheme()
			if err := clientgoscheme.AddToScheme(scheme); err != nil {
				return err
			}
			if err := v1beta1.AddToScheme(scheme); err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme})
			if err != nil {
				return fmt.Errorf("connecting to the cluster: %w; is it reachable (kubectl get nodes) and --kubeconfig right?", err)
			}
			report, err := status.Collect(cmd.Context(), c)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(s.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(report)
			case "yaml":
				out, err := yaml.Marshal(report)
				if err != nil {
					return err
				}
				_, err = s.Out.Write(out)
				return err
			default:
				return report.WriteTable(s.Out, time.Now())
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: tables)")
	return cmd
}
