// Package lifecycle runs the operator's weekly events against Herald on real nodes (kubelet,
// containerd; Herald installed with helm from its image) under live traffic (issue 18): a helm
// upgrade to a new image, a helm rollback, a speaker pod deleted, the controller killed during an
// upgrade, a kubectl drain of the node owning the most addresses, that node's speaker stopped while
// it is cordoned (the node leaving), its uncordon, a node's kubelet stopped, and an
// upgrade from the previous release's chart and image, and a node cut off the network. While each
// happens, clients keep opening new connections and hold long-lived streams to LoadBalancer
// Services (externalTrafficPolicy Cluster and Local, IPv4 and IPv6): L2 Services from the segment's
// client, BGP Services from the client behind the router, whose BIRD peers with every node's
// speaker. ARP/NDP probes count owner changes of every L2 address (a packet socket at the client
// records the new owners' gratuitous ARP/NA, which time a node cut's failover), a watch of BIRD's table the
// changes of every BGP address's paths, and a watch of the Services their writes. Each event gets its own figures, printed as a table and as
// `BENCH {json}` lines (bench/lifecycle/run.sh records them in bench/results.json).
//
// It takes several minutes, so it runs only with HERALD_LIFECYCLE=1 (make lifecycle); otherwise
// its tests skip. Prerequisites as e2e/kubelet's (labsuite.KubeletMain).
package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

const (
	prefix = "herald-lc-"
	ns     = "default"
	// backends is the backend Deployment's replicas: one per node (spread), so every node has a
	// Local endpoint and a drain takes one away.
	backends = 3
	// rate and streams are the load per target (address): new connections per second, and
	// long-lived streams.
	rate    = 5
	streams = 2
	// enableEnv runs the package: it needs several minutes of real nodes.
	enableEnv = "HERALD_LIFECYCLE"
	// valuesEnv holds extra chart values (KEY=VALUE,...) for every install and upgrade, e.g.
	// failover.detectAfter=1s on a machine too saturated for the default failure detection.
	valuesEnv = "HERALD_LIFECYCLE_VALUES"
	// benchCommand is how the figures are measured (bench/lifecycle/run.sh).
	benchCommand = "BENCH_ONLY=lifecycle make bench"
)

func TestMain(m *testing.M) {
	lab.RunBackendIfAsked()
	if os.Getenv(enableEnv) != "1" {
		fmt.Printf("e2e/lifecycle: skipped (%s=1, or make lifecycle, runs it: several minutes of real nodes)\n", enableEnv)
		os.Exit(0)
	}
	labsuite.KubeletMain(m, prefix)
}

// result is one event's figures.
type result struct {
	Event string
	counts
	// Steady is from the event's start to the last of: the event done (rollout complete, node
	// back), the last failed connection, broken stream or IP move.
	Steady time.Duration
	// AllowedBroken counts the broken streams the targets allow (the drained node's backends).
	AllowedBroken int
	Note          string
	// Load is the machine's 1-minute load average when the event ended (the lab shares the
	// machine: a saturated one delays pod restarts and heartbeats).
	Load string
	// L2 and BGP are the figures of the L2 addresses (from the segment's client) and of the BGP
	// addresses (from behind the router) apart; Cluster those of the externalTrafficPolicy
	// Cluster addresses (L2 and BGP).
	L2, BGP, Cluster counts
	// Failover (a node cut off only) is how long after the cut its addresses failed over.
	Failover failover
}

// crashTarget is the L2 failover target for a node lost (crash, cut off): the chart's
// failover.detectAfter (250 ms), with margin.
const crashTarget = 300 * time.Millisecond

// announcedSettle is the controller's: a True herald.io/Announced condition whose announcing
// nodes changed is rewritten once the new nodes have held this long (plus a margin here).
const announcedSettle = 70 * time.Second

// bgpService names start with it: the load's keys (target.String) tell BGP targets by it.
const bgpService = "lc-bgp-"

func isBGP(key string) bool { return strings.HasPrefix(key, bgpService) }
func isL2(key string) bool  { return !isBGP(key) }

// isCluster: the key's Service has externalTrafficPolicy Cluster (services names them so).
func isCluster(key string) bool {
	svc, _, _ := strings.Cut(key, " ")
	return strings.HasSuffix(svc, "-cluster")
}

