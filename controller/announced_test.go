package controller

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type speakerOpt func(*v1beta1.SpeakerStatus)

// speakerStatus is a node's SpeakerStatus written `ago` before now, by a speaker started an hour
// earlier.
func speakerStatus(name string, ago time.Duration, opts ...speakerOpt) *v1beta1.SpeakerStatus {
	st := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))}}
	st.Status.LastUpdate = &metav1.Time{Time: now.Add(-ago)}
	for _, o := range opts {
		o(st)
	}
	slices.SortFunc(st.Status.Announcements, compareAnnouncements)
	if st.Status.AnnouncedIPs == 0 {
		st.Status.AnnouncedIPs = int32(len(st.Status.Announcements))
	}
	return st
}

func announces(proto v1beta1.AnnouncementProtocol, ips ...string) speakerOpt {
	return func(st *v1beta1.SpeakerStatus) {
		for _, ip := range ips {
			st.Status.Announcements = append(st.Status.Announcements, v1beta1.Announcement{IP: ip, Protocol: proto})
		}
	}
}

func session(peer, state string) speakerOpt {
	return func(st *v1beta1.SpeakerStatus) {
		st.Status.BGPSessions = append(st.Status.BGPSessions, v1beta1.BGPSessionStatus{Peer: peer, State: state})
	}
}

// derivedListing: the status lists its deviations only (bgpListing: Deviations), with an
// Established session with router, and deviations.
func derivedListing(deviations ...string) speakerOpt {
	return func(st *v1beta1.SpeakerStatus) {
		st.Status.BGPListing = v1beta1.BGPListingDeviations
		st.Status.BGPSessions = append(st.Status.BGPSessions, v1beta1.BGPSessionStatus{Peer: "router", PeerAddress: "10.0.0.254", State: bgpEstablished})
		for _, ip := range deviations {
			st.Status.BGPDeviations = append(st.Status.BGPDeviations, v1beta1.BGPDeviation{IP: ip, Reason: "refused"})
		}
		st.Status.BGPDeviationsTotal = int32(len(deviations))
	}
}

// cappedAt: the speaker announces total IPs and lists only those given.
func cappedAt(total int32) speakerOpt {
	return func(st *v1beta1.SpeakerStatus) { st.Status.AnnouncedIPs = total }
}

func createdAgo(d time.Duration) speakerOpt {
	return func(st *v1beta1.SpeakerStatus) { st.CreationTimestamp = metav1.NewTime(now.Add(-d)) }
}

func lbService(ips []string, mods ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster},
	}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	for _, m := range mods {
		m(svc)
	}
	return svc
}

func localPolicy(svc *corev1.Service) {
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func withCondition(status metav1.ConditionStatus, reason, message string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Status.Conditions = append(svc.Status.Conditions, metav1.Condition{Type: config.ConditionAnnounced,
			Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))})
	}
}

// testConfig: pool l2pool and v6 are announced over L2, bgppool over BGP (to peer router only),
// picky over L2 for Services labelled tier=gold; nopool by nothing (its only advertisement names
// a pool that does not exist, and one being deleted names it too).
func testConfig() *announceConfig {
	prefixes := map[string]netip.Prefix{
		"l2pool": netip.MustParsePrefix("192.0.2.0/24"), "v6": netip.MustParsePrefix("fd00::/64"),
		"bgppool": netip.MustParsePrefix("198.51.100.0/24"), "nopool": netip.MustParsePrefix("203.0.113.0/24"),
		"picky": netip.MustParsePrefix("100.64.0.0/24"),
	}
	deleted := metav1.NewTime(now)
	var pools []v1beta1.IPAddressPool
	for name, p := range prefixes {
		pools = append(pools, v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{v1beta1.AddressBlock(p.String())}}})
	}
	// retired is being deleted: it gives out nothing more, but the Services holding its addresses
	// keep them, and its advertisements keep announcing them.
	pools = append(pools, v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "retired", DeletionTimestamp: &deleted},
		Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"192.0.3.0/24"}}})
	sel := func(pools ...string) v1beta1.AdvertisementSelection {
		return v1beta1.AdvertisementSelection{IPAddressPools: pools}
	}
	l2 := []v1beta1.L2Advertisement{
		{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{AdvertisementSelection: sel("l2pool", "v6", "retired")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: v1beta1.L2AdvertisementSpec{AdvertisementSelection: sel("nopool", "gone")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "leaving", DeletionTimestamp: &deleted}, Spec: v1beta1.L2AdvertisementSpec{AdvertisementSelection: sel("nopool")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "picky"}, Spec: v1beta1.L2AdvertisementSpec{AdvertisementSelection: v1beta1.AdvertisementSelection{
			IPAddressPools: []string{"picky"}, ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "gold"}}}}}},
	}
	bgp := []v1beta1.BGPAdvertisement{
		{ObjectMeta: metav1.ObjectMeta{Name: "bgp"}, Spec: v1beta1.BGPAdvertisementSpec{AdvertisementSelection: sel("bgppool"), Peers: []string{"router"}}},
	}
	peers := []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "router"},
		Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: "10.0.0.254"}}}
	return newAnnounceConfig(pools, l2, bgp, peers, nil)
}

