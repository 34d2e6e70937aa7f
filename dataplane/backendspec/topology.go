package backendspec

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is a namespace behind the node: a client or a backend (pod).
type Host struct {
	Name string
	NS   netns.NsHandle
	// Addrs are the host's addresses on its link; a client has several so tests can pick a source.
	Addrs []netip.Addr
	// Gateway is the node's address on the host's link (the host's default route).
	Gateway netip.Addr
}

// Topology is the node (this process's namespace) with one client and some backends.
type Topology struct {
	Client   *Host
	Backends []*Host
	// NodeIP is the node's address facing the client: NodePorts are reached on it.
	NodeIP netip.Addr
}

// NewTopology builds a client (10.0.1.2 and 10.0.1.3, a second network 10.0.2.2 on the same link)
// and n backends (10.1.<i>.2), each behind its own veth pair with the node as default gateway, and
// turns on forwarding in the node namespace. Everything goes away with the test process.
func NewTopology(t *testing.T, backends int) *Topology {
	t.Helper()
	if !InNodeNetns() {
		skipOrFail(t, "needs root and its own node network namespace (run as root: TestMain uses RunInNodeNetns)")
	}
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile("/proc/sys/"+s, []byte("1"), 0o644); err != nil {
			t.Fatalf("sysctl %s: %v", s, err)
		}
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	top := &Topology{NodeIP: netip.MustParseAddr("10.0.1.1")}
	top.Client = addHost(t, "client", "herald-sc",
		[]netip.Prefix{netip.MustParsePrefix("10.0.1.1/24"), netip.MustParsePrefix("10.0.2.1/24")},
		[]netip.Prefix{netip.MustParsePrefix("10.0.1.2/24"), netip.MustParsePrefix("10.0.1.3/24"), netip.MustParsePrefix("10.0.2.2/24")})
	for i := 1; i <= backends; i++ {
		top.Backends = append(top.Backends, addHost(t, fmt.Sprintf("backend%d", i), fmt.Sprintf("herald-sb%d", i),
			[]netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.1.%d.1/24", i))},
			[]netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.1.%d.2/24", i))}))
	}
	return top
}

// addHost creates a namespace joined to the node by a veth pair (nodeLink on the node's side).
func addHost(t *testing.T, name, nodeLink string, nodeAddrs, hostAddrs []netip.Prefix) *Host {
	t.Helper()
	ns, err := newNetns()
	if err != nil {
		t.Fatalf("%s: new namespace: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	// A stale link from an earlier test in this process would make LinkAdd fail.
	if old, err := netlink.LinkByName(nodeLink); err == nil {
		_ = netlink.LinkDel(old)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nodeLink}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("%s: veth: %v", name, err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	if err := configureLink(&netlink.Handle{}, nodeLink, nodeAddrs); err != nil {
		t.Fatalf("%s: node side: %v", name, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer h.Close()
	if err := configureLink(h, "eth0", hostAddrs); err != nil {
		t.Fatalf("%s: host side: %v", name, err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	gw := nodeAddrs[0].Addr()
	eth0, _ := h.LinkByName("eth0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
		t.Fatalf("%s: default route: %v", name, err)
	}
	host := &Host{Name: name, NS: ns, Gateway: gw}
	for _, p := range hostAddrs {
		host.Addrs = append(host.Addrs, p.Addr())
	}
	return host
}

func configureLink(h *netlink.Handle, name string, addrs []netip.Prefix) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("address %s: %w", p, err)
		}
	}
	return h.LinkSetUp(link)
}

// RequireReal reports whether HERALD_REQUIRE_REAL=1: a missing prerequisite is then a failure.
func RequireReal() bool { return os.Getenv("HERALD_REQUIRE_REAL") == "1" }

// skipOrFail skips, or fails when HERALD_REQUIRE_REAL=1 so CI can never pass by skipping.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if RequireReal() {
		t.Fatalf("prerequisite missing (HERALD_REQUIRE_REAL=1): %s", why)
	}
	t.Skip(why)
}
