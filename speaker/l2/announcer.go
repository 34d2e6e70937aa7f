// Package l2 makes Service IPs reachable on the nodes' own segment: one node per IP answers ARP
// (IPv4, github.com/mdlayher/arp) and NDP (IPv6, github.com/mdlayher/ndp) for it, and another takes
// over within DeadAfter of membership when it fails. It knows nothing of Kubernetes: the speaker
// gives it, per IP, the candidate nodes and interfaces (SetIPs).
package l2

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldlb/herald/speaker/membership"
)

// Membership is the part of membership.Membership the announcer uses.
type Membership interface {
	View() membership.View
	SetPayload([]byte)
	Changes() <-chan struct{}
	Stalled() (stalls uint64, now bool)
}

// Change is one IP this node gained or lost.
type Change struct {
	IP         netip.Addr
	Gained     bool
	Interfaces []string
}

// Config configures an Announcer.
type Config struct {
	Node       string
	Membership Membership
	Links      LinkSource
	Timing     ElectionTiming
	Logger     *slog.Logger
	// Metrics receive the ARP/NDP counters; nil: unregistered ones (NewMetrics(nil)).
	Metrics *Metrics
	// OnChange is called (from the announcer's goroutine; it must not block) after this node
	// gained or lost IPs.
	OnChange func([]Change)
	// RestartHold: how long a speaker stopping for a restart keeps its IPs, answered by the node's
	// kernel, before its peers take them (see Handover). 0: a stop releases them at once.
	RestartHold time.Duration
	// Handover is the kernel's side of a hold (NetlinkHandover); nil: no holds, and no held IPs
	// are looked for at start.
	Handover Handover
	// HoldOnStop, asked when the announcer stops, tells a restart (hold) from the node leaving
	// (release at once, so peers take over now). Nil: always a restart.
	HoldOnStop func() bool
}

// Announced is one IP this node answers for.
type Announced struct {
	IP         netip.Addr
	Interfaces []string
	Since      time.Time
}

// Announcer runs the election and the responders.
type Announcer struct {
	cfg      Config
	election *Election
	setKick  chan struct{}
	// stallsHandled is the membership's stall count this announcer has noticed; after a stall it
	// recovers (defers to the peers, answers nothing) until recoveringUntil.
	stallsHandled   atomic.Uint64
	recovering      atomic.Bool
	recoveringUntil time.Time

	mu        sync.Mutex
	ips       map[netip.Addr]Policy
	announced map[netip.Addr]Announced

	// configured: SetIPs has been called; until then a resuming announcer decides nothing.
	configured atomic.Bool

	// Owned by the Run goroutine.
	links      []Link
	decoded    map[string]decodedState
	responders map[responderKey]responder
	bursts     map[netip.Addr]context.CancelFunc
	// held are the claims of peers restarting with a hold, kept until the peer is back or until.
	held map[string]heldPeer
	// resumed are the IPs this node's previous speaker left held in the kernel, until this one
	// answers for them itself; the kernel answers for them until resumedUntil.
	resumed      map[netip.Addr]HeldAddr
	resumedUntil time.Time
}

type heldPeer struct {
	state NodeState
	until time.Time
}

type responderKey struct {
	link string
	v6   bool
}

type decodedState struct {
	raw   string
	state NodeState
}

// New returns an Announcer that announces nothing until SetIPs and Run.
func New(cfg Config) *Announcer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "l2")
	if cfg.Timing == (ElectionTiming{}) {
		cfg.Timing = DefaultElectionTiming
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Announcer{
		cfg:        cfg,
		election:   NewElection(cfg.Node, cfg.Timing),
		setKick:    make(chan struct{}, 1),
		ips:        map[netip.Addr]Policy{},
		announced:  map[netip.Addr]Announced{},
		decoded:    map[string]decodedState{},
		responders: map[responderKey]responder{},
		bursts:     map[netip.Addr]context.CancelFunc{},
		held:       map[string]heldPeer{},
	}
}

