package dataplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestServiceWithoutEndpointsIsRefused: once a Service's last endpoint goes, connections to it
// are refused at once (a node's own connection to the ClusterIP, the client's to the
// LoadBalancer IP) instead of waiting for a timeout. Neither address has a listener anywhere
// (without the data plane's rules a node routes the packets on, to be lost or answered with an
// ICMP error), so a refusal is the data plane's reject. NodePorts are left out: a node's kernel
// refuses a port nobody listens on by itself.
func TestServiceWithoutEndpointsIsRefused(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-empty", "10.77.0.238/32")
	svc := service(t, l, cs, "empty", "10.77.0.238", l.Pods(), nil)
	node := l.Nodes()[0]
	targets := []struct {
		from string
		addr netip.AddrPort
	}{
		{node.Name, clusterAddr(svc, 0)},
		{lab.HostClient, lbAddr(svc)},
	}
	for _, tg := range targets {
		waitForAnswers(t, l, tg.from, tg.addr)
	}
	if err := l.SetEndpoints(ctx, cs, svc, nil); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		// At once: well under a lost SYN's first retransmission (1 s). The reject is an ICMP
		// port unreachable, which the node's kernel sends to one destination at most once a
		// second after a burst of 6 (net.ipv4.icmp_ratelimit): polling faster than that would
		// see every SYN after the burst answered only when retransmitted, so an attempt that was
		// not refused at once waits out a second before the next.
		took := labsuite.WaitFor(t, 30*time.Second, fmt.Sprintf("%s refusing %s at once", tg.addr, tg.from), func() (bool, string) {
			began := time.Now()
			got, err := connect(ctx, l, tg.from, tg.addr, 2*time.Second)
			if took := time.Since(began); got != refused || took > 500*time.Millisecond {
				time.Sleep(time.Second)
				return false, fmt.Sprintf("%s after %v (%v)", got, took.Round(time.Millisecond), err)
			}
			return true, ""
		})
		t.Logf("%s refusing %s %v after the endpoints went", tg.addr, tg.from, took.Round(time.Millisecond))
	}
}

// TestUDPFlowLeavesARemovedEndpoint: a UDP "flow" (one client socket sending datagrams to the
// LoadBalancer IP) follows the endpoints: once its backend is removed from the Service, the
// node deletes the flow's conntrack entry and the next datagrams reach a remaining backend,
// although the removed one still runs and would answer.
func TestUDPFlowLeavesARemovedEndpoint(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-udp", "10.77.0.239/32")
	svc := service(t, l, cs, "echo", "10.77.0.239", l.Pods(), func(svc *corev1.Service) {
		svc.Spec.Ports = []corev1.ServicePort{{Name: "echo", Protocol: corev1.ProtocolUDP, Port: 5353, TargetPort: intstr.FromInt32(lab.BackendPort)}}
	})
	addr := lbAddr(svc)
	client := l.Topology.Host(lab.HostClient)
	// A datagram sent before the rules are in place can leave a conntrack entry without DNAT on
	// the node, which would hold that socket's flow: wait for an echo on a new socket each try.
	labsuite.WaitFor(t, 45*time.Second, fmt.Sprintf("%s/udp echoing", addr), func() (bool, string) {
		sock, err := lab.ListenPacketIn(client.Netns, "udp4", "0.0.0.0:0")
		if err != nil {
			return false, err.Error()
		}
		defer sock.Close()
		_, err = echo(sock, addr)
		return err == nil, fmt.Sprint(err)
	})
	sock, err := lab.ListenPacketIn(client.Netns, "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	first, err := echo(sock, addr)
	if err != nil {
		t.Fatal(err)
	}
	// The flow stays on its backend while nothing changes.
	for i := 0; i < 5; i++ {
		if b, err := echo(sock, addr); err != nil || b != first {
			t.Fatalf("datagram %d of the flow answered by %q (%v), want %s as the first", i+2, b, err, first)
		}
	}
	var rest []*lab.Host
	for _, p := range l.Pods() {
		if p.Name != first {
			rest = append(rest, p)
		}
	}
	if err := l.SetEndpoints(ctx, cs, svc, rest); err != nil {
		t.Fatal(err)
	}
	took := labsuite.WaitFor(t, 15*time.Second, "the flow's datagrams leaving the removed backend "+first, func() (bool, string) {
		b, err := echo(sock, addr)
		return err == nil && b != first, fmt.Sprintf("answered by %q (%v)", b, err)
	})
	t.Logf("the flow left %s %v after its removal", first, took.Round(time.Millisecond))
}

// echo sends one datagram from sock to addr and returns the backend that answered.
func echo(sock net.PacketConn, addr netip.AddrPort) (string, error) {
	if _, err := sock.WriteTo([]byte("ping"), net.UDPAddrFromAddrPort(addr)); err != nil {
		return "", err
	}
	_ = sock.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 2048)
	n, _, err := sock.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	var r lab.BackendReply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return "", fmt.Errorf("not a backend's echo: %q", buf[:n])
	}
	return r.Backend, nil
}
