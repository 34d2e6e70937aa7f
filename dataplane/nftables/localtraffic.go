package nftables

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/heraldlb/herald/dataplane"
)

// SetLocalTraffic sets how pods' traffic is told from other traffic (the model, shared with the
// IPVS backend, is dataplane.LocalTraffic). Call it before the first sync.
func (b *Backend) SetLocalTraffic(lt dataplane.LocalTraffic) { b.local = lt }

// podSources is the nft match for sources inside (or with not, outside) the family's cluster
// CIDRs; "" when the family has none.
func podSources(lt dataplane.LocalTraffic, f family, not bool) string {
	var cidrs []string
	for _, p := range lt.PodCIDRs(f == ipv6) {
		cidrs = append(cidrs, p.String())
	}
	if len(cidrs) == 0 {
		return ""
	}
	op := ""
	if not {
		op = "!= "
	}
	return fmt.Sprintf("%s saddr %s{ %s }", f.ipKw, op, strings.Join(cidrs, ", "))
}

// clusterIPMasquerade is the rule heading a Service chain that marks traffic to clusterIP from
// outside the cluster (everything with MasqueradeAll) for masquerading; "" for none. It names the
// ClusterIP because external traffic may take the same chain, and must keep its source under
// externalTrafficPolicy: Local.
func clusterIPMasquerade(lt dataplane.LocalTraffic, f family, clusterIP netip.Addr, pr string, port string) string {
	match := fmt.Sprintf("%s daddr %s %s dport %s", f.ipKw, clusterIP, pr, port)
	if lt.MasqueradeAll {
		return match + " jump " + markForMasqueradeChain
	}
	if src := podSources(lt, f, true); src != "" {
		return match + " " + src + " jump " + markForMasqueradeChain
	}
	return ""
}
