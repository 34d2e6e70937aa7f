package userspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
)

// These tests run the proxy on loopback with real sockets: clients connect to its listener,
// endpoints are listeners of the test.

var svcKey = types.NamespacedName{Namespace: "ns", Name: "svc"}

func servicePort(proto v1.Protocol, tries int, eps ...netip.AddrPort) *dataplane.ServicePort {
	sp := &dataplane.ServicePort{
		Name:       dataplane.ServicePortName{NamespacedName: svcKey, Protocol: proto},
		Protocol:   proto,
		Port:       80,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Userspace:  &dataplane.UserspaceOptions{ConnectTries: tries},
	}
	for _, ep := range eps {
		sp.ClusterEndpoints = append(sp.ClusterEndpoints, dataplane.Endpoint{Addr: ep.Addr(), Port: int32(ep.Port()), Ready: true, Serving: true})
	}
	sp.HasEndpoints = len(eps) > 0
	return sp
}

// start runs a proxy serving sp and returns it with the address of its cluster listener.
func start(t *testing.T, opts Options, sp *dataplane.ServicePort) (*Proxy, string) {
	t.Helper()
	p := New(opts)
	t.Cleanup(p.Close)
	syncPort(t, p, sp)
	port, _, ok := p.UserspacePorts(sp.Name)
	if !ok {
		t.Fatal("no listener for the userspace port")
	}
	return p, fmt.Sprintf("127.0.0.1:%d", port)
}

func syncPort(t testing.TB, p *Proxy, sp *dataplane.ServicePort) {
	t.Helper()
	st := &dataplane.State{Services: map[types.NamespacedName][]*dataplane.ServicePort{svcKey: {sp}}}
	if err := p.open(dataplane.SyncRequest{State: st, Full: true}); err != nil {
		t.Fatal(err)
	}
	p.closeRetired()
}

// named serves TCP connections answering "<name>\n" and then echoing until EOF.
func named(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", name)
		_, _ = io.Copy(c, c)
	})
}

// dead is an address where nothing listens: connections are refused.
func dead(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

// resetting accepts, reads the request, then resets the connection without a byte of answer.
func resetting(t *testing.T) netip.AddrPort {
	return serveTCP(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 100))
		reset(c.(*net.TCPConn))
	})
}

// greet connects through the proxy, sends a line, and returns the greeting and the echo.
func greet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	name, rest, _ := strings.Cut(string(b), "\n")
	if rest != "ping\n" {
		return name, fmt.Errorf("echo %q, want \"ping\\n\"", rest)
	}
	return name, nil
}

func TestRetriesRefusedEndpoint(t *testing.T) {
	gone, live := dead(t), named(t, "live")
	p, addr := start(t, Options{}, servicePort(v1.ProtocolTCP, 2, gone, live))
	for i := range 20 {
		name, err := greet(addr)
		if err != nil || name != "live" {
			t.Fatalf("connection %d: %q, %v", i, name, err)
		}
	}
	if !p.suspects.is(gone, time.Now()) {
		t.Error("the refusing endpoint is not suspect")
	}
	label := servicePort(v1.ProtocolTCP, 2).Name.String()
	// Round robin sends the first connection to the dead endpoint; once it is suspect, the
	// live one is tried first, so only one retry happens.
	if got := testutil.ToFloat64(p.metrics.retries.WithLabelValues(label)); got != 1 {
		t.Errorf("retries = %v, want 1 (suspect endpoints go last)", got)
	}
}

func TestRetriesEndpointResettingBeforeAnswer(t *testing.T) {
	rst, live := resetting(t), named(t, "live")
	_, addr := start(t, Options{}, servicePort(v1.ProtocolTCP, 2, rst, live))
	for i := range 10 {
		name, err := greet(addr)
		if err != nil || name != "live" {
			t.Fatalf("connection %d: %q, %v (the request should be replayed to the live endpoint)", i, name, err)
		}
	}
}

func TestAllEndpointsDeadResetsClientWithinBound(t *testing.T) {
	_, addr := start(t, Options{}, servicePort(v1.ProtocolTCP, 3, dead(t), dead(t), dead(t)))
	begin := time.Now()
	_, err := greet(addr)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("error %v, want a reset", err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("the client waited %v for its reset", took)
	}
}

