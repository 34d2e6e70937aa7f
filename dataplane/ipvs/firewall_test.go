package ipvs

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// countingNFT records the size and text of each transaction it runs; with discard it does not run
// them at all (knftables.Fake is quadratic in the number of elements).
type countingNFT struct {
	*knftables.Fake
	ops     []int
	last    string
	discard bool
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.ops = append(c.ops, tx.NumOperations())
	c.last = tx.String()
	if c.discard {
		return nil
	}
	return c.Fake.Run(ctx, tx)
}

func TestFirewallSendsOnlyDeltas(t *testing.T) {
	nft := &countingNFT{Fake: knftables.NewFake(knftables.InetFamily, TableName)}
	fw := newFirewall(nft)
	ctx := context.Background()
	desired := firewallSets{}
	for i := 0; i < 1000; i++ {
		desired.add(familyIPv4.set(setServicePorts), "10.96.3."+itoa(i%250), "tcp", itoa(1000+i))
	}
	desired.add(familyIPv4.set(setFirewall), "10.255.0.10", "tcp", "80")
	desired.add(familyIPv4.set(setFirewallAllow), "10.255.0.10", "tcp", "80", "10.0.1.0/24")
	if err := syncSets(ctx, fw, desired); err != nil {
		t.Fatal(err)
	}
	if e := nft.Table.Sets[familyIPv4.set(setFirewallAllow)].FindElement("10.255.0.10", "tcp", "80", "10.0.1.0/24"); e == nil {
		t.Fatalf("allow element missing:\n%s", nft.Dump())
	}
	// Unchanged: no transaction at all.
	if err := syncSets(ctx, fw, copySets(desired)); err != nil {
		t.Fatal(err)
	}
	if len(nft.ops) != 1 {
		t.Fatalf("no-op sync ran a transaction: %v", nft.ops)
	}
	// One element added, one removed: a transaction of exactly two operations.
	next := copySets(desired)
	delete(next[familyIPv4.set(setServicePorts)], "10.96.3.0 . tcp . 1000")
	next.add(familyIPv4.set(setNoEndpoints), "10.96.9.9", "udp", "53")
	if err := syncSets(ctx, fw, next); err != nil {
		t.Fatal(err)
	}
	if got := nft.ops[len(nft.ops)-1]; got != 2 {
		t.Fatalf("incremental transaction has %d operations, want 2", got)
	}
	dump := nft.Dump()
	if strings.Contains(dump, "10.96.3.0 . tcp . 1000") || !strings.Contains(dump, "10.96.9.9 . udp . 53") {
		t.Fatalf("table after delta:\n%s", dump)
	}
	if err := fw.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.Table != nil {
		t.Fatalf("table left after Delete:\n%s", nft.Dump())
	}
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

// syncSets makes the table's sets hold exactly desired.
func syncSets(ctx context.Context, fw *firewall, desired firewallSets) error {
	add, del := fw.diff(desired)
	return fw.Apply(ctx, add, del)
}
