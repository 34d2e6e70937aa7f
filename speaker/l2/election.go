package l2

import (
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/heraldlb/herald/speaker/membership"
)

// Policy is what the Kubernetes configuration says about one IP.
type Policy struct {
	// Candidates are the nodes allowed to announce the IP: selected by an L2Advertisement, not
	// excluded from load balancers, and for externalTrafficPolicy Local holding a ready endpoint.
	Candidates []string
	// Interfaces from the L2Advertisement; empty means the interface whose subnet holds the IP.
	Interfaces []string
	// NodeInterfaces replaces Interfaces for the candidates it names: when the advertisements
	// that select different nodes name different interfaces, each node answers on those of the
	// advertisements that select it (nil: the subnet's interface).
	NodeInterfaces map[string][]string
}

// InterfacesOf returns the interfaces node answers for the IP on (empty: the subnet's).
func (p Policy) InterfacesOf(node string) []string {
	if ifs, ok := p.NodeInterfaces[node]; ok {
		return ifs
	}
	return p.Interfaces
}

// Member is one alive node as the election sees it.
type Member struct {
	AliveSince time.Time
	State      NodeState
	// Held: the node's speaker is restarting (it stopped with HoldFor, and the hold has not
	// ended). Its claims stand and nobody else takes them; it takes nothing new and is offered
	// nothing.
	Held bool
	// Restarted: the node's speaker came back from such a hold (its state says Resumed;
	// AliveSince is its new start). It kept its IPs over the restart: it has not joined, and
	// balance offers it nothing.
	Restarted bool
}

// Round is everything one election round looks at.
type Round struct {
	Now         time.Time
	Quorum      bool
	QuorumSince time.Time
	Members     map[string]Member // alive nodes; this node's entry supplies its links
	// Unknown counts alive peers whose state has not arrived yet (their first heartbeat can come
	// before their first election). Their claims are unknown, so no orphan is taken meanwhile.
	Unknown int
	IPs     map[netip.Addr]Policy
	// Recovering: this node has just come out of a stall. It takes nothing and yields every IP
	// another, not recovering, node claims.
	Recovering bool
	// PayloadLimit is the largest state every alive peer can receive (membership.View's); it
	// sets how many IPs this node may own (MaxOwnedIPs). Zero: one heartbeat's worth.
	PayloadLimit int
}

// ElectionTiming holds the election's delays.
type ElectionTiming struct {
	// Settle: after gaining quorum (or starting), wait this long before taking IPs nobody owns, so
	// this node has heard every alive peer's claims first (at least DeadAfter).
	Settle time.Duration
	// RebalanceAfter: a node must have been alive this long before IPs are handed to it, so a
	// flapping node never pulls IPs back and forth.
	RebalanceAfter time.Duration
	// RebalanceWindow: IPs are handed to a node only for this long after RebalanceAfter: balance
	// fills a node that joined (a new node, one back from a crash or a cut), and otherwise leaves
	// healthy owners alone, since every move breaks the established connections through the IP
	// (the new owner has no conntrack entry for them). So an imbalance left by
	// externalTrafficPolicy Local addresses following their endpoints (a drain) moves nothing
	// more. Zero: no limit.
	RebalanceWindow time.Duration
	// RebalanceEvery: at most one handover offer per this period from each owner.
	RebalanceEvery time.Duration
	// OfferTimeout: an offer not taken up by then is withdrawn.
	OfferTimeout time.Duration
}

// DefaultElectionTiming suits the default membership timers (50 ms heartbeats, 250 ms dead).
var DefaultElectionTiming = ElectionTiming{
	Settle:          300 * time.Millisecond,
	RebalanceAfter:  10 * time.Second,
	RebalanceWindow: 2 * time.Minute,
	RebalanceEvery:  500 * time.Millisecond,
	OfferTimeout:    time.Second,
}

// bytesPerOwnedIP is what one owned IP may take of the node's encoded state: an IPv6 address
// takes 17 bytes, and the rest leaves room for the offers and links beside them.
const bytesPerOwnedIP = 20

