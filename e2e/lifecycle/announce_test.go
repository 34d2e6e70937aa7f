package lifecycle

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// announcement is a gratuitous ARP or an unsolicited Neighbor Advertisement the segment's client
// received: a node saying it answers for Addr now (a new owner's burst), from MAC, read At.
type announcement struct {
	At   time.Time
	Addr netip.Addr
	MAC  string
}

const (
	etherTypeAll  = 0x0003 // ETH_P_ALL
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
)

// watchAnnouncements records, for as long as the load runs, every gratuitous ARP and unsolicited
// Neighbor Advertisement for an L2 target's address that reaches the client's eth0: what a client
// on the segment acts on when an address fails over, without the probes' 100 ms spacing. The
// packet socket is opened in the client's namespace (nothing in the machine's own); the time is
// taken when the read returns, so it is at most late by this goroutine's scheduling.
func (ld *load) watchAnnouncements(ctx context.Context) {
	addrs := map[netip.Addr]bool{}
	for _, t := range ld.targets {
		if !t.BGP {
			addrs[t.Addr.Addr()] = true
		}
	}
	client := ld.l.Topology.Host(lab.HostClient)
	var conn *packet.Conn
	err := netnsrun.Do(client.Netns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, etherTypeAll, nil)
		return err
	})
	if err != nil {
		ld.add(ld.targets[0], func(c *counts) { c.Errors["announcement capture: "+err.Error()]++ })
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		n, _, err := conn.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				ld.add(ld.targets[0], func(c *counts) { c.Errors["announcement capture: "+err.Error()]++ })
			}
			continue
		}
		if a, ok := parseAnnouncement(buf[:n]); ok && addrs[a.Addr] {
			a.At = at
			ld.mu.Lock()
			ld.announced = append(ld.announced, a)
			ld.mu.Unlock()
		}
	}
}

// parseAnnouncement reads an Ethernet frame sent to broadcast or multicast: a gratuitous ARP
// (sender and target protocol address equal) or an ICMPv6 Neighbor Advertisement (type 136, no
// extension header). Answers to the client's own probes are unicast and are left out.
func parseAnnouncement(f []byte) (announcement, bool) {
	if len(f) < 14 || f[0]&1 == 0 {
		return announcement{}, false
	}
	mac := net.HardwareAddr(f[6:12]).String()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeARP:
		arp := f[14:]
		if len(arp) < 28 || binary.BigEndian.Uint16(arp[2:4]) != 0x0800 || arp[4] != 6 || arp[5] != 4 {
			return announcement{}, false
		}
		spa, tpa := netip.AddrFrom4([4]byte(arp[14:18])), netip.AddrFrom4([4]byte(arp[24:28]))
		return announcement{Addr: spa, MAC: mac}, spa == tpa
	case etherTypeIPv6:
		ip := f[14:]
		if len(ip) < 40+24 || ip[6] != 58 || ip[40] != 136 {
			return announcement{}, false
		}
		return announcement{Addr: netip.AddrFrom16([16]byte(ip[48:64])), MAC: mac}, true
	}
	return announcement{}, false
}

// FirstAnnouncement returns the first announcement of addr after from by a MAC other than not's.
func (ld *load) FirstAnnouncement(addr netip.Addr, from time.Time, not string) (announcement, bool) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, a := range ld.announced {
		if a.Addr == addr && a.At.After(from) && a.MAC != not {
			return a, true
		}
	}
	return announcement{}, false
}

// cutPort takes host's switch port down as lab.CutLink does, but from this process (netlink in
// the switch's namespace) and returns when the kernel did it: a failover is timed from there,
// not from before an `ip` command started.
func cutPort(l *lab.Lab, host string) (time.Time, error) {
	h, err := l.Host(host)
	if err != nil {
		return time.Time{}, err
	}
	var at time.Time
	err = netnsrun.Do(l.Topology.Host(lab.HostSwitch).Netns, func() error {
		link, err := netlink.LinkByName(h.Port)
		if err != nil {
			return err
		}
		before := time.Now()
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		// The port is down once the call returns; it took a few microseconds.
		at = before.Add(time.Since(before) / 2)
		return nil
	})
	return at, err
}