// SetIPs replaces the IPs to announce and their policies; the announcer keeps (and may sort) ips.
func (a *Announcer) SetIPs(ips map[netip.Addr]Policy) {
	for ip, pol := range ips {
		if !slices.IsSorted(pol.Candidates) {
			pol.Candidates = slices.Compact(slices.Sorted(slices.Values(pol.Candidates)))
			ips[ip] = pol
		}
	}
	a.mu.Lock()
	changed := !maps.EqualFunc(a.ips, ips, func(x, y Policy) bool {
		return slices.Equal(x.Candidates, y.Candidates) && slices.Equal(x.Interfaces, y.Interfaces) &&
			maps.EqualFunc(x.NodeInterfaces, y.NodeInterfaces, slices.Equal)
	})
	a.ips = ips
	a.mu.Unlock()
	if !a.configured.Swap(true) {
		changed = true
	}
	if changed {
		select {
		case a.setKick <- struct{}{}:
		default:
		}
	}
}

// Announced lists what this node answers for now, sorted by IP.
func (a *Announcer) Announced() []Announced {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Collect(maps.Values(a.announced))
	slices.SortFunc(out, func(x, y Announced) int { return x.IP.Compare(y.IP) })
	return out
}

// Run elects and answers until ctx ends; then it stops answering.
func (a *Announcer) Run(ctx context.Context) error {
	linkChanges := a.cfg.Links.Changes(ctx)
	a.refreshLinks()
	a.resume()
	// Rounds also run on a timer: settling, offers and their timeouts depend on time alone.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	defer a.stopAll(ctx)
	for {
		a.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Membership.Changes():
		case <-a.setKick:
		case <-linkChanges:
			a.refreshLinks()
		case <-tick.C:
		}
	}
}

func (a *Announcer) refreshLinks() {
	links, err := a.cfg.Links.Usable()
	if err != nil {
		a.cfg.Logger.Error("cannot list links", "err", err)
		return
	}
	a.links = links
}

// resume finds the IPs the previous speaker on this node left held, and claims them.
func (a *Announcer) resume() {
	if a.cfg.Handover == nil {
		return
	}
	held, err := a.cfg.Handover.Held()
	if err != nil {
		a.cfg.Logger.Error("cannot list the IPs held over a restart; they fail over when their hold ends", "err", err)
		return
	}
	if len(held) == 0 {
		return
	}
	a.resumed = held
	for _, at := range held {
		if until := time.Now().Add(at.Lifetime); until.After(a.resumedUntil) {
			a.resumedUntil = until
		}
	}
	a.election.Resume(slices.Collect(maps.Keys(held)))
	a.cfg.Logger.Info("resuming the IPs held over the restart", "ips", len(held))
}

