// Package status gathers what Herald is doing into one report: pools and their usage, Services
// with their IPs and who announces them, and each node's BGP/BFD sessions. Build is pure (objects
// in, report out); Collect reads the objects from a cluster.
package status

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
)

// Report is heraldctl status's output; -o json|yaml prints it as is.
type Report struct {
	Pools    []Pool    `json:"pools"`
	Services []Service `json:"services"`
	Nodes    []Node    `json:"nodes"`
}

// Pool is one IPAddressPool and its usage as the controller counted it.
type Pool struct {
	Name      string                 `json:"name"`
	Addresses []string               `json:"addresses"`
	IPv4      *v1beta1.AddressCounts `json:"ipv4,omitempty"`
	IPv6      *v1beta1.AddressCounts `json:"ipv6,omitempty"`
	// Problems are the pool's conditions that need attention (Valid=False, Overlap=True,
	// NotSupported=True), as "Type: message".
	Problems []string `json:"problems,omitempty"`
}

// Service is one Service of type LoadBalancer.
type Service struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Class     string   `json:"loadBalancerClass,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	// Pool holding the IPs ("" when none does).
	Pool string `json:"pool,omitempty"`
	// Allocated and Announced are the herald.io conditions; nil when the controller has not
	// written them (the Service is not Herald's, or the controller is not running).
	Allocated *Condition `json:"allocated,omitempty"`
	Announced *Condition `json:"announced,omitempty"`
	// AnnouncedBy lists the nodes announcing the Service's IPs, from their SpeakerStatus.
	AnnouncedBy []Announcer `json:"announcedBy,omitempty"`
	// ProxyMode is "userspace" when herald.io/proxy-mode puts the Service's traffic through the
	// speakers' userspace proxy, "kernel" otherwise.
	ProxyMode string `json:"proxyMode"`
}

// Condition is a status condition in short.
type Condition struct {
	Status  metav1.ConditionStatus `json:"status"`
	Reason  string                 `json:"reason,omitempty"`
	Message string                 `json:"message,omitempty"`
}

// Announcer is one node announcing one IP.
type Announcer struct {
	Node       string                       `json:"node"`
	IP         string                       `json:"ip"`
	Protocol   v1beta1.AnnouncementProtocol `json:"protocol"`
	Interfaces []string                     `json:"interfaces,omitempty"`
	Peers      []string                     `json:"peers,omitempty"`
}

// Node is one node's speaker as its SpeakerStatus tells.
type Node struct {
	Name string `json:"name"`
	// LastUpdate is when the SpeakerStatus last changed; LeaseRenewed when the node's speaker
	// last renewed its Lease (how a live speaker shows it; none from speakers before the Leases,
	// which rewrite their status every minute instead).
	LastUpdate   *metav1.Time `json:"lastUpdate,omitempty"`
	LeaseRenewed *metav1.Time `json:"leaseRenewed,omitempty"`
	AnnouncedIPs int32        `json:"announcedIPs"`
	MembersAlive int32        `json:"membersAlive"`
	Dataplane    string       `json:"dataplane,omitempty"`
	// UserspacePorts is how many Service ports the node's userspace proxy serves.
	UserspacePorts int32                      `json:"userspacePorts,omitempty"`
	Sessions       []v1beta1.BGPSessionStatus `json:"sessions,omitempty"`
}

// Collect reads pools, Services and SpeakerStatuses through c and builds the report. c's scheme
// must know core/v1 and herald.io/v1beta1.
func Collect(ctx context.Context, c client.Reader) (Report, error) {
	var pools v1beta1.IPAddressPoolList
	if err := c.List(ctx, &pools); err != nil {
		return Report{}, listError("ipaddresspools.herald.io", err)
	}
	var speakers v1beta1.SpeakerStatusList
	if err := c.List(ctx, &speakers); err != nil {
		return Report{}, listError("speakerstatuses.herald.io", err)
	}
	var services corev1.ServiceList
	if err := c.List(ctx, &services); err != nil {
		return Report{}, listError("services", err)
	}
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.HasLabels{config.LabelSpeakerLease}); err != nil {
		return Report{}, listError("leases.coordination.k8s.io", err)
	}
	derived, err := collectDerived(ctx, c, pools.Items, speakers.Items, leases.Items, time.Now())
	if err != nil {
		return Report{}, err
	}
	r := Build(pools.Items, services.Items, speakers.Items, derived)
	r.AddLeases(leases.Items)
	return r, nil
}

// collectDerived reads what tells which nodes announce Cluster-policy IPs by BGP without listing
// them (statuses with bgpListing: Deviations): the BGP objects, the Nodes' labels (metadata
// only) and the speakers' Leases (a node counts while its Lease holds at now), as the
// controller's herald.io/Announced condition does. Nil when no status is marked.
func collectDerived(ctx context.Context, c client.Reader, pools []v1beta1.IPAddressPool, speakers []v1beta1.SpeakerStatus,
	leases []coordinationv1.Lease, now time.Time) (*bgpconfig.Announcers, error) {
	if !slices.ContainsFunc(speakers, func(st v1beta1.SpeakerStatus) bool { return st.Status.BGPListing == v1beta1.BGPListingDeviations }) {
		return nil, nil
	}
	var (
		ads         v1beta1.BGPAdvertisementList
		peers       v1beta1.BGPPeerList
		communities v1beta1.CommunityList
	)
	for what, list := range map[string]client.ObjectList{"bgpadvertisements.herald.io": &ads, "bgppeers.herald.io": &peers, "communities.herald.io": &communities} {
		if err := c.List(ctx, list); err != nil {
			return nil, listError(what, err)
		}
	}
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := c.List(ctx, nodes); err != nil {
		return nil, listError("nodes", err)
	}
	labels := map[string]map[string]string{}
	for _, n := range nodes.Items {
		labels[n.Name] = n.Labels
	}
	holds := map[string]bool{}
	for _, l := range leases {
		if node, ok := strings.CutPrefix(l.Name, config.SpeakerLeasePrefix); ok && l.Spec.RenewTime != nil {
			d := time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, config.SpeakerLeaseDuration)) * time.Second
			holds[node] = !now.After(l.Spec.RenewTime.Add(d))
		}
	}
	var in []bgpconfig.NodeBGP
	for i := range speakers {
		if st := &speakers[i]; st.Status.BGPListing == v1beta1.BGPListingDeviations {
			in = append(in, bgpconfig.NodeFromStatus(st, labels[st.Name], holds[st.Name]))
		}
	}
	return bgpconfig.NewAnnouncers(bgpconfig.Input{Pools: pools, Advertisements: ads.Items, Peers: peers.Items, Communities: communities.Items}, in), nil
}

// AddLeases records, for each node of the report, when its speaker last renewed its Lease.
func (r *Report) AddLeases(leases []coordinationv1.Lease) {
	renewed := map[string]*metav1.Time{}
	for _, l := range leases {
		if node, ok := strings.CutPrefix(l.Name, config.SpeakerLeasePrefix); ok && l.Spec.RenewTime != nil {
			renewed[node] = &metav1.Time{Time: l.Spec.RenewTime.Time}
		}
	}
	for i := range r.Nodes {
		r.Nodes[i].LeaseRenewed = renewed[r.Nodes[i].Name]
	}
}

func listError(what string, err error) error {
	switch {
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		return fmt.Errorf("listing %s: %w; are Herald's CRDs installed (kubectl get crd %s)? Install them with the Helm chart or kubectl apply -f config/crd/", what, err, what)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("listing %s: %w; your user needs list access to it (kubectl auth can-i list %s)", what, err, what)
	default:
		return fmt.Errorf("listing %s: %w; is the cluster reachable (kubectl get nodes) and --kubeconfig right?", what, err)
	}
}

// Build assembles the report from the objects: pure, so its rules are testable without a cluster.
// derived (nil: none) names the nodes announcing Cluster-policy IPs by BGP that their statuses
// do not list (bgpListing: Deviations).
func Build(pools []v1beta1.IPAddressPool, services []corev1.Service, speakers []v1beta1.SpeakerStatus, derived *bgpconfig.Announcers) Report {
	r := Report{Pools: []Pool{}, Services: []Service{}, Nodes: []Node{}}
	parsed := make([]addresspool.Pool, len(pools))
	for i, p := range pools {
		parsed[i] = addresspool.Parse(&pools[i])
		out := Pool{Name: p.Name, IPv4: p.Status.IPv4, IPv6: p.Status.IPv6}
		for _, a := range p.Spec.Addresses {
			out.Addresses = append(out.Addresses, string(a))
		}
		for _, c := range p.Status.Conditions {
			bad := (c.Type == config.ConditionValid && c.Status == metav1.ConditionFalse) ||
				(c.Type != config.ConditionValid && c.Status == metav1.ConditionTrue)
			if bad {
				out.Problems = append(out.Problems, c.Type+": "+c.Message)
			}
		}
		r.Pools = append(r.Pools, out)
	}
	// A Service's pool is the one that owns its address, by the rule the controller gives
	// addresses out by and the speakers announce them by.
	owners := addresspool.NewSet(parsed)
	poolOf := func(ip netip.Addr) string {
		if p := owners.Owner(ip); p != nil {
			return p.Name
		}
		return ""
	}

	// Who announces each IP.
	announcers := map[string][]Announcer{}
	for _, s := range speakers {
		for _, a := range s.Status.Announcements {
			announcers[a.IP] = append(announcers[a.IP], Announcer{
				Node: s.Name, IP: a.IP, Protocol: a.Protocol, Interfaces: a.Interfaces, Peers: a.Peers,
			})
		}
		n := Node{
			Name: s.Name, LastUpdate: s.Status.LastUpdate, AnnouncedIPs: s.Status.AnnouncedIPs,
			MembersAlive: s.Status.MembersAlive, Dataplane: s.Status.Dataplane.Backend, Sessions: s.Status.BGPSessions,
			UserspacePorts: s.Status.Dataplane.UserspaceServicesTotal,
		}
		if s.Status.Dataplane.Reason != "" {
			n.Dataplane += " (" + s.Status.Dataplane.Reason + ")"
		}
		r.Nodes = append(r.Nodes, n)
	}

	// derivedIPs: by node, the IPs it announces without listing them (counted in its ANNOUNCES).
	derivedIPs := map[string][]string{}
	for _, svc := range services {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		out := Service{Namespace: svc.Namespace, Name: svc.Name, ProxyMode: config.ProxyModeKernel}
		if us, _ := config.ParseUserspaceProxy(svc.Annotations); us.Enabled {
			out.ProxyMode = config.ProxyModeUserspace
		}
		if svc.Spec.LoadBalancerClass != nil {
			out.Class = *svc.Spec.LoadBalancerClass
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" {
				continue
			}
			out.IPs = append(out.IPs, ing.IP)
			ip, err := netip.ParseAddr(ing.IP)
			if err == nil && out.Pool == "" {
				out.Pool = poolOf(ip)
			}
			out.AnnouncedBy = append(out.AnnouncedBy, announcers[ing.IP]...)
			if derived == nil || err != nil || svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
				continue
			}
			for _, an := range derived.Announcements(ip, poolOf(ip), svc.Labels) {
				if !slices.ContainsFunc(announcers[ing.IP], func(a Announcer) bool { return a.Node == an.Node && a.Protocol == v1beta1.ProtocolBGP }) {
					out.AnnouncedBy = append(out.AnnouncedBy, Announcer{Node: an.Node, IP: ing.IP, Protocol: v1beta1.ProtocolBGP, Peers: an.Peers})
					derivedIPs[an.Node] = append(derivedIPs[an.Node], ing.IP)
				}
			}
		}
		out.Allocated = condition(svc.Status.Conditions, config.ConditionAllocated)
		out.Announced = condition(svc.Status.Conditions, config.ConditionAnnounced)
		r.Services = append(r.Services, out)
	}

	for i := range r.Nodes {
		ips := derivedIPs[r.Nodes[i].Name]
		slices.Sort(ips)
		r.Nodes[i].AnnouncedIPs += int32(len(slices.Compact(ips)))
	}

	sort.Slice(r.Pools, func(i, j int) bool { return r.Pools[i].Name < r.Pools[j].Name })
	sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].Name < r.Nodes[j].Name })
	sort.Slice(r.Services, func(i, j int) bool {
		if r.Services[i].Namespace != r.Services[j].Namespace {
			return r.Services[i].Namespace < r.Services[j].Namespace
		}
		return r.Services[i].Name < r.Services[j].Name
	})
	for i := range r.Services {
		sort.Slice(r.Services[i].AnnouncedBy, func(a, b int) bool {
			x, y := r.Services[i].AnnouncedBy[a], r.Services[i].AnnouncedBy[b]
			if x.IP != y.IP {
				return x.IP < y.IP
			}
			return x.Node < y.Node
		})
	}
	return r
}

func condition(conds []metav1.Condition, typ string) *Condition {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return nil
	}
	return &Condition{Status: c.Status, Reason: c.Reason, Message: c.Message}
}
