package dataplane

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// NodeAddrs lists the node's own unicast addresses (global unicast: not loopback, not link-local)
// on every link but loopback ones and the one named exclude (the IPVS backend's dummy link, whose
// addresses are Service IPs), through h (nil: the calling thread's network namespace). The IPVS
// backend expands NodePorts over them; the userspace proxy and the healthCheckNodePort listeners
// bind them (NodePortAddresses.Select keeps the ones NodePorts are open on).
func NodeAddrs(h *netlink.Handle, exclude string) ([]netip.Addr, error) {
	if h == nil {
		h = &netlink.Handle{} // netlink's package-level functions use one such handle
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	skip := map[int]bool{}
	for _, link := range links {
		if attrs := link.Attrs(); (exclude != "" && attrs.Name == exclude) || attrs.Flags&net.FlagLoopback != 0 {
			skip[attrs.Index] = true
		}
	}
	// One dump of every address, rather than one per link (each of which is a full dump too).
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if skip[a.LinkIndex] {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
