package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
)

// The herald.io/Announced condition says whether some node announces each of a Service's ingress
// IPs, as the nodes' SpeakerStatus objects tell. announcedCondition decides it from the objects
// alone; announcedwriter.go watches them and writes the answer.

const (
	// speakerLiveFor: the SpeakerStatus of a speaker without a Lease (one from before the Leases)
	// counts while its lastUpdate is this recent. Such speakers rewrite it every minute, so this
	// allows two missed writes (and some clock skew between nodes). A speaker with a Lease counts
	// while its Lease holds (leaseExpiry).
	speakerLiveFor = 3 * time.Minute
	// announcedGrace: IPs are reported not announced only once they have gone unannounced this
	// long. A speaker lists a new IP up to 10 s after it announces it (its status writes are
	// spaced up to 10 s apart on a busy node), and an L2 handover shows the old owner's write
	// without the IP before the new owner's with it.
	announcedGrace = 15 * time.Second
	// announcedSettle: a True condition whose announcing nodes change is rewritten only once the
	// new set has held this long. A restarting speaker lists nothing for a moment and a rolling
	// update restarts every node in turn; without it, each would rewrite every Service twice.
	// (A first True waits only for the other nodes' statuses: convergence.)
	announcedSettle = time.Minute
	// maxNamedNodes bounds the nodes a message names per protocol: with BGP every node announces.
	maxNamedNodes = 10
	// bgpEstablished is BGPSessionStatus.State of a session that is up.
	bgpEstablished = "Established"
)

// announceConfig is what the controller knows of the configuration deciding who may announce an
// IP, for the reason of a False condition, and who announces a Cluster-policy IP by BGP.
type announceConfig struct {
	l2, bgp []advertised
	// pools says which pool owns an address, as the allocator and the speakers have it.
	pools *addresspool.Set
	// leases says until when each speaker's Lease holds (none: only SpeakerStatuses' lastUpdate).
	leases leaseExpiry
	// bgpIn holds the BGP objects (advertisements, peers, communities, pools) derived reads.
	bgpIn bgpconfig.Input
	// derived says which nodes with a marked status (bgpListing: Deviations) advertise a
	// Cluster-policy IP by BGP (their statuses do not list it); nil when not derived (derive).
	derived *bgpconfig.Announcers
}

// derive reads, from the marked statuses among speakers and the Nodes' labels, which nodes
// advertise what by BGP at now. Unmarked statuses (older speakers) list their IPs: they are read
// as lists, so a cluster half upgraded is counted whole.
func (cfg *announceConfig) derive(speakers []*v1beta1.SpeakerStatus, nodeLabels map[string]map[string]string, now time.Time) {
	var nodes []bgpconfig.NodeBGP
	for _, st := range speakers {
		if st.Status.BGPListing == v1beta1.BGPListingDeviations {
			nodes = append(nodes, bgpconfig.NodeFromStatus(st, nodeLabels[st.Name], cfg.leases.live(st, now)))
		}
	}
	cfg.derived = bgpconfig.NewAnnouncers(cfg.bgpIn, nodes)
}

// leaseExpiry is, by node, until when the node's speaker Lease holds: its duration after the
// controller last saw it renewed (by the controller's clock, as the node lifecycle controller
// reads the kubelets' Leases, so that the nodes' clocks do not matter).
type leaseExpiry map[string]time.Time

// live reports whether a SpeakerStatus's speaker is alive at now: while its Lease holds, or, for a
// speaker that renews none (from before the Leases, or not started yet), while its status was
// written within speakerLiveFor.
func (l leaseExpiry) live(st *v1beta1.SpeakerStatus, now time.Time) bool {
	if st == nil {
		return false
	}
	if until, ok := l[st.Name]; ok {
		return !now.After(until)
	}
	return st.Status.LastUpdate != nil && now.Sub(st.Status.LastUpdate.Time) <= speakerLiveFor
}

