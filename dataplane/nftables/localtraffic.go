package nftables

import (
	"fmt"
	"net/netip"

	"github.com/heraldlb/herald/dataplane"
)

// SetLocalTraffic sets how pods' traffic is told from other traffic (the model, shared with the
// IPVS backend, is dataplane.LocalTraffic). Call it before the first sync.
func (b *Backend) SetLocalTraffic(lt dataplane.LocalTraffic) { b.local = lt }

// clusterIPMasquerade is the rule heading a Service chain that marks traffic to clusterIP from
// outside the cluster (everything with MasqueradeAll) for masquerading; "" for none. It names the
// ClusterIP because external traffic may take the same chain, and must keep its source under
// externalTrafficPolicy: Local.
func clusterIPMasquerade(lt dataplane.LocalTraffic, f family, clusterIP netip.Addr, pr string, port string) string {
	match := fmt.Sprintf("%s daddr %s %s dport %s", f.ipKw, clusterIP, pr, port)
	if lt.MasqueradeAll {
		return match + " jump " + markForMasqueradeChain
	}
	if src := lt.NFTSources(f == ipv6, true); src != "" {
		return match + " " + src + " jump " + markForMasqueradeChain
	}
	return ""
}