// TestLifecycle runs every event in turn under the same load, then prints the table.
func TestLifecycle(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := t.Context()
	helm := helmOK(t)
	// The previous release (hack/prev-release.sh) is installed first, to be upgraded from under load.
	prevDir := os.Getenv("HERALD_PREV_DIR")
	prevTag := ""
	if prevDir != "" {
		prevTag = installPrevious(t, l, prevDir)
	}
	heraldReady(t, l, cs, prevTag)
	t.Logf("chart values from %s: %q", valuesEnv, chartValues())

	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "lc", map[string]any{"addresses": []any{lab.L2PoolV4, lab.L2PoolV6}})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "lc", map[string]any{"ipAddressPools": []any{"lc"}})
	bgpObjects(t, l, dyn)
	targets := services(t, l, cs)
	ld := newLoad(l, cs, ns, targets, rate, streams)
	if err := ld.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ld.Stop()
	labsuite.WaitFor(t, time.Minute, "every L2 address owned, every BGP address with a path from every node, every stream open", func() (bool, string) {
		snap := ld.Snapshot()
		paths := ld.Paths()
		full := 0
		for _, p := range paths {
			if len(p) == len(l.Nodes()) {
				full++
			}
		}
		return len(ld.Owners()) == len(targets)/2 && full == len(targets)/2 && total(snap, all).Streams >= len(targets)*streams,
			fmt.Sprintf("owners %v, paths %v, %+v", ld.Owners(), paths, total(snap, all))
	})

	// The controller writes each Service's Announced condition once the speakers' statuses have
	// followed: the setup's last writes, which must not land in the first event.
	labsuite.WaitFor(t, time.Minute, "every Service Announced", func() (bool, string) {
		var missing []string
		for _, tg := range targets {
			s, err := cs.CoreV1().Services(ns).Get(ctx, tg.Service, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if !slices.ContainsFunc(s.Status.Conditions, func(c metav1.Condition) bool {
				return c.Type == config.ConditionAnnounced && c.Status == metav1.ConditionTrue
			}) {
				missing = append(missing, tg.Service)
			}
		}
		return len(missing) == 0, fmt.Sprint("not yet: ", missing)
	})
	time.Sleep(2 * time.Second) // the load's watch has seen the last write

	var results []result
	run := func(name string, targetsZero bool, event func() string) {
		r := measure(t, ld, name, event)
		results = append(results, r)
		t.Logf("%s: %s", name, r.summary())
		if targetsZero && (r.Failed > 0 || r.Broken > 0 || r.Moves > 0 || r.Routes > 0 || r.Writes > 0) {
			t.Errorf("%s: want 0 failed connections, 0 broken streams, 0 IP moves, 0 BGP path changes, 0 Service writes; got %s", name, r.summary())
		}
	}
	run("idle (control)", true, func() string { time.Sleep(10 * time.Second); return "" })
	if prevDir != "" {
		run("helm upgrade from the previous release", true, func() string {
			helm(l.UpgradeHerald(chartValues()...))
			heraldReady(t, l, cs, "")
			return "chart and image of " + prevTag + " -> this tree's"
		})
	} else {
		t.Logf("no upgrade from the previous release: HERALD_PREV_DIR is not set (hack/prev-release.sh builds it; make lifecycle sets it)")
	}
	current := heraldTag(t, cs)
	// A second tag of the same image, so an upgrade really rolls every pod.
	next := current + "-lc2"
	tagImage(t, l, current, next)
	run("helm upgrade to a new image", true, func() string {
		helm(l.UpgradeHerald(append(chartValues(), "image.tag="+next)...))
		heraldReady(t, l, cs, next)
		return current + " -> " + next
	})
	run("helm rollback", true, func() string {
		helm(l.Helm("rollback", "herald"))
		heraldReady(t, l, cs, current)
		return "to the previous revision (" + current + ")"
	})
	run("speaker pod deleted", true, func() string {
		node := mostOwned(ld.Owners())
		deletePods(t, cs, "app.kubernetes.io/component=speaker", node, 30)
		heraldReady(t, l, cs, current)
		return "on " + node + ", the owner of the most addresses"
	})
	run("controller killed during an upgrade", true, func() string {
		helm(l.UpgradeHerald(append(chartValues(), "image.tag="+next)...))
		time.Sleep(2 * time.Second)
		deletePods(t, cs, "app.kubernetes.io/component=controller", "", 0)
		heraldReady(t, l, cs, next)
		return "every controller pod deleted (grace 0) 2 s into the upgrade"
	})
	var drained string
	results = append(results, func() result {
		drained = mostOwned(ld.Owners())
		r := measure(t, ld, "kubectl drain", func() string {
			out, err := kubectl(ctx, l, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
			if err != nil {
				t.Fatalf("kubectl drain %s: %v\n%s", drained, err, out)
			}
			waitBackends(t, cs)
			return "of " + drained + ", the owner of the most addresses"
		})
		r.AllowedBroken = r.BrokenOn[drained]
		t.Logf("kubectl drain: %s", r.summary())
		// A cordon is no exclusion (the drained node keeps announcing while its speaker runs):
		// only the Local-policy addresses move or lose the node's path, when its endpoint goes;
		// the only streams that break are those served by its evicted backends.
		if r.Failed > 0 || r.Broken > r.AllowedBroken || r.Gaps > 0 || r.Cluster.Moves > 0 || r.Cluster.Routes > 0 {
			t.Errorf("kubectl drain of %s: want 0 failed new connections, no broken stream but those served by %s, no BGP address withdrawn before another path was in, no Cluster-policy address moved or its paths changed; got %s (Cluster policy: %d moves, %d path changes)",
				drained, drained, r.summary(), r.Cluster.Moves, r.Cluster.Routes)
		}
		return r
	}())
	// The drained node leaves: its speaker stops by SIGTERM while the node is cordoned (as at the
	// shutdown after a drain). It hands its L2 addresses over make before break and withdraws its
	// BGP paths; the DaemonSet starts it again (the node is still there), and rebalancing hands it
	// addresses back once it has been alive for 10 s: both counted here.
	results = append(results, func() result {
		var stopped, left time.Time
		r := measure(t, ld, "drained node's speaker stopped", func() string {
			before := ld.Owners()
			stopped = time.Now()
			deletePods(t, cs, "app.kubernetes.io/component=speaker", drained, 30)
			heraldReady(t, l, cs, "")
			left = time.Now()
			time.Sleep(15 * time.Second) // rebalancing hands the node addresses back
			owned := 0
			for _, o := range before {
				if o == drained {
					owned++
				}
			}
			return fmt.Sprintf("on the cordoned %s (owner of %d L2 addresses); its speaker pod deleted (SIGTERM), recreated by the DaemonSet", drained, owned)
		})
		away, back := ld.MovesOf(drained, stopped, left)
		r.Note += fmt.Sprintf("; until the new speaker was Ready: %d L2 addresses moved away from it, %d to it", away, back)
		t.Logf("drained node's speaker stopped: %s", r.summary())
		if r.Failed > 0 || r.Gaps > 0 {
			t.Errorf("drained node's speaker stopped: want 0 failed new connections and no BGP address withdrawn before another path was in (a make-before-break leave); got %s", r.summary())
		}
		return r
	}())
	// Uncordoned, the node changes nothing: a cordon took it out of nothing.
	results = append(results, func() result {
		r := measure(t, ld, "kubectl uncordon", func() string {
			if out, err := kubectl(ctx, l, "uncordon", drained); err != nil {
				t.Fatalf("kubectl uncordon %s: %v\n%s", drained, err, out)
			}
			time.Sleep(15 * time.Second) // time for rebalancing offers, were there any
			return "of " + drained
		})
		t.Logf("kubectl uncordon: %s", r.summary())
		if r.Failed > 0 || r.Broken > 0 || r.Moves > 0 || r.Routes > 0 {
			t.Errorf("kubectl uncordon: want 0 failed connections, 0 broken streams, 0 L2 moves, 0 BGP path changes; got %s", r.summary())
		}
		return r
	}())
	run("kubelet stopped (NotReady)", false, func() string {
		node := mostOwned(ld.Owners())
		stopKubelet(t, l, cs, node)
		return "on " + node + ", the owner of the most addresses, until NotReady and 10 s more"
	})
	results = append(results, func() result {
		var f failover
		r := measure(t, ld, "node cut off the network", func() string {
			var note string
			note, f = cutNode(t, l, cs, ld)
			return note
		})
		r.Failover = f
		t.Logf("node cut off the network: %s", r.summary())
		if f.L2Announced <= 0 || f.L2Announced > crashTarget || f.L2Probed <= 0 || f.L2Probed > crashTarget+probeEvery || f.BGP <= 0 || f.BGP > routerHoldTime+routePoll {
			t.Errorf("node cut off: want every L2 address announced by another node within %s (seen by the probes within %s more) and every BGP path withdrawn within the hold time, %s (+%s of polling); got L2 %s (probes %s), BGP %s",
				crashTarget, probeEvery, routerHoldTime, routePoll, f.L2Announced, f.L2Probed, f.BGP)
		}
		return r
	}())
	// The cut's moves reach the Services' Announced conditions after announcedSettle: those
	// writes are the cut's, not the idle control's.
	t.Logf("waiting %s for the Announced conditions to follow the cut's moves", announcedSettle)
	time.Sleep(announcedSettle)
	run("idle (control, at the end)", true, func() string { time.Sleep(10 * time.Second); return "" })

	report(t, results)
}

var all = func(string) bool { return true }

// measure runs event under the load and returns what the load saw from its start until steady
// state: the event done, then quiet (no failure, break or move) for 5 s, at most a minute.
func measure(t *testing.T, ld *load, name string, event func() string) result {
	t.Helper()
	before := ld.Snapshot()
	began := time.Now()
	note := event()
	done := time.Now()
	for time.Since(done) < time.Minute {
		quiet := time.Since(ld.LastDisruption())
		if quiet >= 5*time.Second && time.Since(done) >= 5*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	end := done
	if last := ld.LastDisruption(); last.After(end) {
		end = last
	}
	after := ld.Snapshot()
	delta := map[string]counts{}
	for k, c := range after {
		delta[k] = c.Sub(before[k])
	}
	r := result{Event: name, counts: total(delta, all), L2: total(delta, isL2), BGP: total(delta, isBGP), Cluster: total(delta, isCluster),
		Steady: end.Sub(began), Note: note, Load: loadAverage()}
	// The streams of the event: those open when it began and those opened since.
	r.Streams += total(before, all).Open
	r.L2.Streams += total(before, isL2).Open
	r.BGP.Streams += total(before, isBGP).Open
	for k, c := range delta {
		if c.Failed+c.Broken+c.Moves > 0 {
			t.Logf("%s: %s: %d/%d failed, %d broken streams (by node %v), %d moves, errors %v", name, k, c.Failed, c.Conns, c.Broken, c.BrokenOn, c.Moves, c.Errors)
		}
	}
	// The timeline: Herald's pods, and the first disruptions.
	shown := 0
	for _, d := range ld.Disruptions(began) {
		if !d.Note {
			if shown++; shown == 60 {
				t.Logf("%s: more disruptions left out", name)
			}
			if shown >= 60 {
				continue
			}
		}
		t.Logf("%s: +%s %s", name, d.At.Sub(began).Round(10*time.Millisecond), d.What)
	}
	return r
}

func (r result) summary() string {
	return fmt.Sprintf("%d/%d new connections failed (L2 %d/%d, BGP %d/%d; %d slower than 1 s), %d/%d streams broken (L2 %d, BGP %d; by backend node %v), %d L2 moves (%d ARP/NDP rounds answered by two MACs), %d BGP path changes (%d withdrawn with no other path in), %d Service writes, steady after %s, load %s; %s",
		r.Failed, r.Conns, r.L2.Failed, r.L2.Conns, r.BGP.Failed, r.BGP.Conns, r.Slow, r.Broken, r.Streams, r.L2.Broken, r.BGP.Broken, r.BrokenOn,
		r.Moves, r.Dual, r.Routes, r.Gaps, r.Writes, r.Steady.Round(100*time.Millisecond), r.Load, r.Note)
}

// loadAverage is the machine's 1-minute load average (/proc/loadavg).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// report prints the table and one BENCH line per figure (bench/report reads them).
func report(t *testing.T, results []result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| event | failed/total new connections, L2 | failed/total, BGP | broken/total streams, L2 | broken/total, BGP | L2 moves (ARP/NDP) | BGP path changes (withdrawn with no path in) | Service writes | steady after | load |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d/%d | %d/%d | %d/%d | %d/%d | %d | %d (%d) | %d | %.1f s | %s |\n", r.Event, r.L2.Failed, r.L2.Conns, r.BGP.Failed, r.BGP.Conns,
			r.L2.Broken, r.L2.Streams, r.BGP.Broken, r.BGP.Streams, r.Moves, r.Routes, r.Gaps, r.Writes, r.Steady.Seconds(), r.Load)
	}
	t.Log(b.String())
	emit := func(figure string, value float64, unit, target string) {
		line, _ := json.Marshal(map[string]any{"figure": figure, "value": value, "unit": unit, "target": target, "command": benchCommand})
		fmt.Printf("BENCH %s\n", line)
	}
	for _, r := range results {
		if strings.HasPrefix(r.Event, "idle") {
			continue
		}
		tg := targetsOf(r.Event)
		for _, part := range []struct {
			name, from string
			c          counts
		}{{"L2", "the segment's client", r.L2}, {"BGP", "behind the router", r.BGP}} {
			load := fmt.Sprintf(" (%d new connections/s and %d streams per address, 4 %s addresses, from %s)", rate, streams, part.name, part.from)
			emit("lifecycle: "+r.Event+": failed new connections, "+part.name+", of "+fmt.Sprint(part.c.Conns)+load, float64(part.c.Failed), "connections", tg.failed)
			emit("lifecycle: "+r.Event+": broken streams, "+part.name, float64(part.c.Broken), "streams", tg.broken)
		}
		if r.Event == "kubectl drain" {
			emit("lifecycle: kubectl drain: broken streams served by the drained node", float64(r.AllowedBroken), "streams", "")
			emit("lifecycle: kubectl drain: Cluster-policy L2 moves and BGP path changes", float64(r.Cluster.Moves+r.Cluster.Routes), "changes", "0")
		}
		emit("lifecycle: "+r.Event+": L2 IP moves (ARP/NDP owner changes)", float64(r.Moves), "moves", tg.moves)
		emit("lifecycle: "+r.Event+": BGP path changes at the router (BIRD)", float64(r.Routes), "changes", tg.moves)
		emit("lifecycle: "+r.Event+": BGP addresses withdrawn before another path was in", float64(r.Gaps), "withdrawals", tg.gaps)
		emit("lifecycle: "+r.Event+": Service writes", float64(r.Writes), "writes", tg.writes)
		emit("lifecycle: "+r.Event+": time to steady state", r.Steady.Seconds(), "s", "")
		if r.Event == "node cut off the network" {
			emit("lifecycle: node cut off the network: L2 failover (the last of its addresses announced by another node: gratuitous ARP/NA at the client, from the cut)", r.Failover.L2Announced.Seconds()*1000, "ms", fmt.Sprintf("< %d ms", crashTarget.Milliseconds()))
			emit("lifecycle: node cut off the network: L2 failover seen by the probes (the last of its addresses answered by another node; probes every 100 ms)", r.Failover.L2Probed.Seconds()*1000, "ms", "")
			emit("lifecycle: node cut off the network: BGP failover (the last of its paths withdrawn at BIRD, polled every 100 ms; graceful restart without BFD)", r.Failover.BGP.Seconds()*1000, "ms", fmt.Sprintf("the hold time, %d ms", routerHoldTime.Milliseconds()))
		}
	}
}

