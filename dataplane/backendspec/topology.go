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

	"github.com/heraldlb/herald/internal/testenv"
)

// Host is a namespace behind the node: a client or a backend (pod).
type Host struct {
	Name string
	NS   netns.NsHandle
	// Addrs are the host's IPv4 addresses on its link; a client has several so tests can pick a
	// source. Addrs6 are its IPv6 addresses, likewise.
	Addrs  []netip.Addr
	Addrs6 []netip.Addr
}

// Topology is the node (this process's namespace) with one client and some backends.
type Topology struct {
	Client   *Host
	Backends []*Host
	// NodeIP and NodeIP6 are the node's addresses facing the client: NodePorts are reached on them.
	NodeIP, NodeIP6 netip.Addr
}

// NewTopology builds a client (10.0.1.2 and 10.0.1.3, a second network 10.0.2.2 on the same link;
// fd00:1::2 and fd00:1::3) and n backends (10.1.<i>.2, fd01:<i>::2), each behind its own veth pair
// with the node as default gateway of both families, and turns on forwarding in the node
// namespace. Everything goes away with the test process.
func NewTopology(t *testing.T, backends int) *Topology {
	t.Helper()
	if !InNodeNetns() {
		testenv.Missing(t, "needs root and its own node network namespace (run as root: TestMain uses RunInNodeNetns)")
	}
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile("/proc/sys/"+s, []byte("1"), 0o644); err != nil {
			t.Fatalf("sysctl %s: %v", s, err)
		}
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	top := &Topology{NodeIP: netip.MustParseAddr("10.0.1.1"), NodeIP6: netip.MustParseAddr("fd00:1::1")}
	top.Client = addHost(t, "client", "herald-sc",
		prefixes("10.0.1.1/24", "10.0.2.1/24", "fd00:1::1/64"),
		prefixes("10.0.1.2/24", "10.0.1.3/24", "10.0.2.2/24", "fd00:1::2/64", "fd00:1::3/64"))
	for i := 1; i <= backends; i++ {
		top.Backends = append(top.Backends, addHost(t, fmt.Sprintf("backend%d", i), fmt.Sprintf("herald-sb%d", i),
			prefixes(fmt.Sprintf("10.1.%d.1/24", i), fmt.Sprintf("fd01:%d::1/64", i)),
			prefixes(fmt.Sprintf("10.1.%d.2/24", i), fmt.Sprintf("fd01:%d::2/64", i))))
	}
	return top
}

// FirstAddr is the host's first address of dst's family: the default source towards dst.
func (h *Host) FirstAddr(dst netip.Addr) netip.Addr {
	if dst.Is6() {
		return h.Addrs6[0]
	}
	return h.Addrs[0]
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// addHost creates a namespace joined to the node by a veth pair (nodeLink on the node's side),
// with a default route of each family through the node's first address of that family.
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
	host := &Host{Name: name, NS: ns}
	eth0, _ := h.LinkByName("eth0")
	routed := map[bool]bool{}
	for _, p := range nodeAddrs {
		gw := p.Addr()
		if routed[gw.Is6()] {
			continue
		}
		routed[gw.Is6()] = true
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
			t.Fatalf("%s: default route via %s: %v", name, gw, err)
		}
	}
	for _, p := range hostAddrs {
		if p.Addr().Is6() {
			host.Addrs6 = append(host.Addrs6, p.Addr())
		} else {
			host.Addrs = append(host.Addrs, p.Addr())
		}
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
