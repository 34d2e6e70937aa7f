package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// TableName is the nftables table (family inet) that sits next to IPVS.
const TableName = "herald-ipvs"

// masqueradeMark is the packet-mark bit meaning "masquerade this connection on the way out"; the
// same bit kube-proxy uses, so CNI plugins that know it keep working.
const masqueradeMark = "0x4000"

// Set names; every set exists once per family (suffix -v4/-v6).
const (
	setServiceIPs    = "service-ips"           // addresses on herald-ipvs0
	setServicePorts  = "service-ports"         // addr . proto . port served by a virtual server
	setNoEndpoints   = "no-endpoints"          // addr . proto . port without endpoints anywhere: reject
	setNoLocal       = "no-local"              // addr . proto . port with endpoints only elsewhere: drop
	setMasquerade    = "masquerade"            // addr . proto . port whose traffic is masqueraded
	setFirewall      = "firewall"              // addr . proto . port restricted by loadBalancerSourceRanges
	setFirewallAllow = "firewall-allow"        // addr . proto . port . source range let through
	setNodePortNoEP  = "nodeport-no-endpoints" // proto . port: reject on node addresses
	setNodePortNoLoc = "nodeport-no-local"     // proto . port: drop on node addresses
	setNodePortMasq  = "nodeport-masquerade"   // proto . port: masquerade on node addresses
	setHairpin       = "hairpin"               // endpoint . endpoint: an endpoint reaching itself
	// Local traffic (dataplane.LocalTraffic, issue 16 items 3 and 4).
	setClusterIPMasq        = "clusterip-masquerade"   // addr . proto . port of a ClusterIP: masqueraded from outside the cluster CIDRs
	mapShortCircuit         = "short-circuit"          // addr . proto . port : the mark of its short-circuit virtual server
	mapNodePortShortCircuit = "nodeport-short-circuit" // proto . port : likewise for NodePorts
	setNodePortAddrs        = "nodeport-addrs"         // the node addresses with NodePort virtual servers
	chainInput              = "filter-input"
	chainOutput             = "filter-output"
	chainMarkOutput         = "mark-output"
	chainPostrouting        = "nat-postrouting"
	keySeparator            = " . "
	// valueSeparator separates a map element's key from its value in a firewallSets entry.
	valueSeparator = " : "
)

// shortCircuitMarkTag is in every short-circuit mark (bits 8-15), so a restarted backend knows
// its firewall-mark virtual servers; it leaves the masquerade bit 0x4000 (and kube-proxy's drop
// bit 0x8000) clear.
const shortCircuitMarkTag = 0x1200

// shortCircuitMark is the packet mark (and IPVS firewall mark) selecting the short-circuit
// virtual server of a Service port: its NodePort and protocol, unique in the cluster (a NodePort
// number belongs to one Service) and stable without any allocation to remember across restarts.
func shortCircuitMark(proto, nodePort uint16) uint32 {
	return uint32(nodePort)<<16 | shortCircuitMarkTag | uint32(proto&0xff)
}

func isShortCircuitMark(m uint32) bool { return m>>16 != 0 && m&0xff00 == shortCircuitMarkTag }

// firewallSets is the content of the table's sets: set name -> element keys, each the nft text of a
// key with concatenated components joined by " . ".
type firewallSets map[string]map[string]struct{}

func (f firewallSets) add(set string, key ...string) {
	if f[set] == nil {
		f[set] = map[string]struct{}{}
	}
	f[set][strings.Join(key, keySeparator)] = struct{}{}
}

// addMapping adds an element with a value to the map named set; the value is part of the entry,
// so a changed value is one element deleted and another added.
func (f firewallSets) addMapping(set, value string, key ...string) {
	f.add(set, strings.Join(key, keySeparator)+valueSeparator+value)
}

type ipFamily struct {
	suffix   string // set name suffix
	match    string // "ip" or "ip6" in rules
	addrType string // nft type of an address
	ipv6     bool
}

var (
	familyIPv4 = ipFamily{suffix: "-v4", match: "ip", addrType: "ipv4_addr"}
	familyIPv6 = ipFamily{suffix: "-v6", match: "ip6", addrType: "ipv6_addr", ipv6: true}
	families   = []ipFamily{familyIPv4, familyIPv6}
)

func (f ipFamily) of(a netip.Addr) bool { return a.Is6() == f.ipv6 }

// set names the family's instance of a set.
func (f ipFamily) set(name string) string { return name + f.suffix }

// firewall keeps the nftables table next to IPVS. It remembers the elements it committed, so each
// sync sends only added and deleted elements in one transaction and never lists the table.
type firewall struct {
	nft knftables.Interface
	// local tells pods' traffic from other traffic in the table's rules (set before the first sync).
	local     dataplane.LocalTraffic
	committed firewallSets
	// defined is false until the table, its sets, chains and rules have been (re)created.
	defined bool
}

func newFirewall(nft knftables.Interface) *firewall {
	return &firewall{nft: nft}
}