// advertised is one usable L2Advertisement or BGPAdvertisement.
type advertised struct {
	name      string
	selection bgpconfig.Selection
	// peers are the BGPPeers a BGPAdvertisement is limited to (none: every peer).
	peers []string
}

// newAnnounceConfig reads the advertisements with the selection the speakers' BGP translation
// uses. One that is being deleted or is not Valid (a pool it names does not exist, a selector
// does not parse) counts as selecting nothing; its Valid condition says why. (The L2 announcer
// still announces the pools such an L2Advertisement names that do exist: that case can only make
// the reason of an IP nobody announces NoAdvertisement rather than NoEligibleNode.)
func newAnnounceConfig(pools []v1beta1.IPAddressPool, l2 []v1beta1.L2Advertisement, bgp []v1beta1.BGPAdvertisement,
	peers []v1beta1.BGPPeer, communities []v1beta1.Community) *announceConfig {
	byName := make(map[string]v1beta1.IPAddressPool, len(pools))
	parsed := make([]addresspool.Pool, len(pools))
	for i := range pools {
		byName[pools[i].Name] = pools[i]
		parsed[i] = addresspool.Parse(&pools[i])
	}
	cfg := &announceConfig{pools: addresspool.NewSet(parsed), bgpIn: bgpconfig.Input{
		Pools: pools, Advertisements: bgp, Peers: peers, Communities: communities,
	}}
	add := func(list []advertised, om metav1.ObjectMeta, s v1beta1.AdvertisementSelection, peers []string) []advertised {
		sel, problem := bgpconfig.Select(s, byName)
		if problem != nil || om.DeletionTimestamp != nil {
			return list
		}
		return append(list, advertised{name: om.Name, selection: sel, peers: peers})
	}
	for _, a := range l2 {
		cfg.l2 = add(cfg.l2, a.ObjectMeta, a.Spec.AdvertisementSelection, nil)
	}
	for _, a := range bgp {
		cfg.bgp = add(cfg.bgp, a.ObjectMeta, a.Spec.AdvertisementSelection, a.Spec.Peers)
	}
	for _, list := range [][]advertised{cfg.l2, cfg.bgp} {
		slices.SortFunc(list, func(a, b advertised) int { return strings.Compare(a.name, b.name) })
	}
	return cfg
}

// announcedHistory is what the controller remembers of a Service between two evaluations. It is
// kept in memory only: a restarted controller starts over, which delays a False or a new list of
// nodes by one period at most.
type announcedHistory struct {
	// ips are the ingress IPs it is about; when they change, the history starts over.
	ips string
	// unannouncedSince is when the IPs were first found not all announced (zero: they were).
	unannouncedSince time.Time
	// message is a True message differing from the one written, and since when it is the answer.
	message      string
	messageSince time.Time
}

// pending reports whether the Service waits for its IPs to be announced.
func (h announcedHistory) pending() bool { return !h.unannouncedSince.IsZero() }

// convergence is how long after one node's status lists a new IP the others' can still follow:
// the spacing of the writes of the live speaker listing the most IPs, and a second for the
// speakers' own work and watch delays.
func convergence(live []*v1beta1.SpeakerStatus) time.Duration {
	listed := 0
	for _, st := range live {
		listed = max(listed, len(st.Status.Announcements))
	}
	return v1beta1.StatusWriteSpacing(listed) + time.Second
}

