package l2lab

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/speaker/l2"
)

// Real packets between network namespaces: l2node processes (membership + election + ARP/NDP
// responders) in three node namespaces on a snooping bridge, probed from a client namespace.

// prefix names the lab's namespaces; HERALD_L2LAB_PREFIX (starting with herald-) lets two runs
// share the machine.
var prefix = cmp.Or(os.Getenv("HERALD_L2LAB_PREFIX"), "herald-l2t-")

var l2nodeBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	if soak, err := time.ParseDuration(os.Getenv("HERALD_L2_SOAK")); err == nil {
		// go test's default -timeout (10m) is shorter than the 10-minute soak plus its
		// set-up: raise the limit of this test binary to fit it (go test itself kills the binary
		// one minute after the -timeout it was given, so the set-up must stay short).
		if f := flag.Lookup("test.timeout"); f != nil {
			if limit, _ := time.ParseDuration(f.Value.String()); limit > 0 && limit < soak+5*time.Minute {
				_ = f.Value.Set((soak + 5*time.Minute).String())
			}
		}
	}
	code := func() int {
		if Prerequisites() == nil {
			dir, err := os.MkdirTemp("", "herald-l2t-bin")
			if err != nil {
				panic(err)
			}
			defer os.RemoveAll(dir)
			l2nodeBinary = filepath.Join(dir, "l2node")
			if out, err := exec.Command("go", "build", "-o", l2nodeBinary, "github.com/heraldlb/herald/speaker/l2/l2lab/l2node").CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building l2node: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	Cleanup(prefix)
	os.Exit(code)
}

// up starts a lab with three nodes and ips (all nodes candidates).
func up(t *testing.T, ips map[netip.Addr]l2.Policy, nodeArgs ...string) *Lab {
	t.Helper()
	l := newLab(t)
	startNodes(t, l, ips, nodeArgs...)
	return l
}

// newLab builds a lab with three nodes, none started; it goes when the test ends.
func newLab(t *testing.T) *Lab {
	t.Helper()
	if err := Prerequisites(); err != nil {
		testenv.Missing(t, "L2 lab: %v", err)
	}
	l, err := Up(prefix, 3, l2nodeBinary, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes {
				b, _ := os.ReadFile(filepath.Join(l.Dir, n.Name+".log"))
				t.Logf("--- %s log:\n%s", n.Name, tail(string(b), 40))
			}
		}
		l.Down()
	})
	return l
}