// MaxOwnedIPs is how many IPs one node may answer for when its peers can receive a state of
// payloadLimit bytes (membership.View.PayloadLimit): 196,608 when every peer takes chunked state,
// 3,072 while one does not (a speaker of an earlier release, where state travels in one
// heartbeat). IPs beyond it stay unannounced, and Election.OverCap reports it.
func MaxOwnedIPs(payloadLimit int) int {
	if payloadLimit <= 0 {
		payloadLimit = membership.MaxPayload
	}
	return payloadLimit / bytesPerOwnedIP
}

// Election decides which IPs this node answers for. Every node runs the same rules on the same
// gossiped states, so they agree on one owner per IP:
//
//   - An IP claimed by an eligible alive node stays with it: healthy owners are never disturbed
//     (every move costs clients a stale-ARP window). If two eligible nodes claim it (after a
//     partition heals, or when configuration views differ for a moment), the one the owner offered
//     it to wins, else the highest rendezvous hash; the other stops at once.
//   - An IP nobody eligible claims goes to the eligible node with the highest rendezvous hash of
//     (IP, node): a deterministic choice every node computes alike, spreading orphans evenly.
//   - Balance: an owner holding at least two IPs more than another eligible node that joined
//     (alive for RebalanceAfter, and not longer than RebalanceWindow more; not back from a restart
//     hold) offers it one IP. The receiver starts answering (with its gratuitous
//     burst) when it sees the offer; the giver stops when it sees the receiver's claim, so a planned
//     move has no window without an answer.
//   - Without quorum a node owns nothing.
type Election struct {
	self      string
	timing    ElectionTiming
	owned     map[netip.Addr]bool
	offers    map[netip.Addr]pendingOffer
	lastOffer time.Time
	overCap   bool
	// Scratch space reused across decideIP calls.
	eligibleBuf, claimants []string
	// heldIPs are the IPs held members claim, this round.
	heldIPs map[netip.Addr]bool
	// leaving: owned IPs this node may no longer announce, since when (see keepUntilTaken).
	leaving map[netip.Addr]time.Time
	// departing: this node's speaker is stopping and the node is leaving (Depart).
	departing bool
	// resumed: this node started owning IPs its previous speaker held over a restart (Resume).
	resumed bool
}

type pendingOffer struct {
	to string
	at time.Time
}

// NewElection starts with nothing owned.
func NewElection(self string, timing ElectionTiming) *Election {
	return &Election{self: self, timing: timing, owned: map[netip.Addr]bool{}, offers: map[netip.Addr]pendingOffer{},
		leaving: map[netip.Addr]time.Time{}}
}

// Resume starts the election owning ips: those this node held over its restart. The first
// Decide keeps each one it may still announce and nobody else claims.
func (e *Election) Resume(ips []netip.Addr) {
	for _, ip := range ips {
		e.owned[ip] = true
	}
	e.resumed = e.resumed || len(ips) > 0
}

// Depart makes this node a candidate for nothing from the next round on, and says so in its state
// (NodeState.Leaving): its speaker is stopping and the node is leaving. Each owned IP is kept, as
// for a cordon used to be, until an eligible peer claims it (keepUntilTaken): make before break.
func (e *Election) Depart() { e.departing = true }

// Owns reports whether this node owns ip.
func (e *Election) Owns(ip netip.Addr) bool { return e.owned[ip] }

// OverCap reports whether the last round left IPs unannounced because of MaxOwnedIPs.
func (e *Election) OverCap() bool { return e.overCap }