// announcedCondition decides a Service's herald.io/Announced condition from the SpeakerStatus
// objects, the configuration and what was remembered of it. It returns nil when nothing is to
// be written now (it cannot tell, or a grace period runs: then recheck says when to ask again),
// and the history to remember for the next call.
//
//   - True (Announced) when each ingress IP is listed by at least one live SpeakerStatus; the
//     message names, per IP, the protocols and nodes, and nothing that changes on its own. It
//     waits until the nodes named have held for convergence (a first True) or announcedSettle.
//   - Nothing while an unlisted IP may be among the entries a live speaker could not list (its
//     list is capped), while no SpeakerStatus exists at all (Herald's speakers never ran: there
//     is nobody to ask), and during announcedGrace.
//   - False otherwise, with the first reason that applies: NoAdvertisement, NoBGPSession,
//     NoLocalEndpoints, NoEligibleNode.
func announcedCondition(svc *corev1.Service, speakers []*v1beta1.SpeakerStatus, cfg *announceConfig, h announcedHistory, now time.Time) (cond *metav1.Condition, recheck time.Duration, next announcedHistory) {
	ips := ingressIPs(svc)
	if key := strings.Join(ips, ","); h.ips != key {
		h = announcedHistory{ips: key}
	}
	live := liveSpeakers(speakers, cfg.leases, now)
	capped := slices.ContainsFunc(live, isCapped)
	var lines, missing []string
	unknown := false
	for _, ip := range ips {
		switch by := announcersOf(svc, live, cfg, ip); {
		case by != "":
			lines = append(lines, ip+": "+by)
		case capped:
			unknown = true
		default:
			missing = append(missing, ip)
		}
	}
	if len(missing) == 0 && !unknown {
		h.unannouncedSince = time.Time{}
		want := announcedCond(metav1.ConditionTrue, config.ReasonAnnounced, strings.Join(lines, "; "))
		// A new answer is written once it has held for a while, so that the nodes it names are
		// all those that announce: for a first True, until every node's status can have told of
		// the announcement; for other nodes than those written, announcedSettle.
		old := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced)
		if old != nil && old.Status == metav1.ConditionTrue && old.Message == want.Message {
			h.message, h.messageSince = "", time.Time{}
			return &want, 0, h
		}
		hold := announcedSettle
		if old == nil || old.Status != metav1.ConditionTrue {
			hold = convergence(live)
		}
		if h.message != want.Message {
			h.message, h.messageSince = want.Message, now
		}
		if wait := h.messageSince.Add(hold).Sub(now); wait > 0 {
			return nil, wait, h
		}
		// Remembered until the condition says it: deciding again before the write (the writer
		// does, after waiting its turn) must not start the wait over.
		return &want, 0, h
	}
	h.message, h.messageSince = "", time.Time{}
	if h.unannouncedSince.IsZero() {
		h.unannouncedSince = now
	}
	if len(missing) == 0 || len(speakers) == 0 {
		return nil, 0, h
	}
	// The grace runs from when the IPs were found unannounced, or from the creation of the newest
	// live speaker's status if later: a speaker writes its first status before it announces.
	graceFrom := h.unannouncedSince
	for _, st := range live {
		if t := st.CreationTimestamp.Time; t.After(graceFrom) {
			graceFrom = t
		}
	}
	if wait := graceFrom.Add(announcedGrace).Sub(now); wait > 0 {
		return nil, wait, h
	}
	reason, message := notAnnounced(svc, missing, live, cfg)
	want := announcedCond(metav1.ConditionFalse, reason, message)
	return &want, 0, h
}

func announcedCond(status metav1.ConditionStatus, reason, message string) metav1.Condition {
	// No observedGeneration: the condition follows the speakers, not the spec, and rewriting it on
	// every change of the spec would cost a write for nothing.
	return metav1.Condition{Type: config.ConditionAnnounced, Status: status, Reason: reason, Message: message}
}

// ingressIPs lists the Service's ingress IPs as written (Herald writes them in netip's form, as
// the speakers write their announcements).
func ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			out = append(out, in.IP)
		}
	}
	return out
}

// isCapped reports whether a SpeakerStatus lists fewer announcements than it has (the list is
// capped at MaxListedAnnouncements).
func isCapped(st *v1beta1.SpeakerStatus) bool {
	return int(st.Status.AnnouncedIPs) > len(st.Status.Announcements)
}

