package bgp

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// TestPlanRoutes: how the applied routes move to the desired ones, worked out without GoBGP.
func TestPlanRoutes(t *testing.T) {
	pfx := netip.MustParsePrefix
	plain := Attributes{}
	tagged := Attributes{Communities: []string{"64500:1"}}
	peers := map[string]Peer{"tor1": {Name: "tor1"}, "tor2": {Name: "tor2"}}
	g1, g1t, g2 := groupName("tor1", plain), groupName("tor1", tagged), groupName("tor2", plain)
	a, b := pfx("192.0.2.10/32"), pfx("192.0.2.11/32")
	// applied is the state after the routes of the "first routes" case were applied.
	applied := map[string]map[netip.Prefix]string{"tor1": {a: g1, b: g1}, "tor2": {a: g2}}
	appliedPaths := map[netip.Prefix]int{a: 2, b: 1}
	for _, tc := range []struct {
		name          string
		d             Desired
		routes        map[string]map[netip.Prefix]string
		paths         map[netip.Prefix]int
		groups        map[string]plannedGroup
		adds, removes map[string][]netip.Prefix
		wantPaths     map[netip.Prefix]int
		newPaths      []netip.Prefix
		oldPaths      []netip.Prefix
		resetPeers    []string
	}{
		{name: "nothing", d: Desired{Peers: peers}},
		{
			name: "first routes",
			d: Desired{Peers: peers, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {a: plain, b: plain}, "tor2": {a: plain},
			}},
			groups:    map[string]plannedGroup{g1: {"tor1", plain}, g2: {"tor2", plain}},
			adds:      map[string][]netip.Prefix{g1: {a, b}, g2: {a}},
			wantPaths: appliedPaths,
			newPaths:  []netip.Prefix{a, b},
		},
		{
			name: "a peer that is not configured gets nothing; prefixes are masked",
			d: Desired{Peers: map[string]Peer{"tor1": {Name: "tor1"}}, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {pfx("192.0.2.10/24"): plain}, "gone": {a: plain},
			}},
			groups:    map[string]plannedGroup{g1: {"tor1", plain}},
			adds:      map[string][]netip.Prefix{g1: {pfx("192.0.2.0/24")}},
			wantPaths: map[netip.Prefix]int{pfx("192.0.2.0/24"): 1},
			newPaths:  []netip.Prefix{pfx("192.0.2.0/24")},
		},
		{
			name: "unchanged",
			d: Desired{Peers: peers, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {a: plain, b: plain}, "tor2": {a: plain},
			}},
			routes: applied, paths: appliedPaths,
			groups:    map[string]plannedGroup{g1: {"tor1", plain}, g2: {"tor2", plain}},
			wantPaths: appliedPaths,
		},
		{
			name: "attributes change while the path stays: the peer is reset",
			d: Desired{Peers: peers, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {a: tagged, b: plain}, "tor2": {a: plain},
			}},
			routes: applied, paths: appliedPaths,
			groups:     map[string]plannedGroup{g1: {"tor1", plain}, g1t: {"tor1", tagged}, g2: {"tor2", plain}},
			adds:       map[string][]netip.Prefix{g1t: {a}},
			removes:    map[string][]netip.Prefix{g1: {a}},
			wantPaths:  appliedPaths,
			resetPeers: []string{"tor1"},
		},
		{
			name: "withdrawn from one of two peers: that peer is reset, the path stays",
			d: Desired{Peers: peers, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {a: plain, b: plain},
			}},
			routes: applied, paths: appliedPaths,
			groups:     map[string]plannedGroup{g1: {"tor1", plain}},
			removes:    map[string][]netip.Prefix{g2: {a}},
			wantPaths:  map[netip.Prefix]int{a: 1, b: 1},
			resetPeers: []string{"tor2"},
		},
		{
			name: "withdrawn everywhere: the path goes, nobody is reset",
			d: Desired{Peers: peers, Routes: map[string]map[netip.Prefix]Attributes{
				"tor1": {a: plain}, "tor2": {a: plain},
			}},
			routes: applied, paths: appliedPaths,
			groups:    map[string]plannedGroup{g1: {"tor1", plain}, g2: {"tor2", plain}},
			removes:   map[string][]netip.Prefix{g1: {b}},
			wantPaths: map[netip.Prefix]int{a: 2},
			oldPaths:  []netip.Prefix{b},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planRoutes(tc.d, tc.routes, tc.paths)
			check := func(what string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: %v, want %v", what, got, want)
				}
			}
			check("groups", p.groups, orEmpty(tc.groups))
			check("adds", sortedSets(p.adds), orEmpty(tc.adds))
			check("removes", sortedSets(p.removes), orEmpty(tc.removes))
			check("paths", p.paths, orEmpty(tc.wantPaths))
			check("newPaths", sortedPrefixes(p.newPaths), tc.newPaths)
			check("oldPaths", sortedPrefixes(p.oldPaths), tc.oldPaths)
			if !slices.Equal(p.resetPeers, tc.resetPeers) {
				t.Errorf("resetPeers: %v, want %v", p.resetPeers, tc.resetPeers)
			}
		})
	}
}

func orEmpty[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	return slices.SortedFunc(slices.Values(ps), func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
}

func sortedSets(m map[string][]netip.Prefix) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out[k] = sortedPrefixes(m[k])
	}
	return out
}
