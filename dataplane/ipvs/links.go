package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DummyLinkName is the link holding every Service IP (ClusterIP, LoadBalancer ingress IP,
// externalIP): IPVS only sees packets addressed to the node itself.
const DummyLinkName = "herald-ipvs0"

// Links is the link and address access the backend needs; tests use a fake.
type Links interface {
	// EnsureDummy creates the dummy link if it is missing.
	EnsureDummy() error
	// DummyAddrs lists the addresses on the dummy link (none when it does not exist).
	DummyAddrs() ([]netip.Addr, error)
	AddDummyAddr(netip.Addr) error
	DelDummyAddr(netip.Addr) error
	// NodeAddrs lists the node's own unicast addresses (not loopback, link-local or the dummy's):
	// the addresses NodePorts are served on.
	NodeAddrs() ([]netip.Addr, error)
	// DeleteDummy removes the dummy link and with it every Service IP (cleanup).
	DeleteDummy() error
}

// netlinkLinks implements Links with github.com/vishvananda/netlink in one network namespace.
type netlinkLinks struct {
	h *netlink.Handle
}

// NewNetlinkLinks returns Links for the network namespace of the calling process.
func NewNetlinkLinks() (Links, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &netlinkLinks{h: h}, nil
}

func (l *netlinkLinks) dummy() (netlink.Link, error) {
	return l.h.LinkByName(DummyLinkName)
}

func (l *netlinkLinks) EnsureDummy() error {
	if _, err := l.dummy(); err == nil {
		return nil
	}
	// Left down, like kube-proxy's kube-ipvs0: its addresses are still local, and a down NOARP
	// link never answers neighbour requests itself.
	err := l.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: DummyLinkName}})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating dummy link %s: %w", DummyLinkName, err)
	}
	return nil
}

func (l *netlinkLinks) DummyAddrs() ([]netip.Addr, error) {
	link, err := l.dummy()
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, nil
		}
		return nil, err
	}
	addrs, err := l.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func hostAddr(a netip.Addr) *netlink.Addr {
	bits := a.BitLen()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

func (l *netlinkLinks) AddDummyAddr(a netip.Addr) error {
	link, err := l.dummy()
	if err != nil {
		return err
	}
	if err := l.h.AddrAdd(link, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to %s: %w", a, DummyLinkName, err)
	}
	return nil
}

func (l *netlinkLinks) DelDummyAddr(a netip.Addr) error {
	link, err := l.dummy()
	if err != nil {
		return err
	}
	if err := l.h.AddrDel(link, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("removing %s from %s: %w", a, DummyLinkName, err)
	}
	return nil
}

func (l *netlinkLinks) NodeAddrs() ([]netip.Addr, error) {
	links, err := l.h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, link := range links {
		attrs := link.Attrs()
		if attrs.Name == DummyLinkName || attrs.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := l.h.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ok && ip.Unmap().IsGlobalUnicast() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

func (l *netlinkLinks) DeleteDummy() error {
	link, err := l.dummy()
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return err
	}
	return l.h.LinkDel(link)
}
