package speaker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

// Announcer makes Service IPs reachable one way (L2 in speaker/l2, BGP in speaker/bgp). The speaker
// hands every announcer the same Snapshot after each relevant change.
type Announcer interface {
	// Apply gives the announcer the whole desired configuration. It must not block: announcers keep
	// the latest snapshot and act on it in Run.
	Apply(s *Snapshot)
	// Run does the announcer's work until ctx ends; on return it has withdrawn its announcements.
	Run(ctx context.Context) error
	// Announcements lists what this node announces now, for its SpeakerStatus.
	Announcements() []v1beta1.Announcement
}

// Preparer is an Announcer with work worth starting before the Services are known (BGP: opening
// sessions). The speaker calls Prepare once, before Run, with a snapshot whose IPs are empty and
// only means "no Services yet", never "withdraw everything".
type Preparer interface {
	Prepare(ctx context.Context, s *Snapshot)
}

// LocalEndpointView says which nodes hold a ready endpoint of a Service (dataplane.LocalEndpoints,
// the one view the announcers and the health-check servers share).
type LocalEndpointView interface {
	NodesWithReady(svc types.NamespacedName) []string
}

// Snapshot is the configuration announcers work from. Announcers must not modify it.
type Snapshot struct {
	NodeName          string
	Nodes             map[string]*corev1.Node
	Pools             []*v1beta1.IPAddressPool
	L2Advertisements  []*v1beta1.L2Advertisement
	BGPAdvertisements []*v1beta1.BGPAdvertisement
	BGPPeers          []*v1beta1.BGPPeer
	Communities       []*v1beta1.Community
	BFDProfiles       []*v1beta1.BFDProfile
	// IPs: every ingress IP of a LoadBalancer Service Herald handles that lies in a pool, sorted.
	IPs       []ServiceIP
	Endpoints LocalEndpointView
}

// ServiceIP is one announced address and the Services sharing it.
type ServiceIP struct {
	IP       netip.Addr
	Pool     *v1beta1.IPAddressPool
	Services []*corev1.Service // sorted by namespace/name
}

// ServiceNames lists the Services as namespace/name.
func (s ServiceIP) ServiceNames() []string {
	out := make([]string, len(s.Services))
	for i, svc := range s.Services {
		out[i] = svc.Namespace + "/" + svc.Name
	}
	return out
}

// IP returns the entry of ip in s.IPs, if it has one.
func (s *Snapshot) IP(ip netip.Addr) (ServiceIP, bool) {
	i, found := slices.BinarySearchFunc(s.IPs, ip, compareIP)
	if !found {
		return ServiceIP{}, false
	}
	return s.IPs[i], true
}

// compareIP orders a sorted []ServiceIP against an IP, for binary searches.
func compareIP(e ServiceIP, ip netip.Addr) int { return e.IP.Compare(ip) }

// Selects reports whether an advertisement's pool and Service selection covers ip.
func (s *Snapshot) Selects(sel v1beta1.AdvertisementSelection, ip ServiceIP) bool {
	if len(sel.IPAddressPools) > 0 || len(sel.IPAddressPoolSelectors) > 0 {
		if !slices.Contains(sel.IPAddressPools, ip.Pool.Name) && !anySelectorMatches(sel.IPAddressPoolSelectors, ip.Pool.Labels) {
			return false
		}
	}
	if len(sel.ServiceSelectors) > 0 {
		for _, svc := range ip.Services {
			if !anySelectorMatches(sel.ServiceSelectors, svc.Labels) {
				return false
			}
		}
	}
	return true
}

// Candidates lists, sorted, the nodes an advertisement lets announce ip: selected by its node
// selectors (none: every node), not excluded (excludedFromAnnouncing), and, when a Service on the IP has externalTrafficPolicy Local, holding a ready endpoint of every
// such Service (Services sharing an IP with Local policy must have the same selector, so in
// practice the same endpoints).
func (s *Snapshot) Candidates(sel v1beta1.AdvertisementSelection, ip ServiceIP) []string {
	var out []string
	for name, node := range s.Nodes {
		if excludedFromAnnouncing(node) {
			continue
		}
		if len(sel.NodeSelectors) > 0 && !anySelectorMatches(sel.NodeSelectors, node.Labels) {
			continue
		}
		out = append(out, name)
	}
	for _, svc := range ip.Services {
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		ready := []string{}
		if s.Endpoints != nil {
			ready = s.Endpoints.NodesWithReady(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
		}
		out = slices.DeleteFunc(out, func(n string) bool { return !slices.Contains(ready, n) })
	}
	slices.Sort(out)
	return out
}

// anySelectorMatches: selectors are ORed; an invalid selector matches nothing (the controller
// reports it on the object).
func anySelectorMatches(selectors []metav1.LabelSelector, l map[string]string) bool {
	for i := range selectors {
		sel, err := metav1.LabelSelectorAsSelector(&selectors[i])
		if err == nil && sel.Matches(labels.Set(l)) {
			return true
		}
	}
	return false
}

// String is for logs.
func (s ServiceIP) String() string { return fmt.Sprintf("%s%v", s.IP, s.ServiceNames()) }

// excludedFromAnnouncing: a node labelled node.kubernetes.io/exclude-from-external-load-balancers
// announces nothing; its speaker still runs the data plane. A cordon (spec.unschedulable:
// `kubectl cordon`, `kubectl drain`) is not an exclusion: it stops new pods, not traffic. A drained
// node's speaker and data plane keep running (a drain evicts no DaemonSet pod), so moving its L2
// addresses or withdrawing its BGP paths would only break established connections (the new owner
// has no conntrack entry for them; a router's ECMP hash re-maps flows of the other nodes too).
// Kubernetes' service controller stopped excluding unschedulable nodes in v1.19, and MetalLB does
// not look at cordons either; the node leaves the load balancer when its speaker stops (leaving).
func excludedFromAnnouncing(node *corev1.Node) bool {
	_, labelled := node.Labels[config.LabelExcludeFromLB]
	return labelled
}

// leaving tells, when this node's speaker stops, the node going away from a restart of the speaker
// (a rolling upgrade, a deleted speaker pod): a node cordoned or drained (a drain, then a shutdown;
// the kubelet's graceful node shutdown), excluded from load balancers, being deleted, NotReady, or
// unknown. A leaving node hands its L2 addresses over make-before-break and withdraws its BGP paths
// before it stops; a restarting one keeps them over the restart.
func leaving(node *corev1.Node) bool {
	if node == nil || node.DeletionTimestamp != nil || node.Spec.Unschedulable || excludedFromAnnouncing(node) {
		return true
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionTrue
		}
	}
	return true
}
