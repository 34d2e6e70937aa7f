package bgp

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkPlanOneRouteAdded is the announcer's diff (planRoutes) for one route added with n
// routes applied: issue 20 wants the speaker's work per change to grow with the change, not n.
func BenchmarkPlanOneRouteAdded(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			g := groupName("tor", Attributes{})
			routes := map[string]map[netip.Prefix]string{"tor": {}}
			paths := map[netip.Prefix]int{}
			want := map[netip.Prefix]Attributes{}
			for i := range n + 1 {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
				want[p] = Attributes{}
				if i < n {
					routes["tor"][p], paths[p] = g, 1
				}
			}
			d := Desired{Peers: map[string]Peer{"tor": {Name: "tor"}}, Routes: map[string]map[netip.Prefix]Attributes{"tor": want}}
			b.ResetTimer()
			for range b.N {
				if p := planRoutes(d, routes, paths); len(p.newPaths) != 1 {
					b.Fatalf("%d new paths", len(p.newPaths))
				}
			}
		})
	}
}
