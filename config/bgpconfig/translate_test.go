package bgpconfig

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

func ptr[T any](v T) *T { return &v }

func meta(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: labels}
}

func bgpPeer(name, addr string, mod func(*v1beta1.BGPPeerSpec)) v1beta1.BGPPeer {
	p := v1beta1.BGPPeer{ObjectMeta: meta(name, nil), Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: addr}}
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

func pool(name string, labels map[string]string, blocks ...string) v1beta1.IPAddressPool {
	p := v1beta1.IPAddressPool{ObjectMeta: meta(name, labels)}
	for _, b := range blocks {
		p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressBlock(b))
	}
	return p
}

func adv(name string, spec v1beta1.BGPAdvertisementSpec) v1beta1.BGPAdvertisement {
	return v1beta1.BGPAdvertisement{ObjectMeta: meta(name, nil), Spec: spec}
}

func svc(name, pool string, ips ...string) Service {
	s := Service{Name: name, Pool: pool}
	for _, ip := range ips {
		s.IPs = append(s.IPs, netip.MustParseAddr(ip))
	}
	return s
}

var pfx = netip.MustParsePrefix

func baseInput() Input {
	return Input{
		Node: Node{Name: "node1", Labels: map[string]string{"rack": "a"},
			Addresses: []netip.Addr{netip.MustParseAddr("fd00::5"), netip.MustParseAddr("10.0.0.5")}},
		Peers: []v1beta1.BGPPeer{
			bgpPeer("tor4", "10.0.0.1", nil),
			bgpPeer("tor6", "fd00::1", nil),
		},
		Pools: []v1beta1.IPAddressPool{
			pool("web", map[string]string{"tier": "web"}, "192.0.2.0/24", "2001:db8::/64"),
			pool("other", nil, "198.51.100.10-198.51.100.20"),
		},
		Communities: []v1beta1.Community{{ObjectMeta: meta("aliases", nil), Spec: v1beta1.CommunitySpec{
			Communities: []v1beta1.CommunityAlias{{Name: "edge", Value: "65000:100"}, {Name: "big", Value: "large:64512:7:8"}},
		}}},
		SecretNamespace: "herald-system",
		Services:        []Service{svc("default/web", "web", "192.0.2.10", "2001:db8::10")},
	}
}

func TestTranslateRoutesAndAttributes(t *testing.T) {
	in := baseInput()
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("plain", v1beta1.BGPAdvertisementSpec{}),
		adv("tagged", v1beta1.BGPAdvertisementSpec{
			AdvertisementSelection: v1beta1.AdvertisementSelection{
				IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "web"}}},
			},
			AggregationLength:   ptr(int32(24)),
			AggregationLengthV6: ptr(int32(64)),
			LocalPref:           ptr(int64(300)),
			Communities:         []string{"edge", "65000:1", "big"},
			Peers:               []string{"tor4"},
		}),
	}
	res := Translate(in)
	if len(res.Problems) != 0 {
		t.Fatalf("problems: %+v", res.Problems)
	}
	want := map[string]map[netip.Prefix]Attributes{
		"tor4": {
			pfx("192.0.2.10/32"): {},
			pfx("192.0.2.0/24"): {
				Communities: []string{"65000:1", "65000:100"}, LargeCommunities: []string{"64512:7:8"}, LocalPref: 300,
			},
		},
		"tor6": {pfx("2001:db8::10/128"): {}},
	}
	if !reflect.DeepEqual(res.Desired.Routes, want) {
		t.Errorf("routes =\n%+v\nwant\n%+v", res.Desired.Routes, want)
	}
	if got := res.Desired.RouterID; got != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("router ID = %v, want the node's IPv4 address", got)
	}
	if got := res.Announced[netip.MustParseAddr("192.0.2.10")]; !reflect.DeepEqual(got, Announced{Peers: []string{"tor4"}, ClusterPolicy: true}) {
		t.Errorf("announced = %+v", got)
	}
	p := res.Desired.Peers["tor4"]
	if p.HoldTime != 90*time.Second || p.KeepaliveTime != 30*time.Second || p.Address != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("tor4 = %+v", p)
	}
}

