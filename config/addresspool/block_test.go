package addresspool

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestParseBlock(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"10.0.0.0/30", "10.0.0.0-10.0.0.3"},
		{"10.0.0.7/30", "10.0.0.4-10.0.0.7"},
		{"10.0.0.5/32", "10.0.0.5"},
		{" 10.0.0.0/31 ", "10.0.0.0-10.0.0.1"},
		{" 10.0.0.1 - 10.0.0.9 ", "10.0.0.1-10.0.0.9"},
		{"fd00::/126", "fd00::-fd00::3"},
		{"fd00::1-fd00::ffff", "fd00::1-fd00::ffff"},
		{"::ffff:10.0.0.1-::ffff:10.0.0.2", "10.0.0.1-10.0.0.2"},
		{"::ffff:10.0.0.1-10.0.0.2", "10.0.0.1-10.0.0.2"},
		{"::ffff:10.0.0.0/126", "10.0.0.0-10.0.0.3"},
		{"::ffff:0:0/95", ""},
		{"10.0.0.9-10.0.0.1", ""},
		{"10.0.0.1-fd00::1", ""},
		{"10.0.0.0/33", ""},
		{"10.0.0.1", ""},
		{"pool", ""},
		{"10.0.0.1-", ""},
		{"", ""},
	} {
		b, err := ParseBlock(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseBlock(%q) = %v, want an error", tc.in, b)
		case tc.want != "" && err != nil:
			t.Errorf("ParseBlock(%q): %v", tc.in, err)
		case tc.want != "" && b.String() != tc.want:
			t.Errorf("ParseBlock(%q) = %v, want %v", tc.in, b, tc.want)
		}
	}
}

func TestBlockSizeAndSubtract(t *testing.T) {
	if got := mustBlock("fd00::/64").Size().String(); got != "18446744073709551616" {
		t.Errorf("/64 size = %s", got)
	}
	a, b := mustBlock("10.0.0.0/24"), mustBlock("10.0.0.10-10.0.0.19")
	parts := a.Subtract(b)
	if len(parts) != 2 || parts[0].String() != "10.0.0.0-10.0.0.9" || parts[1].String() != "10.0.0.20-10.0.0.255" {
		t.Errorf("subtract = %v", parts)
	}
	if got := b.Subtract(a); len(got) != 0 {
		t.Errorf("covered block leaves %v", got)
	}
}

func TestBlockPrefixes(t *testing.T) {
	for in, want := range map[string][]string{
		"10.0.0.5/24":               {"10.0.0.0/24"},
		"10.0.0.0-10.0.0.255":       {"10.0.0.0/24"},
		"10.0.0.10-10.0.0.20":       {"10.0.0.10/31", "10.0.0.12/30", "10.0.0.16/30", "10.0.0.20/32"},
		"2001:db8::-2001:db8::ffff": {"2001:db8::/112"},
		"10.0.0.7-10.0.0.7":         {"10.0.0.7/32"},
		"::ffff:10.0.0.0/120":       {"10.0.0.0/24"},
		"0.0.0.0-255.255.255.255":   {"0.0.0.0/0"},
	} {
		var got []string
		for _, p := range mustBlock(in).Prefixes() {
			got = append(got, p.String())
		}
		if !slices.Equal(got, want) {
			t.Errorf("Prefixes(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestBlockPrefixesCoverExactly checks on random small blocks that the prefixes hold every
// address of the block and no other, by walking the addresses around it.
func TestBlockPrefixesCoverExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		base := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(2)), byte(rng.IntN(256))})
		last := base
		for n := rng.IntN(300); n > 0 && last.Next().IsValid(); n-- {
			last = last.Next()
		}
		b := Block{base, last}
		prefixes := b.Prefixes()
		from, to := base, last
		for range 3 {
			from, to = from.Prev(), to.Next()
		}
		for ip := from; ip.Compare(to) <= 0; ip = ip.Next() {
			in := slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(ip) })
			if in != b.Contains(ip) {
				t.Fatalf("%v: prefixes %v say %s in=%v", b, prefixes, ip, in)
			}
		}
	}
}

func mustBlock(s string) Block {
	b, err := ParseBlock(s)
	if err != nil {
		panic(err)
	}
	return b
}
