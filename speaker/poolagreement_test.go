package speaker

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/poolagreement"
)

// TestPoolOwnerAgreement: a snapshot gives each IP the pool the controller's allocator gives it
// from (or, for an IP no live pool holds, the pool that keeps it), on the same random pools and
// IPs as the controller's TestPoolOwnerAgreement.
func TestPoolOwnerAgreement(t *testing.T) {
	poolagreement.Run(t, map[string]poolagreement.Caller{
		"speaker snapshot": func(pools []v1beta1.IPAddressPool, services []corev1.Service) map[string]string {
			sorted := ptrs(pools)
			addresspool.SortObjects(sorted)
			out := map[string]string{}
			for _, ip := range serviceIPs(ptrs(services), sorted, config.DefaultLoadBalancerClass) {
				for _, svc := range ip.Services {
					out[svc.Name] = ip.Pool.Name
				}
			}
			return out
		},
	})
}
