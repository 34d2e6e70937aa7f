package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/bgp/bgptest"
)

// BFD against BIRD 2's `protocol bfd` (the sessions are speaker/bfd's; BIRD's timers are the
// lab's, 100 ms x 3).

var fastBFD = bgp.BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 100 * time.Millisecond, DetectMultiplier: 3}

// birdBFDState is BIRD's state of its BFD session with addr ("" when it has none).
func birdBFDState(t *testing.T, topo *bgptest.Topology, addr netip.Addr) string {
	t.Helper()
	out, err := topo.Bird.Command("show bfd sessions")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == addr.String() {
			for _, state := range f[1:] {
				switch state {
				case "Up", "Down", "Init", "AdminDown":
					return state
				}
			}
		}
	}
	return ""
}

func waitBirdBFD(t *testing.T, topo *bgptest.Topology, addr netip.Addr, state string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	if err := bgptest.WaitFor(ctx, 20*time.Millisecond, func() (bool, error) {
		last = birdBFDState(t, topo, addr)
		return last == state, nil
	}); err != nil {
		t.Fatalf("BIRD's BFD session with %s: %q, want %q", addr, last, state)
	}
}

// nft loads an nftables script into host's namespace.
func nft(t *testing.T, h bgptest.Host, script string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := bgptest.Exec(context.Background(), h, "nft", "-f", path); err != nil {
		t.Fatalf("nft in %s: %v\n%s", h.Name, err, out)
	}
}

var counterPackets = regexp.MustCompile(`counter packets (\d+)`)

// sentBFD counts, with an nftables counter in host's namespace, the BFD packets it sent to port.
func sentBFD(t *testing.T, h bgptest.Host, port int) func() int {
	t.Helper()
	nft(t, h, fmt.Sprintf("table inet herald-bfdcount { chain out { type filter hook output priority 0; udp dport %d counter; }; }", port))
	return func() int {
		out, err := bgptest.Exec(context.Background(), h, "nft", "list", "chain", "inet", "herald-bfdcount", "out")
		m := counterPackets.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("reading the counter: %v\n%s", err, out)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
}
func TestBFDDetectsFrozenSpeaker(t *testing.T) {
	topo := newBed(t, 1, nil)
	n1 := topo.Nodes[0]
	if err := topo.Reconfigure([]bgptest.BirdPeer{{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, BFD: true}}); err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix("192.0.2.30/32")
	p := routerPeer("r", routerV4, nodeASN)
	p.BFD = &bgp.BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 100 * time.Millisecond, DetectMultiplier: 3}
	a := startAgent(t, topo, n1, bgptest.AgentOptions{})
	if err := a.Apply(desired(n1, []bgp.Peer{p}, map[string]map[netip.Prefix]bgp.Attributes{"r": {prefix: {}}})); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 15*time.Second)
	waitStatus(t, a, "r", 10*time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Up" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		out, err := topo.Bird.Command("show bfd sessions")
		return strings.Contains(out, n1.IPv4.String()) && strings.Contains(out, " Up "), err
	}); err != nil {
		t.Fatalf("BIRD's BFD session never came up: %v", err)
	}

	start := time.Now()
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 0, 3*time.Second)
	took := time.Since(start)
	t.Logf("routes gone from BIRD %v after SIGSTOP (BFD 100 ms x 3, hold time 9 s)", took)
	if took > time.Second {
		t.Errorf("BIRD dropped the frozen speaker's routes after %v: that is not BFD (detection 300 ms)", took)
	}

	// Thawed, the speaker's session comes back; then the node is cut off silently (frames dropped,
	// carrier up): BFD again.
	if err := a.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 20*time.Second)
	waitStatus(t, a, "r", 10*time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Up" })
	start = time.Now()
	if err := topo.DropFrames(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 0, 3*time.Second)
	took = time.Since(start)
	t.Logf("routes gone from BIRD %v after the node was cut off silently", took)
	if took > time.Second {
		t.Errorf("BIRD dropped the cut-off node's routes after %v: that is not BFD (detection 300 ms)", took)
	}
	st := waitStatus(t, a, "r", 5*time.Second, func(s bgp.PeerStatus) bool { return !s.Established })
	if !strings.Contains(st.Reason, "BFD detected") || st.BFD == "Up" {
		t.Errorf("the node's own view of the cut: %+v", st)
	}
	if err := topo.RestoreFrames(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 20*time.Second)
}

