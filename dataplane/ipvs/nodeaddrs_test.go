package ipvs

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/heraldlb/herald/dataplane"
)

// NodePort virtual servers go only on the addresses --nodeport-addresses names (issue 16 item 5).
func TestNodePortAddrs(t *testing.T) {
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	local := a("10.0.0.1", "10.0.1.1", "192.168.5.5", "fd00::1", "fd00:1::1")
	st := &dataplane.State{NodeIPs: a("10.0.1.1")}
	for _, c := range []struct {
		np   dataplane.NodePortAddresses
		want []netip.Addr
	}{
		{dataplane.NodePortAddresses{}, local},
		// No IPv6 node IP: every IPv6 address, as kube-proxy.
		{dataplane.NodePortAddresses{Primary: true}, a("10.0.1.1", "fd00::1", "fd00:1::1")},
		{dataplane.NodePortAddresses{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:1::/64")}},
			a("10.0.0.1", "10.0.1.1", "fd00:1::1")},
	} {
		if got := nodePortAddrs(local, c.np, st); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.np, got, c.want)
		}
	}
}