// eventTargets are the targets of an event's figures ("": reported, no target).
type eventTargets struct{ failed, broken, moves, gaps, writes string }

// targetsOf: the zeros, but where an event's nature allows more (see docs/upgrades.md).
func targetsOf(event string) eventTargets {
	switch event {
	case "kubectl drain":
		return eventTargets{failed: "0", broken: "only the drained node's", moves: "only Local-policy addresses", gaps: "0", writes: "0"}
	case "drained node's speaker stopped":
		return eventTargets{failed: "0", gaps: "0", writes: "0"}
	case "kubectl uncordon":
		// Its writes are the Announced conditions naming the nodes the drain's Local-policy
		// addresses moved to, written once the change has held for a minute (controller).
		return eventTargets{failed: "0", broken: "0", moves: "0", gaps: "0"}
	case "kubelet stopped (NotReady)", "node cut off the network":
		return eventTargets{}
	}
	return eventTargets{failed: "0", broken: "0", moves: "0", gaps: "0", writes: "0"}
}

// bgpObjects peers every node's speaker with the router's BIRD (an IPv4 and an IPv6 session, with
// graceful restart) and advertises the lab's BGP pool, which only Services asking for it
// (bgpService) take. Graceful restart is what a planned speaker restart needs on BGP
// (speaker/bgp/doc.go): the stopping speaker sends no Cease, BIRD (graceful-restart aware by
// default) keeps the node's paths as stale, and the new speaker opens its sessions saying the
// node kept forwarding, so BIRD keeps them until the routes are sent again. The sessions run no
// BFD: BIRD 2.0 takes the BFD AdminDown a stopping speaker sends for a failure and drops the
// session at once, graceful restart or not (speaker/bgp's TestGracefulRestartKeepsRoutes); so a
// node lost is noticed by the hold time (routerHoldTime) here, not in 300 ms (docs/upgrades.md).
func bgpObjects(t *testing.T, l *lab.Lab, dyn dynamic.Interface) {
	t.Helper()
	router := l.Topology.Host(lab.HostRouter)
	for fam, addr := range map[string]netip.Addr{"v4": router.IPv4, "v6": router.IPv6} {
		labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "lc-router-"+fam, map[string]any{
			"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": addr.String(),
			"enableGracefulRestart": true,
		})
	}
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "lc-bgp", map[string]any{
		"addresses": []any{lab.BGPPoolV4, lab.BGPPoolV6}, "autoAssign": false,
	})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "lc-bgp", map[string]any{"ipAddressPools": []any{"lc-bgp"}})
}

