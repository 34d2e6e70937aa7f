package addresspool

import (
	"net/netip"
	"slices"
	"sort"
)

// Set is a group of pools (all the cluster's) with the one rule deciding which owns an address.
//
// The rule: live pools (Live: valid, not being deleted) come first, in Compare order (oldest
// first, ties by name), then the pools that are not live, in the same order; the first pool whose
// blocks hold the address owns it. So
//   - only a live pool gives out an address, and where live pools overlap the oldest one does (a
//     later one reports Overlap and gives out nothing in the overlap);
//   - a pool that is being deleted or has become invalid still owns the addresses no live pool
//     holds: Services keep them (PoolRemoved) and they stay announced by that pool's
//     advertisements until the Services move, so a deletion or a typo moves no traffic silently.
//
// Callers that give out addresses (the allocator) treat an owner that is not Live as none.
type Set struct {
	ordered []*Pool // Compare order, live or not
	byName  map[string]*Pool
	owned   []ownedBlock // disjoint, sorted by First: Owner by binary search
}

type ownedBlock struct {
	Block
	pool *Pool
}

// NewSet lays the pools out by the rule. It copies them; pool names are unique (as in a cluster).
func NewSet(pools []Pool) *Set {
	s := &Set{ordered: make([]*Pool, len(pools)), byName: make(map[string]*Pool, len(pools))}
	for i := range pools {
		p := pools[i]
		p.effective, p.overlaps = nil, nil
		s.ordered[i] = &p
		s.byName[p.Name] = &p
	}
	slices.SortStableFunc(s.ordered, Compare)
	precedence := slices.Clone(s.ordered)
	slices.SortStableFunc(precedence, func(a, b *Pool) int {
		if a.Live() != b.Live() {
			if a.Live() {
				return -1
			}
			return 1
		}
		return Compare(a, b)
	})
	var earlier []ownedBlock // every block of the pools before, the pool's own earlier ones too
	for _, p := range precedence {
		for _, b := range p.Blocks {
			pieces := []Block{b}
			for _, e := range earlier {
				if !e.Overlaps(b) {
					continue
				}
				if e.pool != p && p.Live() && !slices.Contains(p.overlaps, e.pool.Name) {
					p.overlaps = append(p.overlaps, e.pool.Name)
				}
				var rest []Block
				for _, piece := range pieces {
					rest = append(rest, piece.Subtract(e.Block)...)
				}
				pieces = rest
			}
			p.effective = append(p.effective, pieces...)
			earlier = append(earlier, ownedBlock{b, p})
		}
		for _, b := range p.effective {
			s.owned = append(s.owned, ownedBlock{b, p})
		}
	}
	sort.Slice(s.owned, func(i, j int) bool { return s.owned[i].First.Less(s.owned[j].First) })
	return s
}

// Pools returns the pools in Compare order (oldest first, ties by name), live or not.
func (s *Set) Pools() []*Pool { return s.ordered }

// Pool returns the pool of that name, or nil.
func (s *Set) Pool(name string) *Pool { return s.byName[name] }

// Owner returns the pool that owns ip by the Set's rule, or nil when no pool holds it. An
// IPv4-in-IPv6 ip is looked up as the IPv4 address it holds.
func (s *Set) Owner(ip netip.Addr) *Pool {
	ip = ip.Unmap()
	i := sort.Search(len(s.owned), func(i int) bool { return !s.owned[i].Last.Less(ip) })
	if i < len(s.owned) && s.owned[i].Contains(ip) {
		return s.owned[i].pool
	}
	return nil
}
