package nftables

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// setElements lists the keys of a set of the fake's table.
func setElements(t *testing.T, fake *knftables.Fake, set string) []string {
	t.Helper()
	els, err := fake.ListElements(context.Background(), "set", set)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range els {
		out = append(out, e.Key[0])
	}
	slices.Sort(out)
	return out
}

// The node's primary IPs and the Service CIDRs reach their sets on a full sync and follow a
// change with an incremental one (issue 16 items 5 and 6).
func TestNodePortAddressesAndServiceCIDRs(t *testing.T) {
	st := state(svcPort("ns", "a", "10.96.0.10", 80, ep("10.244.1.2", 8080, true)))
	st.NodeIPs = addrs("10.0.1.1", "fd00:1::1")
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/108")}
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	b := NewWithInterface(fake)
	b.SetNodePortAddresses(dataplane.NodePortAddresses{Primary: true})
	if err := b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: all(st), Full: true}); err != nil {
		t.Fatal(err)
	}
	for set, want := range map[string][]string{
		"nodeport-ips4": {"10.0.1.1/32"}, "nodeport-ips6": {"fd00:1::1/128"},
		"service-cidrs4": {"10.96.0.0/16"}, "service-cidrs6": {"fd00:96::/108"},
	} {
		if got := setElements(t, fake, set); !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", set, got, want)
		}
	}

	// The node loses its IPv6 address: that family is open on every address, as in kube-proxy.
	st.NodeIPs = addrs("10.0.1.5")
	st.ServiceCIDRs = st.ServiceCIDRs[:1]
	incremental(t, b, st)
	for set, want := range map[string][]string{
		"nodeport-ips4": {"10.0.1.5/32"}, "nodeport-ips6": {"::/0"},
		"service-cidrs4": {"10.96.0.0/16"}, "service-cidrs6": nil,
	} {
		if got := setElements(t, fake, set); !slices.Equal(got, want) {
			t.Errorf("after the change: %s = %v, want %v", set, got, want)
		}
	}
}
