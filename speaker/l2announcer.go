package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/speaker/l2"
)

// EventL2Announcing is the reason of the event a node puts on a Service when it starts answering
// ARP/NDP for one of its IPs (once per change of announcing node, not per resync).
const EventL2Announcing = "L2Announcing"

// L2 adapts an l2.Announcer to the speaker: it turns snapshots into per-IP policies, and reports
// ownership changes as Service events and SpeakerStatus entries.
type L2 struct {
	announcer *l2.Announcer
	speaker   *Speaker

	mu   sync.Mutex
	snap *Snapshot // the last applied: the Services of the IPs whose ownership changes
	node string
}

// NewL2 builds the L2 announcer for this speaker; cfg.OnChange and cfg.HoldOnStop are set here.
func NewL2(s *Speaker, cfg l2.Config) *L2 {
	a := &L2{speaker: s, node: cfg.Node, snap: &Snapshot{}}
	cfg.OnChange = a.onChange
	cfg.HoldOnStop = a.restarting
	a.announcer = l2.New(cfg)
	return a
}

// restarting tells, when the speaker stops, a restart (hold the IPs) from the node leaving (see
// leaving): a leaving node hands its IPs over before it stops, so its peers answer before it goes.
func (a *L2) restarting() bool {
	a.mu.Lock()
	node := a.snap.Nodes[a.node]
	a.mu.Unlock()
	return !leaving(node)
}

// L2Policies computes, for every IP an L2Advertisement covers, the nodes that may answer for it and
// on which interfaces. Several advertisements covering one IP add their nodes; a node answers on
// the interfaces of the advertisements that select it, merged, where one of them without
// interfaces means "the subnet's interface".
func L2Policies(snap *Snapshot) map[netip.Addr]l2.Policy {
	out := map[netip.Addr]l2.Policy{}
	for _, ip := range snap.IPs {
		// perNode is made for the IPs an advertisement covers only: in BGP mode, none.
		var perNode map[string][]string
		subnetOnly := map[string]bool{}
		for _, adv := range snap.L2Advertisements {
			if adv.DeletionTimestamp != nil || !snap.Selects(adv.Spec.AdvertisementSelection, ip) {
				continue
			}
			if perNode == nil {
				perNode = map[string][]string{}
			}
			for _, n := range snap.Candidates(adv.Spec.AdvertisementSelection, ip) {
				if len(adv.Spec.Interfaces) == 0 {
					subnetOnly[n] = true
				}
				perNode[n] = append(perNode[n], adv.Spec.Interfaces...)
			}
		}
		if perNode == nil {
			continue
		}
		pol := l2.Policy{Candidates: slices.Sorted(maps.Keys(perNode))}
		for n, ifs := range perNode {
			if subnetOnly[n] {
				perNode[n] = nil
			} else {
				slices.Sort(ifs)
				perNode[n] = slices.Compact(ifs)
			}
		}
		// Usually every candidate answers on the same interfaces: one list for all.
		if len(pol.Candidates) > 0 {
			pol.Interfaces = perNode[pol.Candidates[0]]
			for _, n := range pol.Candidates[1:] {
				if !slices.Equal(perNode[n], pol.Interfaces) {
					pol.Interfaces, pol.NodeInterfaces = nil, perNode
					break
				}
			}
		}
		out[ip.IP] = pol
	}
	return out
}

// Apply implements Announcer.
func (a *L2) Apply(snap *Snapshot) {
	a.mu.Lock()
	a.snap = snap
	a.mu.Unlock()
	a.announcer.SetIPs(L2Policies(snap))
}

// Run implements Announcer.
func (a *L2) Run(ctx context.Context) error { return a.announcer.Run(ctx) }

// Announcements implements Announcer.
func (a *L2) Announcements() []v1beta1.Announcement {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []v1beta1.Announcement
	for _, an := range a.announcer.Announced() {
		since := metav1.NewTime(an.Since)
		out = append(out, v1beta1.Announcement{
			IP: an.IP.String(), Protocol: v1beta1.ProtocolL2, Interfaces: an.Interfaces, Since: &since,
		})
	}
	return out
}

// onChange puts one event on each Service of an IP this node started answering for. The node that
// lost the IP stays quiet: the gainer's event says where it went.
func (a *L2) onChange(changes []l2.Change) {
	a.speaker.StatusChanged()
	if a.speaker.recorder == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range changes {
		if !c.Gained {
			continue
		}
		proto := "ARP"
		if c.IP.Is6() {
			proto = "NDP"
		}
		ip, _ := a.snap.IP(c.IP)
		for _, svc := range ip.Services {
			a.speaker.recorder.Event(svc, corev1.EventTypeNormal, EventL2Announcing,
				fmt.Sprintf("node %s answers %s for %s on %v", a.node, proto, c.IP, c.Interfaces))
		}
	}
}
