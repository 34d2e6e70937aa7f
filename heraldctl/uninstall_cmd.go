package heraldctl

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// newUninstallCommand holds the steps the Helm chart's post-delete hook runs so that uninstalling
// leaves every node clean: on each node a pod waits for the speaker to be gone, runs
// speaker --cleanup (an init container) and then holds; a Job waits until every node's pod has
// got that far. The commands are hidden: they are the chart's, not the operator's.
func newUninstallCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{Use: "uninstall", Short: "Steps of the Helm chart's uninstall hook", Hidden: true}

	var port int
	var settle time.Duration
	waitSpeaker := &cobra.Command{
		Use:   "wait-speaker-gone",
		Short: "Wait until no process on this node holds the speakers' membership port",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := waitPortFree(cmd.Context(), net.JoinHostPort("", strconv.Itoa(port)), settle); err != nil {
				// Clean up anyway: an uninstall must not hang on a stuck speaker.
				fmt.Fprintf(s.Err, "heraldctl: %v; cleaning up anyway\n", err)
			}
			return nil
		},
	}
	waitSpeaker.Flags().IntVar(&port, "port", 9652, "the speakers' membership port (UDP)")
	waitSpeaker.Flags().DurationVar(&settle, "timeout", time.Minute, "give up waiting after this long")

	hold := &cobra.Command{
		Use:   "hold",
		Short: "Block until terminated (the cleanup pod's main container, ready once cleanup is done)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			<-cmd.Context().Done()
			return nil
		},
	}

	var namespace string
	var timeout time.Duration
	waitDS := &cobra.Command{
		Use:   "wait-daemonset NAME",
		Short: "Wait until every pod of a DaemonSet is ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.restConfig()
			if err != nil {
				return err
			}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return waitDaemonSetReady(ctx, cs, namespace, args[0], s)
		},
	}
	waitDS.Flags().StringVarP(&namespace, "namespace", "n", "", "the DaemonSet's namespace")
	waitDS.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "fail after this long")

	cmd.AddCommand(waitSpeaker, hold, waitDS)
	return cmd
}

// waitPortFree returns once the UDP address can be bound; the speaker holds its membership port
// for as long as it runs (the cleanup pod shares the node's network namespace).
func waitPortFree(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.ListenPacket("udp", addr)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("UDP %s still in use after %s (is a speaker still running on this node?): %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func waitDaemonSetReady(ctx context.Context, cs kubernetes.Interface, namespace, name string, s Streams) error {
	var last string
	for {
		ds, err := cs.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("DaemonSet %s/%s does not exist; was the chart's cleanup hook changed?", namespace, name)
		case err != nil && ctx.Err() == nil:
			last = err.Error()
		case err == nil:
			done, progress := daemonSetDone(ds)
			if done {
				fmt.Fprintf(s.Out, "cleanup done on %s\n", progress)
				return nil
			}
			last = progress
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for DaemonSet %s/%s: %s; see kubectl -n %s get pods -l app.kubernetes.io/component=cleanup and their logs",
				namespace, name, last, namespace)
		case <-time.After(time.Second):
		}
	}
}

// daemonSetDone says whether every pod the DaemonSet should run is ready, and how far it is.
func daemonSetDone(ds *appsv1.DaemonSet) (bool, string) {
	st := ds.Status
	progress := fmt.Sprintf("%d of %d nodes", st.NumberReady, st.DesiredNumberScheduled)
	if st.ObservedGeneration < ds.Generation {
		return false, "DaemonSet not yet observed by its controller"
	}
	return st.NumberReady >= st.DesiredNumberScheduled && st.UpdatedNumberScheduled >= st.DesiredNumberScheduled, progress
}