// unannouncedFor is the history of a Service found unannounced d ago.
func unannouncedFor(svc *corev1.Service, d time.Duration) announcedHistory {
	return announcedHistory{ips: strings.Join(ingressIPs(svc), ","), unannouncedSince: now.Add(-d)}
}

func TestAnnouncedCondition(t *testing.T) {
	cfg := testConfig()
	const long = time.Minute // well past the grace period
	nodes := func(n int, opts ...speakerOpt) []*v1beta1.SpeakerStatus {
		var out []*v1beta1.SpeakerStatus
		for i := n; i >= 1; i-- { // reverse order: messages must not depend on it
			out = append(out, speakerStatus(fmt.Sprintf("node%02d", i), 10*time.Second, opts...))
		}
		return out
	}
	gold := func(svc *corev1.Service) { svc.Labels["tier"] = "gold" }
	cases := []struct {
		name     string
		svc      *corev1.Service
		speakers []*v1beta1.SpeakerStatus
		// unannounced: how long ago the IPs were found unannounced (0: never).
		unannounced time.Duration
		status      metav1.ConditionStatus // "": nothing to write
		reason      string
		message     string   // exact, when set
		contains    []string // substrings of the message
		recheck     time.Duration
	}{
		{name: "L2 from one node", svc: lbService([]string{"192.0.2.10"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", time.Second), speakerStatus("node2", 50*time.Second, announces(v1beta1.ProtocolL2, "192.0.2.10"))},
			status:   metav1.ConditionTrue, reason: config.ReasonAnnounced, message: "192.0.2.10: L2 from node2"},
		{name: "BGP from every node, in name order", svc: lbService([]string{"198.51.100.7"}),
			speakers: []*v1beta1.SpeakerStatus{
				speakerStatus("node3", 0, announces(v1beta1.ProtocolBGP, "198.51.100.7")),
				speakerStatus("node1", 0, announces(v1beta1.ProtocolBGP, "198.51.100.1", "198.51.100.7", "198.51.100.9")),
				speakerStatus("node2", 0, announces(v1beta1.ProtocolBGP, "198.51.100.7")),
			},
			status: metav1.ConditionTrue, reason: config.ReasonAnnounced, message: "198.51.100.7: BGP from node1, node2, node3"},
		{name: "dual-stack, one IP by both protocols", svc: lbService([]string{"192.0.2.11", "fd00::11"}),
			speakers: []*v1beta1.SpeakerStatus{
				speakerStatus("node2", 0, announces(v1beta1.ProtocolBGP, "192.0.2.11"), announces(v1beta1.ProtocolL2, "fd00::11")),
				speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.11"), announces(v1beta1.ProtocolBGP, "192.0.2.11")),
			},
			status: metav1.ConditionTrue, reason: config.ReasonAnnounced, message: "192.0.2.11: L2 from node1, BGP from node1, node2; fd00::11: L2 from node2"},
		{name: "at most ten nodes named", svc: lbService([]string{"198.51.100.8"}), speakers: nodes(12, announces(v1beta1.ProtocolBGP, "198.51.100.8")),
			status: metav1.ConditionTrue, reason: config.ReasonAnnounced,
			message: "198.51.100.8: BGP from node01, node02, node03, node04, node05, node06, node07, node08, node09, node10 and 2 more nodes"},
		{name: "a speaker silent for more than 3 minutes does not count", svc: lbService([]string{"192.0.2.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 4*time.Minute, announces(v1beta1.ProtocolL2, "192.0.2.10")), speakerStatus("node2", 0)},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode,
			message: "192.0.2.10: selected by L2Advertisement l2, but no node is selected, alive and usable: check the advertisements' nodeSelectors, " +
				"the node.kubernetes.io/exclude-from-external-load-balancers label on the nodes, and the speaker pods"},
		{name: "a speaker written 2 minutes ago still counts", svc: lbService([]string{"192.0.2.10"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 2*time.Minute, announces(v1beta1.ProtocolL2, "192.0.2.10"))},
			status:   metav1.ConditionTrue, reason: config.ReasonAnnounced, message: "192.0.2.10: L2 from node1"},
		{name: "no speaker alive", svc: lbService([]string{"192.0.2.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 10*time.Minute, announces(v1beta1.ProtocolL2, "192.0.2.10"))},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode,
			message: "192.0.2.10: no speaker is alive (no speaker Lease herald-speaker-<node> in Herald's namespace holds, nor was a SpeakerStatus written in the last 3m0s): check the speaker pods, one per node"},
		{name: "not listed while a live speaker's list is capped: unknown", svc: lbService([]string{"192.0.2.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.1", "192.0.2.2"), cappedAt(3)), speakerStatus("node2", 0)},
			unannounced: time.Hour},
		{name: "capped: every unlisted IP is unknown", svc: lbService([]string{"192.0.2.10", "203.0.113.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.1"), cappedAt(2))},
			unannounced: time.Hour},
		{name: "the cap of a silent speaker does not count", svc: lbService([]string{"192.0.2.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", time.Hour, announces(v1beta1.ProtocolL2, "192.0.2.1"), cappedAt(3)), speakerStatus("node2", 0)},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode},
		{name: "announced IPs of a capped speaker are known", svc: lbService([]string{"192.0.2.2"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.1", "192.0.2.2"), cappedAt(3))},
			status:   metav1.ConditionTrue, reason: config.ReasonAnnounced, message: "192.0.2.2: L2 from node1"},
		{name: "first seen unannounced now: wait the whole grace period", svc: lbService([]string{"192.0.2.10"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, recheck: announcedGrace},
		{name: "within the grace period", svc: lbService([]string{"192.0.2.10"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: 5 * time.Second, recheck: 10 * time.Second},
		{name: "the grace runs again from a new speaker's first status", svc: lbService([]string{"192.0.2.10"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0), speakerStatus("node2", 0, createdAgo(3*time.Second))},
			unannounced: time.Hour, recheck: 12 * time.Second},
		{name: "no SpeakerStatus at all: the speakers never ran, nothing to say", svc: lbService([]string{"192.0.2.10"}), unannounced: time.Hour},
		{name: "NoAdvertisement: nothing selects the pool (an invalid one and one being deleted do not count)", svc: lbService([]string{"203.0.113.10"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoAdvertisement,
			message: "203.0.113.10: no L2Advertisement or BGPAdvertisement selects pool nopool for this Service: create one, or check the " +
				"ipAddressPools, ipAddressPoolSelectors and serviceSelectors of the existing ones and their Valid condition"},
		{name: "NoAdvertisement: the advertisement's serviceSelectors leave the Service out", svc: lbService([]string{"100.64.0.1"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoAdvertisement,
			contains: []string{"selects pool picky for this Service"}},
		{name: "with the label the serviceSelectors ask for, it is selected", svc: lbService([]string{"100.64.0.1"}, gold),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode,
			contains: []string{"selected by L2Advertisement picky"}},
		{name: "a pool being deleted still owns what its Services hold: its advertisements count", svc: lbService([]string{"192.0.3.7"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode,
			contains: []string{"192.0.3.7: selected by L2Advertisement l2, but no node"}},
		{name: "NoAdvertisement: no pool holds the IP", svc: lbService([]string{"10.9.9.9"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoAdvertisement,
			message: "10.9.9.9: no IPAddressPool holds it, so no advertisement covers it: see the herald.io/Allocated condition"},
		{name: "NoBGPSession: only BGP selects it, no session up", svc: lbService([]string{"198.51.100.7"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, session("router", "Active")), speakerStatus("node2", 0, session("router", "Connect"))},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoBGPSession,
			message: "198.51.100.7: selected only by BGPAdvertisement bgp, and no node has an Established BGP session with the peers it goes to: " +
				"check the sessions (heraldctl status; bgpSessions and their lastError in kubectl get speakerstatuses -o yaml) and the BGPPeers"},
		{name: "NoBGPSession: established only with a peer the advertisement does not go to", svc: lbService([]string{"198.51.100.7"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, session("other", bgpEstablished))},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoBGPSession},
		{name: "NoBGPSession: the established session is on a silent speaker", svc: lbService([]string{"198.51.100.7"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", time.Hour, session("router", bgpEstablished)), speakerStatus("node2", 0)},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoBGPSession},
		{name: "a session is up but nobody announces: NoEligibleNode", svc: lbService([]string{"198.51.100.7"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, session("router", bgpEstablished))},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode, contains: []string{"selected by BGPAdvertisement bgp, but no node"}},
		{name: "NoLocalEndpoints", svc: lbService([]string{"192.0.2.10"}, localPolicy),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoLocalEndpoints,
			message: "192.0.2.10: externalTrafficPolicy is Local, so only nodes with a ready endpoint of the Service announce it, and none does: " +
				"check the Service's endpoints (kubectl -n shop get endpointslices -l kubernetes.io/service-name=web) and that its pods are ready on nodes that L2Advertisement l2 selects"},
		{name: "NoBGPSession comes before NoLocalEndpoints", svc: lbService([]string{"198.51.100.7"}, localPolicy),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoBGPSession},
		{name: "NoAdvertisement comes first, and each IP says why", svc: lbService([]string{"192.0.2.12", "203.0.113.12"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoAdvertisement,
			contains: []string{"192.0.2.12: selected by L2Advertisement l2, but no node", "; 203.0.113.12: no L2Advertisement or BGPAdvertisement selects pool nopool"}},
		{name: "IPs with one explanation share it", svc: lbService([]string{"192.0.2.12", "fd00::12"}),
			speakers: []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}, unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode,
			contains: []string{"192.0.2.12, fd00::12: selected by L2Advertisement l2, but"}},
		{name: "one IP announced, the other not: False about the other", svc: lbService([]string{"192.0.2.13", "fd00::13"}),
			speakers:    []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.13"))},
			unannounced: long, status: metav1.ConditionFalse, reason: config.ReasonNoEligibleNode, contains: []string{"fd00::13: selected by"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h announcedHistory
			if tc.unannounced > 0 {
				h = unannouncedFor(tc.svc, tc.unannounced)
			}
			cond, recheck, next := announcedCondition(tc.svc, tc.speakers, cfg, h, now)
			if tc.status == metav1.ConditionTrue {
				// A first True waits for the other nodes' statuses (TestAnnouncedFirstTrueWaits).
				if cond != nil || recheck <= 0 || recheck > 11*time.Second || next.message == "" {
					t.Fatalf("first look: %+v, recheck %v, history %+v; want a short wait", cond, recheck, next)
				}
				cond, recheck, next = announcedCondition(tc.svc, tc.speakers, cfg, next, now.Add(recheck))
			}
			if recheck != tc.recheck {
				t.Errorf("recheck %v, want %v", recheck, tc.recheck)
			}
			if tc.status == "" {
				if cond != nil {
					t.Fatalf("got %+v, want nothing written", cond)
				}
				if !next.pending() {
					t.Errorf("history %+v: the Service is not remembered as waiting", next)
				}
				return
			}
			if cond == nil {
				t.Fatalf("nothing to write, want %s %s", tc.status, tc.reason)
			}
			if cond.Type != config.ConditionAnnounced || cond.Status != tc.status || cond.Reason != tc.reason {
				t.Errorf("got %s %s %s, want %s %s", cond.Type, cond.Status, cond.Reason, tc.status, tc.reason)
			}
			if tc.message != "" && cond.Message != tc.message {
				t.Errorf("message\n %q\nwant\n %q", cond.Message, tc.message)
			}
			for _, s := range tc.contains {
				if !strings.Contains(cond.Message, s) {
					t.Errorf("message %q does not say %q", cond.Message, s)
				}
			}
			if next.pending() != (tc.status == metav1.ConditionFalse) {
				t.Errorf("history %+v after %s", next, tc.status)
			}
		})
	}
}

// TestAnnouncedMessagesAreStable: later evaluations of the same state give the same message, so a
// resync or a speaker's periodic rewrite never rewrites the condition.
func TestAnnouncedMessagesAreStable(t *testing.T) {
	cfg := testConfig()
	at := func(later time.Duration, svc *corev1.Service) *metav1.Condition {
		speakers := []*v1beta1.SpeakerStatus{
			// Rewritten at other moments each time (a few seconds before the evaluation).
			speakerStatus("node1", -later+later%time.Minute, announces(v1beta1.ProtocolL2, "192.0.2.10")),
			speakerStatus("node2", -later, session("router", "Active")),
		}
		cond, _, _ := announcedCondition(svc, speakers, cfg, unannouncedFor(svc, time.Minute+later), now.Add(later))
		return cond
	}
	written := withCondition(metav1.ConditionTrue, config.ReasonAnnounced, "192.0.2.10: L2 from node1")
	for _, svc := range []*corev1.Service{lbService([]string{"192.0.2.10"}, written), lbService([]string{"198.51.100.7"}), lbService([]string{"192.0.2.12"}, localPolicy)} {
		first := at(0, svc)
		for _, later := range []time.Duration{time.Second, 47 * time.Second, 2 * time.Hour} {
			if got := at(later, svc); first == nil || got == nil || *got != *first {
				t.Errorf("%v: %v later %+v, first %+v", ingressIPs(svc), later, got, first)
			}
		}
	}
}

// TestAnnouncedNodesChangeSettles: a True condition naming other nodes is rewritten only once the
// new set has held for announcedSettle; a False one turns True at once.
func TestAnnouncedNodesChangeSettles(t *testing.T) {
	cfg := testConfig()
	speakers := []*v1beta1.SpeakerStatus{speakerStatus("node2", 0, announces(v1beta1.ProtocolL2, "192.0.2.10"))}
	svc := lbService([]string{"192.0.2.10"}, withCondition(metav1.ConditionTrue, config.ReasonAnnounced, "192.0.2.10: L2 from node1"))
	cond, recheck, h := announcedCondition(svc, speakers, cfg, announcedHistory{}, now)
	if cond != nil || recheck != announcedSettle || h.message != "192.0.2.10: L2 from node2" {
		t.Fatalf("new node: %+v, recheck %v, history %+v; want nothing yet, recheck after %v", cond, recheck, h, announcedSettle)
	}
	if cond, recheck, _ := announcedCondition(svc, speakers, cfg, h, now.Add(announcedSettle/2)); cond != nil || recheck != announcedSettle/2 {
		t.Fatalf("half-way: %+v, recheck %v", cond, recheck)
	}
	cond, _, h = announcedCondition(svc, speakers, cfg, h, now.Add(announcedSettle))
	if cond == nil || cond.Message != "192.0.2.10: L2 from node2" {
		t.Fatalf("settled: %+v, history %+v", cond, h)
	}
	// Asked again before the write lands (the writer decides again after waiting its turn): the
	// answer stands, the wait does not start over.
	if again, _, _ := announcedCondition(svc, speakers, cfg, h, now.Add(announcedSettle+time.Second)); again == nil || *again != *cond {
		t.Fatalf("asked again before the write: %+v, want %+v", again, cond)
	}
	// Once written, there is nothing left to remember.
	written := svc.DeepCopy()
	written.Status.Conditions[0].Message = cond.Message
	if _, _, h := announcedCondition(written, speakers, cfg, h, now.Add(announcedSettle+2*time.Second)); h.message != "" || h.pending() {
		t.Fatalf("after the write: history %+v", h)
	}
	// The old node is back before the period is over: nothing to write, nothing to remember.
	_, _, h = announcedCondition(svc, speakers, cfg, announcedHistory{}, now)
	back := []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "192.0.2.10"))}
	if cond, recheck, h := announcedCondition(svc, back, cfg, h, now.Add(time.Second)); cond == nil || cond.Message != "192.0.2.10: L2 from node1" || recheck != 0 || h.message != "" {
		t.Fatalf("old node back: %+v, recheck %v, history %+v", cond, recheck, h)
	}
	notAnnounced := lbService([]string{"192.0.2.10"}, withCondition(metav1.ConditionFalse, config.ReasonNoEligibleNode, "…"))
	cond, recheck, h = announcedCondition(notAnnounced, speakers, cfg, announcedHistory{}, now)
	if cond != nil || recheck != 1500*time.Millisecond {
		t.Fatalf("False to True: %+v, recheck %v; want the short wait of a first True", cond, recheck)
	}
	if cond, _, _ := announcedCondition(notAnnounced, speakers, cfg, h, now.Add(recheck)); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Fatalf("False to True: %+v after the wait", cond)
	}
}

// TestAnnouncedFirstTrueWaits: a first True waits until every node's status can have told of the
// announcement (their writes are spaced by the length of their lists), so that it names every node
// announcing, and is written once.
func TestAnnouncedFirstTrueWaits(t *testing.T) {
	cfg := testConfig()
	svc := lbService([]string{"198.51.100.7"})
	one := []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolBGP, "198.51.100.7")), speakerStatus("node2", 0)}
	cond, recheck, h := announcedCondition(svc, one, cfg, announcedHistory{}, now)
	if cond != nil || recheck != 1500*time.Millisecond {
		t.Fatalf("first node: %+v, recheck %v; want 1.5 s (0.5 s between a small list's writes, and a second)", cond, recheck)
	}
	both := []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolBGP, "198.51.100.7")),
		speakerStatus("node2", 0, announces(v1beta1.ProtocolBGP, "198.51.100.7"))}
	cond, recheck, h = announcedCondition(svc, both, cfg, h, now.Add(time.Second))
	if cond != nil || recheck != 1500*time.Millisecond {
		t.Fatalf("second node: %+v, recheck %v; want the wait to start over", cond, recheck)
	}
	cond, _, h = announcedCondition(svc, both, cfg, h, now.Add(2500*time.Millisecond))
	if cond == nil || cond.Message != "198.51.100.7: BGP from node1, node2" {
		t.Fatalf("settled: %+v, history %+v", cond, h)
	}
	if again, _, _ := announcedCondition(svc, both, cfg, h, now.Add(4*time.Second)); again == nil || *again != *cond {
		t.Fatalf("asked again before the write: %+v, want %+v", again, cond)
	}
	// A node listing 2,000 IPs writes every 10 s: its news may come that much later.
	var many []string
	for i := range 2000 {
		many = append(many, fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250))
	}
	busy := []*v1beta1.SpeakerStatus{speakerStatus("node1", 0, announces(v1beta1.ProtocolBGP, many...)), speakerStatus("node2", 0)}
	if _, recheck, _ := announcedCondition(svc, busy, cfg, announcedHistory{}, now); recheck != 11*time.Second {
		t.Fatalf("busy node: recheck %v, want 11 s", recheck)
	}
}

// TestAnnouncedGraceRestartsWithNewIPs: the grace period runs from the Service's current IPs.
func TestAnnouncedGraceRestartsWithNewIPs(t *testing.T) {
	cfg := testConfig()
	speakers := []*v1beta1.SpeakerStatus{speakerStatus("node1", 0)}
	old := lbService([]string{"192.0.2.10"})
	moved := lbService([]string{"192.0.2.20"})
	cond, recheck, h := announcedCondition(moved, speakers, cfg, unannouncedFor(old, time.Hour), now)
	if cond != nil || recheck != announcedGrace || h.ips != "192.0.2.20" || !h.unannouncedSince.Equal(now) {
		t.Fatalf("IPs changed: %+v, recheck %v, history %+v; want the grace period to start over", cond, recheck, h)
	}
	if cond, _, _ := announcedCondition(moved, speakers, cfg, h, now.Add(announcedGrace)); cond == nil || cond.Status != metav1.ConditionFalse {
		t.Fatalf("after the grace period: %+v, want False", cond)
	}
}

func TestSpeakerChanges(t *testing.T) {
	base := speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.1", "10.0.0.3"), announces(v1beta1.ProtocolBGP, "10.0.0.3"), session("r", bgpEstablished))
	cases := []struct {
		name   string
		old    *v1beta1.SpeakerStatus
		cur    *v1beta1.SpeakerStatus
		ips    []string
		others bool
	}{
		{"rewritten, nothing changed", base, speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.1", "10.0.0.3"), announces(v1beta1.ProtocolBGP, "10.0.0.3"), session("r", bgpEstablished)), nil, false},
		{"one added, one protocol dropped", base, speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.1", "10.0.0.2", "10.0.0.3"), session("r", bgpEstablished)),
			[]string{"10.0.0.2", "10.0.0.3"}, false},
		{"one removed", base, speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.3"), announces(v1beta1.ProtocolBGP, "10.0.0.3"), session("r", bgpEstablished)),
			[]string{"10.0.0.1"}, false},
		{"session down", base, speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.1", "10.0.0.3"), announces(v1beta1.ProtocolBGP, "10.0.0.3"), session("r", "Active")), nil, true},
		{"capped now", base, speakerStatus("node1", 0, announces(v1beta1.ProtocolL2, "10.0.0.1", "10.0.0.3"), announces(v1beta1.ProtocolBGP, "10.0.0.3"), session("r", bgpEstablished), cappedAt(4)), nil, true},
		{"new", nil, base, []string{"10.0.0.1", "10.0.0.3", "10.0.0.3"}, true},
		{"deleted", base, nil, []string{"10.0.0.1", "10.0.0.3", "10.0.0.3"}, true},
		{"back to life", speakerStatus("node1", time.Hour), base, []string{"10.0.0.1", "10.0.0.3", "10.0.0.3"}, true},
		{"a silent one rewritten silent", speakerStatus("node1", time.Hour), speakerStatus("node1", time.Hour, announces(v1beta1.ProtocolL2, "10.0.0.9")), nil, false},
		{"a silent one appears", nil, speakerStatus("node1", time.Hour), nil, true},
	}
	for _, tc := range cases {
		ips, others, derived := speakerChanges(tc.old, tc.cur, nil, now)
		slices.Sort(ips)
		if !slices.Equal(ips, tc.ips) || others != tc.others || derived {
			t.Errorf("%s: %v, %v, %v; want %v, %v, false", tc.name, ips, others, derived, tc.ips, tc.others)
		}
	}

	// Marked statuses: what is derived of them changes with their sessions, liveness, marker and
	// withholding (every Service is examined again); a deviation concerns its IP only.
	marked := speakerStatus("node1", 0, derivedListing())
	withheld := speakerStatus("node1", 0, derivedListing())
	withheld.Status.BGPWithheld = "the node is labelled node.kubernetes.io/exclude-from-external-load-balancers"
	derivedCases := []struct {
		name     string
		old, cur *v1beta1.SpeakerStatus
		ips      []string
		derived  bool
	}{
		{"rewritten, nothing changed", marked, speakerStatus("node1", 0, derivedListing()), nil, false},
		{"a deviation", marked, speakerStatus("node1", 0, derivedListing("10.0.0.7")), []string{"10.0.0.7"}, false},
		{"session down", marked, speakerStatus("node1", 0, session("router", "Active"), func(st *v1beta1.SpeakerStatus) {
			st.Status.BGPListing = v1beta1.BGPListingDeviations
		}), nil, true},
		{"upgraded: marked now", base, marked, []string{"10.0.0.1", "10.0.0.3"}, true},
		{"withheld", marked, withheld, nil, true},
		{"new", nil, marked, nil, true},
		{"went silent", marked, speakerStatus("node1", time.Hour, derivedListing()), nil, true},
	}
	for _, tc := range derivedCases {
		ips, _, derived := speakerChanges(tc.old, tc.cur, nil, now)
		slices.Sort(ips)
		if !slices.Equal(ips, tc.ips) || derived != tc.derived {
			t.Errorf("marked, %s: %v, %v; want %v, %v", tc.name, ips, derived, tc.ips, tc.derived)
		}
	}
}

// TestAnnouncedDerived: a marked status's BGP announcements of Cluster-policy IPs are derived
// (and named beside an older speaker's listed ones); a deviation, a dead speaker or
// externalTrafficPolicy: Local leaves the node out.
func TestAnnouncedDerived(t *testing.T) {
	speakers := []*v1beta1.SpeakerStatus{
		speakerStatus("node1", 0, announces(v1beta1.ProtocolBGP, "198.51.100.10"), session("router", bgpEstablished)), // an older speaker: full list
		speakerStatus("node2", 0, derivedListing()),
		speakerStatus("node3", 0, derivedListing("198.51.100.10")),
		speakerStatus("node4", time.Hour, derivedListing()), // silent
	}
	cfg := testConfig()
	cfg.derive(speakers, map[string]map[string]string{"node2": {"rack": "a"}}, now)
	svc := lbService([]string{"198.51.100.10"}, withCondition(metav1.ConditionTrue, config.ReasonAnnounced, "198.51.100.10: BGP from node1, node2"))
	if cond, _, _ := announcedCondition(svc, speakers, cfg, announcedHistory{}, now); cond == nil || cond.Message != "198.51.100.10: BGP from node1, node2" {
		t.Errorf("condition %+v, want True from node1 (listed) and node2 (derived)", cond)
	}
	local := lbService([]string{"198.51.100.10"}, localPolicy, withCondition(metav1.ConditionTrue, config.ReasonAnnounced, "198.51.100.10: BGP from node1"))
	if cond, _, _ := announcedCondition(local, speakers, cfg, announcedHistory{}, now); cond == nil || cond.Message != "198.51.100.10: BGP from node1" {
		t.Errorf("Local policy: condition %+v, want True from node1 only (marked nodes list their Local IPs)", cond)
	}
}

func TestCompactSpeakerStatus(t *testing.T) {
	since := metav1.NewTime(now)
	st := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "node1", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "speaker"}}},
		Status: v1beta1.SpeakerStatusStatus{LastUpdate: &since, AnnouncedIPs: 2, MembersAlive: 3,
			Announcements: []v1beta1.Announcement{
				{IP: "10.0.0.2", Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}, Since: &since},
				{IP: "10.0.0.1", Protocol: v1beta1.ProtocolBGP, Peers: []string{"r"}, Since: &since},
			},
			BGPSessions: []v1beta1.BGPSessionStatus{{Peer: "r", PeerAddress: "10.0.0.254", State: bgpEstablished, LastError: "x", Since: &since}},
			Dataplane:   v1beta1.DataplaneStatus{Backend: "ipvs"}}}
	// As the cache's informer hands it over (decoded from the API server's answer).
	out, err := compactSpeakerStatus(st)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1beta1.SpeakerStatus)
	if got.Status.LastUpdate == nil || !got.Status.LastUpdate.Equal(&since) {
		t.Fatalf("lastUpdate %v, want %v", got.Status.LastUpdate, since)
	}
	want := v1beta1.SpeakerStatusStatus{LastUpdate: &since, AnnouncedIPs: 2,
		Announcements: []v1beta1.Announcement{{IP: "10.0.0.1", Protocol: v1beta1.ProtocolBGP}, {IP: "10.0.0.2", Protocol: v1beta1.ProtocolL2}},
		BGPSessions:   []v1beta1.BGPSessionStatus{{Peer: "r", PeerAddress: "10.0.0.254", State: bgpEstablished}}}
	if got.ManagedFields != nil || got.Name != "node1" || !reflect.DeepEqual(got.Status, want) {
		t.Errorf("got %+v\nwant %+v", got.Status, want)
	}
}
