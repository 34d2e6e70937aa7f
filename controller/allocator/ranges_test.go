package allocator

import (
	"net/netip"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"10.0.0.0/30", "10.0.0.0-10.0.0.3"},
		{"10.0.0.7/30", "10.0.0.4-10.0.0.7"},
		{"10.0.0.5/32", "10.0.0.5"},
		{" 10.0.0.1 - 10.0.0.9 ", "10.0.0.1-10.0.0.9"},
		{"fd00::/126", "fd00::-fd00::3"},
		{"fd00::1-fd00::ffff", "fd00::1-fd00::ffff"},
		{"::ffff:10.0.0.1-::ffff:10.0.0.2", "10.0.0.1-10.0.0.2"},
		{"10.0.0.9-10.0.0.1", ""},
		{"10.0.0.1-fd00::1", ""},
		{"10.0.0.0/33", ""},
		{"10.0.0.1", ""},
		{"pool", ""},
		{"10.0.0.1-", ""},
	} {
		r, err := ParseRange(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseRange(%q) = %v, want an error", tc.in, r)
		case tc.want != "" && err != nil:
			t.Errorf("ParseRange(%q): %v", tc.in, err)
		case tc.want != "" && r.String() != tc.want:
			t.Errorf("ParseRange(%q) = %v, want %v", tc.in, r, tc.want)
		}
	}
}

func TestRangeSizeAndSubtract(t *testing.T) {
	r, _ := ParseRange("fd00::/64")
	if got := r.Size().String(); got != "18446744073709551616" {
		t.Errorf("/64 size = %s", got)
	}
	a, _ := ParseRange("10.0.0.0/24")
	b, _ := ParseRange("10.0.0.10-10.0.0.19")
	parts := a.subtract(b)
	if len(parts) != 2 || parts[0].String() != "10.0.0.0-10.0.0.9" || parts[1].String() != "10.0.0.20-10.0.0.255" {
		t.Errorf("subtract = %v", parts)
	}
	if got := b.subtract(a); len(got) != 0 {
		t.Errorf("covered range leaves %v", got)
	}
}

func TestBuggyCountMatchesScan(t *testing.T) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.1-10.0.0.254", "10.0.0.255-10.0.2.0", "0.0.0.0/22",
		"10.0.0.5-10.0.0.5", "10.0.0.0-10.0.0.0", "255.255.254.200-255.255.255.255", "fd00::/120"} {
		r, err := ParseRange(s)
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
	r4, _ := ParseRange("10.0.0.0-10.0.0.3")
	r6, _ := ParseRange("fd00::/127")
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
