package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/heraldlb/herald/controller/allocator"
)

// CloudLoadBalancer serves k8s.io/cloud-provider's LoadBalancer contract from an Allocator, for the
// upstream service controller (controller --mode=cloud-provider). It lives here, not in package
// allocator, so the allocator (and its fuzz build) does not depend on client-go. Addresses are announced by the
// speakers, so node changes need nothing here.
type CloudLoadBalancer struct {
	Allocator *allocator.Allocator
	// NamespaceLabels returns a namespace's labels, for pools with namespace selectors.
	NamespaceLabels func(namespace string) map[string]string
}

var _ cloudprovider.LoadBalancer = (*CloudLoadBalancer)(nil)

// GetLoadBalancer reports the addresses the Service holds.
func (c *CloudLoadBalancer) GetLoadBalancer(_ context.Context, _ string, svc *corev1.Service) (*corev1.LoadBalancerStatus, bool, error) {
	ips := c.Allocator.Holding(svc.Namespace + "/" + svc.Name)
	if len(ips) == 0 {
		return nil, false, nil
	}
	return &corev1.LoadBalancerStatus{Ingress: allocator.Ingress(ips)}, true, nil
}

// GetLoadBalancerName is the upstream default name (there is no external object to name).
func (c *CloudLoadBalancer) GetLoadBalancerName(_ context.Context, _ string, svc *corev1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}

// EnsureLoadBalancer assigns the Service its addresses; a refusal is an error the upstream
// controller reports as an event and retries with back-off.
func (c *CloudLoadBalancer) EnsureLoadBalancer(_ context.Context, _ string, svc *corev1.Service, _ []*corev1.Node) (*corev1.LoadBalancerStatus, error) {
	req, err := allocator.ServiceFromAPI(svc, c.NamespaceLabels(svc.Namespace))
	if err != nil {
		c.Allocator.Release(req.Key)
		return nil, fmt.Errorf("InvalidRequest: %w", err)
	}
	res := c.Allocator.Assign(req)
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("%s: %s", res.Reason, res.Message)
	}
	return &corev1.LoadBalancerStatus{Ingress: allocator.Ingress(res.IPs)}, nil
}

// UpdateLoadBalancer is called when nodes change: nothing to do, speakers follow nodes themselves.
func (c *CloudLoadBalancer) UpdateLoadBalancer(context.Context, string, *corev1.Service, []*corev1.Node) error {
	return nil
}

// EnsureLoadBalancerDeleted gives the Service's addresses back.
func (c *CloudLoadBalancer) EnsureLoadBalancerDeleted(_ context.Context, _ string, svc *corev1.Service) error {
	c.Allocator.Release(svc.Namespace + "/" + svc.Name)
	return nil
}
