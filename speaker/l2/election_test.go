package l2

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/heraldlb/herald/speaker/membership"
)

// cluster simulates nodes running elections on each other's last published states, one
// heartbeat (50 ms) per step.
type cluster struct {
	t       *testing.T
	now     time.Time
	nodes   map[string]*simNode
	ips     map[netip.Addr]Policy
	changes int // ownership changes seen (gains)
	// payloadLimit is the state the members can send each other (Round.PayloadLimit).
	payloadLimit int
}

type simNode struct {
	el          *Election
	alive       bool // running and connected
	links       []Link
	aliveSince  time.Time
	quorumSince time.Time
	published   NodeState
}

var segment = []Link{{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/24")}}}

func newCluster(t *testing.T, nodes []string, nIPs int) *cluster {
	c := &cluster{t: t, now: time.Unix(1000, 0), nodes: map[string]*simNode{}, ips: map[netip.Addr]Policy{}}
	for _, n := range nodes {
		c.nodes[n] = &simNode{el: NewElection(n, DefaultElectionTiming), alive: true, links: segment, aliveSince: c.now, quorumSince: c.now}
	}
	for i := range nIPs {
		c.ips[netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})] = Policy{Candidates: nodes}
	}
	return c
}

// step runs one round on every alive node and checks that no IP has two owners except during a
// planned handover (offer taken up, giver not yet aware).
func (c *cluster) step() {
	c.now = c.now.Add(50 * time.Millisecond)
	alive := 0
	for _, n := range c.nodes {
		if n.alive {
			alive++
		}
	}
	quorum := len(c.nodes) < 3 || alive*2 > len(c.nodes)
	members := map[string]Member{}
	for name, n := range c.nodes {
		if n.alive {
			members[name] = Member{AliveSince: n.aliveSince, State: n.published}
		}
	}
	for name, n := range c.nodes {
		if !n.alive {
			continue
		}
		m := members[name]
		m.State.Links = n.links
		members[name] = m
		gained, _ := n.el.Decide(Round{Now: c.now, Quorum: quorum, QuorumSince: n.quorumSince, Members: members, IPs: c.ips,
			PayloadLimit: c.payloadLimit})
		c.changes += len(gained)
		m.State.Links = c.nodes[name].published.Links
		members[name] = m
	}
	for _, n := range c.nodes {
		if n.alive {
			n.published = n.el.State(n.links, false)
		}
	}
	for ip, owners := range c.owners() {
		if len(owners) > 1 && !c.handingOver(ip, owners) {
			c.t.Fatalf("at %v %s has owners %v outside a handover", c.now, ip, owners)
		}
	}
}

// handingOver: two owners are allowed for one heartbeat while an IP is handed over, by an offer
// (rebalancing) or because its owner may no longer announce it and answers until the new owner's
// claim arrives (make before break).
func (c *cluster) handingOver(ip netip.Addr, owners []string) bool {
	for _, n := range owners {
		if !slices.Contains(c.ips[ip].Candidates, n) || !canAnswer(c.nodes[n].links, ip, nil) {
			return true
		}
		for _, o := range c.nodes[n].published.Offers {
			if o.IP == ip && slices.Contains(owners, o.To) {
				return true
			}
		}
	}
	return false
}

func (c *cluster) run(d time.Duration) {
	for end := c.now.Add(d); c.now.Before(end); {
		c.step()
	}
}

func (c *cluster) owners() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for name, n := range c.nodes {
		if !n.alive {
			continue
		}
		for _, ip := range n.el.Owned() {
			out[ip] = append(out[ip], name)
		}
	}
	for _, o := range out {
		slices.Sort(o)
	}
	return out
}

// ownerOf returns the single owner of every IP, failing if any IP has none or several.
func (c *cluster) ownerOf() map[netip.Addr]string {
	c.t.Helper()
	owners := c.owners()
	out := map[netip.Addr]string{}
	for ip := range c.ips {
		if len(owners[ip]) != 1 {
			c.t.Fatalf("at %v %s has owners %v, want exactly one", c.now, ip, owners[ip])
		}
		out[ip] = owners[ip][0]
	}
	return out
}

