package l2

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/heraldlb/herald/speaker/membership"
)

// fakeMembership serves a view the test sets and records the state published.
type fakeMembership struct {
	mu      sync.Mutex
	view    membership.View
	payload []byte
}

func (f *fakeMembership) View() membership.View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakeMembership) SetPayload(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.payload = append([]byte(nil), p...)
}

func (f *fakeMembership) Changes() <-chan struct{}           { return nil }
func (f *fakeMembership) Stalled() (stalls uint64, now bool) { return 0, false }

func (f *fakeMembership) set(v membership.View) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.view = v
}

func (f *fakeMembership) published(t *testing.T) NodeState {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := decodeNodeState(f.payload)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fakeLinks []Link

func (l fakeLinks) Usable() ([]Link, error)               { return l, nil }
func (fakeLinks) Changes(context.Context) <-chan struct{} { return nil }

// fakeHandover holds IPs in a map instead of the kernel.
type fakeHandover struct {
	held map[netip.Addr]HeldAddr
}

func (h *fakeHandover) Hold(link string, ip netip.Addr, lifetime time.Duration) error {
	h.held[ip] = HeldAddr{Link: link, Lifetime: lifetime}
	return nil
}

func (h *fakeHandover) Held() (map[netip.Addr]HeldAddr, error) {
	out := map[netip.Addr]HeldAddr{}
	for ip, at := range h.held {
		out[ip] = at
	}
	return out, nil
}

func (h *fakeHandover) Release(_ string, ip netip.Addr) error {
	delete(h.held, ip)
	return nil
}

// testLink is no interface of the machine: the responders the announcer opens on it fail (and
// are logged), which leaves the election, the tested part, alone.
var testLink = Link{Name: "herald-none0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}

func newTestAnnouncer(t *testing.T, node string, m *fakeMembership, h Handover) *Announcer {
	t.Helper()
	a := New(Config{Node: node, Membership: m, Links: fakeLinks{testLink}, Handover: h, RestartHold: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a.refreshLinks()
	return a
}

func encodedState(t *testing.T, s NodeState) []byte {
	t.Helper()
	b, err := s.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDepartedPeersHoldBinds: a peer that stopped for a restart and died before this node's
// election saw it alive with its hold (a busy node's rounds can miss those moments) still holds
// its IPs, from its last heartbeat: this node does not take them while the peer's kernel answers
// for them (two MACs), and takes them once the hold has ended.
func TestDepartedPeersHoldBinds(t *testing.T) {
	ip := netip.MustParseAddr("10.9.0.5")
	ips := func() map[netip.Addr]Policy { return map[netip.Addr]Policy{ip: {Candidates: []string{"n1", "n3"}}} }
	long := time.Now().Add(-time.Hour)
	self := membership.Peer{Name: "n1", AliveSince: long}
	owning := NodeState{Links: []Link{testLink}, Owned: []netip.Addr{ip}, HonoursHolds: true}
	holding := owning
	holding.HoldFor = 10 * time.Second

	for _, tc := range []struct {
		name     string
		lastSeen time.Duration // before now
		want     bool          // n1 takes ip
	}{
		{"within the hold", 300 * time.Millisecond, false},
		{"after the hold", 10*time.Second + HoldMargin + time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &fakeMembership{}
			a := newTestAnnouncer(t, "n1", m, nil)
			a.SetIPs(ips())
			ctx := t.Context()
			// n3 owns ip; this node's rounds see it alive without a hold, then dead: its
			// heartbeats with the hold came and went between two rounds.
			m.set(membership.View{Self: "n1", Members: 3, Quorum: true, QuorumSince: long,
				Alive: map[string]membership.Peer{"n1": self, "n3": {Name: "n3", AliveSince: long, Payload: encodedState(t, owning)}}})
			a.round(ctx)
			if a.election.Owns(ip) {
				t.Fatalf("n1 took %s from its alive owner n3", ip)
			}
			m.set(membership.View{Self: "n1", Members: 3, Quorum: true, QuorumSince: long,
				Alive: map[string]membership.Peer{"n1": self},
				Departed: map[string]membership.Peer{"n3": {Name: "n3", AliveSince: long, LastSeen: time.Now().Add(-tc.lastSeen),
					Payload: encodedState(t, holding)}}})
			a.round(ctx)
			a.round(ctx)
			if got := a.election.Owns(ip); got != tc.want {
				t.Errorf("n3 stopped with a hold of %v and was last heard %v ago: n1 owns %s = %v, want %v",
					holding.HoldFor, tc.lastSeen, ip, got, tc.want)
			}
		})
	}
}

// TestResumingClaimsAreAHold: a restarted speaker resuming the IPs its node's kernel holds claims
// them as a hold, for as long as the kernel answers, until it answers for them itself: declared
// dead meanwhile (a starting speaker on a busy node can be silent for a second), its peers keep
// off them rather than answer beside the kernel. Once it answers itself (and the kernel no
// longer does), its claims are plain ones again.
func TestResumingClaimsAreAHold(t *testing.T) {
	ip := netip.MustParseAddr("10.9.0.5")
	long := time.Now().Add(-time.Hour)
	m := &fakeMembership{}
	h := &fakeHandover{held: map[netip.Addr]HeldAddr{ip: {Link: testLink.Name, Lifetime: 8 * time.Second}}}
	a := newTestAnnouncer(t, "n1", m, h)
	a.resume()
	ctx := t.Context()
	m.set(membership.View{Self: "n1", Members: 3, Quorum: true, QuorumSince: long,
		Alive: map[string]membership.Peer{"n1": {Name: "n1", AliveSince: time.Now()}}})
	a.round(ctx) // not configured yet: resuming
	s := m.published(t)
	if !s.owns(ip) || !s.Resumed {
		t.Fatalf("resuming, n1 publishes %+v; want it to claim %s, resumed", s, ip)
	}
	if s.HoldFor <= 7*time.Second || s.HoldFor > 8*time.Second {
		t.Errorf("resuming, n1 publishes a hold of %v; want the kernel's 8 s left", s.HoldFor)
	}
	a.SetIPs(map[netip.Addr]Policy{ip: {Candidates: []string{"n1", "n3"}}})
	a.round(ctx)
	s = m.published(t)
	if !s.owns(ip) || s.HoldFor != 0 {
		t.Errorf("answering itself, n1 publishes %+v; want it to claim %s without a hold", s, ip)
	}
	if _, held := h.held[ip]; held {
		t.Errorf("answering itself, n1 left %s held in the kernel", ip)
	}
}
