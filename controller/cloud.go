package controller

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/component-base/featuregate"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
)

// RunCloudProvider runs the upstream service controller (k8s.io/cloud-provider) with Herald's
// allocator as the cloud's LoadBalancer: class-less Services only, the upstream finalizer, retries
// and status writes. Pools, their status and finalizers are kept as in the native mode, and the
// allocator is rebuilt from every Service's status before the upstream controller starts.
func (c *Controller) RunCloudProvider(ctx context.Context) error {
	// Services with a class are not the upstream controller's: their addresses are only reserved.
	c.cloud = true
	ctx, cancel := context.WithCancel(ctx)
	defer c.stop(cancel)
	if err := c.start(ctx, c.serviceHandlers()); err != nil {
		return err
	}
	c.spawn(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) { work(ctx, c.log, c.queue, c.syncService) }, time.Second)
	})
	cloud := &heraldCloud{lb: &CloudLoadBalancer{Allocator: c.alloc, NamespaceLabels: c.namespaceLabels}}
	sc, err := servicecontroller.New(cloud, c.client, c.factory.Core().V1().Services(), c.factory.Core().V1().Nodes(),
		"herald", featuregate.NewFeatureGate())
	if err != nil {
		return err
	}
	// The upstream controller's informers were created after the factory started: start them too.
	c.factory.Start(ctx.Done())
	c.factory.WaitForCacheSync(ctx.Done())
	c.spawn(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) { c.poolUsageChanged(ctx) }, poolStatusDelay)
	})
	c.log.Info("controller running in cloud-provider mode (class-less Services, upstream service controller)")
	sc.Run(ctx, c.opts.Workers, controllersmetrics.NewControllerManagerMetrics("herald"))
	return nil
}

// heraldCloud is a cloudprovider.Interface that offers only load balancers.
type heraldCloud struct {
	lb cloudprovider.LoadBalancer
}

var _ cloudprovider.Interface = (*heraldCloud)(nil)

func (h *heraldCloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (h *heraldCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return h.lb, true }
func (h *heraldCloud) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (h *heraldCloud) InstancesV2() (cloudprovider.InstancesV2, bool)                    { return nil, false }
func (h *heraldCloud) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (h *heraldCloud) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (h *heraldCloud) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (h *heraldCloud) ProviderName() string                                              { return "herald" }
func (h *heraldCloud) HasClusterID() bool                                                { return true }