// diff returns the elements to add and delete so the sets hold exactly desired. Before the table
// is (re)defined nothing counts as committed: the definition recreates it empty.
func (fw *firewall) diff(desired firewallSets) (add, del []fwElement) {
	committed := fw.committed
	if !fw.defined {
		committed = nil
	}
	for set, elems := range desired {
		for key := range elems {
			if _, ok := committed[set][key]; !ok {
				add = append(add, fwElement{set, key})
			}
		}
	}
	for set, elems := range committed {
		for key := range elems {
			if _, ok := desired[set][key]; !ok {
				del = append(del, fwElement{set, key})
			}
		}
	}
	return add, del
}

// fwElement is one element of one set, or of one map (then key ends with valueSeparator and the
// value).
type fwElement struct{ set, key string }

func (e fwElement) element() *knftables.Element {
	key, value, isMap := strings.Cut(e.key, valueSeparator)
	if isMap {
		return &knftables.Element{Map: e.set, Key: splitKey(key), Value: []string{value}}
	}
	return &knftables.Element{Set: e.set, Key: splitKey(key)}
}

// Apply adds and deletes elements in one transaction, defining the table first when needed (the
// first time, and after a failure, so leftovers of an older version never survive). The caller
// guarantees add holds no committed element and del only committed ones.
func (fw *firewall) Apply(ctx context.Context, add, del []fwElement) error {
	tx := fw.nft.NewTransaction()
	if !fw.defined {
		fw.define(tx)
		fw.committed = firewallSets{}
		del = nil // the table was just recreated empty
	}
	// Deletions first: an element whose map value changed is deleted and added again.
	for _, e := range del {
		tx.Delete(e.element())
	}
	for _, e := range add {
		tx.Add(e.element())
	}
	if tx.NumOperations() == 0 {
		return nil
	}
	if err := fw.nft.Run(ctx, tx); err != nil {
		fw.defined = false
		return fmt.Errorf("nftables table %s: %w", TableName, err)
	}
	fw.defined = true
	for _, e := range add {
		if fw.committed[e.set] == nil {
			fw.committed[e.set] = map[string]struct{}{}
		}
		fw.committed[e.set][e.key] = struct{}{}
	}
	for _, e := range del {
		delete(fw.committed[e.set], e.key)
	}
	return nil
}

// Delete removes the table (cleanup); a missing table is fine.
func (fw *firewall) Delete(ctx context.Context) error {
	tx := fw.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	fw.defined = false
	fw.committed = nil
	return fw.nft.Run(ctx, tx)
}