// round runs one election and applies its result.
func (a *Announcer) round(ctx context.Context) {
	view := a.cfg.Membership.View()
	now := time.Now()
	members := map[string]Member{}
	unknown := 0
	for name, p := range view.Alive {
		switch {
		case name == a.cfg.Node:
			members[name] = Member{AliveSince: p.AliveSince, State: NodeState{Links: a.links}}
		case len(p.Payload) == 0:
			unknown++
		default:
			st := a.decode(name, p.Payload)
			members[name] = Member{AliveSince: p.AliveSince, State: st, Restarted: st.Resumed}
			if st.HoldFor > 0 {
				a.held[name] = heldPeer{state: st, until: now.Add(st.HoldFor + HoldMargin)}
			} else {
				delete(a.held, name)
			}
		}
	}
	for name, p := range view.Departed {
		// A peer that stopped with a hold and died before this node's rounds saw it alive with
		// it (rounds wait for CPU; on a busy node they can miss the moments between a speaker's
		// last heartbeats and its death): its hold binds all the same, from its last heartbeat.
		if _, ok := a.held[name]; ok {
			continue
		}
		if st := a.decode(name, p.Payload); st.HoldFor > 0 {
			if until := p.LastSeen.Add(st.HoldFor + HoldMargin); now.Before(until) {
				a.held[name] = heldPeer{state: st, until: until}
			}
		}
	}
	for name, h := range a.held {
		switch {
		case members[name].State.HoldFor > 0:
			// Still stopping: alive, its claims count as any member's.
		case now.After(h.until):
			delete(a.held, name)
			a.cfg.Logger.Warn("a restarting peer did not come back within its hold; its IPs fail over", "peer", name)
		default:
			members[name] = Member{State: h.state, Held: true}
		}
	}
	a.mu.Lock()
	ips := a.ips
	a.mu.Unlock()
	if a.resumed != nil && (!a.configured.Load() || !view.Quorum) {
		// Resuming: claim the held IPs until this speaker knows its configuration and its peers;
		// deciding earlier would drop them. The kernel still answers for them, so the claims go
		// out as a hold: were this speaker declared dead meanwhile (a starting speaker on a busy
		// node can be silent for a second), its peers must keep off them as long as the kernel
		// answers, not take them after DeadAfter while the node still answers too.
		s := a.election.State(a.links, false)
		s.HoldFor = max(0, time.Until(a.resumedUntil))
		a.publishState(s)
		return
	}
	if view.Stalls != a.stallsHandled.Load() {
		// This process was stalled: the peers may have taken its IPs meanwhile. Until their fresh
		// claims are in, answer nothing; and yield whatever they claim.
		a.recoveringUntil = now.Add(a.cfg.Timing.Settle)
		a.recovering.Store(true)
	}
	recovering := now.Before(a.recoveringUntil)
	gained, lost := a.election.Decide(Round{Now: now, Quorum: view.Quorum, QuorumSince: view.QuorumSince,
		Members: members, Unknown: unknown, IPs: ips, Recovering: recovering, PayloadLimit: view.PayloadLimit})
	if a.election.OverCap() && (len(gained) > 0 || len(lost) > 0) {
		a.cfg.Logger.Error("this node should answer for more IPs than its peers can be told of; some stay unannounced",
			"max", MaxOwnedIPs(view.PayloadLimit), "peersOfEarlierRelease", view.PayloadLimit < membership.MaxChunkedPayload)
	}

	// Stop answering before anything else, then start, then tell the peers.
	a.applyResponders(ctx, ips)
	a.stallsHandled.Store(view.Stalls)
	a.recovering.Store(recovering)
	for _, ip := range lost {
		if cancel, ok := a.bursts[ip]; ok {
			cancel()
			delete(a.bursts, ip)
		}
	}
	var changes []Change
	for _, ip := range lost {
		changes = append(changes, Change{IP: ip})
	}
	var kept map[netip.Addr]bool // resumed IPs still this node's: not an ownership change
	if a.resumed != nil {
		// The held IPs this node kept are answered by its responders now: take them back from
		// the kernel, and report them as this speaker's (no burst: the MAC is the same).
		kept = map[netip.Addr]bool{}
		for ip, at := range a.resumed {
			if a.election.Owns(ip) {
				_, names := a.respondersFor(ip, ips[ip])
				changes = append(changes, Change{IP: ip, Gained: true, Interfaces: names})
				kept[ip] = true
			}
			if err := a.cfg.Handover.Release(at.Link, ip); err != nil {
				a.cfg.Logger.Error("cannot release an IP held over the restart; the kernel answers for it until its hold ends", "ip", ip, "err", err)
			}
		}
		a.resumed = nil
	}
	for _, ip := range gained {
		rs, names := a.respondersFor(ip, ips[ip])
		ctx, cancel := context.WithCancel(ctx) // stopAll cancels it when Run ends, if ctx has not
		a.bursts[ip] = cancel
		go func() {
			gratuitousBurst(ctx, ip, rs, a.cfg.Logger)
			cancel()
		}()
		changes = append(changes, Change{IP: ip, Gained: true, Interfaces: names})
	}
	a.publish(recovering)
	if len(changes) == 0 {
		return
	}
	a.mu.Lock()
	for _, c := range changes {
		if c.Gained {
			a.announced[c.IP] = Announced{IP: c.IP, Interfaces: c.Interfaces, Since: now}
			if kept[c.IP] {
				a.cfg.Logger.Info("answering again after the restart", "ip", c.IP, "interfaces", c.Interfaces)
				continue
			}
			a.cfg.Metrics.ownershipChanges.WithLabelValues("gained").Inc()
			a.cfg.Logger.Info("answering", "ip", c.IP, "interfaces", c.Interfaces)
		} else {
			delete(a.announced, c.IP)
			a.cfg.Metrics.ownershipChanges.WithLabelValues("lost").Inc()
			a.cfg.Logger.Info("stopped answering", "ip", c.IP)
		}
	}
	a.mu.Unlock()
	if a.cfg.OnChange != nil {
		a.cfg.OnChange(changes)
	}
}

