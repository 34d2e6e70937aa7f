package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
)

// LocalTraffic tells the cluster's pods' traffic from other traffic, as kube-proxy's
// --cluster-cidr (its local-traffic detector) and --masquerade-all do (issue 16 items 3 and 4).
// Both kernel backends read the same value, each in its own rules.
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

// PodCIDRs returns the cluster CIDRs of one family, masked; none: that family has no detector.
func (lt LocalTraffic) PodCIDRs(ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range lt.ClusterCIDRs {
		if p.Addr().Is6() == ipv6 {
			out = append(out, p.Masked())
		}
	}
	return out
}

// MasqueradesClusterIPs reports whether some traffic to the family's ClusterIPs is masqueraded:
// all of it with MasqueradeAll, else what comes from outside the family's cluster CIDRs.
func (lt LocalTraffic) MasqueradesClusterIPs(ipv6 bool) bool {
	return lt.MasqueradeAll || len(lt.PodCIDRs(ipv6)) > 0
}

// NFTSources is the nftables match for sources in the family's cluster CIDRs (with not, outside
// them), as both kernel backends write it in their rules; "" when the family has none.
func (lt LocalTraffic) NFTSources(ipv6, not bool) string {
	var cidrs []string
	for _, p := range lt.PodCIDRs(ipv6) {
		cidrs = append(cidrs, p.String())
	}
	if len(cidrs) == 0 {
		return ""
	}
	kw, op := "ip", ""
	if ipv6 {
		kw = "ip6"
	}
	if not {
		op = "!= "
	}
	return fmt.Sprintf("%s saddr %s{ %s }", kw, op, strings.Join(cidrs, ", "))
}
