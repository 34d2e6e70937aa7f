package userspace

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
)

// fakeRoutes are the Service IPs' local routes (ipvs.Links) in memory.
type fakeRoutes map[netip.Addr]bool

func (f fakeRoutes) EnsureDummy() error { return nil }
func (f fakeRoutes) ServiceIPs() ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range f {
		out = append(out, a)
	}
	return out, nil
}
func (f fakeRoutes) AddServiceIP(a netip.Addr) error  { f[a] = true; return nil }
func (f fakeRoutes) DelServiceIP(a netip.Addr) error  { delete(f, a); return nil }
func (f fakeRoutes) NodeAddrs() ([]netip.Addr, error) { return nil, nil }
func (f fakeRoutes) DeleteDummy() error               { clear(f); return nil }
func (f fakeRoutes) has(a ...netip.Addr) bool {
	return len(f) == len(a) && !slices.ContainsFunc(a, func(x netip.Addr) bool { return !f[x] })
}

type fakeSysctls map[string]string

func (f fakeSysctls) Get(name string) (string, error) { return f[name], nil }
func (f fakeSysctls) Set(name, value string) error    { f[name] = value; return nil }

// TestStandaloneSyncs checks the bookkeeping of the Service IPs' routes through full and
// incremental syncs (a LoadBalancer IP shared by two Services stays while either holds it), the
// drift check, and cleanup; the listeners are loopback sockets whatever address they are given.
func TestStandaloneSyncs(t *testing.T) {
	routes, sysctls := fakeRoutes{netip.MustParseAddr("10.96.9.9"): true}, fakeSysctls{}
	proxy := New(Options{Direct: true, ServeAll: true,
		Listen: func(_ *net.ListenConfig, network, _ string) (net.Listener, error) {
			return net.Listen(network, "127.0.0.1:0")
		},
		ListenPacket: func(_ *net.ListenConfig, network, _ string) (net.PacketConn, error) {
			return net.ListenPacket(network, "127.0.0.1:0")
		}})
	t.Cleanup(proxy.Close)
	s, err := NewStandalone(proxy, StandaloneOptions{Links: routes, Sysctls: sysctls,
		SysctlStateFile: filepath.Join(t.TempDir(), "sysctls.json")})
	if err != nil {
		t.Fatal(err)
	}
	lb := netip.MustParseAddr("192.0.2.10")
	svc := func(name, clusterIP string) *dataplane.ServicePort {
		return &dataplane.ServicePort{
			Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Protocol: v1.ProtocolTCP},
			Protocol: v1.ProtocolTCP, Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr(clusterIP)},
			LoadBalancerIPs: []netip.Addr{lb}, // shared
		}
	}
	a, b := svc("a", "10.96.0.1"), svc("b", "10.96.0.2")
	// a also has an SCTP port, which the proxy does not speak: counted, not served.
	sctp := *a
	sctp.Name.Protocol, sctp.Protocol = v1.ProtocolSCTP, v1.ProtocolSCTP
	st := &dataplane.State{Services: map[types.NamespacedName][]*dataplane.ServicePort{
		a.Name.NamespacedName: {a, &sctp}, b.Name.NamespacedName: {b}}}
	sync := func(full bool, changed ...*dataplane.ServicePort) {
		t.Helper()
		req := dataplane.SyncRequest{State: st, Full: full, Changed: map[types.NamespacedName]struct{}{}}
		for _, c := range changed {
			req.Changed[c.Name.NamespacedName] = struct{}{}
		}
		if err := s.Sync(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}

	sync(true)
	if !routes.has(a.ClusterIPs[0], b.ClusterIPs[0], lb) {
		t.Fatalf("after the full sync, routes %v (the leftover 10.96.9.9 must go)", routes)
	}
	if sysctls["net/ipv4/conf/all/arp_ignore"] != "1" || sysctls["net/ipv4/conf/all/arp_announce"] != "2" {
		t.Errorf("strict ARP not set: %v", sysctls)
	}
	if got := proxy.Services(); len(got) != 2 {
		t.Errorf("the proxy serves %v, want both Services' TCP ports (none is annotated)", got)
	}
	if got := testutil.ToFloat64(proxy.metrics.unserved); got != 1 {
		t.Errorf("herald_userspace_unserved_ports = %v, want 1 (a's SCTP port)", got)
	}
	delete(st.Services, a.Name.NamespacedName)
	sync(false, a)
	if got := testutil.ToFloat64(proxy.metrics.unserved); got != 0 {
		t.Errorf("herald_userspace_unserved_ports = %v after a left, want 0", got)
	}
	if !routes.has(b.ClusterIPs[0], lb) {
		t.Fatalf("after removing a, routes %v: want b's and the shared LoadBalancer IP", routes)
	}
	delete(routes, lb) // someone removes a route
	if drift, err := s.CheckDrift(context.Background()); err != nil || drift == "" {
		t.Errorf("CheckDrift = %q, %v; want the missing route reported", drift, err)
	}
	delete(st.Services, b.Name.NamespacedName)
	sync(false, b)
	if len(routes) != 0 || len(proxy.Services()) != 0 {
		t.Fatalf("after removing both, routes %v, proxied %v", routes, proxy.Services())
	}
	if err := s.Cleanup(context.Background()); err != nil || sysctls["net/ipv4/conf/all/arp_ignore"] != "" {
		t.Errorf("cleanup: %v, sysctls %v; want them as they were", err, sysctls)
	}
}