// liveSpeakers keeps the live SpeakerStatus objects, sorted by node, so messages list nodes in
// one order whatever the order of the input.
func liveSpeakers(speakers []*v1beta1.SpeakerStatus, leases leaseExpiry, now time.Time) []*v1beta1.SpeakerStatus {
	var live []*v1beta1.SpeakerStatus
	for _, st := range speakers {
		if leases.live(st, now) {
			live = append(live, st)
		}
	}
	slices.SortFunc(live, func(a, b *v1beta1.SpeakerStatus) int { return strings.Compare(a.Name, b.Name) })
	return live
}

// announcementsOf returns a SpeakerStatus's entries for ip: the list is sorted by IP (the API's
// contract, and compactSpeakerStatus makes sure), so a binary search finds them.
func announcementsOf(st *v1beta1.SpeakerStatus, ip string) []v1beta1.Announcement {
	anns := st.Status.Announcements
	i := sort.Search(len(anns), func(i int) bool { return anns[i].IP >= ip })
	j := i
	for j < len(anns) && anns[j].IP == ip {
		j++
	}
	return anns[i:j]
}

// announcersOf says how and by whom svc's ip is announced, e.g. "L2 from node2" or "L2 from
// node2, BGP from node1, node2"; "" when no live speaker lists it, nor derives it (cfg.derived,
// for a Service with externalTrafficPolicy: Cluster).
func announcersOf(svc *corev1.Service, live []*v1beta1.SpeakerStatus, cfg *announceConfig, ip string) string {
	var parts []string
	for _, proto := range []v1beta1.AnnouncementProtocol{v1beta1.ProtocolL2, v1beta1.ProtocolBGP} {
		var nodes []string
		for _, st := range live {
			if slices.ContainsFunc(announcementsOf(st, ip), func(a v1beta1.Announcement) bool { return a.Protocol == proto }) {
				nodes = append(nodes, st.Name)
			}
		}
		if proto == v1beta1.ProtocolBGP {
			nodes = slices.Concat(nodes, derivedNodes(svc, cfg, ip))
			slices.Sort(nodes)
			nodes = slices.Compact(nodes)
		}
		if len(nodes) > 0 {
			parts = append(parts, string(proto)+" from "+nameList(nodes, "nodes"))
		}
	}
	return strings.Join(parts, ", ")
}

// derivedNodes are the nodes with a marked status that advertise svc's ip by BGP (none for
// externalTrafficPolicy: Local: those nodes list it).
func derivedNodes(svc *corev1.Service, cfg *announceConfig, ip string) []string {
	if cfg.derived == nil || svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		return nil
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil
	}
	return cfg.derived.Nodes(addr, cfg.poolOf(ip), svc.Labels)
}

