package allocator

import (
	"net/netip"

	"github.com/google/btree"

	"github.com/heraldlb/herald/config/addresspool"
)

// freeSet holds a pool's free addresses as disjoint, non-adjacent intervals in a B-tree ordered by
// their first address. Taking the lowest free address, taking a given one and giving one back are
// O(log intervals), and the number of intervals is at most the number of addresses in use plus the
// number of ranges: a /64 with three Services costs a handful of nodes, and a pool at 99 % fill
// costs what it costs at 1 %. IPv4 addresses sort before IPv6 ones, so one set serves both families.
type freeSet struct {
	t *btree.BTreeG[addresspool.Block]
}

func newFreeSet() *freeSet {
	return &freeSet{t: btree.NewG(16, func(a, b addresspool.Block) bool { return a.First.Less(b.First) })}
}

// add inserts an interval the caller knows to be disjoint from the set's (used to build the set).
func (f *freeSet) add(r addresspool.Block) { f.t.ReplaceOrInsert(r) }

// containing returns the interval holding ip.
func (f *freeSet) containing(ip netip.Addr) (addresspool.Block, bool) {
	var found addresspool.Block
	ok := false
	f.t.DescendLessOrEqual(addresspool.Block{First: ip}, func(r addresspool.Block) bool {
		found, ok = r, r.Contains(ip)
		return false
	})
	return found, ok
}

func (f *freeSet) contains(ip netip.Addr) bool {
	_, ok := f.containing(ip)
	return ok
}

// take removes ip from the set; false when it was not free.
func (f *freeSet) take(ip netip.Addr) bool {
	r, ok := f.containing(ip)
	if !ok {
		return false
	}
	f.t.Delete(r)
	if r.First.Less(ip) {
		f.t.ReplaceOrInsert(addresspool.Block{First: r.First, Last: ip.Prev()})
	}
	if ip.Less(r.Last) {
		f.t.ReplaceOrInsert(addresspool.Block{First: ip.Next(), Last: r.Last})
	}
	return true
}

// lowest returns the lowest free address of the family whose first address is familyStart
// (0.0.0.0 or ::), without taking it.
func (f *freeSet) lowest(familyStart netip.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	f.t.AscendGreaterOrEqual(addresspool.Block{First: familyStart}, func(r addresspool.Block) bool {
		if r.First.BitLen() == familyStart.BitLen() {
			ip = r.First
		}
		return false
	})
	return ip, ip.IsValid()
}

// put gives ip back, merging it with the intervals next to it. The caller guarantees ip belongs to
// the pool and is not already free.
func (f *freeSet) put(ip netip.Addr) {
	r := addresspool.Block{First: ip, Last: ip}
	if prev := ip.Prev(); prev.IsValid() {
		if before, ok := f.containing(prev); ok {
			f.t.Delete(before)
			r.First = before.First
		}
	}
	if next := ip.Next(); next.IsValid() {
		if after, ok := f.t.Get(addresspool.Block{First: next}); ok {
			f.t.Delete(after)
			r.Last = after.Last
		}
	}
	f.t.ReplaceOrInsert(r)
}

func (f *freeSet) intervals() int { return f.t.Len() }