func loads(owner map[netip.Addr]string) map[string]int {
	l := map[string]int{}
	for _, n := range owner {
		l[n]++
	}
	return l
}

func (c *cluster) kill(name string) {
	n := c.nodes[name]
	n.alive = false
	n.el = NewElection(name, DefaultElectionTiming)
	n.published = NodeState{}
}

func (c *cluster) revive(name string) {
	n := c.nodes[name]
	n.alive, n.aliveSince, n.quorumSince = true, c.now, c.now
}

func TestOneOwnerPerIPSpreadOverNodes(t *testing.T) {
	c := newCluster(t, []string{"node-a", "node-b", "node-c"}, 30)
	c.run(time.Second)
	for n, l := range loads(c.ownerOf()) {
		if l < 5 || l > 15 {
			t.Errorf("%s owns %d of 30 IPs, want 5..15", n, l)
		}
	}
}

func TestFailoverMovesOnlyTheDeadNodesIPs(t *testing.T) {
	c := newCluster(t, []string{"node-a", "node-b", "node-c"}, 30)
	c.run(15 * time.Second)
	before := c.ownerOf()
	c.kill("node-b")
	// The real membership takes DeadAfter to notice; here the next round does.
	c.run(time.Second)
	after := c.ownerOf()
	for ip, n := range before {
		if n != "node-b" && after[ip] != n {
			t.Errorf("%s moved from healthy %s to %s", ip, n, after[ip])
		}
		if after[ip] == "node-b" {
			t.Errorf("%s still owned by the dead node", ip)
		}
	}
	// node-b returns: nothing moves before RebalanceAfter, and afterwards only planned handovers
	// towards node-b, one at a time, until the loads are within one of each other.
	c.revive("node-b")
	changes := c.changes
	c.run(DefaultElectionTiming.RebalanceAfter - time.Second)
	if c.changes != changes {
		t.Fatalf("%d ownership changes within RebalanceAfter of node-b's return", c.changes-changes)
	}
	c.run(30 * time.Second)
	l := loads(c.ownerOf())
	if l["node-a"]-l["node-b"] > 1 || l["node-c"]-l["node-b"] > 1 {
		t.Errorf("after rebalancing loads are %v", l)
	}
	moved := c.changes - changes
	if moved > 12 {
		t.Errorf("rebalancing made %d moves for 10 IPs", moved)
	}
	// Settled: no more changes.
	changes = c.changes
	c.run(time.Minute)
	if c.changes != changes {
		t.Errorf("%d ownership changes in a settled cluster", c.changes-changes)
	}
}

func TestMinorityOwnsNothing(t *testing.T) {
	c := newCluster(t, []string{"node-a", "node-b", "node-c"}, 6)
	c.run(time.Second)
	c.kill("node-b")
	c.kill("node-c")
	c.step()
	if owned := c.nodes["node-a"].el.Owned(); len(owned) != 0 {
		t.Fatalf("node-a alone of three owns %v", owned)
	}
}

func TestIneligibleOwnerGivesUp(t *testing.T) {
	c := newCluster(t, []string{"node-a", "node-b", "node-c"}, 1)
	c.run(time.Second)
	var ip netip.Addr
	for k := range c.ips {
		ip = k
	}
	first := c.ownerOf()[ip]

	// externalTrafficPolicy Local: the endpoint moves to another node.
	other := "node-a"
	if first == other {
		other = "node-b"
	}
	c.ips[ip] = Policy{Candidates: []string{other}}
	c.step()
	c.step()
	if got := c.ownerOf()[ip]; got != other {
		t.Fatalf("after the endpoint moved to %s the owner is %s", other, got)
	}

	// The owner's interface goes down: it advertises no link for the subnet and gives up.
	c.ips[ip] = Policy{Candidates: []string{"node-a", "node-b", "node-c"}}
	c.nodes[other].links = nil
	// Its peers learn of the link from its next heartbeat, take the IP, and it stops when it sees
	// their claim: three heartbeats.
	c.step()
	c.step()
	c.step()
	if got := c.ownerOf()[ip]; got == other {
		t.Fatalf("%s kept %s with its link down", other, ip)
	}
}

