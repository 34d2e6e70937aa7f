package l2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Graceful restart. A speaker that stops for a restart (a rolling upgrade: SIGTERM, then a new
// pod on the same node seconds later) should move none of its IPs: every move costs clients a
// stale-ARP window and breaks the established connections of externalTrafficPolicy Local.
//
//   - The stopping speaker adds each IP it owns to the interface it answers on, as a host address
//     with a lifetime of RestartHold and no prefix route. The kernel then answers ARP/NDP for it
//     with the node's MAC (the same MAC the speaker answered with), and removes the address by
//     itself when the lifetime ends: the node answers for a bounded time even if no speaker ever
//     comes back.
//   - Its last heartbeats carry HoldFor: its peers keep its claims for HoldFor plus HoldMargin
//     after its last heartbeat (longer than the kernel keeps the addresses, so no two MACs ever
//     answer), and take nothing it holds meanwhile.
//   - Peers keep those claims even if their election never ran while the last heartbeats were
//     in (membership's View.Departed keeps a dead peer's last state): a busy node's rounds can
//     miss those moments.
//   - The restarted speaker finds the held addresses (Handover.Held), claims them in its first
//     heartbeats, still with HoldFor (what is left of the kernel's lifetime: were it declared
//     dead while it starts, its peers must not answer beside the kernel), answers for them itself
//     once it has its configuration and quorum, removes them from the kernel, and only then
//     claims them without HoldFor.
//
// A crash (SIGKILL, node loss) leaves no held addresses and sends no HoldFor: peers fail over
// after DeadAfter as before. Peers that do not honour holds (an older speaker during an upgrade to
// this one) would take the IPs at once, while the kernel still answered for them, so a speaker
// holds only when every alive peer says it honours holds.

// HoldMargin is added by peers to a stopping speaker's HoldFor: the kernel removes an expired
// address within about a second (its lifetime has whole seconds and the expiry work is rounded up
// to the next second), so this margin keeps the peers from answering before it is gone.
const HoldMargin = 2 * time.Second

// Handover is the kernel's side of a graceful restart.
type Handover interface {
	// Hold makes the kernel answer for ip on link until lifetime (rounded up to whole seconds)
	// has passed.
	Hold(link string, ip netip.Addr, lifetime time.Duration) error
	// Held lists the IPs a previous speaker left held, with their links and how long the kernel
	// still answers for them.
	Held() (map[netip.Addr]HeldAddr, error)
	// Release stops the kernel answering for ip on link.
	Release(link string, ip netip.Addr) error
}

// HeldAddr is where an IP is held and until when.
type HeldAddr struct {
	Link string
	// Lifetime is what is left of the hold (whole seconds, as the kernel counts it).
	Lifetime time.Duration
}

// NetlinkHandover holds IPs as addresses of the current network namespace's links.
type NetlinkHandover struct{}

// heldFlags mark a held address: no prefix route (it is a host address, not a subnet of the
// link), and for IPv6 no duplicate address detection (the address is on the segment already: it
// is this node's, and DAD would hold it back for a second).
func heldFlags(ip netip.Addr) int {
	if ip.Is6() {
		return unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_NODAD
	}
	return unix.IFA_F_NOPREFIXROUTE
}

func hostAddr(ip netip.Addr, lifetime time.Duration) *netlink.Addr {
	bits := ip.BitLen()
	secs := int((lifetime + time.Second - 1) / time.Second)
	return &netlink.Addr{
		IPNet:       &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Flags:       heldFlags(ip),
		ValidLft:    secs,
		PreferedLft: secs,
	}
}

// Hold implements Handover.
func (NetlinkHandover) Hold(link string, ip netip.Addr, lifetime time.Duration) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(l, hostAddr(ip, lifetime)); err != nil {
		return fmt.Errorf("hold %s on %s: %w", ip, link, err)
	}
	return nil
}

// Release implements Handover.
func (NetlinkHandover) Release(link string, ip netip.Addr) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(l, hostAddr(ip, 0)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("release %s on %s: %w", ip, link, err)
	}
	return nil
}

// Held implements Handover.
func (NetlinkHandover) Held() (map[netip.Addr]HeldAddr, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]HeldAddr{}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok && isHeld(ad) {
				// ValidLft is what is left of the lifetime, in seconds.
				out[ip.Unmap()] = HeldAddr{Link: l.Attrs().Name, Lifetime: time.Duration(ad.ValidLft) * time.Second}
			}
		}
	}
	return out, nil
}

// infiniteLifetime is the kernel's "forever" (INFINITY_LIFE_TIME).
const infiniteLifetime = 0xFFFFFFFF

// isHeld tells a held address from the link's own: a host address with the held flags and a
// finite lifetime. The node's configured addresses are never all three (a DHCP lease has a
// lifetime but a subnet and its prefix route).
func isHeld(ad netlink.Addr) bool {
	ip, ok := netip.AddrFromSlice(ad.IP)
	if !ok || ad.IPNet == nil {
		return false
	}
	ones, bits := ad.Mask.Size()
	want := heldFlags(ip.Unmap())
	return ones == bits && ad.Flags&want == want && ad.ValidLft > 0 && ad.ValidLft != infiniteLifetime
}

// ReleaseHeld releases every held IP (the speaker's --cleanup: Herald is being removed).
func ReleaseHeld(h Handover) error {
	held, err := h.Held()
	if err != nil {
		return err
	}
	var errs []error
	for ip, at := range held {
		errs = append(errs, h.Release(at.Link, ip))
	}
	return errors.Join(errs...)
}
