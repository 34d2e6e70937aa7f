package userspace

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/dataplane/ipvs"
	"github.com/heraldlb/herald/dataplane/nftables"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// Real packets: a node namespace runs the nftables backend with the userspace proxy in front,
// backends are processes in namespaces behind it, clients in front.
//
//	client  172.31.1.2 fd00:1::2 --- node --- 10.244.N.2 fd00:244:N::2 beN (N = 1..3)
//	client2 172.31.2.2           ---
//
// A backend process (this test binary, re-run with backendEnv set) answers each line of a
// connection with "<name> <client address>\n".

const backendEnv = "HERALD_US_TEST_BACKEND"

func TestMain(m *testing.M) {
	if name := os.Getenv(backendEnv); name != "" {
		serveLines(name)
		return
	}
	os.Exit(m.Run())
}

// serveLines is the backend process: TCP on :8080 (both families) until killed.
func serveLines(name string) {
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s\n", name, addrPortOf(c.RemoteAddr()).Addr())
			}
		}()
	}
}

var (
	clusterIP4 = netip.MustParseAddr("10.96.0.10")
	clusterIP6 = netip.MustParseAddr("fd00:96::10")
	lbIP       = netip.MustParseAddr("192.0.2.10")
)

type packetLab struct {
	t                *testing.T
	lab              *netnstest.Lab
	node, client, c2 string
	proxy            *Proxy
	backend          dataplane.Backend
	procs            map[int]*exec.Cmd
}

// newPacketLab runs the nftables backend with the proxy in front in the node namespace.
func newPacketLab(t *testing.T, opts Options) *packetLab {
	netnstest.Require(t, "nft")
	pl := newTopology(t, opts)
	var kernel *nftables.Backend
	if err := netnsrun.Do(pl.node, func() (err error) { kernel, err = nftables.New(); return err }); err != nil {
		t.Fatalf("nftables backend in the node namespace: %v", err)
	}
	t.Cleanup(kernel.Close)
	kernel.SetUserspaceListeners(pl.proxy)
	pl.backend = NewBackend(kernel, pl.proxy)
	return pl
}

// newStandaloneLab runs --dataplane=userspace in the node namespace: the proxy alone.
func newStandaloneLab(t *testing.T, opts Options) *packetLab {
	opts.Direct, opts.ServeAll = true, true
	pl := newTopology(t, opts)
	if err := netnsrun.Do(pl.node, func() error {
		links, err := ipvs.NewLoopbackLinks()
		if err != nil {
			return err
		}
		pl.backend, err = NewStandalone(pl.proxy, StandaloneOptions{Links: links,
			SysctlStateFile: filepath.Join(t.TempDir(), "sysctls.json")})
		return err
	}); err != nil {
		t.Fatalf("standalone data plane in the node namespace: %v", err)
	}
	return pl
}

