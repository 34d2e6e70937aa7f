package bgpconfig

import (
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config/v1beta1"
)

func TestAnnouncersNodes(t *testing.T) {
	tor4 := Session{Peer: "tor4", Address: netip.MustParseAddr("10.0.0.1")}
	tor6 := Session{Peer: "tor6", Address: netip.MustParseAddr("fd00::1")}
	node := func(name, rack string, sessions ...Session) NodeBGP {
		return NodeBGP{Name: name, Labels: map[string]string{"rack": rack}, Live: true, Established: sessions}
	}
	rackA := []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}
	web := map[string]string{"app": "web"}
	cases := []struct {
		name   string
		ads    []v1beta1.BGPAdvertisement
		nodes  []NodeBGP
		ip     string
		pool   string
		labels map[string]string
		want   []string
	}{
		{name: "every node with an established session", ads: []v1beta1.BGPAdvertisement{adv("all", v1beta1.BGPAdvertisementSpec{})},
			nodes: []NodeBGP{node("n2", "a", tor4), node("n1", "b", tor4), node("n3", "a")},
			ip:    "192.0.2.10", pool: "web", want: []string{"n1", "n2"}},
		{name: "session of the other family only", ads: []v1beta1.BGPAdvertisement{adv("all", v1beta1.BGPAdvertisementSpec{})},
			nodes: []NodeBGP{node("n1", "a", tor6), node("n2", "a", tor4, tor6)},
			ip:    "192.0.2.10", pool: "web", want: []string{"n2"}},
		{name: "IPv6 address", ads: []v1beta1.BGPAdvertisement{adv("all", v1beta1.BGPAdvertisementSpec{})},
			nodes: []NodeBGP{node("n1", "a", tor6), node("n2", "a", tor4)},
			ip:    "2001:db8::10", pool: "web", want: []string{"n1"}},
		{name: "node selectors", ads: []v1beta1.BGPAdvertisement{adv("a", v1beta1.BGPAdvertisementSpec{
			AdvertisementSelection: v1beta1.AdvertisementSelection{NodeSelectors: rackA}})},
			nodes: []NodeBGP{node("n1", "a", tor4), node("n2", "b", tor4)},
			ip:    "192.0.2.10", pool: "web", want: []string{"n1"}},
		{name: "peers the advertisement goes to", ads: []v1beta1.BGPAdvertisement{adv("to6", v1beta1.BGPAdvertisementSpec{Peers: []string{"tor6"}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "192.0.2.10", pool: "web", want: nil},
		{name: "pool not selected", ads: []v1beta1.BGPAdvertisement{adv("web", v1beta1.BGPAdvertisementSpec{
			AdvertisementSelection: v1beta1.AdvertisementSelection{IPAddressPools: []string{"web"}}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "198.51.100.10", pool: "other", want: nil},
		{name: "service selector", ads: []v1beta1.BGPAdvertisement{adv("web", v1beta1.BGPAdvertisementSpec{
			AdvertisementSelection: v1beta1.AdvertisementSelection{ServiceSelectors: []metav1.LabelSelector{{MatchLabels: web}}}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "192.0.2.10", pool: "web", labels: web, want: []string{"n1"}},
		{name: "service selector not matching", ads: []v1beta1.BGPAdvertisement{adv("web", v1beta1.BGPAdvertisementSpec{
			AdvertisementSelection: v1beta1.AdvertisementSelection{ServiceSelectors: []metav1.LabelSelector{{MatchLabels: web}}}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "192.0.2.10", pool: "web", want: nil},
		{name: "invalid advertisement (unknown community) is not used", ads: []v1beta1.BGPAdvertisement{adv("bad", v1beta1.BGPAdvertisementSpec{Communities: []string{"nonsense"}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "192.0.2.10", pool: "web", want: nil},
		{name: "advertisement naming an unknown peer is not used", ads: []v1beta1.BGPAdvertisement{adv("bad", v1beta1.BGPAdvertisementSpec{Peers: []string{"nope"}})},
			nodes: []NodeBGP{node("n1", "a", tor4)},
			ip:    "192.0.2.10", pool: "web", want: nil},
		{name: "deviation, dead, withheld and capped nodes", ads: []v1beta1.BGPAdvertisement{adv("all", v1beta1.BGPAdvertisementSpec{})},
			nodes: []NodeBGP{
				node("ok", "a", tor4),
				{Name: "dev", Live: true, Established: []Session{tor4}, Deviations: map[netip.Addr]bool{netip.MustParseAddr("192.0.2.10"): true}},
				{Name: "dev-other", Live: true, Established: []Session{tor4}, Deviations: map[netip.Addr]bool{netip.MustParseAddr("192.0.2.11"): true}},
				{Name: "dead", Established: []Session{tor4}},
				{Name: "withheld", Live: true, Withheld: true, Established: []Session{tor4}},
				{Name: "capped", Live: true, DeviationsCapped: true, Established: []Session{tor4}},
			},
			ip: "192.0.2.10", pool: "web", want: []string{"dev-other", "ok"}},
		{name: "two advertisements: union", ads: []v1beta1.BGPAdvertisement{
			adv("a", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{NodeSelectors: rackA}}),
			adv("b", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}}}),
		},
			nodes: []NodeBGP{node("n1", "a", tor4), node("n2", "b", tor4), node("n3", "c", tor4)},
			ip:    "192.0.2.10", pool: "web", want: []string{"n1", "n2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := baseInput()
			in.Advertisements = c.ads
			got := NewAnnouncers(in, c.nodes).Nodes(netip.MustParseAddr(c.ip), c.pool, c.labels)
			if !slices.Equal(got, c.want) {
				t.Errorf("nodes %v, want %v", got, c.want)
			}
		})
	}
}

// TestAnnouncersAgreeWithTranslate: a node that Announcers names is one whose own translation
// advertises the IP to an Established session, and the other way round.
func TestAnnouncersAgreeWithTranslate(t *testing.T) {
	in := baseInput()
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("rack-a", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}}}),
		adv("v6-everywhere", v1beta1.BGPAdvertisementSpec{Peers: []string{"tor6"}}),
	}
	in.Services = []Service{svc("default/web", "web", "192.0.2.10", "2001:db8::10"), svc("default/o", "other", "198.51.100.10")}
	nodes := []NodeBGP{
		{Name: "a1", Labels: map[string]string{"rack": "a"}, Live: true},
		{Name: "b1", Labels: map[string]string{"rack": "b"}, Live: true},
	}
	for i := range nodes {
		node := in
		node.Node = Node{Name: nodes[i].Name, Labels: nodes[i].Labels}
		for _, p := range Translate(node).Desired.Peers {
			nodes[i].Established = append(nodes[i].Established, Session{Peer: p.Name, Address: p.Address})
		}
	}
	derived := NewAnnouncers(in, nodes)
	for _, s := range in.Services {
		for _, ip := range s.IPs {
			var want []NodeAnnouncement
			for _, n := range nodes {
				node := in
				node.Node = Node{Name: n.Name, Labels: n.Labels}
				if an, ok := Translate(node).Announced[ip]; ok {
					want = append(want, NodeAnnouncement{Node: n.Name, Peers: slices.Sorted(slices.Values(an.Peers))})
				}
			}
			got := derived.Announcements(ip, s.Pool, s.Labels)
			if !slices.EqualFunc(got, want, func(x, y NodeAnnouncement) bool { return x.Node == y.Node && slices.Equal(x.Peers, y.Peers) }) {
				t.Errorf("%s: derived %v, translated %v", ip, got, want)
			}
		}
	}
}

// TestAnnouncementsPeers: each node is named with the peers its advertisements go to, over its
// Established sessions of the IP's family, the union when several advertisements select the IP.
func TestAnnouncementsPeers(t *testing.T) {
	in := baseInput()
	in.Peers = append(in.Peers, bgpPeer("tor4b", "10.0.0.2", nil))
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("to-tor4", v1beta1.BGPAdvertisementSpec{Peers: []string{"tor4"}}),
		adv("rack-b-everywhere", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}}}),
	}
	sessions := []Session{
		{Peer: "tor4", Address: netip.MustParseAddr("10.0.0.1")},
		{Peer: "tor4b", Address: netip.MustParseAddr("10.0.0.2")},
		{Peer: "tor6", Address: netip.MustParseAddr("fd00::1")},
	}
	nodes := []NodeBGP{
		{Name: "a1", Labels: map[string]string{"rack": "a"}, Live: true, Established: sessions},
		{Name: "b1", Labels: map[string]string{"rack": "b"}, Live: true, Established: sessions},
	}
	got := NewAnnouncers(in, nodes).Announcements(netip.MustParseAddr("192.0.2.10"), "web", nil)
	want := []NodeAnnouncement{{Node: "a1", Peers: []string{"tor4"}}, {Node: "b1", Peers: []string{"tor4", "tor4b"}}}
	if !slices.EqualFunc(got, want, func(x, y NodeAnnouncement) bool { return x.Node == y.Node && slices.Equal(x.Peers, y.Peers) }) {
		t.Errorf("announcements %v, want %v", got, want)
	}
}
