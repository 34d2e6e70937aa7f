package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

type fakeKernel struct {
	h       *fakeHandle
	links   *fakeLinks
	nft     *countingNFT
	sysctls fakeSysctls
	state   string
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{
		h:       newFakeHandle(),
		links:   &fakeLinks{nodeAddrs: []netip.Addr{netip.MustParseAddr("192.168.0.5"), netip.MustParseAddr("2001:db8::5")}},
		nft:     &countingNFT{Fake: knftables.NewFake(knftables.InetFamily, TableName)},
		sysctls: fakeSysctls{"net/ipv4/conf/all/arp_ignore": "0"},
		state:   filepath.Join(t.TempDir(), "sysctls.json"),
	}
}

// backend is a fresh Backend on the fake kernel, as a newly started speaker would make.
func (k *fakeKernel) backend(t *testing.T) *Backend {
	t.Helper()
	b, err := New(Options{Handle: k.h, Links: k.links, NFT: k.nft, Sysctls: k.sysctls, SysctlStateFile: k.state,
		StrictARP: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ep(addrPort string) dataplane.Endpoint {
	ap := netip.MustParseAddrPort(addrPort)
	return dataplane.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true}
}

// lbPort is a LoadBalancer Service port: ClusterIP 10.96.x.y, LB IP 10.255.x.y, NodePort.
func lbPort(name string, n int, eps ...dataplane.Endpoint) *dataplane.ServicePort {
	return &dataplane.ServicePort{
		Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Protocol: v1.ProtocolTCP},
		Protocol: v1.ProtocolTCP, Port: 80,
		ClusterIPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(n >> 8), byte(n)})},
		LoadBalancerIPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 255, byte(n >> 8), byte(n)})},
		NodePort:         int32(30000 + n),
		ClusterEndpoints: eps, ExternalEndpoints: eps, HasEndpoints: len(eps) > 0,
	}
}

func stateOf(ports ...*dataplane.ServicePort) *dataplane.State {
	s := &dataplane.State{NodeName: "node-1", Services: map[types.NamespacedName][]*dataplane.ServicePort{}}
	for _, p := range ports {
		s.Services[p.Name.NamespacedName] = append(s.Services[p.Name.NamespacedName], p)
	}
	return s
}

func changed(names ...string) map[types.NamespacedName]struct{} {
	m := map[types.NamespacedName]struct{}{}
	for _, n := range names {
		m[types.NamespacedName{Namespace: "ns", Name: n}] = struct{}{}
	}
	return m
}

