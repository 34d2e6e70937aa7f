package allocator

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Range is an inclusive interval of addresses of one family: [First, Last].
type Range struct {
	First, Last netip.Addr
}

// ParseRange reads one entry of IPAddressPool.spec.addresses: a CIDR ("10.0.0.0/24", host bits
// ignored) or an "a-b" range of one family.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if a, b, ok := strings.Cut(s, "-"); ok {
		first, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %v", s, err)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(b))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %v", s, err)
		}
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if last.Less(first) {
			return Range{}, fmt.Errorf("range %q ends before it starts", s)
		}
		return Range{first, last}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("%q is neither a CIDR nor an a-b range: %v", s, err)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
	return Range{p.Addr(), lastAddr(p)}, nil
}

// ParseRanges parses every entry; the error names the first malformed one.
func ParseRanges(entries []string) ([]Range, error) {
	out := make([]Range, 0, len(entries))
	for _, e := range entries {
		r, err := ParseRange(e)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String gives the range in the form ParseRange reads.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Family is IPv4 or IPv6.
func (r Range) Family() corev1.IPFamily { return familyOf(r.First) }

// Contains reports whether ip lies in the range.
func (r Range) Contains(ip netip.Addr) bool {
	return r.First.Compare(ip) <= 0 && ip.Compare(r.Last) <= 0
}

// Overlaps reports whether the two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// Size is the number of addresses; a big.Int because an IPv6 /64 does not fit in an int64.
func (r Range) Size() *big.Int {
	n := new(big.Int).Sub(addrInt(r.Last), addrInt(r.First))
	return n.Add(n, big.NewInt(1))
}

// subtract returns the parts of r not covered by o (zero, one or two ranges).
func (r Range) subtract(o Range) []Range {
	if !r.Overlaps(o) {
		return []Range{r}
	}
	var out []Range
	if r.First.Less(o.First) {
		out = append(out, Range{r.First, o.First.Prev()})
	}
	if o.Last.Less(r.Last) {
		out = append(out, Range{o.Last.Next(), r.Last})
	}
	return out
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func familyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// isBuggy reports whether some old firmware mistakes ip for a network or broadcast address
// (an IPv4 address ending in .0 or .255); pools with avoidBuggyIPs never give these out.
func isBuggy(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	last := ip.As4()[3]
	return last == 0 || last == 255
}

// buggyCount is the number of addresses in r that isBuggy reports, computed without a scan.
func buggyCount(r Range) int64 {
	if !r.First.Is4() {
		return 0
	}
	upTo := func(n int64) int64 { // buggy addresses in [0, n]; 0 for n < 0
		if n < 0 {
			return 0
		}
		return n/256 + 1 + (n+1)/256
	}
	return upTo(v4Int(r.Last)) - upTo(v4Int(r.First)-1)
}

func v4Int(a netip.Addr) int64 {
	b := a.As4()
	return int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
}