func (a *Announcer) decode(name string, payload []byte) NodeState {
	if d, ok := a.decoded[name]; ok && d.raw == string(payload) {
		return d.state
	}
	s, err := decodeNodeState(payload)
	if err != nil {
		a.cfg.Logger.Warn("undecodable state from peer", "peer", name, "err", err)
	}
	s = s.indexed()
	a.decoded[name] = decodedState{raw: string(payload), state: s}
	return s
}

// selectedLinks are the usable links that answer for ip.
func (a *Announcer) selectedLinks(ip netip.Addr, pol Policy) []Link {
	var out []Link
	for _, l := range a.links {
		if canAnswer([]Link{l}, ip, pol.InterfacesOf(a.cfg.Node)) {
			out = append(out, l)
		}
	}
	return out
}

// applyResponders gives every responder exactly the owned IPs selected for its link, opening and
// closing responders as needed.
func (a *Announcer) applyResponders(ctx context.Context, ips map[netip.Addr]Policy) {
	want := map[responderKey]map[netip.Addr]bool{}
	for _, ip := range a.election.Owned() {
		for _, l := range a.selectedLinks(ip, ips[ip]) {
			k := responderKey{link: l.Name, v6: ip.Is6()}
			if want[k] == nil {
				want[k] = map[netip.Addr]bool{}
			}
			want[k][ip] = true
		}
	}
	for k, r := range a.responders {
		if want[k] == nil {
			r.setIPs(nil)
			r.close()
			delete(a.responders, k)
		}
	}
	for k, set := range want {
		r, ok := a.responders[k]
		if !ok {
			var err error
			if r, err = a.openResponder(ctx, k); err != nil {
				a.cfg.Logger.Error("cannot answer on interface", "interface", k.link, "err", err)
				continue
			}
			a.responders[k] = r
		}
		r.setIPs(set)
	}
}

func (a *Announcer) openResponder(ctx context.Context, k responderKey) (responder, error) {
	ifi, err := net.InterfaceByName(k.link)
	if err != nil {
		return nil, err
	}
	if k.v6 {
		return newNDPResponder(ctx, ifi, a.mayAnswer, a.cfg.Logger, a.cfg.Metrics)
	}
	return newARPResponder(ifi, a.mayAnswer, a.cfg.Logger, a.cfg.Metrics)
}

// mayAnswer is false while this process is stalled and while it recovers from a stall: requests
// queued during a freeze must not be answered from a stale state.
func (a *Announcer) mayAnswer() bool {
	stalls, now := a.cfg.Membership.Stalled()
	return !now && stalls == a.stallsHandled.Load() && !a.recovering.Load()
}

func (a *Announcer) respondersFor(ip netip.Addr, pol Policy) ([]responder, []string) {
	var rs []responder
	var names []string
	for _, l := range a.selectedLinks(ip, pol) {
		if r, ok := a.responders[responderKey{link: l.Name, v6: ip.Is6()}]; ok {
			rs = append(rs, r)
			names = append(names, l.Name)
		}
	}
	return rs, names
}

// publish puts this node's state in its heartbeats.
func (a *Announcer) publish(recovering bool) {
	a.publishState(a.election.State(a.links, recovering))
}

func (a *Announcer) publishState(s NodeState) {
	payload, err := s.encode()
	if err != nil {
		a.cfg.Logger.Error("cannot encode node state", "err", err)
		return
	}
	a.cfg.Membership.SetPayload(payload)
}

