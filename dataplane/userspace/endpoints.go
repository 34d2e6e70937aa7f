package userspace

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldlb/herald/dataplane"
)

// portState is the desired state of one proxied Service port, shared by its listeners, with
// the choice state that outlives a single connection: the round-robin position and the
// session-affinity table.
type portState struct {
	name dataplane.ServicePortName
	sp   atomic.Pointer[dataplane.ServicePort]
	next atomic.Uint32 // round-robin position

	mu       sync.Mutex
	affinity map[netip.Addr]affinityEntry // client -> endpoint it was sent to
	inserts  int                          // since the last sweep of expired entries
}

type affinityEntry struct {
	endpoint netip.AddrPort
	until    time.Time
}

// affinitySweepEvery is how many affinity inserts pass between sweeps of expired entries, so
// the table stays bounded by the clients of the last timeout without a timer per port.
const affinitySweepEvery = 1024

func newPortState(sp *dataplane.ServicePort) *portState {
	ps := &portState{name: sp.Name, affinity: map[netip.Addr]affinityEntry{}}
	ps.sp.Store(sp)
	return ps
}

func (ps *portState) load() *dataplane.ServicePort    { return ps.sp.Load() }
func (ps *portState) store(sp *dataplane.ServicePort) { ps.sp.Store(sp) }

// candidates orders the endpoints to try for one new connection from client, at most tries of
// them: the client's affinity endpoint first (when the port has session affinity and it is not
// suspect), then the others round-robin, endpoints that failed recently last.
func (ps *portState) candidates(eps []dataplane.Endpoint, client netip.Addr, tries int, sus *suspects, affinity bool, now time.Time) []dataplane.Endpoint {
	if len(eps) == 0 {
		return nil
	}
	start := int(ps.next.Add(1)-1) % len(eps)
	out := make([]dataplane.Endpoint, 0, len(eps))
	out = append(out, eps[start:]...)
	out = append(out, eps[:start]...)
	// Stable: suspects keep their round-robin order among themselves.
	slices.SortStableFunc(out, func(a, b dataplane.Endpoint) int {
		sa, sb := sus.is(a.AddrPort(), now), sus.is(b.AddrPort(), now)
		switch {
		case sa == sb:
			return 0
		case sb:
			return -1
		}
		return 1
	})
	if affinity {
		if ep, ok := ps.affine(client, now); ok && !sus.is(ep, now) {
			if i := slices.IndexFunc(out, func(e dataplane.Endpoint) bool { return e.AddrPort() == ep }); i > 0 {
				e := out[i]
				copy(out[1:i+1], out[:i])
				out[0] = e
			}
		}
	}
	return out[:min(len(out), max(tries, 1))]
}

// affine returns the endpoint client was last sent to, if that is recent enough.
func (ps *portState) affine(client netip.Addr, now time.Time) (netip.AddrPort, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e, ok := ps.affinity[client]
	if !ok || now.After(e.until) {
		return netip.AddrPort{}, false
	}
	return e.endpoint, true
}

// remember records that client was sent to endpoint, for timeout.
func (ps *portState) remember(client netip.Addr, endpoint netip.AddrPort, timeout time.Duration, now time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.affinity[client] = affinityEntry{endpoint: endpoint, until: now.Add(timeout)}
	if ps.inserts++; ps.inserts >= affinitySweepEvery {
		ps.inserts = 0
		for c, e := range ps.affinity {
			if now.After(e.until) {
				delete(ps.affinity, c)
			}
		}
	}
}

// suspects are endpoints that failed a connection recently, shared by every port: an address
// and port that refused one Service refuses the others too.
type suspects struct {
	period time.Duration
	mu     sync.Mutex
	until  map[netip.AddrPort]time.Time
}

func newSuspects(period time.Duration) *suspects {
	return &suspects{period: period, until: map[netip.AddrPort]time.Time{}}
}

func (s *suspects) mark(ep netip.AddrPort, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.until[ep] = now.Add(s.period)
}

// clear forgets ep: it just accepted a connection.
func (s *suspects) clear(ep netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.until, ep)
}

func (s *suspects) is(ep netip.AddrPort, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.until[ep]
	if ok && now.After(u) {
		delete(s.until, ep)
		return false
	}
	return ok
}

// count is the number of endpoints suspect now (the metric), dropping expired ones.
func (s *suspects) count(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ep, u := range s.until {
		if now.After(u) {
			delete(s.until, ep)
		}
	}
	return len(s.until)
}

func sortNames(names []dataplane.ServicePortName) {
	slices.SortFunc(names, func(a, b dataplane.ServicePortName) int {
		switch as, bs := a.String(), b.String(); {
		case as < bs:
			return -1
		case as > bs:
			return 1
		}
		return 0
	})
}