// define (re)creates the table with its sets, chains and rules, all empty of elements.
func (fw *firewall) define(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Herald IPVS data plane: filtering, masquerade, source ranges")})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Herald IPVS data plane: filtering, masquerade, source ranges")})

	for _, f := range families {
		addrPort := f.addrType + " . inet_proto . inet_service"
		tx.Add(&knftables.Set{Name: f.set(setServiceIPs), Type: f.addrType})
		for _, name := range []string{setServicePorts, setNoEndpoints, setNoLocal, setMasquerade, setFirewall} {
			tx.Add(&knftables.Set{Name: f.set(name), Type: addrPort})
		}
		tx.Add(&knftables.Set{Name: f.set(setFirewallAllow), Type: addrPort + " . " + f.addrType,
			Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		for _, name := range []string{setNodePortNoEP, setNodePortNoLoc, setNodePortMasq} {
			tx.Add(&knftables.Set{Name: f.set(name), Type: "inet_proto . inet_service"})
		}
		tx.Add(&knftables.Set{Name: f.set(setHairpin), Type: f.addrType + " . " + f.addrType})
		tx.Add(&knftables.Set{Name: f.set(setClusterIPMasq), Type: addrPort})
		tx.Add(&knftables.Set{Name: f.set(setNodePortAddrs), Type: f.addrType})
		tx.Add(&knftables.Map{Name: f.set(mapShortCircuit), Type: addrPort + " : mark"})
		tx.Add(&knftables.Map{Name: f.set(mapNodePortShortCircuit), Type: "inet_proto . inet_service : mark"})
	}

	// Filter chains run at priority filter (0), before IPVS takes packets in LOCAL_IN (98).
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{chainInput, knftables.InputHook}, {chainOutput, knftables.OutputHook}} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(knftables.FilterPriority)})
	}
	// The node's own traffic meets IPVS in LOCAL_OUT at priority -98 (NF_IP_PRI_NAT_DST + 2):
	// what must steer it to another virtual server runs before, at mangle (-150).
	tx.Add(&knftables.Chain{Name: chainMarkOutput, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.OutputHook), Priority: knftables.PtrTo(knftables.ManglePriority)})
	tx.Add(&knftables.Chain{Name: chainPostrouting, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})

	const l4 = "meta l4proto { tcp, udp, sctp }"
	markMasq := "meta mark set meta mark | " + masqueradeMark
	for _, f := range families {
		dst := f.match + " daddr . meta l4proto . th dport"
		rule := func(chain string, parts ...any) {
			tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(append([]any{l4}, parts...)...)})
		}
		pods := fw.local.NFTSources(f.ipv6, false)
		// Incoming traffic: source ranges, the pods' short circuit, Services without (local)
		// endpoints, unused ports of Service IPs, then the masquerade mark for what must come
		// back through this node.
		rule(chainInput, dst, "@"+f.set(setFirewall), dst, ".", f.match, "saddr", "!=", "@"+f.set(setFirewallAllow), "drop")
		if pods != "" {
			// Pods' traffic to an externalTrafficPolicy: Local address is not external: it goes
			// to every endpoint, keeping its source, as kube-proxy's nftables mode short-circuits
			// it (kube-proxy's IPVS mode falls back to every endpoint for all traffic instead,
			// external traffic included). An IPVS virtual server has one list of real servers,
			// so the short circuit is a second, firewall-mark virtual server: IPVS looks marks
			// up before addresses, and the mark set here (priority filter, 0) is on the packet
			// when IPVS takes it in LOCAL_IN (priority 99). The mark replaces the packet's: IPVS
			// matches the whole mark. accept skips the drop of external traffic below.
			rule(chainInput, pods, "meta mark set", dst, "map", "@"+f.set(mapShortCircuit), "accept")
			rule(chainInput, pods, f.match, "daddr", "@"+f.set(setNodePortAddrs),
				"meta mark set meta l4proto . th dport map", "@"+f.set(mapNodePortShortCircuit), "accept")
		}
		rule(chainInput, dst, "@"+f.set(setNoEndpoints), "reject")
		rule(chainInput, dst, "@"+f.set(setNoLocal), "drop")
		// A new connection to a port of a Service IP no Service uses is rejected, as kube-proxy's
		// IPVS mode does (KUBE-IPVS-FILTER) and Herald's nftables backend does for ClusterIPs: a
		// listener of the node on all addresses must not answer there. Only new ones: the
		// replies to the node's own connections from a Service IP come back to such ports.
		rule(chainInput, "ct state new", f.match, "daddr", "@"+f.set(setServiceIPs), dst, "!=", "@"+f.set(setServicePorts), "reject")
		rule(chainInput, dst, "@"+f.set(setMasquerade), markMasq)
		// Traffic to a ClusterIP from outside the cluster CIDRs (all of it with masquerade-all)
		// may have come by a route to the Service range: its reply must come back here. The
		// node's own traffic too (below), as kube-proxy marks it in its nat OUTPUT chain.
		var clusterIPMasq []any
		if fw.local.MasqueradeAll {
			clusterIPMasq = []any{dst, "@" + f.set(setClusterIPMasq), markMasq}
		} else if outside := fw.local.NFTSources(f.ipv6, true); outside != "" {
			clusterIPMasq = []any{dst, "@" + f.set(setClusterIPMasq), outside, markMasq}
		}
		if clusterIPMasq != nil {
			rule(chainInput, clusterIPMasq...)
		}
		nodePort := knftables.Concat("fib daddr type local", f.match, "daddr", "!=", "@"+f.set(setServiceIPs),
			"meta l4proto . th dport")
		rule(chainInput, nodePort, "@"+f.set(setNodePortNoEP), "reject")
		rule(chainInput, nodePort, "@"+f.set(setNodePortNoLoc), "drop")
		rule(chainInput, nodePort, "@"+f.set(setNodePortMasq), markMasq)
		// Traffic from this node itself to a Service: reject or drop like incoming traffic.
		rule(chainOutput, dst, "@"+f.set(setNoEndpoints), "reject")
		rule(chainOutput, dst, "@"+f.set(setNoLocal), "drop")
		// The node's own traffic to an externalTrafficPolicy: Local address is not external
		// either: the short circuit, as for pods (above), before IPVS sees it.
		rule(chainMarkOutput, "meta mark set", dst, "map", "@"+f.set(mapShortCircuit))
		rule(chainMarkOutput, f.match, "daddr", "@"+f.set(setNodePortAddrs),
			"meta mark set meta l4proto . th dport map", "@"+f.set(mapNodePortShortCircuit))
		if clusterIPMasq != nil {
			// The masquerade bit leaves IPVS's firewall-mark lookup empty-handed (no short-circuit
			// mark has it), so the address's virtual server takes the packet.
			rule(chainMarkOutput, clusterIPMasq...)
		}
		// Hairpin: an endpoint that reached its own Service and was picked itself must see the
		// node as the source, or its reply would skip IPVS.
		tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
			f.match, "saddr .", f.match, "daddr", "@"+f.set(setHairpin), "masquerade")})
		// The node's own IPv4 connections to a Service IP leave with that address as their
		// source (it has a local route on the dummy link, so the kernel picks it): masquerade
		// them, so replies come back to an address the node really owns on that path, whatever
		// the cluster CIDRs say. (IPv6 picks one of the node's addresses instead.)
		tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
			f.match, "saddr", "@"+f.set(setServiceIPs), "masquerade")})
	}
	tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
		"meta mark &", masqueradeMark, "==", masqueradeMark,
		"meta mark set meta mark ^", masqueradeMark, "masquerade fully-random")})
}

func splitKey(key string) []string { return strings.Split(key, keySeparator) }