// routerHoldTime is the BGP hold time of the lab's BIRD (e2e/lab/bird.conf.tmpl): without BFD, a
// node cut off loses its paths once it expires.
const routerHoldTime = 9 * time.Second

// services creates the backend Deployment (one pod per node) and four dual-stack LoadBalancer
// Services in front of it, externalTrafficPolicy Cluster and Local, on the L2 pool and on the BGP
// pool, and returns the load's targets once all have both addresses and every endpoint is Ready.
func services(t *testing.T, l *lab.Lab, cs kubernetes.Interface) []target {
	t.Helper()
	ctx := t.Context()
	d := lab.BackendDeployment(ns, "lc-web", backends)
	// As a well-behaved server does (and the lab's backend does not: it stops at SIGTERM), a
	// terminating backend keeps serving for a while: the endpointslice controller and then every
	// node's data plane take it out of the new connections meanwhile. Without it, a drain's
	// evicted pods refuse the new connections sent to them in that moment, whatever the proxy.
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
	d.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}}
	d.Spec.Template.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "lc-web"}},
	}}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.AppsV1().Deployments(ns).Delete(context.Background(), "lc-web", metav1.DeleteOptions{}) })
	var targets []target
	for _, bgp := range []bool{false, true} {
		for _, policy := range []corev1.ServiceExternalTrafficPolicy{corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal} {
			name, from := "lc-"+strings.ToLower(string(policy)), lab.HostClient
			svc := lab.LoadBalancerService(ns, name)
			if bgp {
				name, from = bgpService+strings.ToLower(string(policy)), lab.HostExternal
				svc = lab.LoadBalancerService(ns, name)
				svc.Annotations = map[string]string{config.AnnotationAddressPool: "lc-bgp"}
			}
			svc.Spec.Selector = map[string]string{"app": "lc-web"}
			svc.Spec.ExternalTrafficPolicy = policy
			svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
			svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
			if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cs.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
			var ips []netip.Addr
			labsuite.WaitFor(t, 2*time.Minute, name+": an IPv4 and an IPv6 LoadBalancer IP", func() (bool, string) {
				s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				ips = nil
				for _, ing := range s.Status.LoadBalancer.Ingress {
					if a, err := netip.ParseAddr(ing.IP); err == nil {
						ips = append(ips, a)
					}
				}
				return len(ips) == 2, fmt.Sprintf("ingress %v", s.Status.LoadBalancer.Ingress)
			})
			port := uint16(svc.Spec.Ports[0].Port)
			for _, ip := range ips {
				targets = append(targets, target{Service: name, Local: policy == corev1.ServiceExternalTrafficPolicyLocal,
					Addr: netip.AddrPortFrom(ip, port), From: from, BGP: bgp})
			}
		}
	}
	waitBackends(t, cs)
	for _, tg := range targets {
		labsuite.WaitFor(t, time.Minute, tg.String()+" answering from "+tg.From, func() (bool, string) {
			_, err := l.Get(ctx, tg.From, tg.Addr, 2*time.Second)
			return err == nil, fmt.Sprint(err)
		})
	}
	return targets
}

