package nftables

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/internal/netnsrun"
)

// Real-packet tests of the differences from kube-proxy v1.34 fixed for issue 16.

// TestAffinityRefreshedOnEveryConnection (issue 16, item 1): the affinity timeout counts from a
// client's last connection, as in kube-proxy. The client connects at 0 s and at 2 s with a
// timeout of 3 s; at 3.5 s its entry must still be there (it expired at 3 s when the return at
// 2 s did not refresh it).
func TestAffinityRefreshedOnEveryConnection(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-sr-aff-")
	pl.lab.Run(pl.client, "ip", "route", "add", "192.0.2.0/24", "via", "172.31.1.1")
	sticky := svcPort("ns", "sticky", "10.96.0.11", 80, beEP(1, 8080), beEP(2, 8080), beEP(3, 8080))
	sticky.LoadBalancerIPs = addrs("192.0.2.11")
	sticky.AffinityTimeout = 3 * time.Second
	pl.sync(t, state(sticky), true)

	start := time.Now()
	first, _ := pl.mustGet(t, pl.client, "192.0.2.11:80")
	set := affinitySetName(ipv4, sticky, beEPByName(first))
	time.Sleep(2*time.Second - time.Since(start))
	if be, _ := pl.mustGet(t, pl.client, "192.0.2.11:80"); be != first {
		t.Fatalf("the client moved from %s to %s within its timeout", first, be)
	}
	time.Sleep(3500*time.Millisecond - time.Since(start))
	if out := pl.lab.Run(pl.node, "nft", "list", "set", "inet", TableName, set); !strings.Contains(out, "172.31.1.2") {
		t.Fatalf("%v after the first connection and %v after the last, the client's entry is gone: its timeout counted from the first connection\n%s",
			time.Since(start).Round(time.Millisecond), (time.Since(start) - 2*time.Second).Round(time.Millisecond), out)
	}
}

// TestSourceRangesOfOneFamilyLeaveTheOtherOpen (issue 16, item 9): a Service whose
// loadBalancerSourceRanges are all IPv6 keeps its IPv4 LoadBalancer IP open to every client,
// as in kube-proxy; a range of the family still closes it to the others.
func TestSourceRangesOfOneFamilyLeaveTheOtherOpen(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-sr-ranges-")
	for c, gw := range map[string]string{pl.client: "172.31.1.1", pl.c2: "172.31.2.1"} {
		pl.lab.Run(c, "ip", "route", "add", "192.0.2.0/24", "via", gw)
	}
	v6only := svcPort("ns", "v6only", "10.96.0.12", 80, beEP(1, 8080))
	v6only.LoadBalancerIPs = addrs("192.0.2.12")
	v6only.SourceRanges = []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}
	v4 := svcPort("ns", "v4", "10.96.0.13", 80, beEP(1, 8080))
	v4.LoadBalancerIPs = addrs("192.0.2.13")
	v4.SourceRanges = []netip.Prefix{netip.MustParsePrefix("172.31.1.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
	pl.sync(t, state(v6only, v4), true)

	pl.mustGet(t, pl.c2, "192.0.2.12:80") // no IPv4 range: open to every IPv4 client
	pl.mustGet(t, pl.client, "192.0.2.13:80")
	if _, err := getWithin(pl.c2, "192.0.2.13:80", time.Second); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a client outside the IPv4 range: err = %v, want a timeout (dropped)", err)
	}
}

// TestNodeOwnUDPToNodePortWithoutEndpointsIsRefused: the node's own datagram to one of its
// NodePorts whose Service has no endpoint is answered with an ICMP port unreachable
// (ECONNREFUSED on the next read), as under kube-proxy, not failed at the write with EPERM as a
// reject in the output hook does (found by e2e/parity).
func TestNodeOwnUDPToNodePortWithoutEndpointsIsRefused(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-dd-np-")
	empty := svcPort("ns", "empty", "10.96.0.14", 53)
	empty.Protocol, empty.Name.Protocol = v1.ProtocolUDP, v1.ProtocolUDP
	empty.NodePort = 30053
	pl.sync(t, state(empty), true)
	err := netnsrun.Do(pl.node, func() error {
		c, err := net.Dial("udp", "172.31.1.1:30053")
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_, err = c.Read(make([]byte, 64))
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the node's own datagram to a NodePort without endpoints: %v, want ECONNREFUSED", err)
	}
}

// TestUnusedPortOfAClusterIPIsRejected (issue 16 item 6): a connection to a port of a ClusterIP
// that no Service uses is rejected at once, as kube-proxy's cluster-ips-check does, not routed
// on; the Service's own port still answers, from a pod and from the node.
func TestUnusedPortOfAClusterIPIsRejected(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-dd-cip-")
	web := svcPort("ns", "web", "10.96.0.41", 80, beEP(2, 8080))
	pl.sync(t, state(web), true)
	pod := pl.lab.NS("be1")
	for _, ns := range []string{pod, pl.node} {
		pl.mustGet(t, ns, "10.96.0.41:80")
		start := time.Now()
		_, err := getWithin(ns, "10.96.0.41:81", 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("from %s, an unused port of the ClusterIP: %v after %v, want connection refused at once", ns, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
