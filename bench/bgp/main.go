// Command bgp benchmarks BGP mode against a real BIRD 2, with the method of issue 5, twice:
//
//   - "announcer": three nodes (network namespaces, each running the announcer in a process of
//     its own) peer with a BIRD router using the lab's BIRD timers and BFD at 100 ms x 3; the
//     clock starts when the announcer is handed the change (no API server);
//   - "lab" (lab.go): the whole product in e2e/lab: Services through the real API server, the real
//     speakers, the lab's BIRD. Service created (the create call returned) -> routes from all 3
//     nodes, p50 and p99 over -routes Services, also from the call sent and by stage; the same
//     restart, SIGTERM and SIGSTOP figures. -lab-set passes chart values (dataplane.mode=off
//     measures announcing alone, as a speaker next to kube-proxy would).
//
// It prints one BENCH line per figure:
//
//   - route added -> BIRD holds it from all 3 nodes: p50 and p99 over -routes additions,
//   - announcer restarted with -restart-routes routes -> all of them back in BIRD, from process start,
//   - SIGTERM -> all of the node's routes gone from BIRD,
//   - SIGSTOP (frozen speaker) -> all of its routes gone from BIRD, through BFD.
//
// Needs root, iproute2 and bird2 (and, for the lab, what the lab needs); everything runs in
// herald-bgpt-* and herald-bgb-* namespaces.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/bgp/bgptest"
)

const (
	nodeASN = 64512
	command = "BENCH_ONLY=bgp make bench"
)

var routerV4 = netip.MustParseAddr("10.88.0.1")

func main() {
	bgptest.RunAgentIfAsked()
	lab.RunBackendIfAsked() // the lab runs this program as its backend pods
	routes := flag.Int("routes", 1000, "route additions (Services) timed one by one")
	restartRoutes := flag.Int("restart-routes", 5000, "routes (Services) of the restarted speaker; 0 skips the restart, SIGTERM and SIGSTOP figures of the lab")
	parts := flag.String("parts", "announcer,lab", "which figures: announcer (namespaces and BIRD only), lab (the whole product in the lab), present (the lab with -present Services already there)")
	presentRoutes := flag.Int("present-routes", 200, "Services timed one by one at each -present size")
	var present []int
	flag.Func("present", "Services already present for the present part, ascending sizes separated by commas (default 1000,10000,20000); -present-routes more are timed at each", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				return err
			}
			present = append(present, n)
		}
		return nil
	})
	var chartValues []string
	flag.Func("lab-set", "a helm --set value (KEY=VALUE) for the lab's controller and speakers, e.g. dataplane.mode=off; repeatable", func(v string) error {
		chartValues = append(chartValues, v)
		return nil
	})
	flag.Parse()
	if present == nil {
		present = []int{1000, 10000, 20000}
	}
	if err := bgptest.Available(); err != nil {
		log.Fatalf("bench/bgp: %v", err)
	}
	for _, part := range strings.Split(*parts, ",") {
		dir, err := os.MkdirTemp("", "herald-bgp-bench-")
		if err != nil {
			log.Fatal(err)
		}
		switch part {
		case "announcer":
			err = run(dir, *routes, *restartRoutes)
		case "lab":
			err = runLab(dir, *routes, *restartRoutes, chartValues)
		case "present":
			err = runPresent(dir, *presentRoutes, present, chartValues)
		default:
			err = fmt.Errorf("-parts: unknown %q", part)
		}
		if err != nil {
			log.Fatalf("bench/bgp %s: %v (logs in %s)", part, err, dir)
		}
		if os.Getenv("BGP_BENCH_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			log.Printf("kept %s", dir)
		}
	}
}