// failover is how long after a node was cut off the last of its addresses was served by others.
type failover struct {
	// L2Announced: the last of its L2 addresses announced by another node (its gratuitous ARP or
	// unsolicited NA received by the segment's client); L2Probed: the probes saw the last one
	// answered by another node (up to probeEvery later); BGP: the last of its paths withdrawn at
	// BIRD (polled every routePoll). Negative: an address did not fail over.
	L2Announced, L2Probed, BGP time.Duration
}

// cutNode cuts the node owning the most L2 addresses off the network (its switch port down: its
// link loses carrier, in the lab only) for cutFor, then restores it and waits until the node is
// Ready and the backends too. It returns the event's note and how long after the cut its
// addresses failed over.
func cutNode(t *testing.T, l *lab.Lab, cs kubernetes.Interface, ld *load) (string, failover) {
	t.Helper()
	owners, paths := ld.Owners(), ld.Paths()
	node := mostOwned(owners)
	cut, err := cutPort(l, node)
	if err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			if err := l.RestoreLink(context.Background(), node); err != nil {
				t.Error(err)
			}
		}
	}()
	time.Sleep(cutFor)
	moved := ld.FailedOver(node, cut, owners, paths)
	if err := l.RestoreLink(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	restored = true
	var l2, bgp, announced time.Duration
	var l2Want, bgpWant int
	slowest := func(took time.Duration, ok bool, last *time.Duration) {
		if !ok || *last < 0 {
			*last = -1 // an address that did not fail over
		} else {
			*last = max(*last, took)
		}
	}
	for a, o := range owners {
		if o == node {
			l2Want++
			took, ok := moved[a]
			slowest(took, ok, &l2)
			an, ok := ld.FirstAnnouncement(a, cut, l.Topology.Host(node).MAC)
			slowest(an.At.Sub(cut), ok, &announced)
			t.Logf("node cut off: %s announced by %s %s after the cut (a gratuitous ARP/NA seen at the client: %v); the probes saw it move after %s", a, an.MAC, an.At.Sub(cut).Round(time.Millisecond), ok, took.Round(time.Millisecond))
		}
	}
	for a, p := range paths {
		if slices.Contains(p, node) {
			bgpWant++
			took, ok := moved[a]
			slowest(took, ok, &bgp)
		}
	}
	labsuite.WaitFor(t, 2*time.Minute, node+" Ready", func() (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeIsReady(n), "not Ready"
	})
	waitBackends(t, cs)
	// Back, the node owns no L2 address: rebalancing hands it one once it has been alive for
	// 10 s (speaker/l2 RebalanceAfter), a move of this event, not of the next.
	time.Sleep(15 * time.Second)
	return fmt.Sprintf("%s (owner of %d L2 addresses, a path of %d BGP addresses) cut off for %s; failed over: L2 announced by others after %s (probes: %s), BGP after %s (negative: an address did not)",
		node, l2Want, bgpWant, cutFor, announced.Round(time.Millisecond), l2.Round(time.Millisecond), bgp.Round(time.Millisecond)), failover{L2Announced: announced, L2Probed: l2, BGP: bgp}
}

