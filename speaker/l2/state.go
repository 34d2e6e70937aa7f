package l2

import (
	"bytes"
	"encoding/gob"
	"net/netip"
	"slices"
	"time"
)

// NodeState is what a speaker tells its peers in every heartbeat: the links it can answer on, the
// IPs it answers for, and the IPs it is handing over. Every speaker elects owners from the same
// NodeStates, so they agree without asking the API server.
type NodeState struct {
	Links  []Link
	Owned  []netip.Addr // sorted
	Offers []Offer      // sorted by IP
	// Recovering: the node has just come out of a stall (see membership.Membership.Stalled); its
	// claims yield to those of any node that is not recovering.
	Recovering bool
	// HoldFor is set in the last heartbeats of a speaker stopping for a restart, and in the first
	// ones of the restarted speaker until it answers for its IPs itself: keep its claims for this
	// long (plus HoldMargin) after its last heartbeat; the node's kernel answers for them
	// meanwhile (see Handover).
	HoldFor time.Duration
	// HonoursHolds: this speaker keeps a restarting peer's claims. A speaker holds its IPs over a
	// restart only when every alive peer does; an older one, without the field, does not.
	HonoursHolds bool
	// Leaving: the node's speaker is stopping and the node is leaving (cordoned or drained,
	// excluded, deleted, NotReady): it is a candidate for nothing, and answers for its IPs only
	// until an eligible peer claims them. A speaker of an earlier release ignores the field (gob
	// skips it) and takes those IPs once the leaving node stops claiming them.
	Leaving bool
	// Resumed: this speaker took back the IPs its node's previous speaker held over a restart. It
	// has not joined: balance offers it nothing (a restart moves nothing).
	Resumed bool

	ownedSet map[netip.Addr]struct{} // index of Owned, built once per received state
}

// indexed returns s with a set of its owned IPs, for the many owns calls of each round.
func (s NodeState) indexed() NodeState {
	s.ownedSet = make(map[netip.Addr]struct{}, len(s.Owned))
	for _, ip := range s.Owned {
		s.ownedSet[ip] = struct{}{}
	}
	return s
}

// owns reports whether the state claims ip.
func (s NodeState) owns(ip netip.Addr) bool {
	if s.ownedSet != nil {
		_, ok := s.ownedSet[ip]
		return ok
	}
	_, ok := slices.BinarySearchFunc(s.Owned, ip, netip.Addr.Compare)
	return ok
}

// offeredTo returns the node an owned ip is being handed to.
func (s NodeState) offeredTo(ip netip.Addr) (string, bool) {
	if i, ok := slices.BinarySearchFunc(s.Offers, ip, func(o Offer, ip netip.Addr) int { return o.IP.Compare(ip) }); ok {
		return s.Offers[i].To, true
	}
	return "", false
}

// Link is a usable interface: up, ARP-capable, not enslaved to a bridge or bond.
type Link struct {
	Name     string
	Prefixes []netip.Prefix // its addresses with their subnets
}

// Offer hands an owned IP over to another node (rebalancing). The receiver takes the IP when it
// sees the offer; the giver stops answering when it sees the receiver's claim.
type Offer struct {
	IP netip.Addr
	To string
}

// canAnswer reports whether a node with these links may answer for ip: on one of the named
// interfaces if the advertisement names some (the link needs an address of ip's family to send
// from), otherwise on a link whose subnet holds ip.
func canAnswer(links []Link, ip netip.Addr, interfaces []string) bool {
	for _, l := range links {
		for _, p := range l.Prefixes {
			if len(interfaces) > 0 {
				if slices.Contains(interfaces, l.Name) && p.Addr().Is4() == ip.Is4() {
					return true
				}
			} else if p.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// encode is deterministic for equal states (slices are kept sorted), so an unchanged state gives
// identical heartbeat payloads.
func (s NodeState) encode() ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(s)
	return b.Bytes(), err
}

func decodeNodeState(b []byte) (NodeState, error) {
	var s NodeState
	if len(b) == 0 {
		return s, nil
	}
	err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s)
	return s, err
}
