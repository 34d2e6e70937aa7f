package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
)

// ConntrackFilter selects UDP conntrack entries to delete. Unset fields match anything.
type ConntrackFilter struct {
	OrigDst     netip.Addr // original destination (the Service address)
	OrigDstPort uint16     // original destination port (Service port or NodePort)
	ReplySrc    netip.Addr // reply source: the endpoint the entry was translated to
	IPv6        bool
}

// Conntrack deletes conntrack entries. UDP has no connection end, so an entry that points to a
// removed endpoint (or that was made while the Service had none and so was never translated)
// would capture the client's packets for as long as it keeps sending; the proxy clears them.
type Conntrack interface {
	DeleteUDP(filters []ConntrackFilter) error
}

// KernelConntrack is Conntrack on the kernel of the caller's network namespace (netlink).
type KernelConntrack struct{}

// DeleteUDP deletes every UDP entry matching any filter, one table walk per family.
func (KernelConntrack) DeleteUDP(filters []ConntrackFilter) error {
	byFamily := map[netlink.InetFamily][]netlink.CustomConntrackFilter{}
	for _, f := range filters {
		nf := &netlink.ConntrackFilter{}
		if err := nf.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return err
		}
		if f.OrigDst.IsValid() {
			if err := nf.AddIP(netlink.ConntrackOrigDstIP, net.IP(f.OrigDst.AsSlice())); err != nil {
				return err
			}
		}
		if f.OrigDstPort != 0 {
			if err := nf.AddPort(netlink.ConntrackOrigDstPort, f.OrigDstPort); err != nil {
				return err
			}
		}
		if f.ReplySrc.IsValid() {
			if err := nf.AddIP(netlink.ConntrackReplySrcIP, net.IP(f.ReplySrc.AsSlice())); err != nil {
				return err
			}
		}
		fam := netlink.InetFamily(unix.AF_INET)
		if f.IPv6 {
			fam = unix.AF_INET6
		}
		byFamily[fam] = append(byFamily[fam], nf)
	}
	for fam, fs := range byFamily {
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, fs...); err != nil {
			return fmt.Errorf("deleting stale UDP conntrack entries: %w", err)
		}
	}
	return nil
}

// staleUDPFilters lists the conntrack entries a change of one Service leaves stale: flows to
// endpoints that no longer serve, flows to a port that had no endpoint at all (those were
// never translated and would keep bypassing the new rules), and flows of a port that leaves the
// userspace proxy (redirected to its closed listener). Like kube-proxy, flows to an endpoint
// that still serves (a terminating one, say) are kept. Each filter names the Service address
// the flow was sent to, so it never hits an unrelated flow that merely comes back from the same
// pod (a client talking to the pod directly, another Service's port).
func staleUDPFilters(old, cur []*ServicePort) []ConntrackFilter {
	curByName := map[ServicePortName]*ServicePort{}
	for _, p := range cur {
		curByName[p.Name] = p
	}
	var out []ConntrackFilter
	for _, o := range old {
		if o.Protocol != v1.ProtocolUDP {
			continue
		}
		// An address still serving on any port of this Service port keeps its flows: the
		// filter cannot tell the endpoint's ports apart (it matches the reply's source address).
		kept := map[netip.Addr]bool{}
		if n := curByName[o.Name]; n != nil {
			for _, e := range slices.Concat(n.ClusterEndpoints, n.ExternalEndpoints) {
				kept[e.Addr] = true
			}
			for _, e := range n.ServingUDP {
				kept[e.Addr()] = true
			}
		}
		vips := slices.Concat(o.ClusterIPs, o.ExternalAddrs())
		gone := map[netip.Addr]bool{}
		for _, e := range slices.Concat(o.ClusterEndpoints, o.ExternalEndpoints) {
			if kept[e.Addr] || gone[e.Addr] {
				continue
			}
			gone[e.Addr] = true
			for _, vip := range vips {
				if vip.Is6() == e.Addr.Is6() {
					out = append(out, ConntrackFilter{OrigDst: vip, OrigDstPort: uint16(o.Port), ReplySrc: e.Addr, IPv6: e.Addr.Is6()})
				}
			}
			if o.NodePort != 0 {
				// The NodePort is reached on any node address: its port and the endpoint
				// translated to name the flow.
				out = append(out, ConntrackFilter{OrigDstPort: uint16(o.NodePort), ReplySrc: e.Addr, IPv6: e.Addr.Is6()})
			}
		}
	}
	oldByName := map[ServicePortName]*ServicePort{}
	for _, p := range old {
		oldByName[p.Name] = p
	}
	for _, n := range cur {
		if n.Protocol != v1.ProtocolUDP || !n.HasEndpoints {
			continue
		}
		// A port leaving the userspace proxy: its flows were redirected to the proxy's
		// listener, which closes; they must find the kernel's rules instead.
		o := oldByName[n.Name]
		if o != nil && o.HasEndpoints && (o.Userspace == nil || n.Userspace != nil) {
			continue
		}
		for _, vip := range slices.Concat(n.ExternalAddrs(), n.ClusterIPs) {
			out = append(out, ConntrackFilter{OrigDst: vip, OrigDstPort: uint16(n.Port), IPv6: vip.Is6()})
		}
		if n.NodePort != 0 {
			out = append(out, ConntrackFilter{OrigDstPort: uint16(n.NodePort)}, ConntrackFilter{OrigDstPort: uint16(n.NodePort), IPv6: true})
		}
	}
	return out
}
