package ipvs

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is the nftables table (family inet) that sits next to IPVS.
const TableName = "herald-ipvs"

// masqueradeMark is the packet-mark bit meaning "masquerade this connection on the way out"; the
// same bit kube-proxy uses, so CNI plugins that know it keep working.
const masqueradeMark = "0x4000"

// Set names. The -v4/-v6 sets are keyed by an address; the nodeport sets by protocol and port only
// (they apply to every local address that is not a Service IP).
const (
	setServiceIPs    = "service-ips"    // addresses on herald-ipvs0
	setServicePorts  = "service-ports"  // addr . proto . port served by a virtual server
	setNoEndpoints   = "no-endpoints"   // addr . proto . port of Service ports without endpoints
	setMasquerade    = "masquerade"     // addr . proto . port whose traffic is masqueraded
	setFirewall      = "firewall"       // addr . proto . port restricted by loadBalancerSourceRanges
	setFirewallAllow = "firewall-allow" // addr . proto . port . source range allowed through
	setNodePortNoEP  = "nodeport-no-endpoints"
	setNodePortMasq  = "nodeport-masquerade"
	chainInput       = "filter-input"
	chainOutput      = "filter-output"
	chainPostrouting = "nat-postrouting"
	familySuffixIPv4 = "-v4"
	familySuffixIPv6 = "-v6"
	keySeparator     = " . "
)

// firewallSets is the content of the table's sets: set name -> element keys, each the nft text of a
// key with concatenated components joined by " . ".
type firewallSets map[string]map[string]struct{}

func (f firewallSets) add(set string, key ...string) {
	if f[set] == nil {
		f[set] = map[string]struct{}{}
	}
	f[set][strings.Join(key, keySeparator)] = struct{}{}
}

type ipFamily struct {
	suffix   string // set name suffix
	match    string // "ip" or "ip6" in rules
	addrType string // nft type of an address
}

var families = []ipFamily{
	{suffix: familySuffixIPv4, match: "ip", addrType: "ipv4_addr"},
	{suffix: familySuffixIPv6, match: "ip6", addrType: "ipv6_addr"},
}

// setFor names the per-family set for addr's family.
func setFor(name string, is4 bool) string {
	if is4 {
		return name + familySuffixIPv4
	}
	return name + familySuffixIPv6
}

// firewall keeps the nftables table next to IPVS. It remembers the elements it committed, so each
// sync sends only added and deleted elements in one transaction and never lists the table.
type firewall struct {
	nft       knftables.Interface
	committed firewallSets
	// defined is false until the table, its sets, chains and rules have been (re)created.
	defined bool
}

func newFirewall(nft knftables.Interface) *firewall {
	return &firewall{nft: nft}
}

// Sync makes the table's sets hold exactly desired. The first sync (and the one after a failure)
// recreates the whole table atomically, so leftovers of an older version never survive.
func (fw *firewall) Sync(ctx context.Context, desired firewallSets) error {
	tx := fw.nft.NewTransaction()
	committed := fw.committed
	if !fw.defined {
		fw.define(tx)
		committed = firewallSets{}
	}
	for set, elems := range desired {
		for key := range elems {
			if _, ok := committed[set][key]; !ok {
				tx.Add(&knftables.Element{Set: set, Key: splitKey(key)})
			}
		}
	}
	for set, elems := range committed {
		for key := range elems {
			if _, ok := desired[set][key]; !ok {
				tx.Delete(&knftables.Element{Set: set, Key: splitKey(key)})
			}
		}
	}
	if tx.NumOperations() == 0 {
		return nil
	}
	if err := fw.nft.Run(ctx, tx); err != nil {
		fw.defined = false
		return fmt.Errorf("nftables table %s: %w", TableName, err)
	}
	fw.defined = true
	fw.committed = copySets(desired)
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

	addrPortKey := func(f ipFamily) string { return f.addrType + " . inet_proto . inet_service" }
	for _, f := range families {
		tx.Add(&knftables.Set{Name: setServiceIPs + f.suffix, Type: f.addrType})
		for _, name := range []string{setServicePorts, setNoEndpoints, setMasquerade, setFirewall} {
			tx.Add(&knftables.Set{Name: name + f.suffix, Type: addrPortKey(f)})
		}
		tx.Add(&knftables.Set{Name: setFirewallAllow + f.suffix, Type: addrPortKey(f) + " . " + f.addrType,
			Flags: []knftables.SetFlag{knftables.IntervalFlag}})
	}
	for _, name := range []string{setNodePortNoEP, setNodePortMasq} {
		tx.Add(&knftables.Set{Name: name, Type: "inet_proto . inet_service"})
	}

	// Filter chains run at priority filter (0), before IPVS takes packets in LOCAL_IN (98).
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{chainInput, knftables.InputHook}, {chainOutput, knftables.OutputHook}} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(knftables.FilterPriority)})
	}
	tx.Add(&knftables.Chain{Name: chainPostrouting, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})

	const l4 = "meta l4proto { tcp, udp, sctp }"
	markMasq := "meta mark set meta mark | " + masqueradeMark
	for _, f := range families {
		dst := f.match + " daddr . meta l4proto . th dport"
		// Incoming traffic: source ranges, Services without endpoints, unknown ports on Service IPs,
		// then the masquerade mark for what must return through this node.
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(
			l4, dst, "@"+setFirewall+f.suffix, dst, ".", f.match, "saddr", "!=", "@"+setFirewallAllow+f.suffix, "drop")})
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(
			l4, dst, "@"+setNoEndpoints+f.suffix, "reject")})
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(
			l4, f.match, "daddr", "@"+setServiceIPs+f.suffix, dst, "!=", "@"+setServicePorts+f.suffix, "drop")})
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(
			l4, dst, "@"+setMasquerade+f.suffix, markMasq)})
		nodePort := knftables.Concat(l4, "fib daddr type local", f.match, "daddr", "!=", "@"+setServiceIPs+f.suffix,
			"meta l4proto . th dport")
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(nodePort, "@"+setNodePortNoEP, "reject")})
		tx.Add(&knftables.Rule{Chain: chainInput, Rule: knftables.Concat(nodePort, "@"+setNodePortMasq, markMasq)})
		// Traffic from this node itself to a Service: reject when there is no endpoint, and
		// masquerade so replies come back to an address the node really owns on that path.
		tx.Add(&knftables.Rule{Chain: chainOutput, Rule: knftables.Concat(
			l4, dst, "@"+setNoEndpoints+f.suffix, "reject")})
		tx.Add(&knftables.Rule{Chain: chainOutput, Rule: knftables.Concat(
			l4, dst, "@"+setServicePorts+f.suffix, markMasq)})
	}
	tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
		"meta mark &", masqueradeMark, "==", masqueradeMark,
		"meta mark set meta mark ^", masqueradeMark, "masquerade fully-random")})
}

func copySets(s firewallSets) firewallSets {
	c := make(firewallSets, len(s))
	for set, elems := range s {
		c[set] = make(map[string]struct{}, len(elems))
		for k := range elems {
			c[set][k] = struct{}{}
		}
	}
	return c
}

func splitKey(key string) []string { return strings.Split(key, keySeparator) }
