package nftables

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// Drift: anyone with CAP_NET_ADMIN can change Herald's table behind its back (`nft flush
// ruleset` when a host firewall reloads, a cleanup script deleting tables, an admin deleting a
// chain by hand), and until the proxy notices, traffic to Services is lost.
//
// The check is in two steps so that it can run every second:
//   - the ruleset generation: the kernel counts every nftables commit, by anyone, in every
//     table (one netlink request, microseconds). After each of its own commits the backend
//     reads it: when it moved by exactly one (its own commit and nothing else), the kernel
//     still holds what the backend believes. When it did not move since the last verified
//     value, nothing was changed by anyone;
//   - only when someone else committed: the table's shape, read in one `nft -j list table`
//     (tens of milliseconds at 10,000 Services), is compared with what the backend committed:
//     which chains exist with how many rules, which sets and maps exist with how many elements
//     (affinity sets' elements are the clients' and change with traffic: only their presence
//     counts). That sees a deleted table or chain, a flushed chain or map, an element deleted
//     or added, a rule inserted; it does not see a rule replaced by another of the same count,
//     which the periodic full resync (MaxSyncInterval) repairs.
//
// Why not only a canary element, as kube-proxy's iptables mode has: a canary tells that the
// table was deleted or flushed, not that one Service's chain was.

// tableShape is what the drift check compares: per chain the number of rules, per set or map
// the number of elements.
type tableShape struct {
	exists bool
	chains map[string]int
	sets   map[string]int // sets and maps alike; -1 where the count is not compared
	maps   map[string]bool
}

// dynamicCount marks a set whose element count is not compared (affinity sets).
const dynamicCount = -1

// differences lists how got differs from want (the expectation), most telling first; nil when
// the table is as committed.
func (want tableShape) differences(got tableShape) []string {
	if !got.exists {
		return []string{"table inet " + TableName + " is gone"}
	}
	var out []string
	for _, name := range sortedKeys(want.chains) {
		n, ok := got.chains[name]
		switch {
		case !ok:
			out = append(out, "chain "+name+" is gone")
		case n != want.chains[name]:
			out = append(out, fmt.Sprintf("chain %s has %d rules, want %d", name, n, want.chains[name]))
		}
	}
	for _, name := range sortedKeys(want.sets) {
		n, ok := got.sets[name]
		switch {
		case !ok:
			out = append(out, "set "+name+" is gone")
		case want.sets[name] != dynamicCount && n != want.sets[name]:
			out = append(out, fmt.Sprintf("set %s has %d elements, want %d", name, n, want.sets[name]))
		}
	}
	for _, name := range sortedKeys(got.chains) {
		if _, ok := want.chains[name]; !ok {
			out = append(out, "unexpected chain "+name)
		}
	}
	for _, name := range sortedKeys(got.sets) {
		if _, ok := want.sets[name]; !ok {
			out = append(out, "unexpected set "+name)
		}
	}
	return out
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// baseShape is the shape of the fixed part of the table (addBaseRuleset), computed once by
// running it on a knftables Fake: the one description of the base stays addBaseRuleset.
var baseShape = func() tableShape {
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	tx := fake.NewTransaction()
	addBaseRuleset(tx)
	if err := fake.Run(context.Background(), tx); err != nil {
		panic("the base ruleset does not load into the knftables Fake: " + err.Error())
	}
	return fakeShape(fake)
}()

// expectedShape is the shape of what the backend committed.
func (b *Backend) expectedShape() tableShape {
	want := tableShape{exists: true, chains: map[string]int{}, sets: map[string]int{}}
	for name, n := range baseShape.chains {
		want.chains[name] = n
	}
	for name := range baseShape.sets {
		want.sets[name] = 0
	}
	for k := range b.refs {
		want.sets[k.container]++
	}
	for _, fr := range b.committed {
		for _, c := range fr.chains {
			want.chains[c.name] = len(c.rules)
		}
		for _, s := range fr.sets {
			want.sets[s.name] = dynamicCount
		}
	}
	return want
}

// fakeShape reads the shape of a knftables Fake's table (unit tests).
func fakeShape(fake *knftables.Fake) tableShape {
	if fake.Table == nil {
		return tableShape{}
	}
	s := tableShape{exists: true, chains: map[string]int{}, sets: map[string]int{}, maps: map[string]bool{}}
	for name, c := range fake.Table.Chains {
		s.chains[name] = len(c.Rules)
	}
	for name, set := range fake.Table.Sets {
		s.sets[name] = len(set.Elements)
	}
	for name, m := range fake.Table.Maps {
		s.sets[name], s.maps[name] = len(m.Elements), true
	}
	return s
}

// nftShape reads the shape of the kernel's table with `nft -j list table` (in the network
// namespace of the calling thread).
func nftShape(ctx context.Context, path string) (tableShape, error) {
	cmd := exec.CommandContext(ctx, path, "-j", "list", "table", string(knftables.InetFamily), TableName)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Contains(string(exit.Stderr), "No such file or directory") {
			return tableShape{}, nil
		}
		return tableShape{}, fmt.Errorf("nft -j list table: %w", err)
	}
	return parseShape(out)
}