// nameList joins names, at most maxNamedNodes of them ("a, b, … and 5 more nodes").
func nameList(names []string, what string) string {
	if len(names) <= maxNamedNodes {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more %s", strings.Join(names[:maxNamedNodes], ", "), len(names)-maxNamedNodes, what)
}

// reasonOrder ranks the False reasons: the first that applies to any IP is the condition's.
var reasonOrder = []string{config.ReasonNoAdvertisement, config.ReasonNoBGPSession, config.ReasonNoLocalEndpoints, config.ReasonNoEligibleNode}

// notAnnounced explains the IPs nobody announces: the first reason of reasonOrder among theirs,
// and what to check, once per explanation ("10.0.0.1, fd00::1: …").
func notAnnounced(svc *corev1.Service, missing []string, live []*v1beta1.SpeakerStatus, cfg *announceConfig) (reason, message string) {
	type why struct{ reason, message string }
	var order []why
	ips := map[why][]string{}
	for _, ip := range missing {
		r, m := whyNotAnnounced(svc, ip, live, cfg)
		w := why{r, m}
		if _, seen := ips[w]; !seen {
			order = append(order, w)
		}
		ips[w] = append(ips[w], ip)
	}
	var parts []string
	reason = reasonOrder[len(reasonOrder)-1]
	for _, w := range order {
		parts = append(parts, strings.Join(ips[w], ", ")+": "+w.message)
		if slices.Index(reasonOrder, w.reason) < slices.Index(reasonOrder, reason) {
			reason = w.reason
		}
	}
	return reason, strings.Join(parts, "; ")
}

// poolOf names the pool that owns ip ("" for none). It may be a pool being deleted (or become
// invalid): its Services keep the address and the speakers keep announcing it by that pool's
// advertisements (addresspool.Set).
func (cfg *announceConfig) poolOf(ip string) string {
	if addr, err := netip.ParseAddr(ip); err == nil {
		if owner := cfg.pools.Owner(addr); owner != nil {
			return owner.Name
		}
	}
	return ""
}

// whyNotAnnounced gives the reason no live speaker lists ip, and what to check.
func whyNotAnnounced(svc *corev1.Service, ip string, live []*v1beta1.SpeakerStatus, cfg *announceConfig) (reason, message string) {
	pool := cfg.poolOf(ip)
	if pool == "" {
		return config.ReasonNoAdvertisement, "no IPAddressPool holds it, so no advertisement covers it: see the herald.io/Allocated condition"
	}
	l2 := selecting(cfg.l2, pool, svc.Labels)
	bgp := selecting(cfg.bgp, pool, svc.Labels)
	ads := strings.Join(append(kindNames("L2Advertisement", l2), kindNames("BGPAdvertisement", bgp)...), ", ")
	switch {
	case ads == "":
		return config.ReasonNoAdvertisement, fmt.Sprintf("no L2Advertisement or BGPAdvertisement selects pool %s for this Service: "+
			"create one, or check the ipAddressPools, ipAddressPoolSelectors and serviceSelectors of the existing ones and their Valid condition", pool)
	case len(l2) == 0 && !sessionUp(live, bgp):
		return config.ReasonNoBGPSession, fmt.Sprintf("selected only by %s, and no node has an Established BGP session with the peers it goes to: "+
			"check the sessions (heraldctl status; bgpSessions and their lastError in kubectl get speakerstatuses -o yaml) and the BGPPeers", ads)
	case svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal:
		return config.ReasonNoLocalEndpoints, fmt.Sprintf("externalTrafficPolicy is Local, so only nodes with a ready endpoint of the Service announce it, and none does: "+
			"check the Service's endpoints (kubectl -n %s get endpointslices -l kubernetes.io/service-name=%s) and that its pods are ready on nodes that %s selects",
			svc.Namespace, svc.Name, ads)
	case len(live) == 0:
		return config.ReasonNoEligibleNode, fmt.Sprintf("no speaker is alive (no speaker Lease %s<node> in Herald's namespace holds, nor was a SpeakerStatus written in the last %v): check the speaker pods, one per node", config.SpeakerLeasePrefix, speakerLiveFor)
	default:
		return config.ReasonNoEligibleNode, fmt.Sprintf("selected by %s, but no node is selected, alive and usable: "+
			"check the advertisements' nodeSelectors, the %s label on the nodes, and the speaker pods", ads, config.LabelExcludeFromLB)
	}
}

// selecting keeps the advertisements that cover pool's addresses for a Service with these labels.
func selecting(ads []advertised, pool string, serviceLabels map[string]string) []advertised {
	var out []advertised
	for _, a := range ads {
		if a.selection.Selects(pool, serviceLabels) {
			out = append(out, a)
		}
	}
	return out
}

func kindNames(kind string, ads []advertised) []string {
	var out []string
	for _, a := range ads {
		out = append(out, kind+" "+a.name)
	}
	return out
}

// sessionUp reports whether a live speaker has an Established session with a peer one of the
// BGP advertisements goes to.
func sessionUp(live []*v1beta1.SpeakerStatus, ads []advertised) bool {
	for _, st := range live {
		for _, s := range st.Status.BGPSessions {
			if s.State != bgpEstablished {
				continue
			}
			if slices.ContainsFunc(ads, func(a advertised) bool { return len(a.peers) == 0 || slices.Contains(a.peers, s.Peer) }) {
				return true
			}
		}
	}
	return false
}
