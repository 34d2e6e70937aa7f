package parity_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/netnsrun"
)

// nsPrefix names every namespace this test makes (and removes, also leftovers of a crashed run).
const nsPrefix = "herald-dd-"

// The two sides: kube-proxy's and Herald's. Their topologies are identical, address for address,
// so what a backend reports (its name, the peer address it saw) compares literally.
const (
	sideKubeProxy = "k"
	sideHerald    = "h"
)

var sides = []string{sideKubeProxy, sideHerald}

// Node names as the Node objects and EndpointSlices spell them. The proxy runs on nodeA; nodeB
// holds the remote endpoints and routes for them (it runs no proxy: no probe starts there).
const (
	nodeA = "node-a"
	nodeB = "node-b"
	zoneA = "zone-a"
	zoneB = "zone-b"
)

// Addresses of one side (the same on both). The client is off the cluster, behind node A;
// nodeA's primary addresses face it. Pods sit behind /30 (/126) point-to-point links, node A's in
// 10.244.1.0/24 (fd44:1::/64), node B's in 10.244.2.0/24 (fd44:2::/64): in the cluster CIDRs.
var (
	nodeIP        = netip.MustParseAddr("10.0.1.1")
	nodeIP6       = netip.MustParseAddr("fd00:1::1")
	nodeOtherIP   = netip.MustParseAddr("10.0.0.1") // node A's address on the node-to-node link
	nodeOtherIP6  = netip.MustParseAddr("fd00::1")
	clientIP      = netip.MustParseAddr("10.0.1.2")
	clientIP6     = netip.MustParseAddr("fd00:1::2")
	clientAltIP   = netip.MustParseAddr("10.0.1.3") // outside the source ranges the corpus writes
	clientAltIP6  = netip.MustParseAddr("fd00:1::3")
	clusterCIDRs  = "10.244.0.0/16,fd44::/16"
	serviceCIDRs  = "10.96.0.0/16,fd00:96::/108"
	unallocatedIP = netip.MustParseAddr("10.96.255.250") // in the Service CIDR, never allocated here
)

// pod is a pod namespace: an endpoint (a1, a2, b1, b2) or the client pod ac on node A.
type pod struct {
	name string
	node string
	idx  int // its link: 10.244.<node>.<4 idx> /30
}

func (p pod) nodeNum() int {
	if p.node == nodeA {
		return 1
	}
	return 2
}

func (p pod) addr(v6 bool) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd44:%d::%x", p.nodeNum(), 4*p.idx+2))
	}
	return netip.AddrFrom4([4]byte{10, 244, byte(p.nodeNum()), byte(4*p.idx + 2)})
}

func (p pod) gateway(v6 bool) netip.Addr { return p.addr(v6).Prev() }

var (
	endpointPods = []pod{{"a1", nodeA, 1}, {"a2", nodeA, 2}, {"b1", nodeB, 1}, {"b2", nodeB, 2}}
	clientPod    = pod{"ac", nodeA, 3}
)

// Ports every endpoint pod serves.
const (
	tcpTarget = 8080
	udpTarget = 5353
)

func nsName(side, host string) string { return nsPrefix + side + "-" + host }

// ipCmd runs `ip` with args and fails the test with its output when it fails.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// removeNamespaces deletes every namespace this test makes, from this run or an earlier one.
func removeNamespaces() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", f[0], err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// buildSide makes one side's namespaces and links.
func buildSide(t *testing.T, side string) {
	t.Helper()
	a, b, client := nsName(side, "a"), nsName(side, "b"), nsName(side, "cl")
	for _, ns := range []string{a, b, client} {
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	for _, ns := range []string{a, b} {
		// No ICMP rate limit: the probes get many rejections in a row from one node, and a
		// limited one reads as a drop. The ratelimit sysctls end only the per-peer limit; the
		// kernel's global one (icmp_msgs_per_sec) is shared by every namespace of the machine,
		// both sides' included, and dropped a rejection now and then: the rate masks take
		// destination unreachable out of both.
		for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
			"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
			"net.ipv4.icmp_ratemask=0", "net.ipv6.icmp.ratemask=0,3-127"} {
			if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-q", "-w", s).CombinedOutput(); err != nil {
				t.Fatalf("%s: sysctl %s: %v: %s", ns, s, err, out)
			}
		}
	}
	link := func(ns1, if1, ns2, if2 string, addrs1, addrs2 []string) {
		ipCmd(t, "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
		for _, x := range []struct {
			ns, dev string
			addrs   []string
		}{{ns1, if1, addrs1}, {ns2, if2, addrs2}} {
			for _, p := range x.addrs {
				args := []string{"-n", x.ns, "addr", "add", p, "dev", x.dev}
				if strings.Contains(p, ":") {
					args = append(args, "nodad")
				}
				ipCmd(t, args...)
			}
			ipCmd(t, "-n", x.ns, "link", "set", x.dev, "up")
		}
	}
	link(a, "tob", b, "toa", []string{"10.0.0.1/24", "fd00::1/64"}, []string{"10.0.0.2/24", "fd00::2/64"})
	link(a, "tocl", client, "eth0", []string{"10.0.1.1/24", "fd00:1::1/64"},
		[]string{"10.0.1.2/24", "10.0.1.3/24", "fd00:1::2/64", "fd00:1::3/64"})
	ipCmd(t, "-n", client, "route", "add", "default", "via", "10.0.1.1")
	ipCmd(t, "-n", client, "-6", "route", "add", "default", "via", "fd00:1::1")
	// Node A sends what it does not translate towards node B (as a node's default route would),
	// node B sends everything but its pods back to A.
	ipCmd(t, "-n", a, "route", "add", "default", "via", "10.0.0.2")
	ipCmd(t, "-n", a, "-6", "route", "add", "default", "via", "fd00::2")
	ipCmd(t, "-n", b, "route", "add", "default", "via", "10.0.0.1")
	ipCmd(t, "-n", b, "-6", "route", "add", "default", "via", "fd00::1")
	ipCmd(t, "-n", a, "route", "add", "10.244.2.0/24", "via", "10.0.0.2")
	ipCmd(t, "-n", a, "-6", "route", "add", "fd44:2::/64", "via", "fd00::2")
	for _, p := range append(append([]pod{}, endpointPods...), clientPod) {
		ns := nsName(side, p.name)
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		node := a
		if p.node == nodeB {
			node = b
		}
		link(node, "p"+p.name, ns, "eth0",
			[]string{p.gateway(false).String() + "/30", p.gateway(true).String() + "/126"},
			[]string{p.addr(false).String() + "/30", p.addr(true).String() + "/126"})
		ipCmd(t, "-n", ns, "route", "add", "default", "via", p.gateway(false).String())
		ipCmd(t, "-n", ns, "-6", "route", "add", "default", "via", p.gateway(true).String())
	}
}

