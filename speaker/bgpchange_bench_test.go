package speaker

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
)

// BenchmarkBGPTranslateOneChange is the speaker's translation work (convert, then Translate) for
// one Service added with n Services present: what the speaker does per change before GoBGP.
// Issue 20 wants it to grow with the change, not with n.
func BenchmarkBGPTranslateOneChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			pools := []*v1beta1.IPAddressPool{pool("bench", nil, "100.64.0.0/16")}
			services := make([]*corev1.Service, n+1)
			for i := range services {
				services[i] = lbService("bench", fmt.Sprintf("s%d", i), corev1.ServiceExternalTrafficPolicyCluster, nil,
					netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}).String())
			}
			before := serviceIPs(services[:n], pools, config.DefaultLoadBalancerClass)
			after := serviceIPs(services, pools, config.DefaultLoadBalancerClass)
			snap := func(ips []ServiceIP) *Snapshot {
				return &Snapshot{
					NodeName: "a", Nodes: map[string]*corev1.Node{"a": node("a", nil, "10.0.0.1")}, Pools: pools, IPs: ips,
					BGPPeers: []*v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "tor"},
						Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: "10.0.0.254"}}},
					BGPAdvertisements: []*v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "all"}}},
				}
			}
			s0, s1 := snap(before), snap(after)
			var entries bgpEntries
			entries.input(s0, "herald-system", nil)
			b.ResetTimer()
			for i := range b.N {
				s := s1
				if i%2 == 1 {
					s = s0
				}
				res := bgpconfig.Translate(entries.input(s, "herald-system", nil))
				if len(res.Desired.Routes["tor"]) < n {
					b.Fatalf("%d routes", len(res.Desired.Routes["tor"]))
				}
			}
		})
	}
}
