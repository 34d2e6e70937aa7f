package speaker

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/speaker/l2"
)

type fakeEndpoints map[types.NamespacedName][]string

func (f fakeEndpoints) NodesWithReady(svc types.NamespacedName) []string { return f[svc] }

func node(name string, labels map[string]string, ip string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

func cordoned(n *corev1.Node) *corev1.Node {
	n.Spec.Unschedulable = true
	return n
}

func lbService(ns, name string, etp corev1.ServiceExternalTrafficPolicy, class *string, ips ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: etp, LoadBalancerClass: class}}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return svc
}

func pool(name string, labels map[string]string, blocks ...v1beta1.AddressBlock) *v1beta1.IPAddressPool {
	return &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: v1beta1.IPAddressPoolSpec{Addresses: blocks}}
}

func TestL2Policies(t *testing.T) {
	other := "other.io/lb"
	pools := []*v1beta1.IPAddressPool{pool("lan", map[string]string{"tier": "lan"}, "10.0.0.100-10.0.0.120"), pool("dmz", nil, "192.0.2.0/28")}
	services := []*corev1.Service{
		lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.100"),
		// Shares web's IP.
		lbService("default", "web-udp", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.100"),
		lbService("default", "local", corev1.ServiceExternalTrafficPolicyLocal, nil, "10.0.0.101"),
		lbService("default", "dmz", corev1.ServiceExternalTrafficPolicyCluster, nil, "192.0.2.3"),
		lbService("default", "outside", corev1.ServiceExternalTrafficPolicyCluster, nil, "172.16.0.1"),
		lbService("default", "foreign", corev1.ServiceExternalTrafficPolicyCluster, &other, "10.0.0.102"),
	}
	snap := &Snapshot{
		Nodes: map[string]*corev1.Node{
			"a": node("a", map[string]string{"zone": "1"}, "10.0.0.1"),
			"b": node("b", map[string]string{"zone": "1"}, "10.0.0.2"),
			"c": node("c", map[string]string{"zone": "2", config.LabelExcludeFromLB: ""}, "10.0.0.3"),
			"d": cordoned(node("d", map[string]string{"zone": "1"}, "10.0.0.4")),
		},
		Pools:     pools,
		IPs:       serviceIPs(services, pools, config.DefaultLoadBalancerClass),
		Endpoints: fakeEndpoints{{Namespace: "default", Name: "local"}: {"b", "c"}},
		L2Advertisements: []*v1beta1.L2Advertisement{{
			ObjectMeta: metav1.ObjectMeta{Name: "lan"},
			Spec: v1beta1.L2AdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
				IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "lan"}}},
			}},
		}},
	}
	if len(snap.IPs) != 3 {
		t.Fatalf("service IPs %v: want web's shared IP, local's and dmz's (not the one outside pools or of another class)", snap.IPs)
	}
	if got := snap.IPs[0].ServiceNames(); !slices.Equal(got, []string{"default/web", "default/web-udp"}) {
		t.Fatalf("shared IP has services %v", got)
	}
	pols := L2Policies(snap)
	if len(pols) != 2 {
		t.Fatalf("policies for %v: the dmz pool is not advertised", pols)
	}
	if got := pols[netip.MustParseAddr("10.0.0.100")]; !slices.Equal(got.Candidates, []string{"a", "b", "d"}) || got.Interfaces != nil {
		t.Errorf("web: %+v, want candidates a, b, d (c is excluded; d is cordoned, which is no exclusion) on the subnet's interface", got)
	}
	if got := pols[netip.MustParseAddr("10.0.0.101")]; !slices.Equal(got.Candidates, []string{"b"}) {
		t.Errorf("local: candidates %v, want only b (ready endpoint, not excluded)", got.Candidates)
	}

	// A second advertisement for the dmz pool, on named interfaces, only on zone 1 nodes.
	snap.L2Advertisements = append(snap.L2Advertisements, &v1beta1.L2Advertisement{
		ObjectMeta: metav1.ObjectMeta{Name: "dmz"},
		Spec: v1beta1.L2AdvertisementSpec{Interfaces: []string{"eth1"}, AdvertisementSelection: v1beta1.AdvertisementSelection{
			IPAddressPools:   []string{"dmz"},
			NodeSelectors:    []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "1"}}},
			ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "dmz"}}},
		}},
	})
	pols = L2Policies(snap)
	want := l2.Policy{Candidates: []string{"a", "b", "d"}, Interfaces: []string{"eth1"}}
	if got := pols[netip.MustParseAddr("192.0.2.3")]; !slices.Equal(got.Candidates, want.Candidates) || !slices.Equal(got.Interfaces, want.Interfaces) {
		t.Errorf("dmz: %+v, want %+v", got, want)
	}
	// A service selector that does not match removes the IP.
	snap.L2Advertisements[1].Spec.ServiceSelectors[0].MatchLabels["app"] = "nope"
	if _, ok := L2Policies(snap)[netip.MustParseAddr("192.0.2.3")]; ok {
		t.Error("dmz announced although the service selector does not match")
	}
}

func TestMembershipPeers(t *testing.T) {
	nodes := []corev1.Node{*node("a", nil, "10.0.0.1"), *node("b", nil, "fd00::2"), *node("cp", nil, "10.0.0.9")}
	statuses := []v1beta1.SpeakerStatus{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, {ObjectMeta: metav1.ObjectMeta{Name: "b"}}}
	got := MembershipPeers(nodes, statuses, 9652)
	if len(got) != 2 || got["a"] != netip.MustParseAddrPort("10.0.0.1:9652") || got["b"] != netip.MustParseAddrPort("[fd00::2]:9652") {
		t.Fatalf("peers %v: want a and b (cp runs no speaker)", got)
	}
}

// TestLeavingOrRestarting: a speaker stopping on a Ready, schedulable node is restarting (its L2
// addresses are held, its graceful-restart paths kept); on a node cordoned or drained, excluded,
// being deleted, NotReady or unknown, the node is leaving (handed over, withdrawn).
func TestLeavingOrRestarting(t *testing.T) {
	ready := func(n *corev1.Node, s corev1.ConditionStatus) *corev1.Node {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: s}}
		return n
	}
	deleted := ready(node("e", nil, "10.0.0.5"), corev1.ConditionTrue)
	deleted.DeletionTimestamp = &metav1.Time{}
	for _, c := range []struct {
		name    string
		node    *corev1.Node
		leaving bool
	}{
		{"ready", ready(node("a", nil, "10.0.0.1"), corev1.ConditionTrue), false},
		{"cordoned", cordoned(ready(node("b", nil, "10.0.0.2"), corev1.ConditionTrue)), true},
		{"excluded", ready(node("c", map[string]string{config.LabelExcludeFromLB: ""}, "10.0.0.3"), corev1.ConditionTrue), true},
		{"NotReady", ready(node("d", nil, "10.0.0.4"), corev1.ConditionFalse), true},
		{"deleted", deleted, true},
		{"no Ready condition", node("f", nil, "10.0.0.6"), true},
		{"unknown", nil, true},
	} {
		if got := leaving(c.node); got != c.leaving {
			t.Errorf("%s: leaving %v, want %v", c.name, got, c.leaving)
		}
	}
}