func TestNamedInterfaces(t *testing.T) {
	links := []Link{
		{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/24")}},
		{Name: "eth1", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.5.1/24"), netip.MustParsePrefix("fe80::1/64")}},
	}
	for _, tc := range []struct {
		ip    string
		ifs   []string
		want  bool
		about string
	}{
		{"10.0.0.7", nil, true, "subnet match"},
		{"10.9.0.7", nil, false, "no subnet holds it"},
		{"10.9.0.7", []string{"eth1"}, true, "named interface with IPv4"},
		{"10.9.0.7", []string{"eth9"}, false, "named interface absent"},
		{"2001:db8::7", []string{"eth1"}, true, "IPv6 on named interface with link-local"},
		{"2001:db8::7", []string{"eth0"}, false, "named interface without IPv6"},
	} {
		if got := canAnswer(links, netip.MustParseAddr(tc.ip), tc.ifs); got != tc.want {
			t.Errorf("%s: canAnswer(%s, %v) = %v", tc.about, tc.ip, tc.ifs, got)
		}
	}
}

// TestInterfacesPerNode: each node is judged on its own interfaces. All three have the segment's
// eth0; the policy gives two of them a link they lack, so only the third may answer.
func TestInterfacesPerNode(t *testing.T) {
	c := newCluster(t, []string{"node-a", "node-b", "node-c"}, 3)
	for ip, pol := range c.ips {
		pol.NodeInterfaces = map[string][]string{"node-a": {"eth9"}, "node-b": {"eth9"}}
		c.ips[ip] = pol
	}
	c.run(time.Second)
	for ip, owner := range c.ownerOf() {
		if owner != "node-c" {
			t.Errorf("%s owned by %s, want node-c (the others' interface eth9 does not exist)", ip, owner)
		}
	}
	if got := (Policy{Interfaces: []string{"eth1"}, NodeInterfaces: map[string][]string{"x": nil}}).InterfacesOf("x"); got != nil {
		t.Errorf("a node listed with nil interfaces answers on the subnet's, got %v", got)
	}
}

func TestConflictingClaimsResolveToOne(t *testing.T) {
	// After a partition in a two-node cluster heals both nodes own every IP.
	c := newCluster(t, []string{"node-a", "node-b"}, 8)
	c.run(time.Second)
	for _, n := range c.nodes {
		for ip := range c.ips {
			n.el.owned[ip] = true
		}
		n.published = n.el.State(n.links, false)
	}
	c.nodes["node-a"].el.offers = map[netip.Addr]pendingOffer{}
	// One round to see each other's claims: exactly one owner each.
	c.now = c.now.Add(50 * time.Millisecond)
	members := map[string]Member{}
	for name, n := range c.nodes {
		members[name] = Member{AliveSince: n.aliveSince, State: n.published}
	}
	for _, n := range c.nodes {
		n.el.Decide(Round{Now: c.now, Quorum: true, QuorumSince: n.quorumSince, Members: members, IPs: c.ips})
	}
	c.ownerOf()
}

func TestNodeStateEncodingIsStable(t *testing.T) {
	s := NodeState{Links: segment, Owned: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Offers: []Offer{{IP: netip.MustParseAddr("10.0.0.1"), To: "node-b"}}}
	a, err := s.encode()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.encode()
	if string(a) != string(b) {
		t.Fatal("equal states encode differently")
	}
	got, err := decodeNodeState(a)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(s) {
		t.Fatalf("decoded %v, want %v", got, s)
	}
}

// BenchmarkDecide10kIPs: one election round with 10,000 IPs on 3 nodes (each round runs on every
// membership change and every 50 ms).
func BenchmarkDecide10kIPs(b *testing.B) {
	c := newCluster(&testing.T{}, []string{"node-a", "node-b", "node-c"}, 0)
	for i := range 10000 {
		c.ips[netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})] = Policy{Candidates: []string{"node-a", "node-b", "node-c"}}
	}
	segment10 := []Link{{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/8")}}}
	for _, n := range c.nodes {
		n.links = segment10
	}
	c.run(time.Second)
	n := c.nodes["node-a"]
	members := map[string]Member{}
	for name, m := range c.nodes {
		members[name] = Member{AliveSince: m.aliveSince, State: m.published.indexed()}
	}
	b.ResetTimer()
	for range b.N {
		n.el.Decide(Round{Now: c.now, Quorum: true, QuorumSince: n.quorumSince, Members: members, IPs: c.ips})
	}
}

// TestOwnedIPsFitWhatPeersCanReceive: with peers of an earlier release (state in one heartbeat)
// a node owns at most 3,072 IPs, and its state of as many IPv6 addresses fits one heartbeat; with
// peers that take chunked state, 10,000 and more, and when a peer of an earlier release comes back
// the node gives up the highest IPs beyond the cap rather than claim IPs that peer cannot see.
func TestOwnedIPsFitWhatPeersCanReceive(t *testing.T) {
	const want = 10000
	c := newCluster(t, []string{"node-a"}, 0)
	for i := range want {
		c.ips[netip.AddrFrom16([16]byte{0xfd, 14: byte(i >> 8), 15: byte(i)})] = Policy{Candidates: []string{"node-a"}}
	}
	v6 := []Link{{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}}}
	c.nodes["node-a"].links = v6
	el := c.nodes["node-a"].el
	owns := func(n int, overCap bool, limit int) {
		t.Helper()
		if got := len(el.Owned()); got != n || el.OverCap() != overCap {
			t.Fatalf("owns %d (over cap %v), want %d (over cap %v)", got, el.OverCap(), n, overCap)
		}
		b, err := el.State(v6, false).encode()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > limit {
			t.Fatalf("state of %d IPv6 addresses takes %d bytes, more than the peers' %d", n, len(b), limit)
		}
	}

	c.payloadLimit = membership.MaxChunkedPayload
	c.run(time.Second)
	owns(want, false, membership.MaxChunkedPayload)

	// A peer of an earlier release joins: the state must fit one heartbeat again.
	c.payloadLimit = membership.MaxPayload
	c.run(time.Second)
	limit := MaxOwnedIPs(membership.MaxPayload)
	owns(limit, true, membership.MaxPayload)
	owned := el.Owned()
	if last := owned[len(owned)-1]; last != netip.AddrFrom16([16]byte{0xfd, 14: byte((limit - 1) >> 8), 15: byte(limit - 1)}) {
		t.Fatalf("kept up to %v, want the lowest %d IPs", last, limit)
	}
}

func TestRecoveringNodeYields(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.100")
	now := time.Unix(1000, 0)
	ips := map[netip.Addr]Policy{ip: {Candidates: []string{"node-a", "node-b", "node-c"}}}
	// node-a owned ip, froze; node-b took it over meanwhile. Both now claim it.
	a, b := NewElection("node-a", DefaultElectionTiming), NewElection("node-b", DefaultElectionTiming)
	a.owned[ip], b.owned[ip] = true, true
	members := func(aRecovering bool) map[string]Member {
		return map[string]Member{
			"node-a": {AliveSince: now.Add(-time.Hour), State: a.State(segment, aRecovering)},
			"node-b": {AliveSince: now.Add(-time.Hour), State: b.State(segment, false)},
			"node-c": {AliveSince: now.Add(-time.Hour), State: NodeState{Links: segment}},
		}
	}
	m := members(true)
	round := func(recovering bool) Round {
		return Round{Now: now, Quorum: true, QuorumSince: now.Add(-time.Hour), Members: m, IPs: ips, Recovering: recovering}
	}
	if _, lost := a.Decide(round(true)); !slices.Equal(lost, []netip.Addr{ip}) {
		t.Fatalf("recovering node-a lost %v, want it to yield %s to node-b", lost, ip)
	}
	if _, lost := b.Decide(round(false)); len(lost) != 0 {
		t.Fatalf("node-b lost %v to a recovering node", lost)
	}
	// Recovering, node-a takes no orphan either, even where it wins the hash.
	b.owned = map[netip.Addr]bool{}
	m = members(true)
	if gained, _ := a.Decide(round(true)); len(gained) != 0 {
		t.Fatalf("recovering node-a took %v", gained)
	}
}

// A restarting node's held claims stand: no other node takes them while it is held, its orphans
// go to the others (it takes nothing new), and once the hold is over its IPs fail over.
func TestHeldClaimsStand(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	ips := map[netip.Addr]Policy{}
	for i := range 30 {
		ips[netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})] = Policy{Candidates: nodes}
	}
	heldIP := netip.MustParseAddr("10.0.0.100")
	start := time.Unix(1000, 0)
	els := map[string]*Election{"b": NewElection("b", DefaultElectionTiming), "c": NewElection("c", DefaultElectionTiming)}
	round := func(now time.Time, a *Member) map[netip.Addr][]string {
		members := map[string]Member{}
		for n := range els {
			members[n] = Member{AliveSince: start, State: els[n].State(segment, false)}
		}
		if a != nil {
			members["a"] = *a
		}
		owners := map[netip.Addr][]string{}
		for n, el := range els {
			el.Decide(Round{Now: now, Quorum: true, QuorumSince: start, Members: members, IPs: ips})
			for _, ip := range el.Owned() {
				owners[ip] = append(owners[ip], n)
			}
		}
		return owners
	}
	held := &Member{Held: true, State: NodeState{Links: segment, Owned: []netip.Addr{heldIP}}}
	now := start.Add(time.Minute)
	var owners map[netip.Addr][]string
	for range 3 { // let b and c see each other's claims
		now = now.Add(50 * time.Millisecond)
		owners = round(now, held)
	}
	for ip := range ips {
		switch {
		case ip == heldIP && len(owners[ip]) != 0:
			t.Errorf("%s, held by the restarting a, is taken by %v", ip, owners[ip])
		case ip != heldIP && len(owners[ip]) != 1:
			t.Errorf("%s has owners %v; the held a takes nothing new, so b or c must", ip, owners[ip])
		}
	}
	// a is back, claiming what it held: still nobody else's.
	back := &Member{AliveSince: now, State: NodeState{Links: segment, Owned: []netip.Addr{heldIP}, HonoursHolds: true}}
	if owners = round(now.Add(50*time.Millisecond), back); len(owners[heldIP]) != 0 {
		t.Errorf("%s is taken by %v after a came back claiming it", heldIP, owners[heldIP])
	}
	// a never came back: its hold is over, so it is no member at all, and its IP fails over.
	for range 3 {
		now = now.Add(50 * time.Millisecond)
		owners = round(now, nil)
	}
	if len(owners[heldIP]) != 1 {
		t.Errorf("after the hold %s has owners %v, want one", heldIP, owners[heldIP])
	}
}

