package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestParseNodePortAddresses(t *testing.T) {
	st := &State{NodeIPs: []netip.Addr{netip.MustParseAddr("10.0.1.1")}}
	for _, c := range []struct {
		flag     string
		v4, v6   []netip.Prefix
		parseErr bool
	}{
		{flag: "primary", v4: prefixes("10.0.1.1/32")}, // no IPv6 node IP: every IPv6 address
		{flag: "10.0.0.0/8, 10.1.0.0/16,fd00::/8", v4: prefixes("10.0.0.0/8"), v6: prefixes("fd00::/8")},
		{flag: "0.0.0.0/0,::/0", v4: prefixes("0.0.0.0/0"), v6: prefixes("::/0")},
		{flag: "10.0.0.1", parseErr: true},
		{flag: "", parseErr: true},
	} {
		n, err := ParseNodePortAddresses(c.flag)
		if (err != nil) != c.parseErr {
			t.Errorf("%q: error %v, want error %v", c.flag, err, c.parseErr)
			continue
		}
		if err != nil {
			continue
		}
		if got := n.Prefixes(st, false); !slices.Equal(got, c.v4) {
			t.Errorf("%q: IPv4 %v, want %v", c.flag, got, c.v4)
		}
		if got := n.Prefixes(st, true); !slices.Equal(got, c.v6) {
			t.Errorf("%q: IPv6 %v, want %v", c.flag, got, c.v6)
		}
	}
}

// The tracker takes the node's primary IPs as kube-proxy does and merges the ServiceCIDR objects.
func TestTrackerNodeIPsAndServiceCIDRs(t *testing.T) {
	tr := NewChangeTracker("n1")
	tr.OnNodeUpdate(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
		{Type: v1.NodeHostName, Address: "n1"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.1"},
		{Type: v1.NodeInternalIP, Address: "fd00:1::1"},
		{Type: v1.NodeInternalIP, Address: "10.0.1.1"},
		{Type: v1.NodeInternalIP, Address: "10.0.1.9"},
	}}})
	tr.OnServiceCIDRUpdate(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16", "fd00:96::/108"}}})
	tr.OnServiceCIDRUpdate(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "inner"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.8.0/24"}}})
	tr.OnServiceCIDRUpdate(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.200.0.0/24"}}})
	var st State
	tr.Apply(&st)
	if want := []netip.Addr{netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("fd00:1::1")}; !slices.Equal(st.NodeIPs, want) {
		t.Errorf("node IPs %v, want %v", st.NodeIPs, want)
	}
	if want := prefixes("10.96.0.0/16", "10.200.0.0/24", "fd00:96::/108"); !slices.Equal(st.ServiceCIDRs, want) {
		t.Errorf("Service CIDRs %v, want %v", st.ServiceCIDRs, want)
	}
	tr.OnServiceCIDRDelete(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"}})
	tr.Apply(&st)
	if want := prefixes("10.96.0.0/16", "fd00:96::/108"); !slices.Equal(st.ServiceCIDRs, want) {
		t.Errorf("after a delete: Service CIDRs %v, want %v", st.ServiceCIDRs, want)
	}
}

// A change of the node's IPs or of the ServiceCIDRs alone reaches the backend (an incremental
// sync with no Service changed: the backend's node-level rules follow).
func TestProxySyncsNodeLevelChanges(t *testing.T) {
	ctx := context.Background()
	be := &fakeBackend{}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: be, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, change := range []func(){
		func() {
			p.tracker.OnNodeUpdate(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
				Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.1.1"}}}})
		},
		func() {
			p.tracker.OnServiceCIDRUpdate(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
				Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}})
		},
	} {
		n := len(be.syncs)
		change()
		if err := p.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if len(be.syncs) != n+1 || be.last(t).full {
			t.Fatalf("after a node-level change: %d backend syncs (want %d), last %+v (want incremental)", len(be.syncs), n+1, be.last(t))
		}
		// Nothing changed since: no sync reaches the backend.
		if err := p.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if len(be.syncs) != n+1 {
			t.Fatalf("a sync without changes reached the backend")
		}
	}
}
