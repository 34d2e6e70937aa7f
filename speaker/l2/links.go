package l2

import (
	"context"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkSource lists the interfaces the speaker may answer on and says when they change. Netlink
// is the real one; tests use a fake.
type LinkSource interface {
	// Usable lists links that are up with carrier, ARP-capable, and not a bridge or bond member
	// (answering on a member port answers with the wrong MAC; the bridge or bond answers instead).
	Usable() ([]Link, error)
	// Changes signals (coalesced) that links or addresses may have changed.
	Changes(ctx context.Context) <-chan struct{}
}

// NetlinkLinks reads the links of the current network namespace.
type NetlinkLinks struct{}

// Usable implements LinkSource.
func (NetlinkLinks) Usable() ([]Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	var out []Link
	for _, l := range links {
		a := l.Attrs()
		if !usable(a, byIndex[a.MasterIndex]) {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		link := Link{Name: a.Name}
		for _, ad := range addrs {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok || isHeld(ad) { // a held IP is not a subnet of the link
				continue
			}
			ones, _ := ad.Mask.Size()
			link.Prefixes = append(link.Prefixes, netip.PrefixFrom(ip.Unmap(), ones))
		}
		slices.SortFunc(link.Prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		out = append(out, link)
	}
	slices.SortFunc(out, func(a, b Link) int { return cmpString(a.Name, b.Name) })
	return out, nil
}

func usable(a *netlink.LinkAttrs, master netlink.Link) bool {
	if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 || a.RawFlags&unix.IFF_NOARP != 0 {
		return false
	}
	// Carrier: a veth whose peer went down, or a NIC with its cable pulled, is "up" but not running.
	if a.RawFlags&unix.IFF_LOWER_UP == 0 || (a.OperState != netlink.OperUp && a.OperState != netlink.OperUnknown) {
		return false
	}
	if master != nil {
		switch master.Type() {
		case "bridge", "bond":
			return false
		}
	}
	return len(a.HardwareAddr) == 6
}

// Changes implements LinkSource with netlink link and address subscriptions.
func (NetlinkLinks) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	_ = netlink.LinkSubscribe(linkCh, done)
	_ = netlink.AddrSubscribe(addrCh, done)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-linkCh:
				if !ok {
					return
				}
				signal()
			case _, ok := <-addrCh:
				if !ok {
					return
				}
				signal()
			}
		}
	}()
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