// A resuming election keeps the IPs its previous process held, when nobody else claims them.
func TestResumeKeepsHeldIPs(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.100")
	ips := map[netip.Addr]Policy{ip: {Candidates: []string{"a", "b"}}}
	now := time.Unix(1000, 0)
	el := NewElection("a", DefaultElectionTiming)
	el.Resume([]netip.Addr{ip})
	if st := el.State(segment, false); !slices.Equal(st.Owned, []netip.Addr{ip}) || !st.HonoursHolds {
		t.Fatalf("a resuming node claims %v (honours holds: %v), want %s", st.Owned, st.HonoursHolds, ip)
	}
	members := map[string]Member{
		"a": {AliveSince: now, State: NodeState{Links: segment}},
		"b": {AliveSince: now.Add(-time.Hour), State: NodeState{Links: segment, HonoursHolds: true}},
	}
	gained, lost := el.Decide(Round{Now: now, Quorum: true, QuorumSince: now, Members: members, IPs: ips})
	if len(gained) != 0 || len(lost) != 0 || !el.Owns(ip) {
		t.Errorf("resumed %s: gained %v, lost %v, owns %v; want it kept without a change", ip, gained, lost, el.Owns(ip))
	}
}

// An owner that may no longer announce its IP (excluded, its endpoints gone) answers on
// until the new owner's claim arrives. The nodes learn of the change at different moments (each
// from its own watch of the API server): here the owner a first, b one heartbeat later. At every
// heartbeat someone answers.
func TestIneligibleOwnerHandsOverBeforeStopping(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.100")
	before := map[netip.Addr]Policy{ip: {Candidates: []string{"a", "b"}}}
	after := map[netip.Addr]Policy{ip: {Candidates: []string{"b"}}} // a is excluded
	start := time.Unix(1000, 0)
	a, b := NewElection("a", DefaultElectionTiming), NewElection("b", DefaultElectionTiming)
	a.Resume([]netip.Addr{ip}) // a owns it
	now := start.Add(time.Minute)
	step := func(aIPs, bIPs map[netip.Addr]Policy) []string {
		now = now.Add(50 * time.Millisecond)
		members := map[string]Member{
			"a": {AliveSince: start, State: a.State(segment, false)},
			"b": {AliveSince: start, State: b.State(segment, false)},
		}
		a.Decide(Round{Now: now, Quorum: true, QuorumSince: start, Members: members, IPs: aIPs})
		b.Decide(Round{Now: now, Quorum: true, QuorumSince: start, Members: members, IPs: bIPs})
		var owners []string
		if a.Owns(ip) {
			owners = append(owners, "a")
		}
		if b.Owns(ip) {
			owners = append(owners, "b")
		}
		return owners
	}
	for i, views := range [][2]map[netip.Addr]Policy{{after, before}, {after, after}, {after, after}, {after, after}} {
		owners := step(views[0], views[1])
		t.Logf("heartbeat %d: %v", i+1, owners)
		if len(owners) == 0 {
			t.Fatalf("heartbeat %d: nobody answers for %s (break before make)", i+1, ip)
		}
	}
	if a.Owns(ip) || !b.Owns(ip) {
		t.Fatalf("a owns %s: %v, b: %v; want only b", ip, a.Owns(ip), b.Owns(ip))
	}
	// Nobody else may take it: the owner stops at once (keeping it would answer for nothing).
	if owners := step(after, map[netip.Addr]Policy{ip: {}}); slices.Contains(owners, "b") {
		t.Fatalf("b still owns %s with no candidate left", ip)
	}
}