// newTopology makes the namespaces and a proxy with opts listening and dialing in the node.
func newTopology(t *testing.T, opts Options) *packetLab {
	netnstest.Require(t)
	l := netnstest.New(t, "herald-us-pkt-")
	pl := &packetLab{t: t, lab: l, node: l.AddNS("node"), client: l.AddNS("client"), c2: l.AddNS("client2"), procs: map[int]*exec.Cmd{}}
	l.Run(pl.node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	l.Link(pl.node, "c1", "172.31.1.1/24", pl.client, "eth0", "172.31.1.2/24")
	l.Link(pl.node, "c2", "172.31.2.1/24", pl.c2, "eth0", "172.31.2.2/24")
	l.Run(pl.node, "ip", "addr", "add", "fd00:1::1/64", "dev", "c1", "nodad")
	l.Run(pl.client, "ip", "addr", "add", "fd00:1::2/64", "dev", "eth0", "nodad")
	for _, c := range []struct{ ns, gw, gw6 string }{{pl.client, "172.31.1.1", "fd00:1::1"}, {pl.c2, "172.31.2.1", ""}} {
		l.Run(c.ns, "ip", "route", "add", "default", "via", c.gw)
		if c.gw6 != "" {
			l.Run(c.ns, "ip", "-6", "route", "add", "default", "via", c.gw6)
		}
	}
	for i := 1; i <= 3; i++ {
		be := l.AddNS(fmt.Sprintf("be%d", i))
		l.Link(pl.node, fmt.Sprintf("b%d", i), fmt.Sprintf("10.244.%d.1/24", i), be, "eth0", fmt.Sprintf("10.244.%d.2/24", i))
		l.Run(pl.node, "ip", "addr", "add", fmt.Sprintf("fd00:244:%d::1/64", i), "dev", fmt.Sprintf("b%d", i), "nodad")
		l.Run(be, "ip", "addr", "add", fmt.Sprintf("fd00:244:%d::2/64", i), "dev", "eth0", "nodad")
		l.Run(be, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", i))
		l.Run(be, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:244:%d::1", i))
	}
	opts.Listen = func(lc *net.ListenConfig, network, addr string) (ln net.Listener, err error) {
		err = netnsrun.Do(pl.node, func() (err error) { ln, err = lc.Listen(context.Background(), network, addr); return err })
		return ln, err
	}
	opts.ListenPacket = func(lc *net.ListenConfig, network, addr string) (pc net.PacketConn, err error) {
		err = netnsrun.Do(pl.node, func() (err error) { pc, err = lc.ListenPacket(context.Background(), network, addr); return err })
		return pc, err
	}
	opts.Dial = netnstest.Dialer(pl.node, &net.Dialer{})
	pl.proxy = New(opts)
	t.Cleanup(pl.proxy.Close)
	return pl
}

// start runs the backend process of beN; it is SIGKILLed at the end of the test.
func (pl *packetLab) start(n int) {
	pl.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", pl.lab.NS(fmt.Sprintf("be%d", n)), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=be%d", backendEnv, n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		pl.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		pl.t.Fatal(err)
	}
	pl.procs[n] = cmd
	pl.t.Cleanup(func() { pl.kill(n) })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		pl.t.Fatalf("backend be%d: %q, %v", n, line, err)
	}
}

// kill SIGKILLs beN's process (ip netns exec execs it: the pid is the server's) and reaps it.
func (pl *packetLab) kill(n int) {
	if cmd := pl.procs[n]; cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		delete(pl.procs, n)
	}
}

func (pl *packetLab) sync(ports ...*dataplane.ServicePort) {
	pl.t.Helper()
	pl.syncNode(nil, ports...)
}

// syncNode is sync with the node's primary IPs (the Node object's) in the state.
func (pl *packetLab) syncNode(nodeIPs []netip.Addr, ports ...*dataplane.ServicePort) {
	pl.t.Helper()
	st := &dataplane.State{NodeIPs: nodeIPs, Services: map[types.NamespacedName][]*dataplane.ServicePort{}}
	for _, p := range ports {
		st.Services[p.Name.NamespacedName] = append(st.Services[p.Name.NamespacedName], p)
	}
	if err := netnsrun.Do(pl.node, func() error {
		return pl.backend.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true})
	}); err != nil {
		pl.t.Fatalf("sync: %v", err)
	}
}

func beEndpoint(n int, port int32, ipv6 bool) dataplane.Endpoint {
	a := fmt.Sprintf("10.244.%d.2", n)
	if ipv6 {
		a = fmt.Sprintf("fd00:244:%d::2", n)
	}
	return dataplane.Endpoint{Addr: netip.MustParseAddr(a), Port: port, Ready: true, Serving: true, Local: true}
}