// startNodes starts every node of l with ips (all nodes candidates) and nodeArgs.
func startNodes(t *testing.T, l *Lab, ips map[netip.Addr]l2.Policy, nodeArgs ...string) {
	t.Helper()
	if err := l.SetIPs(ips); err != nil {
		t.Fatal(err)
	}
	l.SetNodeArgs(nodeArgs...)
	for _, n := range l.Nodes {
		if err := l.Start(n.Name, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func policies(nodes []string, ips ...netip.Addr) map[netip.Addr]l2.Policy {
	out := map[netip.Addr]l2.Policy{}
	for _, ip := range ips {
		out[ip] = l2.Policy{Candidates: nodes}
	}
	return out
}

// owner waits until ip is answered by exactly one MAC in the last rounds and returns its node.
func owner(t *testing.T, l *Lab, p *Prober, ip netip.Addr) *Node {
	t.Helper()
	var n *Node
	ok := WaitFor(5*time.Second, func() bool {
		macs := p.MACsSince(ip, time.Now().Add(-100*time.Millisecond))
		if len(macs) != 1 {
			return false
		}
		hw, _ := net.ParseMAC(macs[0])
		n = l.NodeByMAC(hw)
		return n != nil
	})
	if !ok {
		t.Fatalf("%s is not answered by exactly one node's MAC: %v", ip, p.MACsSince(ip, time.Now().Add(-100*time.Millisecond)))
	}
	return n
}

func TestEachIPResolvesToOneNode(t *testing.T) {
	var v4, v6 []netip.Addr
	for i := range 6 {
		v4 = append(v4, ServiceIPv4(i))
	}
	for i := range 3 {
		v6 = append(v6, ServiceIPv6(i))
	}
	l := up(t, policies([]string{"n1", "n2", "n3"}, append(slices.Clone(v4), v6...)...), "--rebalance-after", "1h")
	p, err := l.StartProber(v4, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	owners := map[string]bool{}
	for _, ip := range v4 {
		owners[owner(t, l, p, ip).Name] = true
	}
	if len(owners) < 2 {
		t.Errorf("6 IPs all on %v: owners should spread", owners)
	}
	ctx := context.Background()
	for _, ip := range v4 {
		macs, _ := l.ArpingMACs(ctx, ip)
		if len(macs) != 1 {
			t.Errorf("arping %s: MACs %v, want exactly one", ip, macs)
		}
	}
	for _, ip := range v6 {
		var macs []string
		// The first NDP round may race the responder's MLD report to the snooping bridge.
		WaitFor(3*time.Second, func() bool { macs, _ = l.Ndisc6MACs(ctx, ip); return len(macs) > 0 })
		if len(macs) != 1 {
			t.Errorf("ndisc6 %s: MACs %v, want exactly one", ip, macs)
			continue
		}
		hw, _ := net.ParseMAC(macs[0])
		if l.NodeByMAC(hw) == nil {
			t.Errorf("ndisc6 %s answered by %s, not a node", ip, macs[0])
		}
	}
	if d := p.DoubleAnswers(); len(d) > 0 {
		t.Errorf("two MACs answered in one round: %v", d)
	}
}

// TestNDPAsksOnlyJoinedResponders: the switch snoops multicast, so a neighbour solicitation goes
// only to the ports that joined its solicited-node group. Herald's responder joins the group of
// each IPv6 address it owns and answers; a responder that listens without joining (here: a packet
// socket on every node, as a responder relying on flooding would use) never hears the question.
func TestNDPAsksOnlyJoinedResponders(t *testing.T) {
	ip := ServiceIPv6(7)
	l := up(t, policies([]string{"n1", "n2", "n3"}, ip), "--rebalance-after", "1h")
	ctx := context.Background()
	var macs []string
	// The first NDP round may race the responder's MLD report to the snooping bridge.
	WaitFor(5*time.Second, func() bool { macs, _ = l.Ndisc6MACs(ctx, ip); return len(macs) == 1 })
	if len(macs) != 1 {
		t.Fatalf("ndisc6 %s: MACs %v, want exactly one", ip, macs)
	}
	hw, _ := net.ParseMAC(macs[0])
	own := l.NodeByMAC(hw)
	if own == nil {
		t.Fatalf("%s answered by %s, not a node", ip, macs[0])
	}
	nobody := netip.MustParseAddr("fd78::2:ee") // on no node: its group has no member
	control := l.Node("n2").IPv6                // n2's kernel joined its own address's group
	var answered map[netip.Addr][]string
	var seen map[string][]netip.Addr
	// The bridge snoops only once its own querier is in force (about a second after the switch
	// came up, longer on a loaded machine); until then it floods every group. And nodes that
	// owned the IP for a moment while membership settled joined its group too, until their MLD
	// Done and the switch's last-member queries have run. Sample once the switch's multicast
	// database holds the group on the owner's port alone, until the group nobody joined stops
	// reaching the nodes; a switch that keeps flooding fails below.
	group := solicitedNodeGroup(ip)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if ports := l.groupPorts(ctx, group); (len(ports) != 1 || ports[0] != own.Port) && time.Now().Before(deadline) {
			continue
		}
		var err error
		seen, err = l.SolicitationsSeen(l.Nodes, func() {
			answered = map[netip.Addr][]string{}
			for _, target := range []netip.Addr{ip, nobody, control} {
				answered[target], _ = l.Ndisc6MACs(ctx, target)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		flooded := false
		for _, targets := range seen {
			flooded = flooded || slices.Contains(targets, nobody)
		}
		if !flooded || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("solicitations seen per node: %v; answers: %v", seen, answered)
	if len(answered[ip]) != 1 || answered[ip][0] != own.MAC.String() {
		t.Errorf("%s answered by %v, want %s's MAC alone", ip, answered[ip], own.Name)
	}
	for _, n := range l.Nodes {
		asked := map[netip.Addr]bool{}
		for _, target := range seen[n.Name] {
			asked[target] = true
		}
		if asked[nobody] {
			t.Errorf("%s heard the solicitation for %s, whose group nobody joined: the switch floods", n.Name, nobody)
		}
		switch {
		case n == own && !asked[ip]:
			t.Errorf("the owner %s did not hear the solicitation for its Service IP %s", n.Name, ip)
		case n != own && asked[ip]:
			// Open question: with the group on the owner's port alone in the switch's database,
			// this kernel's bridge (6.18) still delivers it to the other nodes' ports in most runs;
			// not a Herald behaviour (those nodes never answer: checked above), recorded here.
			t.Logf("%s (not the owner) heard the solicitation for %s: the bridge forwards the joined group beyond its members", n.Name, ip)
		}
		if want := n.Name == "n2"; asked[control] != want {
			t.Errorf("%s heard the solicitation for n2's own address: %v, want %v", n.Name, asked[control], want)
		}
	}
}

// TestFailover breaks the owner of an IP three ways and checks that another node answers within a
// second, that the old owner stays silent, and that its return changes nothing.
func TestFailover(t *testing.T) {
	ip := ServiceIPv4(0)
	// Handovers to a returning node are pushed out of the observation window; TestRebalance covers them.
	// The breakages follow each other within seconds, so the owner broken may have been restarted
	// by the one before: without a restart grace, each fails over after DeadAfter.
	l := up(t, policies([]string{"n1", "n2", "n3"}, ip), "--rebalance-after", "1h", "--restart-grace", "-1ns")
	p, err := l.StartProber([]netip.Addr{ip}, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	restart := func(l *Lab, n string) error { return l.Start(n, "") }
	for _, breakage := range []struct {
		name         string
		break_, mend func(*Lab, string) error
		within       time.Duration
	}{
		{"SIGKILL", (*Lab).Kill, restart, time.Second},
		{"carrier down", func(l *Lab, n string) error { return l.SetCarrier(n, false) }, func(l *Lab, n string) error { return l.SetCarrier(n, true) }, time.Second},
		{"frames dropped at the bridge", func(l *Lab, n string) error { return l.Cut(n, true) }, func(l *Lab, n string) error { return l.Cut(n, false) }, time.Second},
		// A graceful stop tells the peers it owns nothing: they take over without waiting DeadAfter.
		{"SIGTERM", (*Lab).Stop, restart, 150 * time.Millisecond},
	} {
		t.Run(breakage.name, func(t *testing.T) {
			old := owner(t, l, p, ip)
			t0 := time.Now()
			if err := breakage.break_(l, old.Name); err != nil {
				t.Fatal(err)
			}
			if !WaitFor(2*time.Second, func() bool { _, ok := p.FirstReplyAfter(ip, t0, old.MAC); return ok }) {
				t.Fatalf("no other node answered within 2s after %s of %s", breakage.name, old.Name)
			}
			r, _ := p.FirstReplyAfter(ip, t0, old.MAC)
			took := r.At.Sub(t0)
			t.Logf("%s of %s: %s answered after %v", breakage.name, old.Name, r.MAC, took)
			if took > breakage.within {
				t.Errorf("failover took %v, want under %v", took, breakage.within)
			}

			// While cut off, the old owner must have stopped answering (it lost quorum or its link).
			time.Sleep(500 * time.Millisecond)
			if breakage.name != "SIGKILL" && breakage.name != "SIGTERM" {
				b, _ := os.ReadFile(filepath.Join(l.Dir, old.Name+".log"))
				if !strings.Contains(string(b), `msg="stopped answering"`) {
					t.Errorf("%s never stopped answering while cut off", old.Name)
				}
			}
			if err := breakage.mend(l, old.Name); err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			time.Sleep(1500 * time.Millisecond)
			if macs := p.MACsSince(ip, t1); len(macs) != 1 || macs[0] != r.MAC.String() {
				t.Errorf("after %s returned, %s was answered by %v; want only the new owner %s", old.Name, ip, macs, r.MAC)
			}
			for _, d := range p.DoubleAnswers() {
				// A graceful stop hands the IP over make before break: the new owner answers before
				// the old one stops, an overlap of about one message delay (see TestRebalance). One
				// round may catch both, between the stop and the new owner's first answer.
				if breakage.name == "SIGTERM" && handoverOverlap(d, old.MAC.String(), r.MAC.String(), t0, r.At.Add(breakage.within)) {
					continue
				}
				t.Errorf("two MACs answered in one round: %v", d)
			}
		})
	}
}

// handoverOverlap: d is the one round in which a handover's giver and taker both answered,
// between from and to.
func handoverOverlap(d Double, giver, taker string, from, to time.Time) bool {
	macs := []string{d.First, d.Too}
	return slices.Contains(macs, giver) && slices.Contains(macs, taker) && !d.At.Before(from) && !d.At.After(to)
}

// TestFrozenOwnerStaysQuietWhenThawed: the owner is frozen (SIGSTOP) for a second; another node
// takes over, and when the old one thaws it neither answers the requests queued meanwhile nor
// takes its IP back.
func TestFrozenOwnerStaysQuietWhenThawed(t *testing.T) {
	ip := ServiceIPv4(4)
	l := up(t, policies([]string{"n1", "n2", "n3"}, ip), "--rebalance-after", "1h")
	p, err := l.StartProber([]netip.Addr{ip}, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	old := owner(t, l, p, ip)
	t0 := time.Now()
	if err := l.Signal(old.Name, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if !WaitFor(2*time.Second, func() bool { _, ok := p.FirstReplyAfter(ip, t0, old.MAC); return ok }) {
		t.Fatalf("nobody took over from the frozen %s", old.Name)
	}
	r, _ := p.FirstReplyAfter(ip, t0, old.MAC)
	t.Logf("%s frozen: %s answered after %v", old.Name, r.MAC, r.At.Sub(t0))
	time.Sleep(time.Second - time.Since(t0))
	thaw := time.Now()
	if err := l.Signal(old.Name, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if macs := p.MACsSince(ip, thaw); len(macs) != 1 || macs[0] != r.MAC.String() {
		t.Errorf("after %s thawed %s was answered by %v, want only %s", old.Name, ip, macs, r.MAC)
	}
	if d := p.DoubleAnswers(); len(d) > 0 {
		t.Errorf("two MACs answered in one round: %v", d)
	}
}

// TestGratuitousARPUpdatesClients: a client that talked to the IP holds the old owner's MAC; the
// new owner's gratuitous ARP corrects it without the client asking (nothing else sends ARP for
// the IP here: no prober runs).
func TestGratuitousARPUpdatesClients(t *testing.T) {
	ip := ServiceIPv4(3)
	l := up(t, policies([]string{"n1", "n2", "n3"}, ip))
	var old *Node
	if !WaitFor(5*time.Second, func() bool {
		macs, _ := l.ArpingMACs(context.Background(), ip)
		if len(macs) != 1 {
			return false
		}
		hw, _ := net.ParseMAC(macs[0])
		old = l.NodeByMAC(hw)
		return old != nil
	}) {
		t.Fatalf("%s not answered by one node", ip)
	}
	// arping used a raw socket: put the entry a client's own traffic would have left.
	if err := l.SetClientNeighbor(ip, old.MAC); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := l.Kill(old.Name); err != nil {
		t.Fatal(err)
	}
	if !WaitFor(2*time.Second, func() bool { mac := l.ClientNeighbor(ip); return mac != "" && mac != old.MAC.String() }) {
		t.Fatalf("the client's neighbour cache still says %s for %s 2s after %s died: no gratuitous ARP", l.ClientNeighbor(ip), ip, old.Name)
	}
	t.Logf("client's cache moved to %s %v after the owner was killed", l.ClientNeighbor(ip), time.Since(t0).Round(time.Millisecond))
}

// TestLocalEndpointsMoveTheOwner: with externalTrafficPolicy Local only nodes holding an endpoint
// are candidates, so the owner follows the endpoints.
func TestLocalEndpointsMoveTheOwner(t *testing.T) {
	ip := ServiceIPv4(1)
	l := up(t, policies([]string{"n2"}, ip))
	p, err := l.StartProber([]netip.Addr{ip}, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n := owner(t, l, p, ip); n.Name != "n2" {
		t.Fatalf("owner %s, want n2 (the only node with an endpoint)", n.Name)
	}
	t0 := time.Now()
	if err := l.SetIPs(policies([]string{"n3"}, ip)); err != nil {
		t.Fatal(err)
	}
	if !WaitFor(2*time.Second, func() bool { _, ok := p.FirstReplyAfter(ip, t0, l.Node("n2").MAC); return ok }) {
		t.Fatal("owner did not move when the endpoint moved to n3")
	}
	r, _ := p.FirstReplyAfter(ip, t0, l.Node("n2").MAC)
	if n := l.NodeByMAC(r.MAC); n == nil || n.Name != "n3" {
		t.Fatalf("new owner %s, want n3", r.MAC)
	}
	t.Logf("owner moved to n3 %v after the endpoint did", r.At.Sub(t0))
	// An endpoint appears on n1 as well: the healthy owner n3 keeps the IP.
	if err := l.SetIPs(policies([]string{"n1", "n3"}, ip)); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	time.Sleep(time.Second)
	if macs := p.MACsSince(ip, t1); len(macs) != 1 || macs[0] != l.Node("n3").MAC.String() {
		t.Errorf("after n1 became a candidate the IP was answered by %v, want n3 alone", macs)
	}
}

// TestReplayAndForgeryChangeNothing: a stranger replays the owner's captured heartbeats (and
// tampered copies) after the owner dies; the others must still take over, because they reject
// them; had they accepted them, the dead owner would look alive and keep its IP.
func TestReplayAndForgeryChangeNothing(t *testing.T) {
	ip := ServiceIPv4(2)
	l := up(t, policies([]string{"n1", "n2", "n3"}, ip))
	p, err := l.StartProber([]netip.Addr{ip}, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	old := owner(t, l, p, ip)
	captured, err := l.CaptureHeartbeats(old.Name, 20, 3*time.Second)
	if err != nil || len(captured) < 10 {
		t.Fatalf("captured %d heartbeats of %s: %v", len(captured), old.Name, err)
	}
	forged := make([][]byte, len(captured))
	for i, c := range captured {
		f := append([]byte(nil), c...)
		f[len(f)-40]++ // inside the payload: the MAC no longer matches
		forged[i] = f
	}
	if err := l.Kill(old.Name); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, n := range l.Nodes {
				if n != old {
					_ = l.SendFromClient(n.Name, captured)
					_ = l.SendFromClient(n.Name, forged)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	ok := WaitFor(2*time.Second, func() bool { _, ok := p.FirstReplyAfter(ip, t0, old.MAC); return ok })
	close(stop)
	<-done
	if !ok {
		t.Fatal("no failover while a stranger replayed the dead owner's heartbeats: replays were accepted")
	}
	r, _ := p.FirstReplyAfter(ip, t0, old.MAC)
	t.Logf("failover under replay took %v", r.At.Sub(t0))
}

// TestRebalance: a node that joins late receives IPs through planned handovers, without a round
// in which nobody answers, until 30 IPs are spread 5 to 15 per node.
func TestRebalance(t *testing.T) {
	var ips []netip.Addr
	for i := range 30 {
		ips = append(ips, ServiceIPv4(10+i))
	}
	l := up(t, policies([]string{"n1", "n2", "n3"}, ips...), "--rebalance-after", "2s")
	if err := l.Kill("n3"); err != nil {
		t.Fatal(err)
	}
	p, err := l.StartProber(ips, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, ip := range ips {
		if n := owner(t, l, p, ip); n.Name == "n3" {
			t.Fatalf("%s still owned by the stopped n3", ip)
		}
	}
	if err := l.Start("n3", ""); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	loads := func() map[string]int {
		out := map[string]int{}
		for _, ip := range ips {
			if macs := p.MACsSince(ip, time.Now().Add(-100*time.Millisecond)); len(macs) == 1 {
				hw, _ := net.ParseMAC(macs[0])
				if n := l.NodeByMAC(hw); n != nil {
					out[n.Name]++
				}
			}
		}
		return out
	}
	spread := func() bool {
		lo := loads()
		for _, n := range l.Nodes {
			if lo[n.Name] < 5 || lo[n.Name] > 15 {
				return false
			}
		}
		return true
	}
	if !WaitFor(30*time.Second, spread) {
		t.Fatalf("30 IPs on 3 nodes are spread %v after n3 returned, want 5..15 each", loads())
	}
	t.Logf("spread %v %v after n3 returned", loads(), time.Since(t0).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	// Every round got an answer for every IP after n3 came back.
	rounds := map[netip.Addr]map[int]bool{}
	minRound, maxRound := -1, 0
	for _, r := range p.Replies() {
		if r.At.Before(t0) {
			continue
		}
		if rounds[r.IP] == nil {
			rounds[r.IP] = map[int]bool{}
		}
		rounds[r.IP][r.Round] = true
		if minRound < 0 || r.Round < minRound {
			minRound = r.Round
		}
		maxRound = max(maxRound, r.Round)
	}
	for _, ip := range ips {
		missed := 0
		for rd := minRound; rd < maxRound; rd++ {
			if !rounds[ip][rd] {
				missed++
			}
		}
		// A request or reply can be lost to scheduling on a loaded machine; a handover gap would
		// miss many consecutive rounds.
		if missed > 3 {
			t.Errorf("%s went unanswered in %d of %d rounds during rebalancing", ip, missed, maxRound-minRound)
		}
	}
	// A planned handover overlaps by about one message delay (no window without an answer), so a
	// round may catch both the giver and n3; never two others, and at most once per IP.
	n3 := l.Node("n3").MAC.String()
	seen := map[netip.Addr]bool{}
	for _, d := range p.DoubleAnswers() {
		if (d.First != n3 && d.Too != n3) || seen[d.IP] {
			t.Errorf("two MACs answered in one round outside a handover to n3: %v", d)
		}
		seen[d.IP] = true
	}
}

// TestIdleUnderCPULoad: with every CPU kept busy, a settled cluster makes no ownership change for
// HERALD_L2_SOAK (the issue asks for 10m). It burns every CPU, which would disturb the timing tests
// of other packages running beside it, so it runs only when asked, as a stage of its own:
// HERALD_L2_SOAK=10m go test -count=1 -run TestIdleUnderCPULoad ./speaker/l2/l2lab
func TestIdleUnderCPULoad(t *testing.T) {
	v := os.Getenv("HERALD_L2_SOAK")
	if v == "" {
		t.Skip("set HERALD_L2_SOAK=10m to run the CPU-load soak (it burns every CPU; run it alone)")
	}
	soak, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("HERALD_L2_SOAK=%q: %v", v, err)
	}
	var ips []netip.Addr
	for i := range 6 {
		ips = append(ips, ServiceIPv4(20+i))
	}
	// Rebalancing stays on (a node falsely declared dead would be handed IPs back), after 2 s
	// rather than 10 so that the settling fits go test's time limit (see TestMain).
	l := up(t, policies([]string{"n1", "n2", "n3"}, ips...), "--rebalance-after", "2s")
	p, err := l.StartProber(ips, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, ip := range ips {
		owner(t, l, p, ip)
	}
	// Let rebalancing finish before counting.
	time.Sleep(5 * time.Second)
	count := func(what ...string) int {
		n := 0
		for _, node := range l.Nodes {
			b, _ := os.ReadFile(filepath.Join(l.Dir, node.Name+".log"))
			for _, w := range what {
				n += strings.Count(string(b), w)
			}
		}
		return n
	}
	changes := func() int { return count("msg=answering ", `msg="stopped answering"`) }
	lateBefore := count(`msg="late heartbeat"`)
	before := changes()
	start := time.Now()
	burnCPUs(t, 8)
	time.Sleep(soak)
	// Near misses (a live peer silent for over half the dead time) tell how much margin was left.
	t.Logf("late heartbeats during the soak: %d", count(`msg="late heartbeat"`)-lateBefore)
	for _, node := range l.Nodes {
		b, _ := os.ReadFile(filepath.Join(l.Dir, node.Name+".log"))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `msg="late heartbeat"`) || strings.Contains(line, "real-time") {
				t.Log(line)
			}
		}
	}
	if got := changes() - before; got != 0 {
		t.Errorf("%d ownership changes in %v idle under CPU load", got, soak)
	}
	for _, ip := range ips {
		if macs := p.MACsSince(ip, start); len(macs) != 1 {
			t.Errorf("%s answered by %v during the soak, want one MAC", ip, macs)
		}
	}
}

// burnCPUs keeps every CPU busy until the test ends: perCPU busy loops per CPU, each in a session
// of its own. With the kernel's autogroup scheduling (on by default) every session is a scheduling
// group with an equal share, so burners sharing the speakers' session would only compete inside
// that group, a much milder load than a node's other workloads (or other users' builds) in groups
// of their own. Eight per CPU brings the load average near the 15-30 under which earlier runs lost
// heartbeats.
func burnCPUs(t *testing.T, perCPU int) {
	t.Helper()
	var burners []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range burners {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	for range perCPU * runtime.NumCPU() {
		c := exec.Command("sh", "-c", "while :; do :; done")
		// Pdeathsig: a test killed by its timeout runs no deferred function; the burners must
		// not outlive it.
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		burners = append(burners, c)
	}
}

// solicitedNodeGroup is ff02::1:ffXX:XXXX for the last 24 bits of a (RFC 4291 2.7.1).
func solicitedNodeGroup(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// TestRestartMovesNothing: a speaker stopped for a restart (SIGTERM, started again 2 s later, as a
// rolling upgrade does) holds its IPs: the node's kernel answers for them while no speaker runs
// there, no other node answers, and the restarted speaker answers again and takes them back from
// the kernel; nothing moves. A speaker that does not come back within its hold loses its IPs after
// it, and never do two MACs answer for one IP.
func TestRestartMovesNothing(t *testing.T) {
	const hold = 4 * time.Second
	var ips []netip.Addr
	for i := range 6 {
		ips = append(ips, ServiceIPv4(20+i))
	}
	v6 := ServiceIPv6(20)
	l := up(t, policies([]string{"n1", "n2", "n3"}, append(slices.Clone(ips), v6)...),
		"--restart-hold", hold.String(), "--rebalance-after", "1h")
	p, err := l.StartProber(ips, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	owners := map[netip.Addr]*Node{}
	count := map[string]int{}
	for _, ip := range ips {
		owners[ip] = owner(t, l, p, ip)
		count[owners[ip].Name]++
	}
	restarted := l.Nodes[0]
	for _, n := range l.Nodes {
		if count[n.Name] > count[restarted.Name] {
			restarted = n
		}
	}
	var its []netip.Addr
	for _, ip := range ips {
		if owners[ip] == restarted {
			its = append(its, ip)
		}
	}
	t.Logf("%s owns %v", restarted.Name, its)
	v6Owner := ownerV6(t, l, v6)

	t.Run("restart", func(t *testing.T) {
		t0 := time.Now()
		if err := l.Stop(restarted.Name); err != nil {
			t.Fatal(err)
		}
		// While no speaker runs on the node, its kernel answers, with the node's MAC.
		for _, ip := range its {
			if !heldBy(t, l, restarted, ip) {
				t.Errorf("%s is not held in %s's kernel after the stop", ip, restarted.Name)
			}
		}
		if v6Owner == restarted {
			if macs, err := l.Ndisc6MACs(context.Background(), v6); err != nil || len(macs) != 1 || macs[0] != restarted.MAC.String() {
				t.Errorf("during the restart %s was answered by %v (%v); want only %s", v6, macs, err, restarted.MAC)
			}
		}
		time.Sleep(2 * time.Second)
		if err := l.Start(restarted.Name, ""); err != nil {
			t.Fatal(err)
		}
		if !WaitFor(5*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(l.Dir, restarted.Name+".log"))
			return strings.Count(string(b), "answering again after the restart") >= len(its)
		}) {
			t.Fatalf("the restarted %s did not answer for its IPs again", restarted.Name)
		}
		time.Sleep(time.Second)
		for _, ip := range ips {
			if macs := p.MACsSince(ip, t0); len(macs) != 1 || macs[0] != owners[ip].MAC.String() {
				t.Errorf("across the restart %s was answered by %v; want only its owner %s (%s)", ip, macs, owners[ip].Name, owners[ip].MAC)
			}
			if gap := maxGap(p, ip, t0); gap > 250*time.Millisecond {
				t.Errorf("%s went %v without an answer during the restart", ip, gap)
			}
		}
		for _, ip := range its {
			if heldBy(t, l, restarted, ip) {
				t.Errorf("the restarted speaker left %s held in the kernel", ip)
			}
		}
		if d := p.DoubleAnswers(); len(d) > 0 {
			t.Errorf("two MACs answered in one round: %v", d)
		}
	})

	t.Run("no return", func(t *testing.T) {
		t0 := time.Now()
		if err := l.Stop(restarted.Name); err != nil {
			t.Fatal(err)
		}
		if !WaitFor(hold+l2.HoldMargin+3*time.Second, func() bool {
			for _, ip := range its {
				if _, ok := p.FirstReplyAfter(ip, t0, restarted.MAC); !ok {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s's IPs did not fail over after its hold", restarted.Name)
		}
		for _, ip := range its {
			r, _ := p.FirstReplyAfter(ip, t0, restarted.MAC)
			took := r.At.Sub(t0)
			t.Logf("%s: %s answered %v after the stop", ip, r.MAC, took.Round(time.Millisecond))
			if took < hold {
				t.Errorf("%s moved %v after the stop, before the hold of %v ended", ip, took, hold)
			}
			if heldBy(t, l, restarted, ip) {
				t.Errorf("%s is still held in %s's kernel after its hold", ip, restarted.Name)
			}
		}
		if d := p.DoubleAnswers(); len(d) > 0 {
			t.Errorf("two MACs answered in one round: %v", d)
		}
	})
}

// heldBy reports whether ip is an address of n's eth0 (held in its kernel).
func heldBy(t *testing.T, l *Lab, n *Node, ip netip.Addr) bool {
	t.Helper()
	out, err := l.Exec(context.Background(), n.NS, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr in %s: %v", n.Name, err)
	}
	return strings.Contains(string(out), " "+netip.PrefixFrom(ip, ip.BitLen()).String()+" ")
}

// maxGap is the longest time after t between two answers for ip (or from t to the first).
func maxGap(p *Prober, ip netip.Addr, t time.Time) time.Duration {
	last, gap := t, time.Duration(0)
	for _, r := range p.Replies() {
		if r.IP == ip && r.At.After(t) {
			gap = max(gap, r.At.Sub(last))
			last = r.At
		}
	}
	return gap
}

// ownerV6 returns the node answering NDP for ip.
func ownerV6(t *testing.T, l *Lab, ip netip.Addr) *Node {
	t.Helper()
	var n *Node
	if !WaitFor(5*time.Second, func() bool {
		macs, err := l.Ndisc6MACs(context.Background(), ip)
		if err != nil || len(macs) != 1 {
			return false
		}
		hw, _ := net.ParseMAC(macs[0])
		n = l.NodeByMAC(hw)
		return n != nil
	}) {
		t.Fatalf("%s is not answered by one node", ip)
	}
	return n
}

// TestLeaveHandsOverBeforeStopping: a speaker stopped without a hold (its node leaving: cordoned
// or drained, excluded, NotReady, deleted; here --restart-hold 0) hands its IPs over make before
// break: it answers until the next owner claims them. The only other candidate is frozen
// (SIGSTOP, for less than DeadAfter) when the owner stops, so it claims the IP only once it
// thaws, 150 ms later: the leaving owner answers all along, and no probe round (every 10 ms) goes
// unanswered. (A stop used to release the IPs at once: nobody answered until the other node,
// thawed, took over.)
func TestLeaveHandsOverBeforeStopping(t *testing.T) {
	ip := ServiceIPv4(40)
	l := up(t, policies([]string{"n1", "n2"}, ip), "--rebalance-after", "1h")
	p, err := l.StartProber([]netip.Addr{ip}, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	leaving := owner(t, l, p, ip)
	other := l.Node("n1")
	if other == leaving {
		other = l.Node("n2")
	}
	if err := l.Signal(other.Name, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- l.Stop(leaving.Name) }()
	time.Sleep(150 * time.Millisecond)
	if err := l.Signal(other.Name, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if !WaitFor(3*time.Second, func() bool {
		_, ok := p.FirstReplyAfter(ip, t0, leaving.MAC)
		return ok
	}) {
		t.Fatalf("%s was not taken over by %s", ip, other.Name)
	}
	time.Sleep(100 * time.Millisecond)
	r, _ := p.FirstReplyAfter(ip, t0, leaving.MAC)
	t.Logf("%s answered %s %v after %s's stop", r.MAC, ip, r.At.Sub(t0).Round(time.Millisecond), leaving.Name)
	if macs := p.MACsSince(ip, t0); !slices.Contains(macs, leaving.MAC.String()) || !slices.Contains(macs, other.MAC.String()) {
		t.Errorf("after the stop %s was answered by %v; want the leaving %s, then %s", ip, macs, leaving.MAC, other.MAC)
	}
	// Until the new owner's first answer (afterwards it recovers from its own stall: it was
	// frozen, and answers nothing for a moment whatever the leaving node did).
	last, gap := t0, time.Duration(0)
	var answers []string
	for _, a := range p.Replies() {
		if a.IP == ip && a.At.After(t0) && !a.At.After(r.At) {
			gap = max(gap, a.At.Sub(last))
			last = a.At
			answers = append(answers, fmt.Sprintf("+%v %s", a.At.Sub(t0).Round(time.Millisecond), a.MAC))
		}
	}
	if gap > 60*time.Millisecond {
		t.Errorf("%s went %v without an answer while %s left (break before make); answers: %v", ip, gap, leaving.Name, answers)
	}
}

// TestRestartUnderCPULoad: speakers restarted over and over (SIGTERM, started again up to 2 s
// later, as a rolling upgrade does) with every CPU kept busy: with the holds, no round of the
// 5 ms ARP probes is ever answered by two MACs. It burns every CPU, so it runs only when asked
// (HERALD_L2_LOAD_RESTARTS, the number of restarts), alone:
// HERALD_L2_LOAD_RESTARTS=20 go test -count=1 -run TestRestartUnderCPULoad ./speaker/l2/l2lab
func TestRestartUnderCPULoad(t *testing.T) {
	v := os.Getenv("HERALD_L2_LOAD_RESTARTS")
	if v == "" {
		t.Skip("set HERALD_L2_LOAD_RESTARTS=20 to restart speakers under CPU load (it burns every CPU; run it alone)")
	}
	restarts, err := strconv.Atoi(v)
	if err != nil || restarts <= 0 {
		t.Fatalf("HERALD_L2_LOAD_RESTARTS=%q: want a positive count", v)
	}
	const hold = 10 * time.Second
	loadPerCPU := 6
	if v := os.Getenv("HERALD_L2_LOAD_PER_CPU"); v != "" {
		if loadPerCPU, err = strconv.Atoi(v); err != nil {
			t.Fatalf("HERALD_L2_LOAD_PER_CPU=%q: %v", v, err)
		}
	}
	var ips []netip.Addr
	for i := range 6 {
		ips = append(ips, ServiceIPv4(20+i))
	}
	l := newLab(t)
	// Each node in a cgroup of its own, as a kubelet's node: the weight of a top-level cgroup,
	// and no real-time budget (in pods the heartbeat thread runs at a normal priority).
	if err := l.ConfineLikePods(1024); err != nil {
		testenv.Missing(t, "pod-like cgroups: %v", err)
	}
	// Configured 3 s after it starts, as a speaker whose data plane takes that long to forward:
	// meanwhile it resumes its held IPs, which the node's kernel answers for.
	startNodes(t, l, policies([]string{"n1", "n2", "n3"}, ips...), "--restart-hold", hold.String(), "--rebalance-after", "1h",
		"--configure-after", "3s")
	p, err := l.StartProber(ips, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, ip := range ips {
		owner(t, l, p, ip)
	}
	burnCPUs(t, loadPerCPU)
	resumed := func(n *Node) int {
		b, _ := os.ReadFile(filepath.Join(l.Dir, n.Name+".log"))
		return strings.Count(string(b), "answering again after the restart")
	}
	bad := 0
	for i := range restarts {
		n := l.Nodes[i%len(l.Nodes)]
		before := resumed(n)
		t0 := time.Now()
		if err := l.Stop(n.Name); err != nil {
			t.Fatal(err)
		}
		// Down for 0.5 to 2 s: a pod's restart, and the peers' heartbeats of the old process's
		// last moments and of the new one's first at several offsets.
		time.Sleep(500*time.Millisecond + time.Duration(i%4)*500*time.Millisecond)
		if err := l.Start(n.Name, ""); err != nil {
			t.Fatal(err)
		}
		back := WaitFor(hold, func() bool { return resumed(n) > before })
		time.Sleep(time.Second)
		var doubles []Double
		for _, d := range p.DoubleAnswers() {
			if d.At.After(t0) {
				doubles = append(doubles, d)
			}
		}
		t.Logf("restart %d of %s (down %v, resumed %v): %d rounds answered by two MACs %v", i+1, n.Name,
			500*time.Millisecond+time.Duration(i%4)*500*time.Millisecond, back, len(doubles), doubles)
		if len(doubles) > 0 {
			bad++
		}
	}
	if keep := os.Getenv("HERALD_LAB_DIR"); keep != "" {
		// The logs go with the test's temporary directory: keep them for a look.
		for _, n := range l.Nodes {
			if b, err := os.ReadFile(filepath.Join(l.Dir, n.Name+".log")); err == nil && os.MkdirAll(keep, 0o755) == nil {
				_ = os.WriteFile(filepath.Join(keep, n.Name+".log"), b, 0o644)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d restarts under CPU load had rounds answered by two MACs", bad, restarts)
	}
}

// TestFrozenResumingSpeakerKeepsItsHold: a restarted speaker resumes its held IPs (its node's
// kernel answers for them) and is silent for longer than its peers wait for a restarted peer
// (frozen here; on a busy node a starting speaker in a pod, without a real-time heartbeat thread,
// was silent that long) before it answers for them itself. Its peers declare it dead, but keep
// its claims as a hold: no round of the ARP probes is answered by two MACs. (Its claims used to
// be plain ones: the peers took the IPs beside the kernel and gave them back when it thawed,
// the second MAC of issue 18's rolling upgrades.)
func TestFrozenResumingSpeakerKeepsItsHold(t *testing.T) {
	const hold = 10 * time.Second
	var ips []netip.Addr
	for i := range 6 {
		ips = append(ips, ServiceIPv4(20+i))
	}
	l := up(t, policies([]string{"n1", "n2", "n3"}, ips...), "--restart-hold", hold.String(), "--rebalance-after", "1h")
	p, err := l.StartProber(ips, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	owners := map[netip.Addr]*Node{}
	for _, ip := range ips {
		owners[ip] = owner(t, l, p, ip)
	}
	n := owners[ips[0]]
	t0 := time.Now()
	if err := l.Stop(n.Name); err != nil {
		t.Fatal(err)
	}
	// The restarted speaker gets its configuration 3 s after it starts (a speaker's data plane
	// takes that long to forward): until then it resumes, and the kernel answers.
	l.SetNodeArgs("--restart-hold", hold.String(), "--rebalance-after", "1h", "--configure-after", "3s")
	if err := l.Start(n.Name, ""); err != nil {
		t.Fatal(err)
	}
	logged := func(what string) bool {
		b, _ := os.ReadFile(filepath.Join(l.Dir, n.Name+".log"))
		return strings.Contains(string(b), what)
	}
	if !WaitFor(5*time.Second, func() bool { return logged("resuming the IPs held over the restart") }) {
		t.Fatalf("the restarted %s did not resume its IPs", n.Name)
	}
	time.Sleep(300 * time.Millisecond) // its claims reach the peers
	// Silent for 1.5 s: a restarted peer is declared dead after 1 s (4 × DeadAfter).
	if err := l.Signal(n.Name, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := l.Signal(n.Name, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !WaitFor(hold, func() bool { return logged("answering again after the restart") }) {
		t.Errorf("the restarted %s did not answer for its IPs again", n.Name)
	}
	time.Sleep(time.Second)
	for _, ip := range ips {
		if macs := p.MACsSince(ip, t0); len(macs) != 1 {
			t.Errorf("%s was answered by %v after %s's restart; want only its owner %s", ip, macs, n.Name, owners[ip].Name)
		}
	}
	if d := p.DoubleAnswers(); len(d) > 0 {
		t.Errorf("two MACs answered in %d rounds: %v", len(d), d)
	}
}
