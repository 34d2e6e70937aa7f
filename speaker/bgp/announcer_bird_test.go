package bgp_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/bgp/bgptest"
)

// These tests run the announcer in node namespaces against a real BIRD 2 router (see bgptest).

func TestMain(m *testing.M) {
	bgptest.RunAgentIfAsked()
	os.Exit(m.Run())
}

const nodeASN = 64512

var (
	routerV4 = netip.MustParseAddr("10.88.0.1")
	routerV6 = netip.MustParseAddr("fd88::1")
)

func newBed(t *testing.T, nodes int, peers []bgptest.BirdPeer) *bgptest.Topology {
	t.Helper()
	bgptest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := bgptest.New(ctx, t.TempDir(), nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range topo.Nodes {
				if b, err := os.ReadFile(topo.LogPath(n)); err == nil {
					t.Logf("%s log:\n%s", n.Name, tail(string(b), 40))
				}
			}
			if b, err := os.ReadFile(topo.Dir + "/bird.log"); err == nil {
				t.Logf("BIRD log:\n%s", tail(string(b), 40))
			}
		}
		topo.Close()
	})
	if err := topo.StartBird(ctx, peers); err != nil {
		t.Fatal(err)
	}
	return topo
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func startAgent(t *testing.T, topo *bgptest.Topology, h bgptest.Host, opts bgptest.AgentOptions) *bgptest.Agent {
	t.Helper()
	a, err := topo.StartAgent(h, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill)
	return a
}

// routerPeer is a session from a node to the router.
func routerPeer(name string, addr netip.Addr, myASN uint32) bgp.Peer {
	return bgp.Peer{
		Name: name, MyASN: myASN, ASN: bgptest.RouterASN, Address: addr,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectTime: 2 * time.Second,
	}
}

func desired(h bgptest.Host, peers []bgp.Peer, routes map[string]map[netip.Prefix]bgp.Attributes) bgp.Desired {
	d := bgp.Desired{RouterID: h.IPv4, Peers: map[string]bgp.Peer{}, Routes: routes}
	for _, p := range peers {
		d.Peers[p.Name] = p
	}
	return d
}

func waitRoutes(t *testing.T, topo *bgptest.Topology, prefix netip.Prefix, want int, timeout time.Duration) []bgptest.Route {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var routes []bgptest.Route
	err := bgptest.WaitFor(ctx, 10*time.Millisecond, func() (bool, error) {
		var err error
		routes, err = topo.Bird.Routes(prefix)
		return err == nil && len(routes) == want, err
	})
	if err != nil {
		t.Fatalf("BIRD has %d routes for %s, want %d: %v (%+v)", len(routes), prefix, want, err, routes)
	}
	return routes
}

func routeFrom(t *testing.T, routes []bgptest.Route, proto string) bgptest.Route {
	t.Helper()
	for _, r := range routes {
		if r.Protocol == proto {
			return r
		}
	}
	t.Fatalf("no route from %s in %+v", proto, routes)
	return bgptest.Route{}
}

