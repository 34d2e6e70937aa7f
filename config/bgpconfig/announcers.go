package bgpconfig

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/heraldlb/herald/config/v1beta1"
)

// A node's speaker does not list the externalTrafficPolicy: Cluster IPs it advertises by BGP:
// that list grows with the Services and would be rewritten on every node for every Service
// created. Readers derive it instead, from what does not grow with the Services: a node
// advertises such an IP when its speaker is live and advertises at all (not labelled to be
// excluded), a usable BGPAdvertisement selects the IP's pool and the Service's labels and the
// node's labels, the node has an Established session with a peer of the IP's family that the
// advertisement goes to, and the node does not list the IP among its deviations. The speakers'
// translation (Translate) decides with the same rules; the controller's herald.io/Announced
// condition and heraldctl status both read it through Announcers, so they agree.

// NodeBGP is what one node tells of its BGP announcements: its labels (the Node's), whether its
// speaker is live, and what its SpeakerStatus says.
type NodeBGP struct {
	Name   string
	Labels map[string]string
	// Live: the node's speaker Lease holds.
	Live bool
	// Established are its Established sessions.
	Established []Session
	// Withheld: the node advertises no Service IP (status bgpWithheld).
	Withheld bool
	// Deviations are the IPs it does not advertise though its translation selects them.
	// DeviationsCapped: it has more than it lists; it then counts as advertising no derived IP,
	// as nobody can tell which.
	Deviations       map[netip.Addr]bool
	DeviationsCapped bool
}

// Session is one Established BGP session: the BGPPeer's name and the router's address (the
// routes it takes are of that address's family).
type Session struct {
	Peer    string
	Address netip.Addr
}

// NodeFromStatus reads a marked SpeakerStatus (bgpListing: Deviations) of a node with these
// labels and liveness. A session or deviation whose address does not parse is left out.
func NodeFromStatus(st *v1beta1.SpeakerStatus, nodeLabels map[string]string, live bool) NodeBGP {
	n := NodeBGP{Name: st.Name, Labels: nodeLabels, Live: live, Withheld: st.Status.BGPWithheld != "",
		DeviationsCapped: int(st.Status.BGPDeviationsTotal) > len(st.Status.BGPDeviations)}
	for _, s := range st.Status.BGPSessions {
		if addr, err := netip.ParseAddr(s.PeerAddress); err == nil && s.State == "Established" {
			n.Established = append(n.Established, Session{Peer: s.Peer, Address: addr.Unmap()})
		}
	}
	for _, d := range st.Status.BGPDeviations {
		if ip, err := netip.ParseAddr(d.IP); err == nil {
			if n.Deviations == nil {
				n.Deviations = map[netip.Addr]bool{}
			}
			n.Deviations[ip.Unmap()] = true
		}
	}
	return n
}

// Announcers answers, for Cluster-policy IPs, which nodes advertise them by BGP. NewAnnouncers
// does the work that depends on the configuration and the nodes only (once per change of
// either), Nodes the per-IP part; together they are one pure function of their inputs.
type Announcers struct {
	ads []derivedAd
	// deviations: the nodes that list deviations, by name.
	deviations map[string]map[netip.Addr]bool
}

// derivedAd is one usable BGPAdvertisement and the nodes it advertises from, per family.
type derivedAd struct {
	selection  Selection
	ipv4, ipv6 []NodeAnnouncement // sorted by node
}

// NodeAnnouncement is one node advertising an IP and the BGPPeers (sorted) it advertises it to:
// those of its Established sessions of the IP's family that the advertisements go to.
type NodeAnnouncement struct {
	Node  string
	Peers []string
}

// NewAnnouncers reads in's BGPAdvertisements (with the BGPPeers, Communities and Pools they
// name; in.Node and in.Services are not read) against the nodes. An advertisement is used as the
// speakers' translation uses it: not being deleted, and valid (what it names exists, its
// selectors parse, its communities and aggregation lengths are right).
func NewAnnouncers(in Input, nodes []NodeBGP) *Announcers {
	t := translation{in: in, everyNode: true, res: Result{Desired: Desired{Peers: map[string]Peer{}}}}
	t.communityAliases()
	t.bfdProfiles()
	t.peers()
	pools := t.poolsByName()
	a := &Announcers{deviations: map[string]map[netip.Addr]bool{}}
	usable := make([]NodeBGP, 0, len(nodes))
	for _, n := range nodes {
		if n.Live && !n.Withheld && !n.DeviationsCapped && len(n.Established) > 0 {
			usable = append(usable, n)
			if len(n.Deviations) > 0 {
				a.deviations[n.Name] = n.Deviations
			}
		}
	}
	slices.SortFunc(usable, func(x, y NodeBGP) int { return strings.Compare(x.Name, y.Name) })
	for _, ba := range in.Advertisements {
		if ba.DeletionTimestamp != nil {
			continue
		}
		ad, ok := t.advertisement(ba, pools)
		if !ok {
			continue
		}
		d := derivedAd{selection: ad.selection}
		for _, n := range usable {
			// Translate checked that the selectors parse.
			if selected, _ := nodeSelected(ba.Spec.NodeSelectors, n.Labels); !selected {
				continue
			}
			v4, v6 := NodeAnnouncement{Node: n.Name}, NodeAnnouncement{Node: n.Name}
			for _, s := range n.Established {
				if len(ba.Spec.Peers) > 0 && !slices.Contains(ba.Spec.Peers, s.Peer) {
					continue
				}
				if s.Address.Is4() {
					v4.Peers = append(v4.Peers, s.Peer)
				} else {
					v6.Peers = append(v6.Peers, s.Peer)
				}
			}
			if len(v4.Peers) > 0 {
				d.ipv4 = append(d.ipv4, v4)
			}
			if len(v6.Peers) > 0 {
				d.ipv6 = append(d.ipv6, v6)
			}
		}
		a.ads = append(a.ads, d)
	}
	return a
}

// Nodes returns, sorted, the nodes advertising ip, of pool, by BGP for a Service with
// externalTrafficPolicy: Cluster and these labels.
func (a *Announcers) Nodes(ip netip.Addr, pool string, serviceLabels map[string]string) []string {
	var out []string
	for _, n := range a.Announcements(ip, pool, serviceLabels) {
		out = append(out, n.Node)
	}
	return out
}

// Announcements is Nodes with the peers each node advertises ip to (the union over the
// advertisements that select it), sorted by node.
func (a *Announcers) Announcements(ip netip.Addr, pool string, serviceLabels map[string]string) []NodeAnnouncement {
	ip = ip.Unmap()
	peers := map[string][]string{}
	for _, ad := range a.ads {
		if !ad.selection.Selects(pool, serviceLabels) {
			continue
		}
		nodes := ad.ipv4
		if ip.Is6() {
			nodes = ad.ipv6
		}
		for _, n := range nodes {
			if !a.deviations[n.Node][ip] {
				peers[n.Node] = append(peers[n.Node], n.Peers...)
			}
		}
	}
	out := make([]NodeAnnouncement, 0, len(peers))
	for node, p := range peers {
		slices.Sort(p)
		out = append(out, NodeAnnouncement{Node: node, Peers: slices.Compact(p)})
	}
	slices.SortFunc(out, func(x, y NodeAnnouncement) int { return strings.Compare(x.Node, y.Node) })
	return out
}
