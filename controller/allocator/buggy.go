package allocator

import (
	"net/netip"

	"github.com/heraldlb/herald/config/addresspool"
)

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
func buggyCount(r addresspool.Block) int64 {
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
