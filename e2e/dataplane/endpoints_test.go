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

// TestServiceWithoutEndpointsIsRefused: connections to a Service that has no endpoints are
// refused at once (a node's own connection to its ClusterIP, the client's to a NodePort) instead
// of waiting for a timeout; once it has endpoints, the same addresses answer.
func TestServiceWithoutEndpointsIsRefused(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	l2Pool(t, dyn, "dpe-empty", "10.77.0.238/32")
	svc := service(t, l, cs, "empty", "10.77.0.238", nil, nil)
	node := l.Nodes()[0]
	targets := []struct {
		from string
		addr netip.AddrPort
	}{
		{node.Name, netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), uint16(svc.Spec.Ports[0].Port))},
		{lab.HostClient, netip.AddrPortFrom(node.IPv4, uint16(svc.Spec.Ports[0].NodePort))},
	}
	for _, tg := range targets {
		// Well under a lost SYN's first retransmission (1 s): the refusal is immediate.
		labsuite.WaitFor(t, 30*time.Second, fmt.Sprintf("%s refusing %s at once", tg.addr, tg.from), func() (bool, string) {
			began := time.Now()
			got, err := connect(ctx, l, tg.from, tg.addr, 2*time.Second)
			return got == refused && time.Since(began) < 500*time.Millisecond,
				fmt.Sprintf("%s after %v (%v)", got, time.Since(began).Round(time.Millisecond), err)
		})
	}
	if err := l.SetEndpoints(ctx, cs, svc, l.Pods()); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		waitForAnswers(t, l, tg.from, tg.addr)
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
