package dataplane

import (
	"net/netip"
	"slices"
	"testing"
)

// NodePorts (IPVS virtual servers, the userspace proxy's and the healthCheckNodePort listeners)
// go only on the addresses --nodeport-addresses names (issue 16 item 5).
func TestNodePortAddressesSelect(t *testing.T) {
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	local := a("10.0.0.1", "10.0.1.1", "192.168.5.5", "fd00::1", "fd00:1::1")
	st := &State{NodeIPs: a("10.0.1.1")}
	for _, c := range []struct {
		np        NodePortAddresses
		want      []netip.Addr
		restricts bool
	}{
		{NodePortAddresses{}, local, false},
		// No IPv6 node IP: every IPv6 address, as kube-proxy.
		{NodePortAddresses{Primary: true}, a("10.0.1.1", "fd00::1", "fd00:1::1"), true},
		{NodePortAddresses{CIDRs: prefixes("10.0.0.0/8", "fd00:1::/64")}, a("10.0.0.1", "10.0.1.1", "fd00:1::1"), true},
		// A family's whole range is every address of it (kube-proxy's matchAll).
		{NodePortAddresses{CIDRs: prefixes("0.0.0.0/0", "::/0")}, local, false},
		{NodePortAddresses{CIDRs: prefixes("0.0.0.0/0", "fd00:1::/64")}, a("10.0.0.1", "10.0.1.1", "192.168.5.5", "fd00:1::1"), true},
	} {
		if got := c.np.Select(local, st); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.np, got, c.want)
		}
		if got := c.np.Restricts(st); got != c.restricts {
			t.Errorf("%+v: Restricts %v, want %v", c.np, got, c.restricts)
		}
	}
}
