package speaker

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/speaker/bgp"
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
			"d": cordoned(node("d", nil, "10.0.0.4")),
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
	res := bgpconfig.Translate(new(bgpEntries).input(snap, "herald-system", nil))
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
	res = bgpconfig.Translate(new(bgpEntries).input(snap, "herald-system", nil))
	if len(res.Desired.Peers) != 1 || len(res.Desired.Routes) != 0 {
		t.Errorf("excluded node: peers %v, routes %v", res.Desired.Peers, res.Desired.Routes)
	}
	// A cordoned (drained) one announces as before: a cordon is not an exclusion (its data plane
	// still runs; withdrawing would re-hash the router's flows of the other nodes too).
	snap.NodeName = "d"
	res = bgpconfig.Translate(new(bgpEntries).input(snap, "herald-system", nil))
	if len(res.Desired.Peers) != 1 || !reflect.DeepEqual(res.Desired.Routes, map[string]map[netip.Prefix]bgpconfig.Attributes{"tor": {netip.MustParsePrefix("10.0.0.100/32"): {}}}) {
		t.Errorf("cordoned node: peers %v, routes %v; want the Cluster-policy address advertised", res.Desired.Peers, res.Desired.Routes)
	}
}

// TestNodeProblems: a speaker reports (as events) only what is wrong on its own node; problems of
// the objects themselves are the controller's to report, once, as conditions.
func TestNodeProblems(t *testing.T) {
	peer := func(name, addr, bfd string) *v1beta1.BGPPeer {
		return &v1beta1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: addr, BFDProfile: bfd}}
	}
	snap := &Snapshot{
		NodeName: "a",
		Nodes:    map[string]*corev1.Node{"a": node("a", nil, "10.0.0.1")},
		// tor-2 has tor-1's address (a problem of node a's pair of sessions); spine names a
		// BFD profile that does not exist (a problem of the object, on every node).
		BGPPeers: []*v1beta1.BGPPeer{peer("tor-1", "10.0.0.254", ""), peer("tor-2", "10.0.0.254", ""), peer("spine", "10.0.0.253", "fast")},
	}
	in := new(bgpEntries).input(snap, "herald-system", nil)
	res := bgpconfig.Translate(in)
	if len(res.Problems) != 2 {
		t.Fatalf("translation problems %+v, want the duplicate address and the missing BFD profile", res.Problems)
	}
	got := nodeProblems(in, res.Problems)
	if len(got) != 1 || got[0].Name != "tor-2" || got[0].Reason != bgpconfig.ReasonDuplicatePeer {
		t.Errorf("node problems %+v, want only tor-2's %s", got, bgpconfig.ReasonDuplicatePeer)
	}
}