func TestRoutesReachBIRDWithAttributes(t *testing.T) {
	topo := newBed(t, 2, nil)
	n1, n2 := topo.Nodes[0], topo.Nodes[1]
	if err := topo.Reconfigure([]bgptest.BirdPeer{
		{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN},
		{Name: "n1v6", Neighbor: n1.IPv6, ASN: nodeASN},
		{Name: "n2", Neighbor: n2.IPv4, ASN: bgptest.RouterASN}, // iBGP: local preference travels
	}); err != nil {
		t.Fatal(err)
	}
	a1 := startAgent(t, topo, n1, bgptest.AgentOptions{})
	a2 := startAgent(t, topo, n2, bgptest.AgentOptions{})

	v4 := netip.MustParsePrefix("192.0.2.10/32")
	agg := netip.MustParsePrefix("198.51.100.0/24")
	v6 := netip.MustParsePrefix("2001:db8::10/128")
	if err := a1.Apply(desired(n1,
		[]bgp.Peer{routerPeer("r4", routerV4, nodeASN), routerPeer("r6", routerV6, nodeASN)},
		map[string]map[netip.Prefix]bgp.Attributes{
			"r4": {
				v4:  {Communities: []string{"65000:1", "65000:2"}, LargeCommunities: []string{"64512:1:2"}},
				agg: {},
			},
			"r6": {v6: {Communities: []string{"65000:6"}}},
		})); err != nil {
		t.Fatal(err)
	}
	if err := a2.Apply(desired(n2,
		[]bgp.Peer{routerPeer("r4", routerV4, bgptest.RouterASN)},
		map[string]map[netip.Prefix]bgp.Attributes{"r4": {v4: {LocalPref: 250}}})); err != nil {
		t.Fatal(err)
	}

	routes := waitRoutes(t, topo, v4, 2, 15*time.Second)
	r1 := routeFrom(t, routes, "n1")
	if r1.NextHop != n1.IPv4 {
		t.Errorf("route from node1 via %v, want %v", r1.NextHop, n1.IPv4)
	}
	if got := r1.Attrs["BGP.community"]; got != "(65000,1) (65000,2)" {
		t.Errorf("node1's communities = %q", got)
	}
	if got := r1.Attrs["BGP.large_community"]; got != "(64512, 1, 2)" {
		t.Errorf("node1's large communities = %q", got)
	}
	r2 := routeFrom(t, routes, "n2")
	if r2.NextHop != n2.IPv4 {
		t.Errorf("route from node2 via %v, want %v", r2.NextHop, n2.IPv4)
	}
	if got := r2.Attrs["BGP.local_pref"]; got != "250" {
		t.Errorf("node2's local preference = %q, want 250", got)
	}
	if _, ok := r2.Attrs["BGP.community"]; ok {
		t.Errorf("node2's route carries communities it was not given: %v", r2.Attrs)
	}
	waitRoutes(t, topo, agg, 1, 5*time.Second)
	r6 := routeFrom(t, waitRoutes(t, topo, v6, 1, 15*time.Second), "n1v6")
	if r6.NextHop != n1.IPv6 {
		t.Errorf("IPv6 route via %v, want %v", r6.NextHop, n1.IPv6)
	}
	if got := r6.Attrs["BGP.community"]; got != "(65000,6)" {
		t.Errorf("IPv6 route's communities = %q", got)
	}

	st, err := a1.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || !st[0].Established || !st[1].Established || st[0].PrefixesAdvertised != 2 {
		t.Errorf("node1 status = %+v", st)
	}
	metrics, err := a1.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`herald_bgp_session_up{address="10.88.0.1",peer="r4"} 1`,
		`herald_bgp_announced_prefixes{address="10.88.0.1",peer="r4"} 2`,
		`herald_bgp_announced_prefixes{address="fd88::1",peer="r6"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	if !strings.Contains(metrics, `herald_bgp_updates_sent_total{address="10.88.0.1",peer="r4"}`) {
		t.Errorf("metrics lack updates sent:\n%s", metrics)
	}

	// Changing node1's communities on v4 moves it between route groups: BIRD sees the new ones,
	// and the sessions stay up.
	before, err := topo.Bird.Protocol("n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.Apply(desired(n1,
		[]bgp.Peer{routerPeer("r4", routerV4, nodeASN), routerPeer("r6", routerV6, nodeASN)},
		map[string]map[netip.Prefix]bgp.Attributes{
			"r4": {v4: {Communities: []string{"65000:3"}}},
			"r6": {v6: {Communities: []string{"65000:6"}}},
		})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = bgptest.WaitFor(ctx, 10*time.Millisecond, func() (bool, error) {
		routes, err := topo.Bird.Routes(v4)
		for _, r := range routes {
			if r.Protocol == "n1" && r.Attrs["BGP.community"] == "(65000,3)" && r.Attrs["BGP.large_community"] == "" {
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("BIRD did not get node1's new communities: %v", err)
	}
	waitRoutes(t, topo, agg, 0, 5*time.Second) // removed from the only peer: withdrawn
	after, err := topo.Bird.Protocol("n1")
	if err != nil {
		t.Fatal(err)
	}
	if !after.SameSession(before) {
		t.Errorf("changing routes reset the session: before %+v, after %+v", before, after)
	}

	// Withdrawal: node2 stops advertising v4.
	if err := a2.Apply(desired(n2, []bgp.Peer{routerPeer("r4", routerV4, bgptest.RouterASN)}, nil)); err != nil {
		t.Fatal(err)
	}
	routeFrom(t, waitRoutes(t, topo, v4, 1, 5*time.Second), "n1")

	// SIGTERM: node1 closes its sessions with a Cease and BIRD drops its routes at once.
	start := time.Now()
	if err := a1.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, v4, 0, 2*time.Second)
	t.Logf("routes gone from BIRD %v after SIGTERM", time.Since(start))
	// BIRD drops the routes when the session closes, a moment before its log shows the
	// notification: read the log until it shows or time is up.
	var logb []byte
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		logb, _ = os.ReadFile(topo.Dir + "/bird.log")
		// RFC 8203's shutdown communication tells the router's operator why.
		if strings.Contains(string(logb), `n1: Received: Administrative shutdown: "Herald speaker stopping"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("BIRD's log shows no Cease from node1 within 2s of SIGTERM:\n%s", tail(string(logb), 20))
			break
		}
	}
}