// echoServers runs the endpoint pods' servers: TCP 8080 and UDP 5353, both families, answering
// "<pod> <peer address>\n" to every connection or datagram. They stop when the test ends.
func echoServers(t *testing.T, side string) {
	t.Helper()
	var wg sync.WaitGroup
	var closers []io.Closer
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
	})
	for _, p := range endpointPods {
		ns := nsName(side, p.name)
		var l net.Listener
		var pc net.PacketConn
		err := netnsrun.Do(ns, func() (err error) {
			if l, err = net.Listen("tcp", fmt.Sprintf(":%d", tcpTarget)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", udpTarget))
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", ns, err)
		}
		closers = append(closers, l, pc)
		wg.Add(2)
		go func() {
			defer wg.Done()
			var conns sync.WaitGroup
			defer conns.Wait()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer conns.Done()
					defer c.Close()
					_, _ = fmt.Fprintf(c, "%s %s\n", p.name, peer(c.RemoteAddr()))
				}()
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", p.name, peer(from))), from)
			}
		}()
	}
}

func peer(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	return ap.Addr().Unmap().String()
}

// forwardAPIServer listens on 127.0.0.1:6443 inside ns and forwards every connection to the
// apiserver (dial): the proxies on both sides reach one apiserver at the kubeconfig's address,
// with nothing outside the test's namespaces.
func forwardAPIServer(t *testing.T, ns string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	t.Helper()
	var l net.Listener
	if err := netnsrun.Do(ns, func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:6443"); return }); err != nil {
		t.Fatalf("%s: apiserver forwarder: %v", ns, err)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	t.Cleanup(func() {
		cancel()
		l.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := dial(ctx, "tcp", "127.0.0.1:6443")
				if err != nil {
					in.Close()
					return
				}
				track(in, true)
				track(out, true)
				defer func() { track(in, false); track(out, false); in.Close(); out.Close() }()
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					done <- struct{}{}
				}
				go pipe(out, in)
				go pipe(in, out)
				<-done // one direction ended: close both, which ends the other
				in.Close()
				out.Close()
				<-done
			}()
		}
	}()
}

// Outcome kinds of one request.
const (
	answered = "answered"
	refused  = "refused"
	dropped  = "dropped"
	// unreachable: an ICMP host/network unreachable came back.
	unreachable = "unreachable"
	failed      = "failed"
)

// reply is what became of one request: answered by a backend that saw a source address, or not.
type reply struct {
	kind    string
	backend string
	source  string
	err     error
}

// request sends one TCP connection or UDP datagram from ns (from src, or the routed source when
// src is invalid) to dst and reads the answer within timeout.
func request(ns, proto string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) reply {
	var c net.Conn
	err := netnsrun.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: timeout}
		network := "tcp"
		if proto == "UDP" {
			network = "udp"
		}
		if src.IsValid() {
			if network == "tcp" {
				d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			} else {
				d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
			}
		}
		c, err = d.Dial(network, dst.String())
		return err
	})
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if proto == "UDP" {
		// A connected socket: an ICMP port unreachable comes back as ECONNREFUSED on read.
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return classify(err)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return classify(err)
	}
	name, source, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return reply{kind: failed, err: fmt.Errorf("unexpected answer %q", line)}
	}
	return reply{kind: answered, backend: name, source: source}
}

func classify(err error) reply {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return reply{kind: refused, err: err}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return reply{kind: unreachable, err: err}
	case errors.As(err, &ne) && ne.Timeout():
		return reply{kind: dropped, err: err}
	case errors.Is(err, syscall.EPERM):
		// The node's own packet dropped by a rule in its output path.
		return reply{kind: dropped, err: err}
	}
	return reply{kind: failed, err: err}
}