// TestBFDPassive: a passive session sends nothing until the router does, so with BIRD passive
// too no session comes up; made active in place, it comes Up without resetting BGP; made passive
// again, it still answers an active router after the path was cut.
func TestBFDPassive(t *testing.T) {
	topo := newBed(t, 1, nil)
	n1 := topo.Nodes[0]
	topo.BirdBFDPassive = true
	if err := topo.Reconfigure([]bgptest.BirdPeer{{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, BFD: true}}); err != nil {
		t.Fatal(err)
	}
	sent := sentBFD(t, n1, 3784)
	prefix := netip.MustParsePrefix("192.0.2.31/32")
	passive := fastBFD
	passive.Passive = true
	p := routerPeer("r", routerV4, nodeASN)
	p.BFD = &passive
	routes := map[string]map[netip.Prefix]bgp.Attributes{"r": {prefix: {}}}
	a := startAgent(t, topo, n1, bgptest.AgentOptions{})
	if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 15*time.Second)
	time.Sleep(2 * time.Second) // two of BIRD's slow intervals: a session would have started
	if n := sent(); n != 0 {
		t.Errorf("a passive session facing a passive router sent %d packets", n)
	}
	if st := birdBFDState(t, topo, n1.IPv4); st == "Up" || st == "Init" {
		t.Errorf("BIRD's BFD session is %s although neither side may start it", st)
	}
	waitStatus(t, a, "r", time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Down" && s.Established })
	before, _ := topo.Bird.Protocol("n1")

	active := fastBFD
	p.BFD = &active
	if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
		t.Fatal(err)
	}
	waitBirdBFD(t, topo, n1.IPv4, "Up", 5*time.Second)
	waitStatus(t, a, "r", 5*time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Up" })
	if after, _ := topo.Bird.Protocol("n1"); !after.SameSession(before) {
		t.Errorf("changing the BFD profile reset the BGP session: before %+v, after %+v", before, after)
	}

	// Passive again (the session stays Up: passive only decides who starts), BIRD active; the
	// path is cut long enough for both sides to give up, then restored: BIRD starts, the node
	// answers.
	topo.BirdBFDPassive = false
	if err := topo.Reconfigure([]bgptest.BirdPeer{{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, BFD: true}}); err != nil {
		t.Fatal(err)
	}
	p.BFD = &passive
	if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := topo.DropFrames(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "r", 3*time.Second, func(s bgp.PeerStatus) bool { return s.BFD != "Up" })
	time.Sleep(time.Second)
	if err := topo.RestoreFrames(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "r", 15*time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Up" && s.Established })
	waitRoutes(t, topo, prefix, 1, 15*time.Second)
}

// TestBFDMultihopMinimumTTL: a multi-hop BGP session gets a multi-hop BFD session (port 4784).
// The node's namespace rewrites the TTL of BIRD's BFD packets to 250, as if they had crossed five
// routers: with the default minimum of 254 the node refuses them and its session never comes Up;
// with minimumTtl 250, set in place, it does.
func TestBFDMultihopMinimumTTL(t *testing.T) {
	topo := newBed(t, 1, nil)
	n1 := topo.Nodes[0]
	if err := topo.Reconfigure([]bgptest.BirdPeer{{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, BFD: true, Multihop: true}}); err != nil {
		t.Fatal(err)
	}
	nft(t, n1, "table ip herald-ttl { chain pre { type filter hook prerouting priority mangle; udp dport 4784 ip ttl set 250; }; }")
	prefix := netip.MustParsePrefix("192.0.2.32/32")
	strict := fastBFD
	p := routerPeer("r", routerV4, nodeASN)
	p.EBGPMultiHop = true
	p.BFD = &strict
	routes := map[string]map[netip.Prefix]bgp.Attributes{"r": {prefix: {}}}
	a := startAgent(t, topo, n1, bgptest.AgentOptions{})
	if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 15*time.Second)
	time.Sleep(3 * time.Second)
	if st := waitStatus(t, a, "r", time.Second, func(bgp.PeerStatus) bool { return true }); st.BFD == "Up" {
		t.Fatalf("the node accepted BFD packets with TTL 250 although the minimum is 254: %+v", st)
	}
	if st := birdBFDState(t, topo, n1.IPv4); st == "" {
		t.Fatal("BIRD has no multi-hop BFD session with the node")
	}

	loose := fastBFD
	loose.MinimumTTL = 250
	p.BFD = &loose
	if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "r", 10*time.Second, func(s bgp.PeerStatus) bool { return s.BFD == "Up" })
	waitBirdBFD(t, topo, n1.IPv4, "Up", 5*time.Second)

	// The speaker applies its desired state on every Service change: a burst of unchanged ones,
	// longer than BIRD's detection time, must not hold back the node's BFD packets.
	before, _ := topo.Bird.Protocol("n1")
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		if err := a.Apply(desired(n1, []bgp.Peer{p}, routes)); err != nil {
			t.Fatal(err)
		}
	}
	if st := birdBFDState(t, topo, n1.IPv4); st != "Up" {
		t.Errorf("BIRD's BFD session after a burst of unchanged updates: %q", st)
	}
	if after, _ := topo.Bird.Protocol("n1"); !after.SameSession(before) {
		t.Errorf("the BGP session was reset during a burst of unchanged updates: before %+v, after %+v", before, after)
	}
}