func waitStatus(t *testing.T, a *bgptest.Agent, peer string, timeout time.Duration, cond func(bgp.PeerStatus) bool) bgp.PeerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last bgp.PeerStatus
	err := bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		st, err := a.Status()
		for _, s := range st {
			if s.Name == peer {
				last = s
				return cond(s), err
			}
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("peer %s: %v; last status %+v", peer, err, last)
	}
	return last
}

func TestMD5AndSessionReasons(t *testing.T) {
	topo := newBed(t, 4, nil)
	n1, n2, n3, n4 := topo.Nodes[0], topo.Nodes[1], topo.Nodes[2], topo.Nodes[3]
	if err := topo.Reconfigure([]bgptest.BirdPeer{
		{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, Password: "s3cret"},
		{Name: "n2", Neighbor: n2.IPv4, ASN: nodeASN, Password: "s3cret"},
		{Name: "n3", Neighbor: n3.IPv4, ASN: nodeASN},
		{Name: "n4", Neighbor: n4.IPv4, ASN: nodeASN},
	}); err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix("192.0.2.20/32")
	routes := map[string]map[netip.Prefix]bgp.Attributes{"r": {prefix: {}}}

	good := routerPeer("r", routerV4, nodeASN)
	good.Password = "s3cret"
	a1 := startAgent(t, topo, n1, bgptest.AgentOptions{})
	if err := a1.Apply(desired(n1, []bgp.Peer{good}, routes)); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Password = "wrong"
	a2 := startAgent(t, topo, n2, bgptest.AgentOptions{})
	if err := a2.Apply(desired(n2, []bgp.Peer{bad}, routes)); err != nil {
		t.Fatal(err)
	}
	wrongASN := routerPeer("r", routerV4, nodeASN)
	wrongASN.ASN = 64999
	a3 := startAgent(t, topo, n3, bgptest.AgentOptions{})
	if err := a3.Apply(desired(n3, []bgp.Peer{wrongASN}, routes)); err != nil {
		t.Fatal(err)
	}

	// dynamicASN external: the router's ASN is not configured; any is accepted.
	anyASN := routerPeer("r", routerV4, nodeASN)
	anyASN.ASN = 0
	a4 := startAgent(t, topo, n4, bgptest.AgentOptions{})
	if err := a4.Apply(desired(n4, []bgp.Peer{anyASN}, routes)); err != nil {
		t.Fatal(err)
	}

	routes4 := waitRoutes(t, topo, prefix, 2, 15*time.Second)
	routeFrom(t, routes4, "n1")
	routeFrom(t, routes4, "n4")
	waitStatus(t, a1, "r", 5*time.Second, func(s bgp.PeerStatus) bool { return s.Established })
	st := waitStatus(t, a3, "r", 15*time.Second, func(s bgp.PeerStatus) bool { return strings.Contains(s.Reason, "wrong ASN") })
	t.Logf("wrong ASN: %s", st.Reason)
	// Give the mismatched MD5 session several connect attempts: it must never come up.
	time.Sleep(5 * time.Second)
	st = waitStatus(t, a2, "r", time.Second, func(s bgp.PeerStatus) bool { return !s.Established })
	if !strings.Contains(st.Reason, "check the password") {
		t.Errorf("MD5 mismatch reason = %q", st.Reason)
	}
	if p, err := topo.Bird.Protocol("n2"); err != nil || p.Info == "Established" {
		t.Errorf("BIRD's session with the wrong password: %+v %v", p, err)
	}
	if routes, _ := topo.Bird.Routes(prefix); len(routes) != 2 {
		t.Errorf("BIRD has %d routes for %s, want node1's and node4's only", len(routes), prefix)
	}
}

