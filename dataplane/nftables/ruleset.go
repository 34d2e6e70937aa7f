package nftables

import (
	"sigs.k8s.io/knftables"
)

// The fixed part of the table. Packet path:
//
//	prerouting filter -110:  new connections to a LoadBalancer IP with source ranges
//	output     filter -110   -> firewall-ips -> fw chain (allowed ranges return, rest drop);
//	                         to a Service without endpoints -> no-endpoint-ips /
//	                         no-endpoint-nodeports (prerouting only) -> reject (or drop)
//	prerouting nat dstnat:   services: mark external Cluster-policy traffic for masquerade,
//	output     nat -100      then daddr . l4proto . dport -> service-ips -> svc/ext chain (DNAT),
//	                         NodePorts on the node's addresses in nodeport-ips -> service-nodeports
//	postrouting nat srcnat:  masquerade marked packets and hairpin connections
//	forward    filter -110,  new connections still addressed to a ClusterIP after DNAT (a port
//	output     filter -90:   of it no Service uses) -> cluster-ips-check -> reject, as
//	                         kube-proxy's cluster-ips-check does (issue 16 item 6)
//
// The node's own packets to its NodePorts pass loopback, so prerouting checks them too; the
// output hook leaves NodePorts to it, as kube-proxy does. A reject in the output hook would fail
// the sender's write with EPERM, where a reject in prerouting answers it with the ICMP port
// unreachable (ECONNREFUSED) kube-proxy's clients get (issue 16: found by e2e/parity).
//
// Rejecting happens in prerouting, before the routing decision, not in forward: a client on the
// node's own segment whose packet would be routed back out the same interface makes the kernel
// send an ICMP redirect first, and that redirect uses up the per-host ICMP rate-limit token, so
// a reject from the forward hook never reaches the client (seen in the packet test). Reject in
// prerouting needs Linux >= 5.11.
func addBaseRuleset(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Herald service proxy")})

	for _, f := range []family{ipv4, ipv6} {
		vip := f.addrType + " . inet_proto . inet_service"
		tx.Add(&knftables.Map{Name: f.serviceIPs(), Type: vip + " : verdict"})
		tx.Add(&knftables.Map{Name: f.serviceNodePorts(), Type: "inet_proto . inet_service : verdict"})
		tx.Add(&knftables.Map{Name: f.noEndpointIPs(), Type: vip + " : verdict"})
		tx.Add(&knftables.Map{Name: f.noEndpointNodePorts(), Type: "inet_proto . inet_service : verdict"})
		tx.Add(&knftables.Map{Name: f.firewallIPs(), Type: vip + " : verdict"})
		tx.Add(&knftables.Set{Name: f.masqIPs(), Type: vip})
		tx.Add(&knftables.Set{Name: f.hairpin(), Type: f.addrType + " . " + f.addrType})
		tx.Add(&knftables.Set{Name: f.clusterIPs(), Type: f.addrType})
		interval := []knftables.SetFlag{knftables.IntervalFlag}
		tx.Add(&knftables.Set{Name: f.nodePortIPs(), Type: f.addrType, Flags: interval})
		tx.Add(&knftables.Set{Name: f.serviceCIDRs(), Type: f.addrType, Flags: interval})
	}
	tx.Add(&knftables.Set{Name: masqNodePorts, Type: "inet_proto . inet_service"})

	chain := func(name string, rules ...string) {
		tx.Add(&knftables.Chain{Name: name})
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	base := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority, rules ...string) {
		tx.Add(&knftables.Chain{Name: name, Type: &typ, Hook: &hook, Priority: &prio})
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	// nodePortV4/V6 match the node addresses NodePorts are open on: local ones within
	// nodeport-ips (--nodeport-addresses; loopback excluded: a NodePort on 127.0.0.1 would need
	// route_localnet). kube-proxy lists the matching addresses themselves and re-lists them on
	// each sync; the fib check keeps the CIDRs as they are, and an address added later counts at once.
	nodePortV4 := "fib daddr type local ip daddr != 127.0.0.0/8 ip daddr @" + ipv4.nodePortIPs()
	nodePortV6 := "fib daddr type local ip6 daddr != ::1 ip6 daddr @" + ipv6.nodePortIPs()

	chain(rejectChain, "reject")
	chain(markForMasqueradeChain, "meta mark set meta mark | "+masqueradeMark)
	chain("firewall-check",
		"ip daddr . meta l4proto . th dport vmap @"+ipv4.firewallIPs(),
		"ip6 daddr . meta l4proto . th dport vmap @"+ipv6.firewallIPs())
	chain("endpoints-check",
		"ip daddr . meta l4proto . th dport vmap @"+ipv4.noEndpointIPs(),
		"ip6 daddr . meta l4proto . th dport vmap @"+ipv6.noEndpointIPs())
	chain("nodeport-endpoints-check",
		nodePortV4+" meta l4proto . th dport vmap @"+ipv4.noEndpointNodePorts(),
		nodePortV6+" meta l4proto . th dport vmap @"+ipv6.noEndpointNodePorts())
	// A port of a ClusterIP no Service uses is rejected, any other address of the Service CIDRs
	// (none allocated) dropped, as by kube-proxy.
	chain("cluster-ips-check",
		"ip daddr @"+ipv4.clusterIPs()+" reject",
		"ip6 daddr @"+ipv6.clusterIPs()+" reject",
		"ip daddr @"+ipv4.serviceCIDRs()+" drop",
		"ip6 daddr @"+ipv6.serviceCIDRs()+" drop")
	chain("services",
		"ip daddr . meta l4proto . th dport @"+ipv4.masqIPs()+" jump "+markForMasqueradeChain,
		"ip6 daddr . meta l4proto . th dport @"+ipv6.masqIPs()+" jump "+markForMasqueradeChain,
		nodePortV4+" meta l4proto . th dport @"+masqNodePorts+" jump "+markForMasqueradeChain,
		nodePortV6+" meta l4proto . th dport @"+masqNodePorts+" jump "+markForMasqueradeChain,
		"ip daddr . meta l4proto . th dport vmap @"+ipv4.serviceIPs(),
		"ip6 daddr . meta l4proto . th dport vmap @"+ipv6.serviceIPs(),
		nodePortV4+" meta l4proto . th dport vmap @"+ipv4.serviceNodePorts(),
		nodePortV6+" meta l4proto . th dport vmap @"+ipv6.serviceNodePorts())
	chain("masquerading",
		"ct status dnat ip saddr . ip daddr @"+ipv4.hairpin()+" masquerade",
		"ct status dnat ip6 saddr . ip6 daddr @"+ipv6.hairpin()+" masquerade",
		"meta mark & "+masqueradeMark+" == 0 return",
		"meta mark set meta mark ^ "+masqueradeMark,
		"masquerade fully-random")

	base("filter-"+string(knftables.PreroutingHook), knftables.FilterType, knftables.PreroutingHook, "-110",
		"ct state new jump firewall-check", "ct state new jump endpoints-check", "ct state new jump nodeport-endpoints-check")
	base("filter-"+string(knftables.OutputHook), knftables.FilterType, knftables.OutputHook, "-110",
		"ct state new jump firewall-check", "ct state new jump endpoints-check")
	// After DNAT: what a Service translated no longer goes to its ClusterIP.
	base("filter-forward", knftables.FilterType, knftables.ForwardHook, "-110", "ct state new jump cluster-ips-check")
	base("filter-output-post-dnat", knftables.FilterType, knftables.OutputHook, "-90", "ct state new jump cluster-ips-check")
	base("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, "jump services")
	base("nat-output", knftables.NATType, knftables.OutputHook, "-100", "jump services")
	base("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, "jump masquerading")
	addUserspaceBase(tx)
}

// isMap tells the shared maps from the shared sets by name.
func isMap(container string) bool {
	switch container {
	case ipv4.masqIPs(), ipv6.masqIPs(), ipv4.hairpin(), ipv6.hairpin(), ipv4.clusterIPs(), ipv6.clusterIPs(), masqNodePorts, userspacePortsSet,
		ipv4.nodePortIPs(), ipv6.nodePortIPs(), ipv4.serviceCIDRs(), ipv6.serviceCIDRs():
		return false
	}
	return true
}
