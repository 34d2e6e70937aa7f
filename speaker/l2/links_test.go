package l2

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestUsableLinks(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	up := func() *netlink.LinkAttrs {
		return &netlink.LinkAttrs{Name: "eth0", Flags: net.FlagUp, RawFlags: unix.IFF_UP | unix.IFF_LOWER_UP, OperState: netlink.OperUp, HardwareAddr: mac}
	}
	bridge := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	bond := netlink.NewLinkBond(netlink.LinkAttrs{Name: "bond0"})
	vrf := &netlink.Vrf{LinkAttrs: netlink.LinkAttrs{Name: "vrf0"}}
	for _, tc := range []struct {
		name   string
		modify func(*netlink.LinkAttrs)
		master netlink.Link
		want   bool
	}{
		{"up with carrier", func(*netlink.LinkAttrs) {}, nil, true},
		{"dummy (oper state unknown)", func(a *netlink.LinkAttrs) { a.OperState = netlink.OperUnknown }, nil, true},
		{"admin down", func(a *netlink.LinkAttrs) { a.Flags = 0 }, nil, false},
		{"no carrier", func(a *netlink.LinkAttrs) { a.RawFlags = unix.IFF_UP; a.OperState = netlink.OperDown }, nil, false},
		{"NOARP", func(a *netlink.LinkAttrs) { a.RawFlags |= unix.IFF_NOARP }, nil, false},
		{"loopback", func(a *netlink.LinkAttrs) { a.Flags |= net.FlagLoopback }, nil, false},
		{"bridge member", func(*netlink.LinkAttrs) {}, bridge, false},
		{"bond member", func(*netlink.LinkAttrs) {}, bond, false},
		{"VRF member", func(*netlink.LinkAttrs) {}, vrf, true},
		{"no MAC (tunnel)", func(a *netlink.LinkAttrs) { a.HardwareAddr = nil }, nil, false},
	} {
		a := up()
		tc.modify(a)
		if got := usable(a, tc.master); got != tc.want {
			t.Errorf("%s: usable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
