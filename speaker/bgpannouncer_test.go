package speaker

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
)

func TestBGPInputToRoutes(t *testing.T) {
	pools := []*v1beta1.IPAddressPool{pool("lan", nil, "10.0.0.100-10.0.0.120")}
	services := []*corev1.Service{
		lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.100"),
		lbService("default", "local", corev1.ServiceExternalTrafficPolicyLocal, nil, "10.0.0.101"),
		lbService("default", "local-here", corev1.ServiceExternalTrafficPolicyLocal, nil, "10.0.0.102"),
	}
	snap := &Snapshot{
		NodeName: "a",
		Nodes: map[string]*corev1.Node{
			"a": node("a", map[string]string{"zone": "1"}, "10.0.0.1"),
			"c": node("c", map[string]string{config.LabelExcludeFromLB: ""}, "10.0.0.3"),
		},
		Pools: pools,
		IPs:   serviceIPs(services, pools, config.DefaultLoadBalancerClass),
		Endpoints: fakeEndpoints{
			{Namespace: "default", Name: "local"}:      {"b"},
			{Namespace: "default", Name: "local-here"}: {"a"},
		},
		BGPPeers: []*v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "tor"},
			Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: "10.0.0.254"}}},
		BGPAdvertisements: []*v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "all"}}},
	}
	res := bgpconfig.Translate(BGPInput(snap, "herald-system", nil))
	want := map[string]map[netip.Prefix]bgpconfig.Attributes{"tor": {
		netip.MustParsePrefix("10.0.0.100/32"): {},
		netip.MustParsePrefix("10.0.0.102/32"): {},
	}}
	if !reflect.DeepEqual(res.Desired.Routes, want) || len(res.Problems) != 0 {
		t.Errorf("routes = %+v (problems %+v), want %+v", res.Desired.Routes, res.Problems, want)
	}
	if res.Desired.RouterID != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("router ID = %v, want the node's InternalIP", res.Desired.RouterID)
	}

	// An excluded node keeps its sessions but advertises nothing.
	snap.NodeName = "c"
	res = bgpconfig.Translate(BGPInput(snap, "herald-system", nil))
	if len(res.Desired.Peers) != 1 || len(res.Desired.Routes) != 0 {
		t.Errorf("excluded node: peers %v, routes %v", res.Desired.Peers, res.Desired.Routes)
	}
}
