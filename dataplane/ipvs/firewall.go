package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"
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
	chainInput       = "filter-input"
	chainOutput      = "filter-output"
	chainPostrouting = "nat-postrouting"
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
	nft       knftables.Interface
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

// fwElement is one element of one set.
type fwElement struct{ set, key string }

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
	for _, e := range add {
		tx.Add(&knftables.Element{Set: e.set, Key: splitKey(e.key)})
	}
	for _, e := range del {
		tx.Delete(&knftables.Element{Set: e.set, Key: splitKey(e.key)})
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
		rule := func(chain string, parts ...any) {
			tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(append([]any{l4}, parts...)...)})
		}
		// Incoming traffic: source ranges, Services without (local) endpoints, unknown ports on
		// Service IPs, then the masquerade mark for what must come back through this node.
		rule(chainInput, dst, "@"+f.set(setFirewall), dst, ".", f.match, "saddr", "!=", "@"+f.set(setFirewallAllow), "drop")
		rule(chainInput, dst, "@"+f.set(setNoEndpoints), "reject")
		rule(chainInput, dst, "@"+f.set(setNoLocal), "drop")
		rule(chainInput, f.match, "daddr", "@"+f.set(setServiceIPs), dst, "!=", "@"+f.set(setServicePorts), "drop")
		rule(chainInput, dst, "@"+f.set(setMasquerade), markMasq)
		nodePort := knftables.Concat("fib daddr type local", f.match, "daddr", "!=", "@"+f.set(setServiceIPs),
			"meta l4proto . th dport")
		rule(chainInput, nodePort, "@"+f.set(setNodePortNoEP), "reject")
		rule(chainInput, nodePort, "@"+f.set(setNodePortNoLoc), "drop")
		rule(chainInput, nodePort, "@"+f.set(setNodePortMasq), markMasq)
		// Traffic from this node itself to a Service: reject or drop like incoming traffic, and
		// masquerade so replies come back to an address the node really owns on that path.
		rule(chainOutput, dst, "@"+f.set(setNoEndpoints), "reject")
		rule(chainOutput, dst, "@"+f.set(setNoLocal), "drop")
		rule(chainOutput, dst, "@"+f.set(setServicePorts), markMasq)
		// Hairpin: an endpoint that reached its own Service and was picked itself must see the
		// node as the source, or its reply would skip IPVS.
		tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
			f.match, "saddr .", f.match, "daddr", "@"+f.set(setHairpin), "masquerade")})
	}
	tx.Add(&knftables.Rule{Chain: chainPostrouting, Rule: knftables.Concat(
		"meta mark &", masqueradeMark, "==", masqueradeMark,
		"meta mark set meta mark ^", masqueradeMark, "masquerade fully-random")})
}

func splitKey(key string) []string { return strings.Split(key, keySeparator) }