// TestBGPEntriesReused: converting snapshot after snapshot gives what a fresh conversion gives,
// though unchanged IPs reuse their entries; a Local Service's endpoints are read each time.
func TestBGPEntriesReused(t *testing.T) {
	pools := []*v1beta1.IPAddressPool{pool("lan", nil, "10.0.0.0/24")}
	web := lbService("default", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.1")
	local := lbService("default", "local", corev1.ServiceExternalTrafficPolicyLocal, nil, "10.0.0.2")
	endpoints := fakeEndpoints{{Namespace: "default", Name: "local"}: {"b"}}
	x := newServiceIndex(config.DefaultLoadBalancerClass)
	var table ipTable
	var entries bgpEntries
	// step converts the next snapshot; localHere is what its entry for local should say.
	step := func(about string, localHere bool) {
		t.Helper()
		snap := &Snapshot{NodeName: "a", Endpoints: endpoints}
		snap.Pools, snap.IPs = table.update(pools, x)
		got, want := entries.convert(snap), new(bgpEntries).convert(snap)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: entries %+v, want %+v", about, got, want)
		}
		for _, e := range got {
			if e.Name == "default/local" && e.HasLocalEndpoints != localHere {
				t.Errorf("%s: local has local endpoints: %v", about, e.HasLocalEndpoints)
			}
		}
	}
	for _, svc := range []*corev1.Service{web, local} {
		x.set(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, svc)
	}
	step("first", false)
	endpoints[types.NamespacedName{Namespace: "default", Name: "local"}] = []string{"a"}
	step("local gained an endpoint on this node", true)
	relabelled := web.DeepCopy()
	relabelled.Labels = map[string]string{"app": "other"}
	x.set(types.NamespacedName{Namespace: "default", Name: "web"}, relabelled)
	step("web relabelled", true)
	shared := lbService("default", "web-udp", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.1", "10.0.0.3")
	x.set(types.NamespacedName{Namespace: "default", Name: "web-udp"}, shared)
	step("a Service sharing web's IP, and one more IP", true)
	x.set(types.NamespacedName{Namespace: "default", Name: "local"}, nil)
	step("local deleted", true)
}

// TestBGPStatusListsDeviationsOnly: the node's status lists the Local-policy IPs it advertises
// and the Cluster-policy IPs it cannot, never the Cluster-policy IPs it advertises; so a
// Cluster-policy Service created leaves the status as it was (the writer then writes nothing).
func TestBGPStatusListsDeviationsOnly(t *testing.T) {
	b := &BGP{
		speaker:  &Speaker{},
		since:    map[netip.Addr]time.Time{},
		sessions: []bgp.PeerStatus{{Name: "tor", Address: netip.MustParseAddr("10.0.0.254"), State: "Established", Established: true}},
		announced: map[netip.Addr]bgpconfig.Announced{
			netip.MustParseAddr("10.0.0.1"): {Peers: []string{"tor"}, ClusterPolicy: true},
			netip.MustParseAddr("10.0.0.2"): {Peers: []string{"tor"}},
		},
	}
	status := func() v1beta1.SpeakerStatusStatus {
		var st v1beta1.SpeakerStatusStatus
		st.Announcements = b.Announcements()
		b.fillStatus(&st)
		return st
	}
	before := status()
	if before.BGPListing != v1beta1.BGPListingDeviations {
		t.Errorf("bgpListing %q, want %q", before.BGPListing, v1beta1.BGPListingDeviations)
	}
	if len(before.Announcements) != 1 || before.Announcements[0].IP != "10.0.0.2" {
		t.Errorf("announcements %+v, want the Local-policy IP 10.0.0.2 only", before.Announcements)
	}
	if before.BGPDeviationsTotal != 0 || len(before.BGPDeviations) != 0 {
		t.Errorf("deviations %+v at steady state", before.BGPDeviations)
	}

	b.announced[netip.MustParseAddr("10.0.0.3")] = bgpconfig.Announced{Peers: []string{"tor"}, ClusterPolicy: true}
	if after := status(); !sameContent(&before, &after) {
		t.Errorf("a Cluster-policy IP added changed the status:\n%+v\n%+v", before, after)
	}

	b.refused = map[netip.Prefix]string{netip.MustParsePrefix("10.0.0.3/32"): "refused"}
	got := status()
	want := []v1beta1.BGPDeviation{{IP: "10.0.0.3", Reason: "refused"}}
	if got.BGPDeviationsTotal != 1 || !reflect.DeepEqual(got.BGPDeviations, want) {
		t.Errorf("deviations %d %+v, want %+v", got.BGPDeviationsTotal, got.BGPDeviations, want)
	}
	// Not a deviation without an established session: readers derive nothing from it then.
	b.sessions[0].Established, b.sessions[0].State = false, "Active"
	if got := status(); got.BGPDeviationsTotal != 0 {
		t.Errorf("deviations %+v without an established session", got.BGPDeviations)
	}

	// A CRD without the marker: every IP listed, unmarked, as older speakers do.
	b.sessions[0].Established, b.sessions[0].State = true, "Established"
	b.speaker.bgpListingPruned.Store(true)
	if got := status(); got.BGPListing != "" || len(got.Announcements) != 3 {
		t.Errorf("with the marker pruned: bgpListing %q, announcements %+v; want none, and all 3 IPs", got.BGPListing, got.Announcements)
	}
}