// stopAll stops answering. Stopping for a restart, it hands its IPs to the kernel and asks the
// peers to hold them (see Handover); otherwise it hands them to its peers (handOver) and tells the
// peers this node owns nothing, so they take over at once instead of after DeadAfter.
func (a *Announcer) stopAll(ctx context.Context) {
	var held []netip.Addr
	if a.mayHold() {
		held = a.holdOwned()
	} else {
		a.handOver(ctx)
	}
	for _, cancel := range a.bursts {
		cancel()
	}
	// The kernel answers for the held IPs now; the responders may go.
	for k, r := range a.responders {
		r.close()
		delete(a.responders, k)
	}
	if len(held) > 0 {
		s := NodeState{Links: a.links, Owned: held, HoldFor: a.cfg.RestartHold, HonoursHolds: true}
		a.publishState(s)
		a.cfg.Logger.Info("stopping for a restart: the node's kernel answers for this node's IPs meanwhile", "ips", len(held), "hold", a.cfg.RestartHold)
	} else {
		// Owning nothing, and still leaving if it was: peers offer it nothing in its last moments.
		departing := a.election.departing
		a.election = NewElection(a.cfg.Node, a.cfg.Timing)
		a.election.departing = departing
		a.publishState(a.election.State(nil, false))
	}
	a.mu.Lock()
	a.announced = map[netip.Addr]Announced{}
	a.mu.Unlock()
}

// handOverRound spaces the rounds of a handover beyond those membership changes bring.
const handOverRound = 10 * time.Millisecond

// handOver hands the owned IPs to their next owners make before break: the node says it is leaving
// (Election.Depart), answers on until an eligible peer claims each IP (each at most OfferTimeout),
// and returns once it owns nothing. Its membership outlives the announcer (cmd/speaker), so the
// peers hear the departure and this node their claims.
func (a *Announcer) handOver(ctx context.Context) {
	owned := len(a.election.owned)
	if owned == 0 {
		return
	}
	a.election.Depart()
	start := time.Now()
	// ctx has ended (the stop): the handover has its own bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Timing.OfferTimeout+5*handOverRound)
	defer cancel()
	tick := time.NewTicker(handOverRound)
	defer tick.Stop()
	for {
		a.round(ctx)
		if len(a.election.owned) == 0 {
			a.cfg.Logger.Info("the node is leaving: its IPs are handed over", "ips", owned, "took", time.Since(start))
			return
		}
		select {
		case <-ctx.Done():
			a.cfg.Logger.Warn("the node is leaving: some IPs were not taken over in time; released", "ips", len(a.election.owned))
			return
		case <-a.cfg.Membership.Changes():
		case <-tick.C:
		}
	}
}

// mayHold: holds are configured, this stop is a restart, and every alive peer honours holds.
func (a *Announcer) mayHold() bool {
	if a.cfg.RestartHold <= 0 || a.cfg.Handover == nil || len(a.election.owned) == 0 {
		return false
	}
	if a.cfg.HoldOnStop != nil && !a.cfg.HoldOnStop() {
		a.cfg.Logger.Info("the node is leaving, not restarting: its IPs are handed over before it stops")
		return false
	}
	for name, p := range a.cfg.Membership.View().Alive {
		if name != a.cfg.Node && (len(p.Payload) == 0 || !a.decode(name, p.Payload).HonoursHolds) {
			a.cfg.Logger.Info("a peer does not honour holds (an older speaker?): this node's IPs are released at once", "peer", name)
			return false
		}
	}
	return true
}

// holdOwned hands each owned IP to the kernel on the links it is answered on, and returns those
// held; an IP that could not be held is released (its peers take it at once).
func (a *Announcer) holdOwned() []netip.Addr {
	a.mu.Lock()
	ips := a.ips
	a.mu.Unlock()
	var held []netip.Addr
	for _, ip := range a.election.Owned() {
		links := a.selectedLinks(ip, ips[ip])
		ok := len(links) > 0
		for _, l := range links {
			if err := a.cfg.Handover.Hold(l.Name, ip, a.cfg.RestartHold); err != nil {
				a.cfg.Logger.Error("cannot hold an IP over the restart; it fails over now", "ip", ip, "err", err)
				ok = false
			}
		}
		if ok {
			held = append(held, ip)
			continue
		}
		for _, l := range links {
			_ = a.cfg.Handover.Release(l.Name, ip) // undo a partial hold; it expires anyway
		}
	}
	return held
}