type figure struct {
	Figure  string  `json:"figure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Target  string  `json:"target"`
	Command string  `json:"command"`
}

func report(name string, d time.Duration, target string) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(figure{Figure: name, Value: float64(d.Microseconds()) / 1000, Unit: "ms", Target: target, Command: command})
	fmt.Printf("BENCH %s", b.String())
}

func peer() bgp.Peer {
	return bgp.Peer{
		Name: "tor", MyASN: nodeASN, ASN: bgptest.RouterASN, Address: routerV4,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectTime: 2 * time.Second,
		BFD: &bgp.BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 100 * time.Millisecond, DetectMultiplier: 3},
	}
}

func desired(h bgptest.Host, prefixes []netip.Prefix) bgp.Desired {
	routes := map[netip.Prefix]bgp.Attributes{}
	for _, p := range prefixes {
		routes[p] = bgp.Attributes{}
	}
	p := peer()
	return bgp.Desired{RouterID: h.IPv4, Peers: map[string]bgp.Peer{p.Name: p}, Routes: map[string]map[netip.Prefix]bgp.Attributes{p.Name: routes}}
}

// nthPrefix is the i-th Service /32 in 100.64.0.0/10.
func nthPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)}), 32)
}

func run(dir string, n, restartN int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := bgptest.New(ctx, dir, 3)
	if err != nil {
		return err
	}
	defer topo.Close()
	var birdPeers []bgptest.BirdPeer
	for i, h := range topo.Nodes {
		birdPeers = append(birdPeers, bgptest.BirdPeer{Name: fmt.Sprintf("n%d", i+1), Neighbor: h.IPv4, ASN: nodeASN, BFD: true})
	}
	if err := topo.StartBird(ctx, birdPeers); err != nil {
		return err
	}
	agents := make([]*bgptest.Agent, len(topo.Nodes))
	for i, h := range topo.Nodes {
		if agents[i], err = topo.StartAgent(h, bgptest.AgentOptions{}); err != nil {
			return err
		}
		defer agents[i].Kill()
		if err := agents[i].Apply(desired(h, nil)); err != nil {
			return err
		}
	}
	if err := waitEstablishedBird(topo.Bird, birdPeers, 20*time.Second); err != nil {
		return err
	}

	// 1. One route at a time, added on all three nodes at once.
	var took []time.Duration
	var prefixes []netip.Prefix
	for i := range n {
		p := nthPrefix(i)
		prefixes = append(prefixes, p)
		start := time.Now()
		if err := applyAll(topo, agents, prefixes); err != nil {
			return err
		}
		if err := waitRoutesBird(topo.Bird, p, len(agents), 5*time.Second); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	report(fmt.Sprintf("BGP: route added -> in BIRD from all 3 nodes, p50 of %d", n), took[len(took)/2], "")
	report(fmt.Sprintf("BGP: route added -> in BIRD from all 3 nodes, p99 of %d", n), took[len(took)*99/100], "< 50 ms")

	// 2. Node 1 restarts with restartN routes: from the new process's start to all of them in BIRD.
	node1 := topo.Nodes[0]
	big := make([]netip.Prefix, restartN)
	for i := range big {
		big[i] = nthPrefix(i)
	}
	if err := agents[0].Apply(desired(node1, big)); err != nil {
		return err
	}
	if err := waitProtoCountBird(topo.Bird, "n1", restartN, 30*time.Second); err != nil {
		return err
	}
	start := time.Now()
	if err := agents[0].Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := waitProtoCountBird(topo.Bird, "n1", 0, 10*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP: SIGTERM -> %d routes gone from BIRD", restartN), time.Since(start), "< 200 ms")
	agents[0].Wait(5 * time.Second)

	start = time.Now()
	if agents[0], err = topo.StartAgent(node1, bgptest.AgentOptions{}); err != nil {
		return err
	}
	if err := agents[0].Apply(desired(node1, big)); err != nil {
		return err
	}
	if err := waitProtoCountBird(topo.Bird, "n1", restartN, 30*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP: speaker restarted with %d routes -> all back in BIRD", restartN), time.Since(start), "< 2000 ms")

	// 3. Frozen speaker: BFD (100 ms x 3) makes BIRD drop its routes.
	if err := waitBFDUpBird(topo.Bird, node1.IPv4, 15*time.Second); err != nil {
		return err
	}
	start = time.Now()
	if err := agents[0].Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	if err := waitProtoCountBird(topo.Bird, "n1", 0, 10*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP: SIGSTOP (BFD 100 ms x 3) -> %d routes gone from BIRD", restartN), time.Since(start), "< 500 ms")
	return nil
}

func applyAll(topo *bgptest.Topology, agents []*bgptest.Agent, prefixes []netip.Prefix) error {
	var wg sync.WaitGroup
	errs := make([]error, len(agents))
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.Apply(desired(topo.Nodes[i], prefixes))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func waitEstablishedBird(bird *bgptest.Bird, peers []bgptest.BirdPeer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		for _, p := range peers {
			info, err := bird.Protocol(p.Name)
			if err != nil || info.Info != "Established" {
				return false, err
			}
		}
		return true, nil
	})
}

// waitRoutesBird polls BIRD (a query on its control socket costs well under a millisecond) until
// it holds want routes for prefix.
func waitRoutesBird(bird *bgptest.Bird, prefix netip.Prefix, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bgptest.WaitFor(ctx, 500*time.Microsecond, func() (bool, error) {
		r, err := bird.Routes(prefix)
		return len(r) == want, err
	})
}

func waitProtoCountBird(bird *bgptest.Bird, proto string, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bgptest.WaitFor(ctx, time.Millisecond, func() (bool, error) {
		n, err := bird.Count(proto)
		return n == want, err
	})
}

// waitBFDUpBird waits until BIRD's BFD session with addr is Up.
func waitBFDUpBird(bird *bgptest.Bird, addr netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bgptest.WaitFor(ctx, 50*time.Millisecond, func() (bool, error) {
		out, err := bird.Command("show bfd sessions")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == addr.String() && f[2] == "Up" {
				return true, nil
			}
		}
		return false, err
	})
}
