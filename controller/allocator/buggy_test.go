package allocator

import (
	"net/netip"
	"testing"

	"github.com/heraldlb/herald/config/addresspool"
)

func TestBuggyCountMatchesScan(t *testing.T) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.1-10.0.0.254", "10.0.0.255-10.0.2.0", "0.0.0.0/22",
		"10.0.0.5-10.0.0.5", "10.0.0.0-10.0.0.0", "255.255.254.200-255.255.255.255", "fd00::/120"} {
		r, err := addresspool.ParseBlock(s)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for ip := r.First; ip.IsValid() && ip.Compare(r.Last) <= 0; ip = ip.Next() {
			if isBuggy(ip) {
				n++
			}
		}
		if got := buggyCount(r); got != n {
			t.Errorf("buggyCount(%s) = %d, scan says %d", s, got, n)
		}
	}
}

func TestFreeSet(t *testing.T) {
	f := newFreeSet()
	r4, r6 := mustBlock("10.0.0.0-10.0.0.3"), mustBlock("fd00::/127")
	f.add(r4)
	f.add(r6)
	ip := netip.MustParseAddr
	if got, _ := f.lowest(netip.IPv6Unspecified()); got != ip("fd00::") {
		t.Fatalf("lowest v6 = %v", got)
	}
	for _, want := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		got, ok := f.lowest(netip.IPv4Unspecified())
		if !ok || got != ip(want) || !f.take(got) {
			t.Fatalf("lowest v4 = %v %v, want %s", got, ok, want)
		}
	}
	if got, ok := f.lowest(netip.IPv4Unspecified()); ok {
		t.Fatalf("empty v4 gave %v", got)
	}
	if f.take(ip("10.0.0.1")) {
		t.Fatal("took a used address twice")
	}
	f.put(ip("10.0.0.2"))
	f.put(ip("10.0.0.0"))
	f.put(ip("10.0.0.1")) // merges all three
	if f.intervals() != 2 {
		t.Fatalf("intervals = %d, want 2 (merged v4 + v6)", f.intervals())
	}
	if !f.contains(ip("10.0.0.1")) || f.contains(ip("10.0.0.3")) {
		t.Fatal("contains is wrong after merge")
	}
	if !f.take(ip("fd00::1")) || f.contains(ip("fd00::1")) || !f.contains(ip("fd00::")) {
		t.Fatal("taking the top of an interval")
	}
}
