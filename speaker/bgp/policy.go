package bgp

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"
)

// GoBGP keeps one RIB and one export policy for all ordinary (non route-server) peers, while a
// BGPAdvertisement may send a prefix to some peers only, with communities or a local preference
// that differ per peer. Herald therefore adds every prefix once to the RIB and describes "which
// prefixes, with which attributes, to which peer" as the global export policy:
//
//   - one neighbor set per peer (its address),
//   - one "route group" per (peer, attribute set): a prefix set, and a policy with one statement
//     matching that neighbor set and prefix set, adding the communities and local preference,
//   - the default export action REJECT, so a prefix reaches only the peers whose groups hold it.
//
// Adding a route to a group is a prefix-set append; GoBGP evaluates the export policy when the
// path is added, so no session is touched. Moving a prefix between groups or away from one peer
// needs a soft reset out of that peer only.

const namePrefix = "herald-"

func neighborSetName(peer string) string { return namePrefix + "n-" + peer }

// groupName names a route group: the peer's name plus a short hash of the attribute key, so the
// name is stable across restarts and the same attributes always map to the same group.
func groupName(peer string, attrs Attributes) string {
	sum := sha256.Sum256([]byte(attrs.Key()))
	return namePrefix + peer + "-" + hex.EncodeToString(sum[:6])
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func neighborSet(peer string, addr netip.Addr) *api.DefinedSet {
	return &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
		Name:        neighborSetName(peer),
		List:        []string{hostPrefix(addr).String()},
	}
}

// prefixSet is a defined set holding exactly the given prefixes (no longer ones).
func prefixSet(name string, prefixes []netip.Prefix) *api.DefinedSet {
	ds := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name}
	for _, p := range prefixes {
		ds.Prefixes = append(ds.Prefixes, &api.Prefix{
			IpPrefix:      p.String(),
			MaskLengthMin: uint32(p.Bits()),
			MaskLengthMax: uint32(p.Bits()),
		})
	}
	return ds
}

// groupPolicy is the export policy of one route group: accept its prefixes towards its peer and
// attach the group's attributes.
func groupPolicy(peer, group string, attrs Attributes) *api.Policy {
	actions := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
	if len(attrs.Communities) > 0 {
		actions.Community = &api.CommunityAction{
			Type:        api.CommunityAction_TYPE_ADD,
			Communities: attrs.Communities,
		}
	}
	if len(attrs.LargeCommunities) > 0 {
		actions.LargeCommunity = &api.CommunityAction{
			Type:        api.CommunityAction_TYPE_ADD,
			Communities: attrs.LargeCommunities,
		}
	}
	if attrs.LocalPref != 0 {
		actions.LocalPref = &api.LocalPrefAction{Value: attrs.LocalPref}
	}
	return &api.Policy{
		Name: group,
		Statements: []*api.Statement{{
			Name: group,
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: neighborSetName(peer)},
				PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: group},
			},
			Actions: actions,
		}},
	}
}

// exportAssignment is the global export policy: every group's policy, default reject.
func exportAssignment(groups []string) *api.PolicyAssignment {
	pa := &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}
	for _, g := range groups {
		pa.Policies = append(pa.Policies, &api.Policy{Name: g})
	}
	return pa
}
