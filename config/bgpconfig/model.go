package bgpconfig

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Peer is one BGP session this node should hold, already resolved from a BGPPeer (secret read,
// BFD profile looked up, defaults applied). Two Peers are equal when every field is: the announcer
// replaces a session only when its Peer changed, so sessions whose Peer did not change are never reset.
type Peer struct {
	// Name is the BGPPeer's name; it keys the session in status, metrics and GoBGP policy names.
	Name  string
	MyASN uint32
	// ASN is the router's; 0 accepts whatever ASN it opens with (dynamicASN external).
	ASN           uint32
	Address       netip.Addr
	Port          uint16 // 0 means 179
	SourceAddress netip.Addr
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	ConnectTime   time.Duration
	EBGPMultiHop  bool
	// Password is the TCP-MD5 key (RFC 2385); empty means none.
	Password        string
	GracefulRestart bool
	// BFD is nil when the peer has no BFD profile.
	BFD *BFD
}

// BFD is a BFDProfile with its defaults applied, as the speaker's BFD sessions (speaker/bfd) use it.
type BFD struct {
	ReceiveInterval  time.Duration
	TransmitInterval time.Duration
	DetectMultiplier uint8
	// Passive sessions wait for the router to send first.
	Passive bool
	// MinimumTTL is the lowest TTL accepted on a multi-hop (ebgpMultiHop) session; 0 means the
	// default (254). Single-hop sessions always require 255.
	MinimumTTL uint8
}

// Attributes are the path attributes a route carries towards one peer.
type Attributes struct {
	// Communities are standard communities as "high:low", sorted and unique.
	Communities []string
	// LargeCommunities are RFC 8092 communities as "global:local1:local2", sorted and unique.
	LargeCommunities []string
	// LocalPref is sent to iBGP peers only (RFC 4271); 0 means not set.
	LocalPref uint32
}

// Key is a canonical string for a set of attributes: routes towards one peer that share it share
// one GoBGP export statement.
func (a Attributes) Key() string {
	return "lp=" + strconv.FormatUint(uint64(a.LocalPref), 10) +
		";c=" + strings.Join(a.Communities, ",") +
		";lc=" + strings.Join(a.LargeCommunities, ",")
}

// Equal reports whether a and b are the same attributes.
func (a Attributes) Equal(b Attributes) bool {
	return a.LocalPref == b.LocalPref && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// merge returns the union of two attribute sets for the same prefix towards the same peer.
// Conflicting local preferences are resolved by the translation (and reported there); here the
// higher one wins so the result does not depend on order.
func (a Attributes) merge(b Attributes) Attributes {
	return Attributes{
		Communities:      sortedUnion(a.Communities, b.Communities),
		LargeCommunities: sortedUnion(a.LargeCommunities, b.LargeCommunities),
		LocalPref:        max(a.LocalPref, b.LocalPref),
	}
}

func sortedUnion(a, b []string) []string {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// Desired is everything the BGP announcer of one node should do: its sessions and, per session,
// the prefixes to advertise with their attributes.
type Desired struct {
	// RouterID is the BGP identifier of this node's speaker; one per node because GoBGP runs one
	// BGP instance for all sessions.
	RouterID netip.Addr
	Peers    map[string]Peer
	// Routes maps a peer name to the prefixes advertised to it.
	Routes map[string]map[netip.Prefix]Attributes
}