// A node whose speaker stops while the node leaves (cordoned or drained, then shut down) is still
// every node's candidate in the configuration: it says it is leaving (Depart, NodeState.Leaving),
// and hands each IP over make before break, as a rebalancing offer: it answers until the next
// owner's claim arrives, at every heartbeat someone answers, and the IPs go to the others.
// Nothing is offered to the leaving node meanwhile.
func TestDepartingOwnerHandsOverBeforeStopping(t *testing.T) {
	ips := map[netip.Addr]Policy{}
	for i := range 4 {
		ips[netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})] = Policy{Candidates: []string{"a", "b", "c"}}
	}
	start := time.Unix(1000, 0)
	els := map[string]*Election{}
	for _, n := range []string{"a", "b", "c"} {
		els[n] = NewElection(n, DefaultElectionTiming)
	}
	els["a"].Resume(slices.Collect(maps.Keys(ips))) // a owns them all
	now := start.Add(time.Minute)
	step := func() {
		now = now.Add(50 * time.Millisecond)
		members := map[string]Member{}
		for n, el := range els {
			members[n] = Member{AliveSince: start, State: el.State(segment, false)}
		}
		for _, el := range els {
			el.Decide(Round{Now: now, Quorum: true, QuorumSince: start, Members: members, IPs: ips})
		}
	}
	els["a"].Depart()
	if !els["a"].State(segment, false).Leaving {
		t.Fatal("a departing node's state does not say it is leaving")
	}
	for i := range 4 {
		step()
		for ip := range ips {
			var owners []string
			for n, el := range els {
				if el.Owns(ip) {
					owners = append(owners, n)
				}
			}
			if len(owners) == 0 {
				t.Fatalf("heartbeat %d: nobody answers for %s (break before make)", i+1, ip)
			}
		}
	}
	if owned := els["a"].Owned(); len(owned) != 0 {
		t.Fatalf("the departing node still owns %v", owned)
	}
	for ip := range ips {
		if els["b"].Owns(ip) == els["c"].Owns(ip) {
			t.Errorf("%s: want it with one of b and c; b owns %v, c %v", ip, els["b"].Owned(), els["c"].Owned())
		}
	}
	for _, n := range []string{"b", "c"} {
		for _, o := range els[n].State(segment, false).Offers {
			if o.To == "a" {
				t.Errorf("%s offers %s to the leaving node", n, o.IP)
			}
		}
	}
}