// cutFor is how long a node stays cut off: beyond the BGP hold time, and shorter than the lab's
// node-monitor grace period (16 s), so its pods stay endpoints and the figures are Herald's
// failover alone.
const cutFor = 12 * time.Second

// waitBackends waits until the backend Deployment has all its replicas Ready and up to date.
func waitBackends(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	labsuite.WaitFor(t, 2*time.Minute, "the backends Ready", func() (bool, string) {
		d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), "lc-web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == backends && d.Status.UpdatedReplicas == backends && d.Status.Replicas == backends,
			fmt.Sprintf("%+v", d.Status)
	})
}

// mostOwned is the node owning the most addresses.
func mostOwned(owners map[netip.Addr]string) string {
	n := map[string]int{}
	for _, o := range owners {
		n[o]++
	}
	var best string
	for o, c := range n {
		if c > n[best] || (c == n[best] && o < best) {
			best = o
		}
	}
	return best
}

// chartValues are the extra chart values of valuesEnv.
func chartValues() []string {
	v := os.Getenv(valuesEnv)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// helmOK returns a check of a helm command's output and error that fails t on an error.
func helmOK(t *testing.T) func(out string, err error) {
	return func(out string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}

func kubectl(ctx context.Context, l *lab.Lab, args ...string) ([]byte, error) {
	return l.Exec(ctx, lab.HostControlPlane, append([]string{l.Kubectl, "--kubeconfig", l.Kubeconfig()}, args...)...)
}

// deletePods deletes Herald's pods with the label selector (on node, if set) with the given grace.
func deletePods(t *testing.T, cs kubernetes.Interface, selector, node string, grace int64) {
	t.Helper()
	opts := metav1.ListOptions{LabelSelector: selector}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	pods, err := cs.CoreV1().Pods(lab.HeraldNamespace).List(t.Context(), opts)
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods %s on %q: %v (%d)", selector, node, err, len(pods.Items))
	}
	for _, p := range pods.Items {
		if err := cs.CoreV1().Pods(lab.HeraldNamespace).Delete(t.Context(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			t.Fatal(err)
		}
	}
}

// stopKubelet stops node's kubelet (SIGSTOP) until the Node is NotReady and 10 s more, resumes it,
// and waits until the Node is Ready again.
func stopKubelet(t *testing.T, l *lab.Lab, cs kubernetes.Interface, node string) {
	t.Helper()
	if err := l.SignalKubelet(node, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.SignalKubelet(node, syscall.SIGCONT); err != nil {
			t.Error(err)
		}
	}()
	ready := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return nodeIsReady(n) == want, fmt.Sprint(n.Status.Conditions)
		}
	}
	took := labsuite.WaitFor(t, time.Minute, node+" NotReady", ready(false))
	t.Logf("%s NotReady %s after its kubelet stopped", node, took.Round(time.Millisecond))
	time.Sleep(10 * time.Second)
	if err := l.SignalKubelet(node, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, time.Minute, node+" Ready again", ready(true))
	waitBackends(t, cs)
}

