package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/dataplane"
)

// DummyLinkName is the link that carries every Service IP (ClusterIP, LoadBalancer ingress IP,
// externalIP) as a local route: IPVS only sees packets addressed to the node itself.
const DummyLinkName = "herald-ipvs0"

// routeProtocol marks Herald's local routes (the rtm_protocol field; 72 is "H" and unassigned), so
// they are told apart from the kernel's routes for the link's own addresses.
const routeProtocol = netlink.RouteProtocol(72)

// Links is the link and route access the backend needs; tests use a fake.
//
// Service IPs are local routes (`ip route show table local dev herald-ipvs0`), not addresses on
// the link as kube-proxy's kube-ipvs0 has them: the kernel adds and removes a route in O(log n),
// while every address added to one link walks that link's address list, and every address dump
// (which routing daemons and this backend's NodeAddrs do) returns them all. Measured in the VM at
// 10,000 Services: about 19 s to add the addresses against 7 s for the routes. The node treats
// both as its own (packets reach LOCAL_IN, where IPVS takes them); strict-ARP sysctls keep it from
// answering ARP for either.
type Links interface {
	// EnsureDummy creates the dummy link if it is missing and sets it up.
	EnsureDummy() error
	// ServiceIPs lists the Service IPs routed to the dummy link (none when it does not exist).
	ServiceIPs() ([]netip.Addr, error)
	AddServiceIP(netip.Addr) error
	DelServiceIP(netip.Addr) error
	// NodeAddrs lists the node's own unicast addresses (not loopback, link-local or the dummy's):
	// the addresses NodePorts are served on.
	NodeAddrs() ([]netip.Addr, error)
	// DeleteDummy removes the dummy link and with it every Service IP (cleanup); on lo
	// (NewLoopbackLinks), only the Service IPs.
	DeleteDummy() error
}

// netlinkLinks implements Links with github.com/vishvananda/netlink in one network namespace.
type netlinkLinks struct {
	h    *netlink.Handle
	name string // the link the Service IPs are routed to
	// loopback: the link is lo, which is not Herald's to create or delete: EnsureDummy does
	// nothing and DeleteDummy removes only Herald's routes.
	loopback bool
}

// NewNetlinkLinks returns Links on DummyLinkName for the network namespace of the calling process.
func NewNetlinkLinks() (Links, error) { return newNetlinkLinks(DummyLinkName, false) }

// NewLoopbackLinks returns Links whose Service IPs are local routes on lo, in the network
// namespace of the calling process: for the userspace proxy's --dataplane=userspace, which needs
// the node to take the Service IPs as its own as IPVS does, on kernels that may lack the dummy
// link type too (lo always exists).
func NewLoopbackLinks() (Links, error) { return newNetlinkLinks("lo", true) }

func newNetlinkLinks(name string, loopback bool) (Links, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &netlinkLinks{h: h, name: name, loopback: loopback}, nil
}

func (l *netlinkLinks) dummy() (netlink.Link, error) {
	return l.h.LinkByName(l.name)
}

func isLinkNotFound(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound)
}

func (l *netlinkLinks) EnsureDummy() error {
	if l.loopback {
		return nil
	}
	link, err := l.dummy()
	if isLinkNotFound(err) {
		err = l.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: l.name}})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating dummy link %s: %w", l.name, err)
		}
		link, err = l.dummy()
	}
	if err != nil {
		return err
	}
	// Routes through a down link are dead. A dummy link sends nothing, so up is harmless.
	return l.h.LinkSetUp(link)
}

func (l *netlinkLinks) ServiceIPs() ([]netip.Addr, error) {
	link, err := l.dummy()
	if isLinkNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	routes, err := l.h.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_LOCAL, Protocol: routeProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, r := range routes {
		if r.Type != unix.RTN_LOCAL || r.Dst == nil {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != bits {
			continue
		}
		if ip, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// localRoute is "local <a> dev herald-ipvs0 table local proto 72 scope host" (or the link named).
func (l *netlinkLinks) localRoute(a netip.Addr) (*netlink.Route, error) {
	link, err := l.dummy()
	if err != nil {
		return nil, err
	}
	bits := a.BitLen()
	return &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)},
		Type:      unix.RTN_LOCAL,
		Table:     unix.RT_TABLE_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  routeProtocol,
	}, nil
}

func (l *netlinkLinks) AddServiceIP(a netip.Addr) error {
	r, err := l.localRoute(a)
	if err != nil {
		return err
	}
	if err := l.h.RouteReplace(r); err != nil {
		return fmt.Errorf("routing %s to %s: %w", a, l.name, err)
	}
	return nil
}

func (l *netlinkLinks) DelServiceIP(a netip.Addr) error {
	r, err := l.localRoute(a)
	if err != nil {
		return err
	}
	if err := l.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("removing the route of %s: %w", a, err)
	}
	return nil
}

func (l *netlinkLinks) NodeAddrs() ([]netip.Addr, error) {
	exclude := l.name
	if l.loopback {
		exclude = "" // lo is skipped as a loopback link; its routes are no addresses
	}
	return dataplane.NodeAddrs(l.h, exclude)
}

func (l *netlinkLinks) DeleteDummy() error {
	if l.loopback {
		ips, err := l.ServiceIPs()
		if err != nil {
			return err
		}
		var errs []error
		for _, a := range ips {
			errs = append(errs, l.DelServiceIP(a))
		}
		return errors.Join(errs...)
	}
	link, err := l.dummy()
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return l.h.LinkDel(link)
}
