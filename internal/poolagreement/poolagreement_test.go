package poolagreement

import (
	"net/netip"
	"testing"
)

// TestRun checks the allocator against the oracle alone.
func TestRun(t *testing.T) { Run(t, nil) }

// TestGenerateCoversTheRule: the random cases exercise every part of the rule, so Run can fail
// where a caller gets one wrong.
func TestGenerateCoversTheRule(t *testing.T) {
	seen := map[string]int{}
	for seed := range uint64(Cases) {
		pools, services := generate(newRand(seed))
		want := oracle(pools, services)
		for _, svc := range services {
			ip := netip.MustParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
			w, ok := want[svc.Name]
			holders := 0
			for i := range pools {
				if holds(&pools[i], ip.Unmap()) {
					holders++
				}
			}
			switch {
			case !ok:
				seen["in no pool"]++
			case !w.live:
				seen["kept by a pool that is not live"]++
			case holders > 1:
				seen["held by several pools"]++
			}
			if ok && ip.Is4In6() {
				seen["IPv4-in-IPv6 status in a pool"]++
			}
		}
		for i := range pools {
			if !valid(&pools[i]) {
				seen["invalid pool"]++
			}
		}
	}
	for _, what := range []string{"in no pool", "kept by a pool that is not live", "held by several pools", "IPv4-in-IPv6 status in a pool", "invalid pool"} {
		if seen[what] < 20 {
			t.Errorf("only %d cases of %s: %v", seen[what], what, seen)
		}
	}
	t.Logf("%v", seen)
}