func TestTranslateSelection(t *testing.T) {
	in := baseInput()
	in.Peers = append(in.Peers, bgpPeer("rack-b", "10.0.0.2", func(s *v1beta1.BGPPeerSpec) {
		s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
	}))
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("web-only", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
			IPAddressPools:   []string{"web"},
			ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"bgp": "yes"}}},
		}}),
		adv("other-rack", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}},
		}}),
	}
	labelled := svc("default/a", "web", "192.0.2.1")
	labelled.Labels = map[string]string{"bgp": "yes"}
	local := svc("default/local", "web", "192.0.2.2")
	local.Labels = map[string]string{"bgp": "yes"}
	local.LocalTrafficOnly = true
	localReady := svc("default/local-ready", "web", "192.0.2.3")
	localReady.Labels = map[string]string{"bgp": "yes"}
	localReady.LocalTrafficOnly, localReady.HasLocalEndpoints = true, true
	in.Services = []Service{labelled, svc("default/unlabelled", "web", "192.0.2.4"), local, localReady, svc("default/other", "other", "198.51.100.11")}

	res := Translate(in)
	if _, ok := res.Desired.Peers["rack-b"]; ok {
		t.Error("a peer selecting other nodes is used")
	}
	want := map[string]map[netip.Prefix]Attributes{"tor4": {pfx("192.0.2.1/32"): {}, pfx("192.0.2.3/32"): {}}}
	if !reflect.DeepEqual(res.Desired.Routes, want) {
		t.Errorf("routes = %+v, want %+v", res.Desired.Routes, want)
	}
	// A Local Service's IP is listed in the node's status; a Cluster one is derived by readers.
	if an := res.Announced[netip.MustParseAddr("192.0.2.3")]; an.ClusterPolicy {
		t.Error("the IP of an externalTrafficPolicy: Local Service is marked ClusterPolicy")
	}
	if an := res.Announced[netip.MustParseAddr("192.0.2.1")]; !an.ClusterPolicy {
		t.Error("the IP of an externalTrafficPolicy: Cluster Service is not marked ClusterPolicy")
	}
}

func TestTranslateBadConfigIsReportedAndIsolated(t *testing.T) {
	in := baseInput()
	in.Peers = append(in.Peers,
		bgpPeer("bad-asn", "10.0.0.2", func(s *v1beta1.BGPPeerSpec) { s.PeerASN = 1 << 33 }),
		bgpPeer("no-secret", "10.0.0.3", func(s *v1beta1.BGPPeerSpec) {
			s.PasswordSecret = &v1beta1.SecretReference{Name: "missing"}
		}),
		bgpPeer("with-secret", "10.0.0.4", func(s *v1beta1.BGPPeerSpec) {
			s.PasswordSecret = &v1beta1.SecretReference{Name: "md5"}
		}),
		bgpPeer("no-bfd", "10.0.0.5", func(s *v1beta1.BGPPeerSpec) { s.BFDProfile = "nope" }),
		bgpPeer("dup", "10.0.0.1", nil),
	)
	in.Passwords = map[string]string{"herald-system/md5": "s3cret"}
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("unknown-pool", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{IPAddressPools: []string{"nope"}}}),
		adv("bad-community", v1beta1.BGPAdvertisementSpec{Communities: []string{"65536:1"}}),
		adv("too-wide", v1beta1.BGPAdvertisementSpec{AggregationLength: ptr(int32(16))}),
		adv("good", v1beta1.BGPAdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{IPAddressPools: []string{"web"}}}),
	}
	res := Translate(in)

	reasons := map[string]string{}
	for _, p := range res.Problems {
		if p.Condition != config.ConditionValid {
			t.Errorf("unexpected %+v", p)
		}
		reasons[p.Kind+"/"+p.Name] = p.Reason
		if p.Message == "" {
			t.Errorf("problem without a message: %+v", p)
		}
	}
	wantReasons := map[string]string{
		"BGPPeer/bad-asn":                ReasonInvalidASN,
		"BGPPeer/no-secret":              ReasonSecretNotFound,
		"BGPPeer/no-bfd":                 ReasonBFDProfileMissing,
		"BGPPeer/tor4":                   ReasonDuplicatePeer, // "dup" sorts first and keeps the address
		"BGPAdvertisement/unknown-pool":  ReasonUnknownPool,
		"BGPAdvertisement/bad-community": ReasonInvalidCommunity,
		"BGPAdvertisement/too-wide":      ReasonAggregation,
	}
	if !reflect.DeepEqual(reasons, wantReasons) {
		t.Errorf("problems = %v\nwant %v", reasons, wantReasons)
	}
	var peers []string
	for name := range res.Desired.Peers {
		peers = append(peers, name)
	}
	if len(peers) != 3 || res.Desired.Peers["with-secret"].Password != "s3cret" {
		t.Errorf("the valid peers must keep working: %v %+v", peers, res.Desired.Peers["with-secret"])
	}
	if _, ok := res.Desired.Routes["with-secret"][pfx("192.0.2.10/32")]; !ok {
		t.Errorf("the valid advertisement must keep working: %+v", res.Desired.Routes)
	}
}

