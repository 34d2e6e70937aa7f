package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// TestKernelConntrackDeletesOnlyTheServicesStaleFlows (issue 16, item 7) runs the filters of
// an endpoint's removal against the kernel's conntrack table in a namespace: the flow a client
// sent to the Service and that was translated to the removed endpoint goes; a flow between the
// client and the pod directly on the same port, and a flow to another Service that the same pod
// serves, stay (the filters used to name only the port and the pod, and deleted all three).
func TestKernelConntrackDeletesOnlyTheServicesStaleFlows(t *testing.T) {
	netnstest.Require(t, "conntrack")
	l := netnstest.New(t, "herald-sr-ct-")
	ns := l.AddNS("node")
	flows := []struct {
		name         string
		dst          string
		sport, dport int
		replySport   int
		stale        bool
	}{
		{"to the Service, translated to the removed endpoint", "10.96.0.10", 4000, 53, 5353, true},
		{"to the pod directly, same port", "10.1.0.1", 4001, 53, 53, false},
		{"to another Service of the same pod", "10.96.0.20", 4002, 53, 5353, false},
	}
	for _, f := range flows {
		l.Run(ns, "conntrack", "-I", "-p", "udp", "-s", "172.31.1.2", "-d", f.dst,
			"--sport", fmt.Sprint(f.sport), "--dport", fmt.Sprint(f.dport),
			"-r", "10.1.0.1", "-q", "172.31.1.2", "--reply-port-src", fmt.Sprint(f.replySport), "--reply-port-dst", fmt.Sprint(f.sport),
			"-t", "120", "-u", "SEEN_REPLY")
	}
	port := func(eps ...string) []*ServicePort {
		p := &ServicePort{Name: ServicePortName{Port: "dns", Protocol: v1.ProtocolUDP}, Protocol: v1.ProtocolUDP, Port: 53,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, HasEndpoints: true}
		for _, e := range eps {
			p.ClusterEndpoints = append(p.ClusterEndpoints, Endpoint{Addr: netip.MustParseAddr(e), Port: 5353, Ready: true, Serving: true})
		}
		p.ExternalEndpoints = p.ClusterEndpoints
		return []*ServicePort{p}
	}
	filters := staleUDPFilters(port("10.1.0.1", "10.1.0.2"), port("10.1.0.2"))
	if err := netnsrun.Do(ns, func() error { return KernelConntrack{}.DeleteUDP(filters) }); err != nil {
		t.Fatal(err)
	}
	left := l.Run(ns, "conntrack", "-L", "-p", "udp")
	for _, f := range flows {
		present := strings.Contains(left, fmt.Sprintf("sport=%d dport=%d", f.sport, f.dport))
		if present == f.stale {
			t.Errorf("flow %s: present %v after the cleanup, want %v\n%s", f.name, present, !f.stale, left)
		}
	}
}