func TestBackendRendersServicePort(t *testing.T) {
	k := newFakeKernel(t)
	b := k.backend(t)
	onThisNode := ep("10.1.0.1:8080")
	onThisNode.Local = true
	web := lbPort("web", 1, onThisNode, ep("10.1.0.2:8080"))
	web.AffinityTimeout = 3 * time.Hour
	web.Scheduler = "nonsense"
	web.SourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	local := lbPort("local", 2, ep("10.1.0.3:8080"))
	local.ExternalPolicyLocal = true
	local.ExternalEndpoints = nil // the endpoint runs on another node
	ctx := context.Background()
	if err := b.Sync(ctx, dataplane.SyncRequest{State: stateOf(web, local), Full: true}); err != nil {
		t.Fatal(err)
	}
	wantDump(t, k.h,
		"6:10.255.0.1:80 rr persistent 10800 [10.1.0.1:8080 w1 10.1.0.2:8080 w1]",
		"6:10.255.0.2:80 rr []",
		"6:10.96.0.1:80 rr persistent 10800 [10.1.0.1:8080 w1 10.1.0.2:8080 w1]",
		"6:10.96.0.2:80 rr [10.1.0.3:8080 w1]",
		"6:192.168.0.5:30001 rr persistent 10800 [10.1.0.1:8080 w1 10.1.0.2:8080 w1]",
		"6:192.168.0.5:30002 rr []")
	for _, a := range []string{"10.96.0.1", "10.255.0.1", "10.96.0.2", "10.255.0.2"} {
		if !k.links.dummy[netip.MustParseAddr(a)] {
			t.Errorf("%s not on the dummy link: %v", a, k.links.dummy)
		}
	}
	sets := k.nft.Table.Sets
	for _, want := range []struct {
		set string
		key []string
	}{
		{familyIPv4.set(setFirewall), []string{"10.255.0.1", "tcp", "80"}},
		{familyIPv4.set(setFirewallAllow), []string{"10.255.0.1", "tcp", "80", "203.0.113.0/24"}},
		{familyIPv4.set(setMasquerade), []string{"10.255.0.1", "tcp", "80"}},
		{familyIPv4.set(setNodePortMasq), []string{"tcp", "30001"}},
		// Local policy with endpoints elsewhere: dropped here, not rejected, and not masqueraded.
		{familyIPv4.set(setNoLocal), []string{"10.255.0.2", "tcp", "80"}},
		{familyIPv4.set(setNodePortNoLoc), []string{"tcp", "30002"}},
		{familyIPv4.set(setHairpin), []string{"10.1.0.1", "10.1.0.1"}},
	} {
		if sets[want.set].FindElement(want.key...) == nil {
			t.Errorf("set %s lacks %v", want.set, want.key)
		}
	}
	if sets[familyIPv4.set(setHairpin)].FindElement("10.1.0.2", "10.1.0.2") != nil {
		t.Error("hairpin element for an endpoint on another node")
	}
	if sets[familyIPv4.set(setMasquerade)].FindElement("10.255.0.2", "tcp", "80") != nil {
		t.Error("Local policy traffic is masqueraded")
	}
}

func TestBackendIncrementalRestartCleanup(t *testing.T) {
	k := newFakeKernel(t)
	// knftables.Fake scans its elements linearly; at 10,000 Services only the transaction sizes
	// matter here, so count them without storing anything.
	k.nft = &countingNFT{Fake: knftables.NewFake(knftables.InetFamily, TableName), discard: true}
	ctx := context.Background()
	const n = 10000
	var ports []*dataplane.ServicePort
	for i := 1; i <= n; i++ {
		ports = append(ports, lbPort(fmt.Sprintf("svc%d", i), i, ep(fmt.Sprintf("10.1.%d.%d:8080", i>>8, i&0xff)), ep("10.2.0.1:8080")))
	}
	state := stateOf(ports...)
	b := k.backend(t)
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Full: true}); err != nil {
		t.Fatal(err)
	}
	if got := len(k.h.svcs); got != 3*n {
		t.Fatalf("%d virtual servers, want %d", got, 3*n)
	}

	// One Service changes with 10,000 present: a handful of calls and one small transaction.
	k.h.resetCalls()
	k.nft.ops = nil
	state.Services[types.NamespacedName{Namespace: "ns", Name: "svc7"}][0].ClusterEndpoints = []dataplane.Endpoint{ep("10.3.0.1:8080")}
	state.Services[types.NamespacedName{Namespace: "ns", Name: "svc7"}][0].ExternalEndpoints = []dataplane.Endpoint{ep("10.3.0.1:8080")}
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: changed("svc7")}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, c := range k.h.calls {
		calls += c
	}
	// 3 virtual servers x (1 new real server, 2 set to weight 0 and, having no connections,
	// deleted, 1 listing to see that) = 18; the endpoints are on other nodes, so the table (whose
	// hairpin set holds only this node's endpoints) does not change at all.
	if calls != 18 || len(k.nft.ops) != 0 {
		t.Fatalf("one change cost %d IPVS calls %v and transactions %v", calls, k.h.calls, k.nft.ops)
	}

	// Two Services share an LB IP; deleting one keeps the address for the other.
	shared := lbPort("shared", 1, ep("10.9.0.1:8080"))
	shared.Port = 443
	shared.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.97.0.1")}
	shared.NodePort = 0 // allocateLoadBalancerNodePorts: false
	state.Services[shared.Name.NamespacedName] = []*dataplane.ServicePort{shared}
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: changed("shared")}); err != nil {
		t.Fatal(err)
	}
	delete(state.Services, types.NamespacedName{Namespace: "ns", Name: "svc1"})
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: changed("svc1")}); err != nil {
		t.Fatal(err)
	}
	if !k.links.dummy[netip.MustParseAddr("10.255.0.1")] || k.links.dummy[netip.MustParseAddr("10.96.0.1")] {
		t.Fatal("shared LB IP removed with one of its Services, or the deleted ClusterIP kept")
	}
	if _, ok := k.h.svcs["6:10.255.0.1:80"]; ok {
		t.Fatal("deleted Service's virtual server kept")
	}
	if _, ok := k.h.svcs["6:10.255.0.1:443"]; !ok {
		t.Fatal("sharing Service's virtual server lost")
	}

	// A restarted speaker adopts the kernel state: its full sync changes nothing.
	k.h.resetCalls()
	restarted := k.backend(t)
	if err := restarted.Sync(ctx, dataplane.SyncRequest{State: state, Full: true}); err != nil {
		t.Fatal(err)
	}
	for call, c := range k.h.calls {
		if call != "GetServices" && call != "GetDestinations" && c > 0 {
			t.Fatalf("restart re-sent state: %v", k.h.calls)
		}
	}

	// Cleanup from yet another process removes everything, sysctls included.
	if err := k.backend(t).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.h.svcs) != 0 || k.links.dummy != nil || k.sysctls["net/ipv4/conf/all/arp_ignore"] != "0" {
		t.Fatalf("after cleanup: %d virtual servers, dummy %v, sysctls %v", len(k.h.svcs), k.links.dummy != nil, k.sysctls)
	}
	if last := k.nft.last; !strings.Contains(last, "delete table inet "+TableName) {
		t.Fatalf("cleanup's transaction does not delete the table:\n%s", last)
	}
}