// Owned returns the IPs this node currently owns, sorted.
func (e *Election) Owned() []netip.Addr {
	out := make([]netip.Addr, 0, len(e.owned))
	for ip := range e.owned {
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// State is this node's NodeState for its heartbeats.
func (e *Election) State(links []Link, recovering bool) NodeState {
	s := NodeState{Links: links, Owned: e.Owned(), Recovering: recovering, HonoursHolds: true, Leaving: e.departing, Resumed: e.resumed}
	for ip, o := range e.offers {
		s.Offers = append(s.Offers, Offer{IP: ip, To: o.to})
	}
	slices.SortFunc(s.Offers, func(a, b Offer) int { return a.IP.Compare(b.IP) })
	return s
}

// Decide runs one round and returns the IPs this node gained and lost.
func (e *Election) Decide(r Round) (gained, lost []netip.Addr) {
	next := make(map[netip.Addr]bool, len(e.owned)+8)
	e.overCap = false
	clear(e.heldIPs)
	for n, m := range r.Members {
		if m.Held && n != e.self {
			if e.heldIPs == nil {
				e.heldIPs = map[netip.Addr]bool{}
			}
			for _, ip := range m.State.Owned {
				e.heldIPs[ip] = true
			}
		}
	}
	if r.Quorum {
		settled := r.Now.Sub(r.QuorumSince) >= e.timing.Settle && r.Unknown == 0 && !r.Recovering
		var fresh []netip.Addr
		for ip, pol := range r.IPs {
			if e.decideIP(r, ip, pol, settled) {
				if e.owned[ip] {
					next[ip] = true
				} else {
					fresh = append(fresh, ip)
				}
			}
		}
		limit := MaxOwnedIPs(r.PayloadLimit)
		for _, ip := range fresh {
			if len(next) >= limit {
				e.overCap = true
				break
			}
			next[ip] = true
		}
		if len(next) > limit {
			// The limit fell under what this node owns (a peer of an earlier release is back):
			// state it cannot send that peer would leave the peer claiming the same IPs. The
			// highest go, so every round keeps the same ones.
			e.overCap = true
			kept := slices.SortedFunc(maps.Keys(next), func(a, b netip.Addr) int { return a.Compare(b) })
			for _, ip := range kept[limit:] {
				delete(next, ip)
			}
		}
	}
	for ip := range next {
		if !e.owned[ip] {
			gained = append(gained, ip)
		}
	}
	for ip := range e.owned {
		if !next[ip] {
			lost = append(lost, ip)
		}
	}
	e.owned = next
	for ip := range e.leaving {
		if !next[ip] {
			delete(e.leaving, ip)
		}
	}
	for ip, o := range e.offers {
		if !next[ip] || r.Now.Sub(o.at) > e.timing.OfferTimeout {
			delete(e.offers, ip)
		}
	}
	if r.Quorum && !r.Recovering && !e.departing && len(e.offers) == 0 && r.Now.Sub(e.lastOffer) >= e.timing.RebalanceEvery {
		e.offerOne(r)
	}
	slices.SortFunc(gained, netip.Addr.Compare)
	slices.SortFunc(lost, netip.Addr.Compare)
	return gained, lost
}

// decideIP reports whether this node owns ip after this round. It runs for every IP on every
// round, so it allocates nothing in the common cases.
func (e *Election) decideIP(r Round, ip netip.Addr, pol Policy, settled bool) bool {
	if e.heldIPs[ip] {
		// A restarting node's kernel answers for it: a second answer would be a second MAC.
		return false
	}
	eligible := e.eligible(r, ip, pol)
	if !slices.Contains(eligible, e.self) {
		return e.keepUntilTaken(r, ip, eligible)
	}
	delete(e.leaving, ip)
	claimants := e.claimants[:0]
	type offer struct{ from, to string }
	var offers []offer
	var recovering []string // claimants just out of a stall
	for _, n := range eligible {
		if n == e.self {
			if e.owned[ip] {
				claimants = append(claimants, n)
				if o, ok := e.offers[ip]; ok {
					offers = append(offers, offer{n, o.to})
				}
				if r.Recovering {
					recovering = append(recovering, n)
				}
			}
			continue
		}
		st := r.Members[n].State
		if st.owns(ip) {
			claimants = append(claimants, n)
			if to, ok := st.offeredTo(ip); ok {
				offers = append(offers, offer{n, to})
			}
			if st.Recovering {
				recovering = append(recovering, n)
			}
		}
	}
	if len(recovering) > 0 && len(recovering) < len(claimants) {
		// Whoever took an IP over while its owner was stalled keeps it.
		claimants = slices.DeleteFunc(claimants, func(n string) bool { return slices.Contains(recovering, n) })
	}
	e.claimants = claimants
	// Take up an offer made to this node by the current owner.
	for _, o := range offers {
		if o.from != e.self && o.to == e.self {
			return true
		}
	}
	switch len(claimants) {
	case 0:
		return settled && rendezvousWinner(ip, eligible) == e.self
	case 1:
		return claimants[0] == e.self
	}
	for _, o := range offers {
		if slices.Contains(claimants, o.to) {
			return o.to == e.self
		}
	}
	return rendezvousWinner(ip, claimants) == e.self
}

// keepUntilTaken: this node owns ip but may no longer announce it (excluded, leaving, its local
// endpoints gone, its advertisement changed). It answers on until an eligible node
// claims the IP, at most OfferTimeout: make before break, as a rebalancing handover, so a client
// asking meanwhile is always answered. Not when nobody eligible could take it, nor while
// recovering from a stall.
func (e *Election) keepUntilTaken(r Round, ip netip.Addr, eligible []string) bool {
	since, leaving := e.leaving[ip]
	if !e.owned[ip] || len(eligible) == 0 || r.Recovering || (leaving && r.Now.Sub(since) > e.timing.OfferTimeout) {
		return false
	}
	for _, n := range eligible {
		if r.Members[n].State.owns(ip) {
			return false
		}
	}
	if !leaving {
		e.leaving[ip] = r.Now
	}
	return true
}

// eligible lists the alive candidates that have a link to answer for ip, in the candidates' order
// (sorted: SetIPs sorts them), leaving out the nodes that are leaving (Depart). The slice is
// reused by the next call.
func (e *Election) eligible(r Round, ip netip.Addr, pol Policy) []string {
	out := e.eligibleBuf[:0]
	for _, n := range pol.Candidates {
		m, alive := r.Members[n]
		if n == e.self && e.departing {
			continue
		}
		if alive && !m.Held && !m.State.Leaving && canAnswer(m.State.Links, ip, pol.InterfacesOf(n)) {
			out = append(out, n)
		}
	}
	e.eligibleBuf = out
	return out
}

// offerOne offers one IP to the least loaded eligible node that joined (joining) if this node
// holds at least two more. A node's load leaves out the IPs this node owns too: its claims of a
// handover still in flight, which would make it look loaded (and send the offer elsewhere).
func (e *Election) offerOne(r Round) {
	load := map[string]int{}
	for n, m := range r.Members {
		if n != e.self && !m.Held && e.joining(r, m) {
			load[n] = 0
			for _, ip := range m.State.Owned {
				if !e.owned[ip] {
					load[n]++
				}
			}
		}
	}
	mine := len(e.owned)
	underloaded := false
	for _, l := range load {
		underloaded = underloaded || mine-l >= 2
	}
	if !underloaded {
		return
	}
	var bestIP netip.Addr
	bestTo := ""
	for _, ip := range e.Owned() {
		for _, n := range slices.Clone(e.eligible(r, ip, r.IPs[ip])) {
			if l, ok := load[n]; n == e.self || !ok || mine-l < 2 {
				continue
			}
			if bestTo == "" || load[n] < load[bestTo] || (load[n] == load[bestTo] && n < bestTo) {
				bestIP, bestTo = ip, n
			}
		}
	}
	if bestTo != "" {
		e.offers[bestIP] = pendingOffer{to: bestTo, at: r.Now}
		e.lastOffer = r.Now
	}
}

// joining: m joined (alive for RebalanceAfter, within RebalanceWindow after it, not back from a
// restart hold), so balance may hand it IPs.
func (e *Election) joining(r Round, m Member) bool {
	age := r.Now.Sub(m.AliveSince)
	return !m.Restarted && age >= e.timing.RebalanceAfter && (e.timing.RebalanceWindow <= 0 || age < e.timing.RebalanceAfter+e.timing.RebalanceWindow)
}

// rendezvousWinner is the node with the highest hash of (ip, node): a choice every node computes
// alike, and removing a node only moves the IPs it had won.
func rendezvousWinner(ip netip.Addr, nodes []string) string {
	best, bestScore := "", uint64(0)
	for _, n := range nodes {
		if s := rendezvousScore(ip, n); best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

func rendezvousScore(ip netip.Addr, node string) uint64 {
	h := fnv.New64a()
	b := ip.As16()
	h.Write(b[:])
	h.Write([]byte(node))
	// splitmix64 finalizer: FNV alone leaves similar inputs with correlated high bits.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
