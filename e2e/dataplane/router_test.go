package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestClientBehindTheRouter: the host behind the router (ext, on the upstream segment) reaches
// Services whose IPs only BGP makes known (the router learns them from the nodes): with Cluster
// policy its requests are spread over the three backends, and with externalTrafficPolicy: Local
// every request is answered and the backends see ext's own address (no SNAT across the routed hop).
func TestClientBehindTheRouter(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	router, ext := l.Topology.Host(lab.HostRouter), l.Topology.Host(lab.HostExternal)
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "dpe-router", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv4.String(),
	})
	// A slice of the lab's BGP pool (10.79.0.0/24), which only the BGP routes make reachable.
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "dpe-bgp", map[string]any{"addresses": []any{"10.79.0.32/28"}, "autoAssign": false})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "dpe-bgp", map[string]any{"ipAddressPools": []any{"dpe-bgp"}})
	cluster := service(t, l, cs, "routed-cluster", "10.79.0.34", l.Pods(), nil)
	local := service(t, l, cs, "routed-local", "10.79.0.33", l.Pods(), localPolicy)
	// Every node holds an endpoint, so every node advertises both; once all the routes are in,
	// the router's choice of node for ext no longer changes under the test.
	for _, svc := range []*corev1.Service{cluster, local} {
		prefix := netip.PrefixFrom(lbAddr(svc).Addr(), 32)
		labsuite.WaitFor(t, 60*time.Second, fmt.Sprintf("BIRD holding %s from every node", prefix), func() (bool, string) {
			routes, err := l.BirdRoutes(ctx)
			var from []string
			for _, r := range routes {
				if r.Prefix == prefix {
					from = append(from, r.Protocol)
				}
			}
			return err == nil && len(from) == len(l.Nodes()), fmt.Sprint(from, err)
		})
		waitForAnswers(t, l, lab.HostExternal, lbAddr(svc))
	}
	// Cluster policy: the node the router picks spreads ext's requests over every backend.
	requireSpread(t, l, lab.HostExternal, lbAddr(cluster))

	// Local policy: the node forwards to its own backend without SNAT.
	addr := lbAddr(local)
	const requests = 20
	seen := map[string]int{}
	for i := 0; i < requests; i++ {
		r, err := l.Get(ctx, lab.HostExternal, addr, 2*time.Second)
		if err != nil {
			t.Fatalf("request %d of %d from ext to %s: %v", i+1, requests, addr, err)
		}
		if r.ClientIP() != ext.IPv4 {
			t.Fatalf("backend %s saw client %s, want ext's own address %s (Local policy: no SNAT)", r.Backend, r.Client, ext.IPv4)
		}
		seen[r.Backend]++
	}
	t.Logf("answers per backend: %v", seen)
}