func TestReaperRemovesDrainedEndpointsWithoutASync(t *testing.T) {
	k := newFakeKernel(t)
	b := k.backend(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	web := lbPort("web", 1, ep("10.1.0.1:8080"), ep("10.1.0.2:8080"))
	web.NodePort, web.LoadBalancerIPs = 0, nil
	state := stateOf(web)
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Full: true}); err != nil {
		t.Fatal(err)
	}
	k.h.dsts["6:10.96.0.1:80"]["10.1.0.2:8080"].ActiveConnections = 1
	web.ClusterEndpoints = []dataplane.Endpoint{ep("10.1.0.1:8080")}
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: changed("web")}); err != nil {
		t.Fatal(err)
	}
	if b.Draining() != 1 {
		t.Fatalf("draining %d, want 1", b.Draining())
	}
	go b.RunReaper(ctx, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if b.Draining() != 1 {
		t.Fatal("reaper removed a real server that still has a connection")
	}
	b.mu.Lock()
	k.h.dsts["6:10.96.0.1:80"]["10.1.0.2:8080"].ActiveConnections = 0
	b.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for b.Draining() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	wantDump(t, k.h, "6:10.96.0.1:80 rr [10.1.0.1:8080 w1]")
}

// Issue 16, item 9: loadBalancerSourceRanges of one family leave the other family open, as in
// kube-proxy (it used to drop every source of a family without a range).
func TestSourceRangesOfOneFamilyLeaveTheOtherOpen(t *testing.T) {
	k := newFakeKernel(t)
	b := k.backend(t)
	web := lbPort("web", 1, ep("10.1.0.1:8080"))
	web.SourceRanges = []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}
	if err := b.Sync(context.Background(), dataplane.SyncRequest{State: stateOf(web), Full: true}); err != nil {
		t.Fatal(err)
	}
	if k.nft.Table.Sets[familyIPv4.set(setFirewall)].FindElement("10.255.0.1", "tcp", "80") != nil {
		t.Fatal("an IPv6-only range closes the IPv4 LoadBalancer IP")
	}
}