func TestTranslateBFDAndRouterID(t *testing.T) {
	in := baseInput()
	in.BFDProfiles = []v1beta1.BFDProfile{
		{ObjectMeta: meta("fast", nil), Spec: v1beta1.BFDProfileSpec{ReceiveInterval: ptr(int32(100)), TransmitInterval: ptr(int32(150)), PassiveMode: true, MinimumTTL: ptr(int32(250)), EchoMode: true}},
		{ObjectMeta: meta("default", nil)},
	}
	in.Peers = []v1beta1.BGPPeer{
		bgpPeer("a", "10.0.0.1", func(s *v1beta1.BGPPeerSpec) { s.BFDProfile = "fast"; s.RouterID = "1.1.1.1" }),
		bgpPeer("b", "10.0.0.2", func(s *v1beta1.BGPPeerSpec) { s.BFDProfile = "default"; s.RouterID = "2.2.2.2" }),
		bgpPeer("c", "10.0.0.3", func(s *v1beta1.BGPPeerSpec) { s.DynamicASN = "internal"; s.PeerASN = 0 }),
		bgpPeer("d", "10.0.0.4", func(s *v1beta1.BGPPeerSpec) { s.DynamicASN = "external"; s.PeerASN = 0 }),
	}
	res := Translate(in)
	if got := *res.Desired.Peers["a"].BFD; got != (BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 150 * time.Millisecond, DetectMultiplier: 3, Passive: true, MinimumTTL: 250}) {
		t.Errorf("fast BFD = %+v", got)
	}
	if got := *res.Desired.Peers["b"].BFD; got != (BFD{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}) {
		t.Errorf("default BFD = %+v", got)
	}
	if res.Desired.Peers["c"].ASN != 64512 {
		t.Errorf("dynamicASN internal: ASN = %d, want myASN", res.Desired.Peers["c"].ASN)
	}
	if d, ok := res.Desired.Peers["d"]; !ok || d.ASN != 0 {
		t.Errorf("dynamicASN external: %+v, want ASN 0 (any)", d)
	}
	if res.Desired.RouterID != netip.MustParseAddr("1.1.1.1") {
		t.Errorf("router ID = %v", res.Desired.RouterID)
	}
	var got []string
	for _, p := range res.Problems {
		got = append(got, p.Kind+"/"+p.Name+"/"+p.Condition+"/"+p.Reason)
	}
	want := []string{
		"BFDProfile/fast/" + config.ConditionNotSupported + "/" + ReasonNotSupported,
		"BGPPeer/b/" + config.ConditionNotSupported + "/" + ReasonRouterIDConflict,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems = %v, want %v", got, want)
	}

	// An IPv6-only node without routerID gets a stable one from its name.
	in = baseInput()
	in.Node.Addresses = []netip.Addr{netip.MustParseAddr("fd00::5")}
	a, b := Translate(in).Desired.RouterID, Translate(in).Desired.RouterID
	if !a.Is4() || a != b || a.IsUnspecified() {
		t.Errorf("derived router ID %v / %v", a, b)
	}
}