// heraldReady installs Herald with helm the first time, and waits until its speakers (one per
// node) and controllers all run tag (any tag when empty), Ready, with no other pod left.
func heraldReady(t *testing.T, l *lab.Lab, cs kubernetes.Interface, tag string) {
	t.Helper()
	ctx := t.Context()
	if _, err := cs.AppsV1().DaemonSets(lab.HeraldNamespace).Get(ctx, "herald-speaker", metav1.GetOptions{}); err != nil {
		helmOK(t)(l.InstallHerald(chartValues()...))
	}
	labsuite.WaitFor(t, 4*time.Minute, "Herald's pods all Ready on image tag "+tag, func() (bool, string) {
		ds, err := cs.AppsV1().DaemonSets(lab.HeraldNamespace).Get(ctx, "herald-speaker", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		d, err := cs.AppsV1().Deployments(lab.HeraldNamespace).Get(ctx, "herald-controller", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := cs.CoreV1().Pods(lab.HeraldNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		want := len(l.Nodes()) + int(*d.Spec.Replicas)
		var ok int
		var states []string
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, "herald-cleanup") {
				continue
			}
			good := p.DeletionTimestamp == nil && podReady(&p) && (tag == "" || strings.HasSuffix(p.Spec.Containers[0].Image, ":"+tag))
			if good {
				ok++
			}
			states = append(states, fmt.Sprintf("%s@%s %s ready=%t deleting=%t", p.Name, p.Spec.NodeName, p.Spec.Containers[0].Image, podReady(&p), p.DeletionTimestamp != nil))
		}
		return ok == want && len(states) == want && rolledOut(ds, d), strings.Join(states, "; ")
	})
}

func rolledOut(ds *appsv1.DaemonSet, d *appsv1.Deployment) bool {
	return ds.Status.ObservedGeneration == ds.Generation && ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled &&
		ds.Status.NumberReady == ds.Status.DesiredNumberScheduled &&
		d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.ReadyReplicas == *d.Spec.Replicas
}

func nodeIsReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// installPrevious imports the previous release's image (dir/herald.oci.tar, tagged
// prev-<commit>) into every node and installs its chart (dir/chart) with helm; it returns the tag.
func installPrevious(t *testing.T, l *lab.Lab, dir string) string {
	t.Helper()
	tag := strings.TrimPrefix(filepath.Base(dir), "herald-")
	for _, n := range l.Nodes() {
		if out, err := l.Exec(t.Context(), n.Name, "ctr", "-a", l.ContainerdSocket(n.Name), "-n", "k8s.io", "images", "import",
			"--no-unpack=false", filepath.Join(dir, "herald.oci.tar")); err != nil {
			t.Fatalf("importing the previous release's image on %s: %v\n%s", n.Name, err, out)
		}
	}
	args := []string{"install", "herald", filepath.Join(dir, "chart"), "--create-namespace", "--set", "image.tag=" + tag}
	for _, v := range append(l.HeraldAPIServerValues(), chartValues()...) {
		args = append(args, "--set", v)
	}
	helmOK(t)(l.Helm(args...))
	return tag
}

// heraldTag is the image tag the installed speakers run.
func heraldTag(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ds, err := cs.AppsV1().DaemonSets(lab.HeraldNamespace).Get(t.Context(), "herald-speaker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	img := ds.Spec.Template.Spec.Containers[0].Image
	return img[strings.LastIndex(img, ":")+1:]
}

// tagImage gives Herald's image (tag from) a second tag on every node's containerd.
func tagImage(t *testing.T, l *lab.Lab, from, to string) {
	t.Helper()
	for _, n := range l.Nodes() {
		sock := l.ContainerdSocket(n.Name)
		out, err := l.Exec(t.Context(), n.Name, "ctr", "-a", sock, "-n", "k8s.io", "images", "ls", "-q")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var ref string
		for _, r := range strings.Fields(string(out)) {
			if strings.HasSuffix(r, ":"+from) && strings.Contains(r, "herald") {
				ref = r
			}
		}
		if ref == "" {
			t.Fatalf("no Herald image tagged %s on %s: %s", from, n.Name, out)
		}
		if out, err := l.Exec(t.Context(), n.Name, "ctr", "-a", sock, "-n", "k8s.io", "images", "tag", "--force", ref, strings.TrimSuffix(ref, from)+to); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}
