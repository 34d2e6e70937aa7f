package speaker

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/speaker/l2"
)

// Several advertisements covering one IP: each node answers on the interfaces of the
// advertisements that select it, not on those of advertisements for other nodes.
func TestL2PoliciesInterfacesPerNode(t *testing.T) {
	pools := []*v1beta1.IPAddressPool{pool("lan", nil, "10.0.0.100-10.0.0.120")}
	ip := netip.MustParseAddr("10.0.0.100")
	snap := &Snapshot{
		Nodes: map[string]*corev1.Node{
			"a": node("a", map[string]string{"zone": "1"}, "10.0.0.1"),
			"b": node("b", map[string]string{"zone": "1"}, "10.0.0.2"),
			"c": node("c", map[string]string{"zone": "2"}, "10.0.0.3"),
		},
		Pools: pools,
		IPs:   serviceIPs([]*corev1.Service{lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, ip.String())}, pools, config.DefaultLoadBalancerClass),
	}
	adv := func(name, zone string, ifs ...string) *v1beta1.L2Advertisement {
		a := &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1beta1.L2AdvertisementSpec{Interfaces: ifs}}
		if zone != "" {
			a.Spec.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": zone}}}
		}
		return a
	}
	for _, tc := range []struct {
		about string
		advs  []*v1beta1.L2Advertisement
		want  l2.Policy
	}{
		{"one list for all", []*v1beta1.L2Advertisement{adv("all", "", "eth1")},
			l2.Policy{Candidates: []string{"a", "b", "c"}, Interfaces: []string{"eth1"}}},
		{"zone 1 on eth1, zone 2 on eth2", []*v1beta1.L2Advertisement{adv("z1", "1", "eth1"), adv("z2", "2", "eth2")},
			l2.Policy{Candidates: []string{"a", "b", "c"}, NodeInterfaces: map[string][]string{"a": {"eth1"}, "b": {"eth1"}, "c": {"eth2"}}}},
		{"plus eth3 everywhere: merged per node", []*v1beta1.L2Advertisement{adv("z1", "1", "eth1"), adv("z2", "2", "eth2"), adv("all", "", "eth3")},
			l2.Policy{Candidates: []string{"a", "b", "c"}, NodeInterfaces: map[string][]string{"a": {"eth1", "eth3"}, "b": {"eth1", "eth3"}, "c": {"eth2", "eth3"}}}},
		{"zone 1 also by an advertisement without interfaces: the subnet's there", []*v1beta1.L2Advertisement{adv("z1", "1", "eth1"), adv("z1-default", "1"), adv("z2", "2", "eth2")},
			l2.Policy{Candidates: []string{"a", "b", "c"}, NodeInterfaces: map[string][]string{"a": nil, "b": nil, "c": {"eth2"}}}},
	} {
		snap.L2Advertisements = tc.advs
		if got := L2Policies(snap)[ip]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.about, got, tc.want)
		}
	}
}
