package addresspool

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Block is one entry of IPAddressPool.spec.addresses as an inclusive interval of one family:
// [First, Last]. IPv4 addresses are never IPv4-in-IPv6 (::ffff:a.b.c.d) here, so a Block of an
// IPv4 pool holds the IPv4 addresses Services are given.
type Block struct {
	First, Last netip.Addr
}

// ParseBlock reads one entry of spec.addresses: a CIDR ("10.0.0.0/24"; host bits are ignored) or
// an "a-b" range of one family, with spaces allowed around the parts. IPv4-in-IPv6 addresses are
// read as the IPv4 addresses they hold.
func ParseBlock(s string) (Block, error) {
	s = strings.TrimSpace(s)
	if a, b, ok := strings.Cut(s, "-"); ok {
		first, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return Block{}, fmt.Errorf("range %q: %w", s, err)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(b))
		if err != nil {
			return Block{}, fmt.Errorf("range %q: %w", s, err)
		}
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() {
			return Block{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if last.Less(first) {
			return Block{}, fmt.Errorf("range %q ends before it starts", s)
		}
		return Block{first, last}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Block{}, fmt.Errorf("%q is neither a CIDR nor an a-b range: %w", s, err)
	}
	if p.Addr().Is4In6() {
		// ::ffff:10.0.0.0/120 is 10.0.0.0/24: the IPv4 part keeps the bits past the first 96.
		if p.Bits() < 96 {
			return Block{}, fmt.Errorf("%q covers more than the IPv4-in-IPv6 space (::ffff:0:0/96); give the IPv4 CIDR", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	return Block{p.Addr(), lastOf(p)}, nil
}

// lastOf is the last address of a (masked) prefix.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String gives the block in the form ParseBlock reads ("a-b", or one address).
func (b Block) String() string {
	if b.First == b.Last {
		return b.First.String()
	}
	return b.First.String() + "-" + b.Last.String()
}

// Family is IPv4 or IPv6.
func (b Block) Family() corev1.IPFamily { return FamilyOf(b.First) }

// FamilyOf is the family of an address (IPv4 also for IPv4-in-IPv6).
func FamilyOf(a netip.Addr) corev1.IPFamily {
	if a.Unmap().Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// Contains reports whether ip lies in the block (an IPv4-in-IPv6 ip as the IPv4 address it holds).
func (b Block) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	return b.First.Compare(ip) <= 0 && ip.Compare(b.Last) <= 0
}

// Overlaps reports whether the two blocks share an address.
func (b Block) Overlaps(o Block) bool {
	return b.First.Compare(o.Last) <= 0 && o.First.Compare(b.Last) <= 0
}

// Size is the number of addresses; a big.Int because an IPv6 /64 does not fit in an int64.
func (b Block) Size() *big.Int {
	n := new(big.Int).Sub(addrInt(b.Last), addrInt(b.First))
	return n.Add(n, big.NewInt(1))
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// Subtract returns the parts of b not covered by o (zero, one or two blocks).
func (b Block) Subtract(o Block) []Block {
	if !b.Overlaps(o) {
		return []Block{b}
	}
	var out []Block
	if b.First.Less(o.First) {
		out = append(out, Block{b.First, o.First.Prev()})
	}
	if o.Last.Less(b.Last) {
		out = append(out, Block{o.Last.Next(), b.Last})
	}
	return out
}

// Prefixes returns the fewest CIDRs that cover exactly the block, in address order.
func (b Block) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	a := b.First
	for {
		// The largest prefix starting at a that does not go past b.Last.
		bits := a.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(a, bits-1)
			if p.Masked().Addr() != a || lastOf(p.Masked()).Compare(b.Last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(a, bits)
		out = append(out, p)
		end := lastOf(p)
		if end.Compare(b.Last) >= 0 {
			return out
		}
		a = end.Next()
	}
}