func TestTranslateLocalPrefConflict(t *testing.T) {
	in := baseInput()
	in.Advertisements = []v1beta1.BGPAdvertisement{
		adv("a", v1beta1.BGPAdvertisementSpec{LocalPref: ptr(int64(100)), Communities: []string{"1:1"}}),
		adv("b", v1beta1.BGPAdvertisementSpec{LocalPref: ptr(int64(200)), Communities: []string{"2:2"}}),
	}
	res := Translate(in)
	got := res.Desired.Routes["tor4"][pfx("192.0.2.10/32")]
	if !reflect.DeepEqual(got, Attributes{Communities: []string{"1:1", "2:2"}, LocalPref: 200}) {
		t.Errorf("merged attributes = %+v", got)
	}
	if len(res.Problems) != 1 || res.Problems[0].Reason != ReasonLocalPrefConflict || !strings.Contains(res.Problems[0].Message, "BGPAdvertisement a") {
		t.Errorf("problems = %+v", res.Problems)
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]community{
		"65000:1":              {text: "65000:1"},
		"0:65535":              {text: "0:65535"},
		"large:4294967295:0:1": {large: true, text: "4294967295:0:1"},
		"no-export":            {text: "65535:65281"},
	} {
		got, err := parseCommunity(in)
		if err != nil || got != want {
			t.Errorf("parseCommunity(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"65536:1", "1:2:3", "large:1:2", "large:4294967296:1:1", "abc", ""} {
		if _, err := parseCommunity(in); err == nil {
			t.Errorf("parseCommunity(%q) accepted", in)
		}
	}
}

func TestValidateIgnoresNodeSelection(t *testing.T) {
	in := baseInput()
	in.Node = Node{}
	in.Peers = []v1beta1.BGPPeer{
		bgpPeer("rack-a", "10.0.0.1", func(s *v1beta1.BGPPeerSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}
			s.RouterID = "1.1.1.1"
		}),
		// Same address and another router ID, but for other nodes: fine.
		bgpPeer("rack-b", "10.0.0.1", func(s *v1beta1.BGPPeerSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
			s.RouterID = "2.2.2.2"
		}),
		bgpPeer("rack-c", "10.0.0.3", func(s *v1beta1.BGPPeerSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "c"}}}
			s.MyASN = 0
		}),
	}
	in.Advertisements = []v1beta1.BGPAdvertisement{adv("elsewhere", v1beta1.BGPAdvertisementSpec{
		AdvertisementSelection: v1beta1.AdvertisementSelection{
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "z"}}},
		},
		Communities: []string{"bogus"},
	})}
	var got []string
	for _, p := range Validate(in) {
		got = append(got, p.Kind+"/"+p.Name+"/"+p.Reason)
	}
	want := []string{"BGPAdvertisement/elsewhere/" + ReasonInvalidCommunity, "BGPPeer/rack-c/" + ReasonInvalidASN}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Validate = %v, want %v", got, want)
	}
}

// TestCheckAggregationReadsBlocksAsThePoolsDo: the blocks are read by addresspool.ParseBlock, as
// the allocator gives addresses out: an IPv4-in-IPv6 CIDR is the IPv4 CIDR it holds (it was read
// as an IPv6 /120 and refused against the IPv6 length), and a malformed block is named.
func TestCheckAggregationReadsBlocksAsThePoolsDo(t *testing.T) {
	if err := checkAggregation(pool("mapped", nil, "::ffff:192.0.2.0/120"), 24, 64); err != nil {
		t.Errorf("IPv4-in-IPv6 /120 with aggregation /24: %v", err)
	}
	if err := checkAggregation(pool("mapped", nil, "::ffff:192.0.2.0/120"), 16, 128); err == nil || !strings.Contains(err.Error(), "192.0.2.0/24") {
		t.Errorf("IPv4-in-IPv6 /120 with aggregation /16: %v", err)
	}
	if err := checkAggregation(pool("bad", nil, "192.0.2.0/24", "192.0.2.9-192.0.2.1"), 32, 128); err == nil || !strings.Contains(err.Error(), "spec.addresses[1]") {
		t.Errorf("reversed range: %v", err)
	}
}