func TestChangingOnePeerKeepsTheOthers(t *testing.T) {
	topo := newBed(t, 1, nil)
	n1 := topo.Nodes[0]
	if err := topo.Reconfigure([]bgptest.BirdPeer{
		{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN},
		{Name: "n1v6", Neighbor: n1.IPv6, ASN: nodeASN},
	}); err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("192.0.2.40/32"), netip.MustParsePrefix("2001:db8::40/128")
	r4, r6 := routerPeer("r4", routerV4, nodeASN), routerPeer("r6", routerV6, nodeASN)
	routes := map[string]map[netip.Prefix]bgp.Attributes{"r4": {v4: {}}, "r6": {v6: {}}}
	a := startAgent(t, topo, n1, bgptest.AgentOptions{})
	if err := a.Apply(desired(n1, []bgp.Peer{r4, r6}, routes)); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, v4, 1, 15*time.Second)
	waitRoutes(t, topo, v6, 1, 15*time.Second)
	before4, _ := topo.Bird.Protocol("n1")
	before6, _ := topo.Bird.Protocol("n1v6")

	// The IPv6 peer changes (hold time): only its session is replaced.
	r6.HoldTime = 6 * time.Second
	if err := a.Apply(desired(n1, []bgp.Peer{r4, r6}, routes)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		p, err := topo.Bird.Protocol("n1v6")
		return p.Info == "Established" && !p.SameSession(before6), err
	}); err != nil {
		t.Fatalf("the changed IPv6 session did not come back: %v", err)
	}
	waitRoutes(t, topo, v6, 1, 5*time.Second)
	// An advertisement change towards the IPv6 peer (a community) does not touch the IPv4 one.
	routes["r6"] = map[netip.Prefix]bgp.Attributes{v6: {Communities: []string{"65000:9"}}}
	if err := a.Apply(desired(n1, []bgp.Peer{r4, r6}, routes)); err != nil {
		t.Fatal(err)
	}
	if err := bgptest.WaitFor(ctx, 10*time.Millisecond, func() (bool, error) {
		r, err := topo.Bird.Routes(v6)
		return len(r) == 1 && r[0].Attrs["BGP.community"] == "(65000,9)", err
	}); err != nil {
		t.Fatalf("community change did not reach BIRD: %v", err)
	}
	// Removing the IPv6 peer closes its session and withdraws its route, still without touching
	// the IPv4 session.
	delete(routes, "r6")
	if err := a.Apply(desired(n1, []bgp.Peer{r4}, routes)); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, v6, 0, 5*time.Second)
	after4, _ := topo.Bird.Protocol("n1")
	if !after4.SameSession(before4) {
		t.Errorf("the IPv4 session was touched: before %+v, after %+v", before4, after4)
	}
	if st, err := a.Status(); err != nil || len(st) != 1 || st[0].Name != "r4" {
		t.Errorf("status after removing r6: %+v %v", st, err)
	}
}

// TestGracefulRestartKeepsRoutes: with graceful restart a stopping speaker sends no Cease and
// BIRD keeps its routes. The session has BFD too, which BIRD must be told to treat as a graceful
// restart ("bfd graceful"): BIRD 2.0 takes any BFD session going down, even the AdminDown a
// stopping speaker sends, for a failure.
func TestGracefulRestartKeepsRoutes(t *testing.T) {
	topo := newBed(t, 1, nil)
	n1 := topo.Nodes[0]
	if err := topo.Reconfigure([]bgptest.BirdPeer{{Name: "n1", Neighbor: n1.IPv4, ASN: nodeASN, GracefulRestart: true, BFD: true}}); err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix("192.0.2.50/32")
	p := routerPeer("r", routerV4, nodeASN)
	p.GracefulRestart = true
	bfd := fastBFD
	p.BFD = &bfd
	d := desired(n1, []bgp.Peer{p}, map[string]map[netip.Prefix]bgp.Attributes{"r": {prefix: {}}})
	a := startAgent(t, topo, n1, bgptest.AgentOptions{KeepGracefulRestart: true})
	if err := a.Apply(d); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, topo, prefix, 1, 15*time.Second)
	waitBirdBFD(t, topo, n1.IPv4, "Up", 10*time.Second)
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !a.Wait(5 * time.Second) {
		t.Fatal("agent did not exit on SIGTERM")
	}
	time.Sleep(2 * time.Second)
	if routes, err := topo.Bird.Routes(prefix); err != nil || len(routes) != 1 {
		t.Fatalf("with graceful restart BIRD should keep the route while the speaker is away: %+v %v", routes, err)
	}
	if proto, _ := topo.Bird.Command("show protocols all n1"); !strings.Contains(proto, "Neighbor graceful restart active") {
		t.Fatalf("BIRD is not in graceful restart for node1:\n%s", proto)
	}
	// The speaker comes back: its session re-establishes and the route is fresh again.
	a = startAgent(t, topo, n1, bgptest.AgentOptions{KeepGracefulRestart: true})
	if err := a.Apply(d); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "r", 15*time.Second, func(s bgp.PeerStatus) bool { return s.Established })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		proto, err := topo.Bird.Command("show protocols all n1")
		routes, _ := topo.Bird.Routes(prefix)
		return len(routes) == 1 && strings.Contains(proto, "Established") && !strings.Contains(proto, "graceful restart active"), err
	}); err != nil {
		t.Fatalf("route not refreshed after the restart: %v", err)
	}
	// The restarted speaker said its forwarding state was preserved (the F bit, RFC 4724 section
	// 3): without it BIRD flushes the stale routes as soon as the new session opens, before the
	// speaker has sent them again, and the router's paths through the node go and come back.
	if proto, _ := topo.Bird.Command("show protocols all n1"); !strings.Contains(proto, "AF preserved: ipv4") {
		t.Errorf("the restarted speaker's graceful restart capability does not say forwarding was preserved:\n%s", proto)
	}
}
