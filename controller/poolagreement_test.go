package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/heraldctl/status"
	"github.com/heraldlb/herald/internal/poolagreement"
)

// TestPoolOwnerAgreement: the Announced condition and heraldctl status name the pool the
// allocator gives an IP from (or, for an IP no live pool holds, the pool that keeps it), on the
// same random pools and IPs as the speaker's TestPoolOwnerAgreement.
func TestPoolOwnerAgreement(t *testing.T) {
	poolagreement.Run(t, map[string]poolagreement.Caller{
		"controller Announced": func(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]string {
			cfg := newAnnounceConfig(pools, nil, nil, nil, nil)
			out := map[string]string{}
			for _, svc := range services {
				out[svc.Name] = cfg.poolOf(svc.Status.LoadBalancer.Ingress[0].IP)
			}
			return out
		},
		"heraldctl status": func(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]string {
			out := map[string]string{}
			for _, svc := range status.Build(pools, services, nil, nil).Services {
				out[svc.Name] = svc.Pool
			}
			return out
		},
	})
}
