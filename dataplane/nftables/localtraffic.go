package nftables

import (
	"fmt"
	"net/netip"
	"strings"
)

// LocalTraffic tells traffic from the cluster's pods from other traffic, as kube-proxy's
// --cluster-cidr and --masquerade-all do (issue 16 items 3 and 4).
type LocalTraffic struct {
	// ClusterCIDRs are the pods' addresses. Traffic to a ClusterIP from outside them is
	// masqueraded (it may have been routed to this node by a static route to the Service range,
	// and the endpoint's reply must come back through it); traffic from them to an
	// externalTrafficPolicy: Local address goes to any endpoint of the Service, as its ClusterIP
	// would (it is not external: no load balancer sent it here). A family without a CIDR gets
	// neither, like kube-proxy without a local-traffic detector for it.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to a ClusterIP.
	MasqueradeAll bool
}

// SetLocalTraffic sets how pods' traffic is told from other traffic. Call it before the first sync.
func (b *Backend) SetLocalTraffic(lt LocalTraffic) { b.local = lt }

// podSources is the nft match for sources inside (or with not, outside) the family's cluster
// CIDRs; "" when the family has none.
func (lt LocalTraffic) podSources(f family, not bool) string {
	var cidrs []string
	for _, p := range lt.ClusterCIDRs {
		if f.of(p.Addr()) {
			cidrs = append(cidrs, p.Masked().String())
		}
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
func (lt LocalTraffic) clusterIPMasquerade(f family, clusterIP netip.Addr, pr string, port string) string {
	match := fmt.Sprintf("%s daddr %s %s dport %s", f.ipKw, clusterIP, pr, port)
	if lt.MasqueradeAll {
		return match + " jump " + markForMasqueradeChain
	}
	if src := lt.podSources(f, true); src != "" {
		return match + " " + src + " jump " + markForMasqueradeChain
	}
	return ""
}