func TestBlackholedEndpointCostsOneConnectTimeout(t *testing.T) {
	hole, live := netip.MustParseAddrPort("127.0.0.2:9"), named(t, "live")
	dialer := &net.Dialer{}
	opts := Options{ConnectTimeout: 200 * time.Millisecond, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == hole.String() {
			<-ctx.Done() // a SYN nobody answers
			return nil, ctx.Err()
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	_, addr := start(t, opts, servicePort(v1.ProtocolTCP, 2, hole, live))
	begin := time.Now()
	for i := range 5 {
		if name, err := greet(addr); err != nil || name != "live" {
			t.Fatalf("connection %d: %q, %v", i, name, err)
		}
	}
	// One connection waits for the timeout; then the endpoint is suspect and tried last.
	if took := time.Since(begin); took < 200*time.Millisecond || took > 390*time.Millisecond {
		t.Errorf("5 connections took %v, want one connect timeout (200ms) and no more", took)
	}
}

func TestSessionAffinityKeepsClientOnItsEndpoint(t *testing.T) {
	sp := servicePort(v1.ProtocolTCP, 2, named(t, "a"), named(t, "b"), named(t, "c"))
	sp.AffinityTimeout = time.Minute
	_, addr := start(t, Options{}, sp)
	first, err := greet(addr)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if name, err := greet(addr); err != nil || name != first {
			t.Fatalf("%q, %v; want %q every time", name, err, first)
		}
	}
	// Without affinity, the same client is spread.
	sp2 := servicePort(v1.ProtocolTCP, 2, named(t, "a"), named(t, "b"), named(t, "c"))
	_, addr2 := start(t, Options{}, sp2)
	seen := map[string]bool{}
	for range 6 {
		name, err := greet(addr2)
		if err != nil {
			t.Fatal(err)
		}
		seen[name] = true
	}
	if len(seen) != 3 {
		t.Errorf("without affinity the client reached %v, want all three", seen)
	}
}

func TestHalfCloseEachDirection(t *testing.T) {
	// The backend answers only after the client's EOF, then closes: the client must still
	// receive the whole answer after half-closing.
	be := serveTCP(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d", n)
	})
	_, addr := start(t, Options{}, servicePort(v1.ProtocolTCP, 1, be))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("x"), 1<<20)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != fmt.Sprintf("got %d", len(payload)) {
		t.Fatalf("answer %q, %v", got, err)
	}
}

func TestProxyProtocolV2Header(t *testing.T) {
	headers := make(chan []byte, 1)
	be := serveTCP(t, func(c net.Conn) {
		h := make([]byte, 16+12)
		_, _ = io.ReadFull(c, h)
		headers <- h
	})
	sp := servicePort(v1.ProtocolTCP, 1, be)
	sp.Userspace.ProxyProtocol = true
	_, addr := start(t, Options{}, sp)
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := <-headers
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	want := proxyHeaderV2(client, c.RemoteAddr().(*net.TCPAddr).AddrPort(), false)
	if !bytes.Equal(h, want) {
		t.Fatalf("header % x, want % x", h, want)
	}
	if !bytes.HasPrefix(h, []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x01")) {
		t.Errorf("header % x is not PROXY v2 TCP4 from 127.0.0.1", h)
	}
}

func TestUDPRequestResponseAndIdleExpiry(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := answerUDP(t, pc, func(q []byte) []byte { return append([]byte("re:"), q...) })
	p, addr := start(t, Options{UDPIdleTimeout: 300 * time.Millisecond}, servicePort(v1.ProtocolUDP, 1, be))
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	for i := range 3 {
		fmt.Fprintf(c, "q%d", i)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != fmt.Sprintf("re:q%d", i) {
			t.Fatalf("reply %q, %v", buf[:n], err)
		}
	}
	sessions := func() int {
		p.mu.Lock()
		l := p.ports[servicePort(v1.ProtocolUDP, 1).Name].cluster.(group)[0].(*udpListener)
		p.mu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.sessions)
	}
	if n := sessions(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle session did not expire")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSyncRetiresAndKeepsEstablishedConnections(t *testing.T) {
	live := named(t, "live")
	sp := servicePort(v1.ProtocolTCP, 1, live)
	p, addr := start(t, Options{}, sp)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := make([]byte, 5)
	if _, err := io.ReadFull(c, r); err != nil {
		t.Fatal(err)
	}
	// The Service leaves userspace mode: its listener closes, the connection goes on.
	kernel := *sp
	kernel.Userspace = nil
	syncPort(t, p, &kernel)
	if _, _, ok := p.UserspacePorts(sp.Name); ok {
		t.Fatal("the listener is still reported")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the retired listener still accepts")
	}
	fmt.Fprint(c, "still\n")
	if _, err := io.ReadFull(c, r[:5]); err != nil || string(r) != "still" {
		t.Fatalf("established connection after the switch: %q, %v", r, err)
	}
}

func TestEchoWhileSending(t *testing.T) {
	// The backend echoes while the client is still sending 8 MiB: both directions stream at
	// once through the proxy, past the replay buffer, and every byte comes back in order.
	be := serveTCP(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	_, addr := start(t, Options{}, servicePort(v1.ProtocolTCP, 1, be))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := make([]byte, 8<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d of %d bytes (equal: %v), %v", len(got), len(payload), bytes.Equal(got, payload), err)
	}
}