// Balance fills a node that joined (alive for RebalanceAfter, within RebalanceWindow after it),
// and otherwise leaves healthy owners alone: an imbalance among nodes alive for long (Local-policy
// addresses that followed their endpoints away from a drained node) moves nothing, since every
// move breaks the established connections through the address. A node back from a restart hold
// kept its IPs: it has not joined either.
func TestBalanceFillsOnlyNodesThatJoined(t *testing.T) {
	ips := map[netip.Addr]Policy{}
	for i := range 4 {
		ips[netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})] = Policy{Candidates: []string{"a", "b", "c"}}
	}
	start := time.Unix(1000, 0)
	now := start.Add(time.Hour)
	offers := func(c Member) []Offer {
		a := NewElection("a", DefaultElectionTiming)
		a.Resume(slices.Collect(maps.Keys(ips)))
		members := map[string]Member{
			"a": {AliveSince: start, State: NodeState{Links: segment}},
			"b": {AliveSince: start, State: NodeState{Links: segment}},
			"c": c,
		}
		a.Decide(Round{Now: now, Quorum: true, QuorumSince: start, Members: members, IPs: ips})
		return a.State(segment, false).Offers
	}
	if o := offers(Member{AliveSince: start, State: NodeState{Links: segment}}); len(o) != 0 {
		t.Errorf("a owns 4 IPs, b and c (alive for an hour) none: a offers %v, want nothing moved", o)
	}
	joined := now.Add(-DefaultElectionTiming.RebalanceAfter - time.Second)
	if o := offers(Member{AliveSince: joined, State: NodeState{Links: segment}}); len(o) != 1 || o[0].To != "c" {
		t.Errorf("c joined %v ago: a offers %v, want one IP to c", now.Sub(joined), o)
	}
	back := NewElection("c", DefaultElectionTiming)
	back.Resume([]netip.Addr{netip.MustParseAddr("10.0.0.200")})
	if st := back.State(segment, false); !st.Resumed {
		t.Fatal("a speaker that resumed held IPs does not say so")
	}
	if o := offers(Member{AliveSince: joined, Restarted: true, State: NodeState{Links: segment}}); len(o) != 0 {
		t.Errorf("c is back from a restart hold: a offers %v, want nothing", o)
	}
}