// parseShape reads the shape from nft's JSON listing of one table.
func parseShape(listing []byte) (tableShape, error) {
	var doc struct {
		Nftables []struct {
			Table *struct{} `json:"table"`
			Chain *struct {
				Name string `json:"name"`
			} `json:"chain"`
			Rule *struct {
				Chain string `json:"chain"`
			} `json:"rule"`
			Set *nftJSONSet `json:"set"`
			Map *nftJSONSet `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &doc); err != nil {
		return tableShape{}, fmt.Errorf("reading nft's JSON listing: %w", err)
	}
	s := tableShape{chains: map[string]int{}, sets: map[string]int{}, maps: map[string]bool{}}
	for _, o := range doc.Nftables {
		switch {
		case o.Table != nil:
			s.exists = true
		case o.Chain != nil:
			s.chains[o.Chain.Name] += 0
		case o.Rule != nil:
			s.chains[o.Rule.Chain]++
		case o.Set != nil:
			s.sets[o.Set.Name] = len(o.Set.Elem)
		case o.Map != nil:
			s.sets[o.Map.Name], s.maps[o.Map.Name] = len(o.Map.Elem), true
		}
	}
	return s, nil
}

type nftJSONSet struct {
	Name string            `json:"name"`
	Elem []json.RawMessage `json:"elem"`
}

// Netlink constants of the nftables subsystem (linux/netfilter/nfnetlink.h, nf_tables.h).
const (
	nfnlSubsysNFTables = 10
	nftMsgGetGen       = 16
	nftMsgNewGen       = 15
	nftaGenID          = 1
)

// rulesetGeneration reads the kernel's nftables generation (NFT_MSG_GETGEN) in the network
// namespace of the calling thread: it grows by one with every committed transaction.
func rulesetGeneration() (uint32, error) {
	req := nl.NewNetlinkRequest(nfnlSubsysNFTables<<8|nftMsgGetGen, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: nl.NFNETLINK_V0})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, nfnlSubsysNFTables<<8|nftMsgNewGen)
	if err != nil {
		return 0, fmt.Errorf("reading the nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofNfgenmsg:])
		if err != nil {
			return 0, fmt.Errorf("reading the nftables generation: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type&nl.NLA_TYPE_MASK == nftaGenID && len(a.Value) == 4 {
				return binary.BigEndian.Uint32(a.Value), nil
			}
		}
	}
	return 0, errors.New("reading the nftables generation: no generation in the kernel's answer")
}

// describeDrift joins the first few differences into one message.
func describeDrift(diffs []string) string {
	const shown = 5
	if len(diffs) <= shown {
		return strings.Join(diffs, "; ")
	}
	return strings.Join(slices.Clip(diffs[:shown]), "; ") + fmt.Sprintf("; and %d more", len(diffs)-shown)
}
