// Package heraldproxy runs Herald's embedded data plane as the speaker runs it (the speaker's
// cache transform, its local-endpoint view, embedded.Prepare and embedded.New), without the
// announcers: the benchmarks against kube-proxy and the kube-proxy differential test run it as a
// process of their own, next to kube-proxy, against the same apiserver.
package heraldproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/embedded"
)

// Config says where the data plane runs.
type Config struct {
	Kubeconfig string
	NodeName   string
	// Backend is the --dataplane to run: "nftables" (the default) or "ipvs".
	Backend string
	// HealthAddr is where /healthz is served (embedded.Options.HealthAddr).
	HealthAddr string
	// ClusterCIDRs and MasqueradeAll: see embedded.Options.
	ClusterCIDRs  []netip.Prefix
	MasqueradeAll bool
	// NodePortAddresses: see embedded.Options (the speaker's default is primary).
	NodePortAddresses dataplane.NodePortAddresses
	Logger            *slog.Logger
}

// Run runs the data plane until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Backend == "" {
		cfg.Backend = "nftables"
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 1000, 2000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	c, err := crcache.New(rc, crcache.Options{DefaultTransform: dataplane.StripForProxy})
	if err != nil {
		return err
	}
	services, err := c.GetInformer(ctx, &corev1.Service{})
	if err != nil {
		return err
	}
	slices, err := c.GetInformer(ctx, &discoveryv1.EndpointSlice{})
	if err != nil {
		return err
	}
	view := dataplane.NewLocalEndpoints()
	if err := view.Register(slices); err != nil {
		return err
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	// Stopped by stop, waited for before Run returns.
	defer func() { stop(); <-cacheDone }()
	if !cache.WaitForCacheSync(ctx.Done(), view.HasSynced) {
		return errors.New("caches did not sync")
	}
	backend, err := embedded.Prepare(ctx, cfg.Backend, cfg.Logger)
	if err != nil {
		return err
	}
	d, err := embedded.New(ctx, backend, embedded.Options{NodeName: cfg.NodeName, Client: cs, LocalEndpoints: view,
		HealthAddr: cfg.HealthAddr, Services: services, EndpointSlices: slices, Logger: cfg.Logger,
		ClusterCIDRs: cfg.ClusterCIDRs, MasqueradeAll: cfg.MasqueradeAll, NodePortAddresses: cfg.NodePortAddresses})
	if err != nil {
		return err
	}
	if err := d.Run(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("data plane: %w", err)
	}
	return nil
}