// lbService is TCP port 80 of ns/svc on both ClusterIPs and the LoadBalancer IP, with the
// endpoints 1..3 of both families on targetPort, in userspace mode when userspace is set.
func lbService(name string, proto v1.Protocol, targetPort int32, userspace bool) *dataplane.ServicePort {
	sp := &dataplane.ServicePort{
		Name:            dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Protocol: proto},
		Protocol:        proto,
		Port:            80,
		ClusterIPs:      []netip.Addr{clusterIP4, clusterIP6},
		LoadBalancerIPs: []netip.Addr{lbIP},
		HasEndpoints:    true,
	}
	for n := 1; n <= 3; n++ {
		sp.ClusterEndpoints = append(sp.ClusterEndpoints, beEndpoint(n, targetPort, false), beEndpoint(n, targetPort, true))
	}
	sp.ExternalEndpoints = sp.ClusterEndpoints
	if userspace {
		sp.Userspace = &dataplane.UserspaceOptions{ConnectTries: 3}
	}
	return sp
}

// ask opens a new connection from ns to addr, sends a line and returns the answer line.
func ask(ns string, addr netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := netnstest.Dialer(ns, &net.Dialer{})(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// TestDeadBackendCostsNoConnection is the point of the mode: a backend process SIGKILLed while
// its endpoint is still listed as ready. 1,000 new connections made after the kill fail
// through nftables whenever the random choice falls on the dead endpoint (about a third);
// through the userspace proxy, none fails.
func TestDeadBackendCostsNoConnection(t *testing.T) {
	pl := newPacketLab(t, Options{})
	const connections = 1000
	target := netip.AddrPortFrom(clusterIP4, 80)
	failed := map[string]int{}
	for _, mode := range []string{"userspace", "nftables"} {
		for n := 1; n <= 3; n++ {
			if pl.procs[n] == nil {
				pl.start(n)
			}
		}
		pl.sync(lbService("svc", v1.ProtocolTCP, 8080, mode == "userspace"))
		if answer, err := ask(pl.client, target); err != nil {
			t.Fatalf("%s: before the kill: %q, %v", mode, answer, err)
		}
		pl.kill(1) // its endpoint stays listed, ready
		var firstErr error
		for range connections {
			answer, err := ask(pl.client, target)
			if err == nil && !strings.HasPrefix(answer, "be2 ") && !strings.HasPrefix(answer, "be3 ") {
				err = fmt.Errorf("answer %q", answer)
			}
			if err != nil {
				failed[mode]++
				firstErr = cmpOr(firstErr, err)
			}
		}
		t.Logf("%s: %d of %d new connections failed with a dead endpoint listed (first error: %v)", mode, failed[mode], connections, firstErr)
	}
	if failed["userspace"] != 0 {
		t.Errorf("userspace mode: %d failed connections, want 0", failed["userspace"])
	}
	// One endpoint of three is dead: nftables picks it for about a third of the connections.
	if f := failed["nftables"]; f < connections/5 || f > connections/2 {
		t.Errorf("nftables: %d of %d failed, want about a third (the comparison means nothing otherwise)", f, connections)
	}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func TestUserspaceOverRealPackets(t *testing.T) {
	pl := newPacketLab(t, Options{ConnectTimeout: 300 * time.Millisecond, UDPIdleTimeout: 500 * time.Millisecond})
	for n := 1; n <= 3; n++ {
		pl.start(n)
	}
	tcp := lbService("svc", v1.ProtocolTCP, 8080, true)
	tcp.SourceRanges = []netip.Prefix{netip.MustParsePrefix("172.31.1.0/24")}
	deadSvc := lbService("dead", v1.ProtocolTCP, 8081, true) // nothing listens on 8081
	deadSvc.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.96.0.11")}
	deadSvc.LoadBalancerIPs = nil
	udp := lbService("svc", v1.ProtocolUDP, 5353, true)
	udp.Name.Port = "dns"
	udp.Port = 53
	for n := 1; n <= 3; n++ {
		serveUDP(t, pl.lab.NS(fmt.Sprintf("be%d", n)), fmt.Sprintf("be%d", n))
	}
	local := lbService("local", v1.ProtocolTCP, 9090, true)
	local.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.96.0.12")}
	local.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("192.0.2.12")}
	local.ExternalPolicyLocal = true
	local.ExternalEndpoints = []dataplane.Endpoint{beEndpoint(2, 9090, false)}
	local.Userspace.ProxyProtocol = true
	serveProxyProtocol(t, pl.lab.NS("be2"))
	pl.sync(tcp, deadSvc, udp, local)

	t.Run("ClusterIP, LoadBalancer IP and IPv6", func(t *testing.T) {
		for _, a := range []netip.AddrPort{netip.AddrPortFrom(clusterIP4, 80), netip.AddrPortFrom(lbIP, 80), netip.AddrPortFrom(clusterIP6, 80)} {
			answer, err := ask(pl.client, a)
			if err != nil || !strings.HasPrefix(answer, "be") {
				t.Fatalf("%s: %q, %v", a, answer, err)
			}
			// The backend sees the node (the proxy connects from it), of the same family.
			if _, from, _ := strings.Cut(answer, " "); netip.MustParseAddr(from).Is6() != a.Addr().Is6() {
				t.Errorf("%s reached a backend from %s: families mixed", a, from)
			}
		}
	})
	t.Run("loadBalancerSourceRanges", func(t *testing.T) {
		if _, err := ask(pl.c2, netip.AddrPortFrom(lbIP, 80)); err == nil {
			t.Error("a client outside loadBalancerSourceRanges reached the LoadBalancer IP")
		}
		if answer, err := ask(pl.c2, netip.AddrPortFrom(clusterIP4, 80)); err != nil {
			t.Errorf("the ClusterIP stays open to other sources (as in kube-proxy): %q, %v", answer, err)
		}
	})
	t.Run("listeners unreachable but through the Service", func(t *testing.T) {
		cluster, external, _ := pl.proxy.UserspacePorts(tcp.Name)
		for _, port := range []uint16{cluster, external} {
			if answer, err := ask(pl.c2, netip.MustParseAddrPort(fmt.Sprintf("172.31.2.1:%d", port))); err == nil {
				t.Errorf("a client reached the proxy's listener port %d directly: %q", port, answer)
			}
		}
	})
	t.Run("blackholed endpoint", func(t *testing.T) {
		// be1 drops SYNs to 8080: one connection waits one connect timeout, then be1 is
		// suspect and tried last.
		pl.lab.Run(pl.lab.NS("be1"), "nft", "add table inet herald-us-bh; add chain inet herald-us-bh in { type filter hook input priority 0; tcp dport 8080 drop; }")
		defer pl.lab.Run(pl.lab.NS("be1"), "nft", "delete table inet herald-us-bh")
		begin := time.Now()
		for i := range 30 {
			answer, err := ask(pl.client, netip.AddrPortFrom(clusterIP4, 80))
			if err != nil || strings.HasPrefix(answer, "be1") {
				t.Fatalf("connection %d: %q, %v", i, answer, err)
			}
		}
		if took := time.Since(begin); took < 300*time.Millisecond {
			t.Errorf("30 connections took %v: the blackholed endpoint was never tried?", took)
		}
	})
	t.Run("all endpoints dead", func(t *testing.T) {
		begin := time.Now()
		_, err := ask(pl.client, netip.AddrPortFrom(deadSvc.ClusterIPs[0], 80))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("error %v, want a reset", err)
		}
		// 3 tries, each refused at once (the namespaces exist, nothing listens).
		if took := time.Since(begin); took > 3*300*time.Millisecond {
			t.Errorf("the client waited %v for its failure, beyond tries x connect timeout", took)
		}
	})
	t.Run("Local policy passes the client address with PROXY v2", func(t *testing.T) {
		answer, err := ask(pl.client, netip.AddrPortFrom(local.LoadBalancerIPs[0], 80))
		if err != nil || answer != "be2 172.31.1.2" {
			t.Fatalf("%q, %v; want be2 (the only local endpoint) to see the client 172.31.1.2", answer, err)
		}
	})
	t.Run("UDP request, response and idle expiry", func(t *testing.T) {
		for _, a := range []netip.AddrPort{netip.AddrPortFrom(clusterIP4, 53), netip.AddrPortFrom(clusterIP6, 53)} {
			var c net.Conn
			if err := netnsrun.Do(pl.client, func() (err error) { c, err = net.Dial("udp", a.String()); return err }); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			var first string
			for i := range 3 {
				fmt.Fprintf(c, "q%d", i)
				buf := make([]byte, 100)
				n, err := c.Read(buf) // a connected UDP socket takes only replies from a
				if err != nil {
					t.Fatalf("%s: reply %d: %v (replies must come from the Service address)", a, i, err)
				}
				name, q, _ := strings.Cut(string(buf[:n]), " ")
				if q != fmt.Sprintf("q%d", i) || (first != "" && name != first) {
					t.Fatalf("%s: reply %q after %q: want the same backend for the session", a, buf[:n], first)
				}
				first = name
			}
		}
		udpListener := func() *udpListener {
			pl.proxy.mu.Lock()
			defer pl.proxy.mu.Unlock()
			return pl.proxy.ports[udp.Name].cluster.(group)[0].(*udpListener)
		}()
		deadline := time.Now().Add(3 * time.Second)
		for {
			udpListener.mu.Lock()
			n := len(udpListener.sessions)
			udpListener.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d UDP sessions still open after their idle timeout", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// serveUDP answers each datagram on :5353 with "<name> <datagram>".
func serveUDP(t *testing.T, ns, name string) {
	var pc net.PacketConn
	if err := netnsrun.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", ":5353"); return err }); err != nil {
		t.Fatal(err)
	}
	answerUDP(t, pc, func(q []byte) []byte { return []byte(name + " " + string(q)) })
}

// serveProxyProtocol serves :9090 behind a PROXY v2 header: it answers "be2 <client address
// from the header>", and closes connections without a valid header.
func serveProxyProtocol(t *testing.T, ns string) {
	ln, err := netnstest.Listen(ns, "tcp", ":9090")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, func(c net.Conn) {
		h := make([]byte, 16)
		if _, err := io.ReadFull(c, h); err != nil || string(h[:12]) != string(proxyV2Signature) {
			return
		}
		addrs := make([]byte, binary.BigEndian.Uint16(h[14:]))
		if _, err := io.ReadFull(c, addrs); err != nil || h[13] != 0x11 {
			return
		}
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		fmt.Fprintf(c, "be2 %s\n", netip.AddrFrom4([4]byte(addrs[:4])))
	})
}

// TestModeSwitchKeepsEstablishedConnections switches a Service between the modes while
// connections are open: none is lost either way. Kernel to userspace: the connections keep
// their conntrack DNAT to the endpoint (NAT is decided on a connection's first packet only).
// Userspace to kernel: the proxy closes the listener but carries the connections it accepted
// until they end. (A speaker restart does end the proxied ones: they live in the process.)
func TestModeSwitchKeepsEstablishedConnections(t *testing.T) {
	pl := newPacketLab(t, Options{})
	for n := 1; n <= 3; n++ {
		pl.start(n)
	}
	target := netip.AddrPortFrom(clusterIP4, 80)
	open := func() []*lineConn {
		var conns []*lineConn
		for range 20 {
			c, err := dialLines(pl.client, target)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			conns = append(conns, c)
		}
		return conns
	}
	check := func(when string, conns []*lineConn) {
		t.Helper()
		for i, c := range conns {
			if answer, err := c.ask(); err != nil || !strings.HasPrefix(answer, "be") {
				t.Fatalf("%s: connection %d: %q, %v", when, i, answer, err)
			}
		}
	}
	pl.sync(lbService("svc", v1.ProtocolTCP, 8080, false))
	kernelConns := open()
	pl.sync(lbService("svc", v1.ProtocolTCP, 8080, true))
	check("kernel connections after the switch to userspace", kernelConns)
	userspaceConns := open()
	check("new userspace connections", userspaceConns)
	pl.sync(lbService("svc", v1.ProtocolTCP, 8080, false))
	check("userspace connections after the switch back to kernel", userspaceConns)
	check("kernel connections after both switches", kernelConns)
	if answer, err := ask(pl.client, target); err != nil {
		t.Fatalf("a new connection after the switch back: %q, %v", answer, err)
	}
	if _, _, ok := pl.proxy.UserspacePorts(lbService("svc", v1.ProtocolTCP, 8080, true).Name); ok {
		t.Error("the proxy still has a listener for the Service in kernel mode")
	}
}

// lineConn is a connection to a line backend that stays open between questions.
type lineConn struct {
	net.Conn
	r *bufio.Reader
}

func dialLines(ns string, addr netip.AddrPort) (*lineConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := netnstest.Dialer(ns, &net.Dialer{})(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return &lineConn{Conn: c, r: bufio.NewReader(c)}, nil
}

func (c *lineConn) ask() (string, error) {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// askUDP sends one datagram from ns to addr and returns the reply (a connected socket: only a
// reply from addr itself is read).
func askUDP(ns string, addr netip.AddrPort) (string, error) {
	var c net.Conn
	if err := netnsrun.Do(ns, func() (err error) { c, err = net.Dial("udp", addr.String()); return err }); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "q"); err != nil {
		return "", err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestStandaloneOverRealPackets is --dataplane=userspace: no nftables, no IPVS in the node
// namespace, every Service served by the proxy on its own addresses (local routes on
// lo) and NodePorts. Reached from a pod behind the node (ClusterIP) and from clients
// in front (LoadBalancer IP, NodePort, IPv6 ClusterIP), TCP and UDP, with the source ranges
// enforced by the proxy and a dead endpoint still listed costing no connection.
func TestStandaloneOverRealPackets(t *testing.T) {
	netnstest.Require(t, "nft")
	pl := newStandaloneLab(t, Options{ConnectTimeout: 300 * time.Millisecond})
	for n := 1; n <= 3; n++ {
		pl.start(n)
		serveUDP(t, pl.lab.NS(fmt.Sprintf("be%d", n)), fmt.Sprintf("be%d", n))
	}
	// Neither Service is annotated: on this node every Service goes through the proxy.
	tcp := lbService("svc", v1.ProtocolTCP, 8080, false)
	tcp.NodePort = 30080
	tcp.SourceRanges = []netip.Prefix{netip.MustParsePrefix("172.31.1.0/24")}
	udp := lbService("svc", v1.ProtocolUDP, 5353, false)
	udp.Name.Port, udp.Port = "dns", 53
	pl.sync(tcp, udp)
	if rules := pl.lab.Run(pl.node, "nft", "list", "ruleset"); strings.TrimSpace(rules) != "" {
		t.Fatalf("the node has nftables rules in userspace mode:\n%s", rules)
	}

	answers := func(t *testing.T, ns string, a netip.AddrPort) {
		t.Helper()
		if answer, err := ask(ns, a); err != nil || !strings.HasPrefix(answer, "be") {
			t.Errorf("%s from %s: %q, %v", a, ns, answer, err)
		}
	}
	t.Run("ClusterIP from a pod", func(t *testing.T) {
		answers(t, pl.lab.NS("be3"), netip.AddrPortFrom(clusterIP4, 80))
	})
	t.Run("LoadBalancer IP, NodePort and IPv6 ClusterIP from a client", func(t *testing.T) {
		for _, a := range []netip.AddrPort{netip.AddrPortFrom(lbIP, 80), netip.MustParseAddrPort("172.31.1.1:30080"),
			netip.MustParseAddrPort("[fd00:1::1]:30080"), netip.AddrPortFrom(clusterIP6, 80)} {
			answers(t, pl.client, a)
		}
	})
	t.Run("loadBalancerSourceRanges", func(t *testing.T) {
		if answer, err := ask(pl.c2, netip.AddrPortFrom(lbIP, 80)); err == nil {
			t.Errorf("a client outside loadBalancerSourceRanges reached the LoadBalancer IP: %q", answer)
		}
		// The ranges restrict the LoadBalancer IP only, as in the kernel backends.
		answers(t, pl.c2, netip.AddrPortFrom(clusterIP4, 80))
		answers(t, pl.c2, netip.MustParseAddrPort("172.31.2.1:30080"))
	})
	t.Run("UDP from the Service address", func(t *testing.T) {
		for _, a := range []netip.AddrPort{netip.AddrPortFrom(clusterIP4, 53), netip.AddrPortFrom(lbIP, 53), netip.AddrPortFrom(clusterIP6, 53)} {
			if answer, err := askUDP(pl.client, a); err != nil || !strings.HasSuffix(answer, " q") {
				t.Errorf("%s: %q, %v", a, answer, err)
			}
		}
	})
	t.Run("a dead endpoint still listed costs no connection", func(t *testing.T) {
		pl.kill(1)
		for i := range 100 {
			if answer, err := ask(pl.client, netip.AddrPortFrom(lbIP, 80)); err != nil || strings.HasPrefix(answer, "be1") {
				t.Fatalf("connection %d: %q, %v", i, answer, err)
			}
		}
	})
	t.Run("a removed Service leaves no route and no listener", func(t *testing.T) {
		pl.sync()
		for _, family := range []string{"-4", "-6"} {
			if routes := pl.lab.Run(pl.node, "ip", family, "route", "show", "table", "local", "proto", "72"); strings.TrimSpace(routes) != "" {
				t.Errorf("Service IP routes left:\n%s", routes)
			}
		}
		if len(pl.proxy.Services()) != 0 {
			t.Errorf("the proxy still serves %v", pl.proxy.Services())
		}
		if answer, err := ask(pl.client, netip.MustParseAddrPort("172.31.1.1:30080")); err == nil {
			t.Errorf("the NodePort still answers: %q", answer)
		}
	})
}

// TestStandaloneNodePortAddresses: --dataplane=userspace opens NodePorts only on the node
// addresses --nodeport-addresses selects, as the kernel backends do (issue 16 item 5): with
// primary, on the Node object's IPv4 address and every IPv6 address (it has no IPv6 one); the
// listeners move when that address changes; with a list of CIDRs, on the addresses within them.
func TestStandaloneNodePortAddresses(t *testing.T) {
	netnstest.Require(t, "nft")
	pl := newStandaloneLab(t, Options{ConnectTimeout: 300 * time.Millisecond})
	for n := 1; n <= 3; n++ {
		pl.start(n)
	}
	tcp := lbService("svc", v1.ProtocolTCP, 8080, false)
	tcp.NodePort = 30080
	on := func(t *testing.T, ns, addr string, want bool) {
		t.Helper()
		a := netip.AddrPortFrom(netip.MustParseAddr(addr), 30080)
		answer, err := ask(ns, a)
		if got := err == nil && strings.HasPrefix(answer, "be"); got != want {
			t.Errorf("NodePort %s from %s: %q, %v; want answered %v", a, ns, answer, err, want)
		}
	}
	primary := func(a string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(a)} }
	t.Run("primary", func(t *testing.T) {
		pl.proxy.SetNodePortAddresses(dataplane.NodePortAddresses{Primary: true})
		pl.syncNode(primary("172.31.1.1"), tcp)
		on(t, pl.client, "172.31.1.1", true)
		on(t, pl.c2, "172.31.2.1", false)
		on(t, pl.client, "fd00:1::1", true)
	})
	t.Run("the node's primary IP changes", func(t *testing.T) {
		pl.syncNode(primary("172.31.2.1"), tcp)
		on(t, pl.client, "172.31.1.1", false)
		on(t, pl.c2, "172.31.2.1", true)
	})
	t.Run("CIDRs", func(t *testing.T) {
		np, err := dataplane.ParseNodePortAddresses("172.31.1.0/24,fd00:244::/32")
		if err != nil {
			t.Fatal(err)
		}
		pl.proxy.SetNodePortAddresses(np)
		pl.syncNode(primary("172.31.2.1"), tcp)
		on(t, pl.client, "172.31.1.1", true)
		on(t, pl.c2, "172.31.2.1", false)
		on(t, pl.client, "fd00:1::1", false)
	})
}
