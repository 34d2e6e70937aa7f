package speaker

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/speaker/bgp"
)

// bgpRetry is how soon a failed BGP apply is retried, and how often session counters are re-read
// for the SpeakerStatus when nothing else happens.
const bgpRetry = 5 * time.Second

// BGP adapts the BGP announcer (speaker/bgp) to the speaker: it translates snapshots, reports bad
// configuration as events on the objects, and fills the BGP part of the node's SpeakerStatus.
type BGP struct {
	announcer *bgp.Announcer
	speaker   *Speaker
	// secretNamespace is where a passwordSecret without a namespace lives (Herald's namespace).
	secretNamespace string
	kick            chan struct{}

	// entries is sync's: the Services' translation entries of the last snapshot it applied.
	entries bgpEntries
	// applied is sync's: the last configuration it gave the announcer (its peers, for leave).
	applied bgpconfig.Desired

	mu        sync.Mutex
	snap      *Snapshot
	announced map[netip.Addr]bgpconfig.Announced
	since     map[netip.Addr]time.Time
	sessions  []bgp.PeerStatus
	reported  map[bgpconfig.Problem]bool
	// withheld says why this node advertises no Service IP ("": it does); refused are the
	// prefixes the announcer could not advertise, with why (both from the last sync).
	withheld string
	refused  map[netip.Prefix]string
}

// NewBGP builds the BGP announcer of this speaker and registers its SpeakerStatus part.
func NewBGP(s *Speaker, secretNamespace string, opts bgp.Options) *BGP {
	if opts.Logger == nil {
		opts.Logger = s.cfg.Logger
	}
	b := &BGP{
		announcer: bgp.NewAnnouncer(opts), speaker: s, secretNamespace: secretNamespace,
		kick: make(chan struct{}, 1), since: map[netip.Addr]time.Time{}, reported: map[bgpconfig.Problem]bool{},
	}
	s.AddStatusSource(b.fillStatus)
	return b
}

// Collector exposes the sessions as Prometheus metrics.
func (b *BGP) Collector() *bgp.Collector { return bgp.NewCollector(b.announcer) }

// Apply implements Announcer.
func (b *BGP) Apply(snap *Snapshot) {
	b.mu.Lock()
	b.snap = snap
	b.mu.Unlock()
	signal(b.kick)
}

// Prepare implements Preparer: it opens the sessions before the Services are known, so they are
// up (or nearly: the router's connect retry timer decides) when the first routes are ready. Peers
// with graceful restart are left for the first full snapshot: a session that came up without
// routes would end the router's graceful restart and drop the routes it kept for this node.
func (b *BGP) Prepare(ctx context.Context, snap *Snapshot) {
	res := bgpconfig.Translate(new(bgpEntries).input(snap, b.secretNamespace, b.passwords(ctx, snap)))
	for name, p := range res.Desired.Peers {
		if p.GracefulRestart {
			delete(res.Desired.Peers, name)
		}
	}
	b.speaker.log.Info("opening BGP sessions before the Services are loaded", "peers", len(res.Desired.Peers))
	if err := b.announcer.Apply(ctx, res.Desired); err != nil {
		b.speaker.log.Warn("opening BGP sessions early", "err", err)
	}
}

// Run implements Announcer. On return every session is closed: with a Cease, so routers move
// traffic to the other nodes at once, except on peers with graceful restart, which keep
// forwarding to this node until the speaker is back; a leaving node's too (see stop).
func (b *BGP) Run(ctx context.Context) error {
	defer b.stop(ctx)
	retry := time.NewTicker(bgpRetry)
	defer retry.Stop()
	failed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.kick:
			failed = !b.sync(ctx)
		case <-retry.C:
			if failed {
				failed = !b.sync(ctx)
			}
			b.refreshSessions(ctx)
		case <-b.announcer.Changes():
			b.refreshSessions(ctx)
		}
	}
}

// stop closes the sessions. A restarting speaker keeps the paths of its graceful-restart peers
// (the router keeps them as stale until the new speaker sends them again). A leaving node's
// (cordoned or drained, then shut down; see leaving) withdraws every path first, on the sessions
// still up, as an excluded node's does while it runs: the other nodes' paths are in already, so
// the router moves the flows to them at once, instead of keeping this node's stale paths for the
// restart time. Then it ends every session with a Cease.
func (b *BGP) stop(ctx context.Context) {
	b.mu.Lock()
	snap := b.snap
	b.mu.Unlock()
	if snap == nil || !leaving(snap.Nodes[snap.NodeName]) {
		b.announcer.Stop(ctx, true)
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	withdrawn := b.applied
	withdrawn.Routes = nil
	if err := b.announcer.Apply(wctx, withdrawn); err != nil {
		b.speaker.log.Warn("the node is leaving: withdrawing its BGP paths before stopping", "err", err)
	} else {
		b.speaker.log.Info("the node is leaving: its BGP paths are withdrawn, its sessions end")
	}
	b.announcer.Stop(ctx, false)
}

// sync applies the latest snapshot; false when the announcer reported an error (retried later).
func (b *BGP) sync(ctx context.Context) bool {
	b.mu.Lock()
	snap := b.snap
	b.mu.Unlock()
	if snap == nil {
		return true
	}
	in := b.entries.input(snap, b.secretNamespace, b.passwords(ctx, snap))
	res := bgpconfig.Translate(in)
	b.reportProblems(snap, nodeProblems(in, res.Problems))
	err := b.announcer.Apply(ctx, res.Desired)
	if err != nil {
		b.speaker.log.Error("BGP", "err", err)
	}
	b.applied = res.Desired
	refused := b.announcer.Refused()
	withheld := ""
	if node := snap.Nodes[snap.NodeName]; node != nil && excludedFromAnnouncing(node) {
		withheld = "the node is labelled " + config.LabelExcludeFromLB
	}
	now := time.Now()
	b.mu.Lock()
	changed := withheld != b.withheld || !maps.Equal(refused, b.refused)
	b.withheld, b.refused = withheld, refused
	b.announced = res.Announced
	for ip := range b.since {
		if _, ok := res.Announced[ip]; !ok {
			delete(b.since, ip)
		}
	}
	for ip := range res.Announced {
		if _, ok := b.since[ip]; !ok {
			b.since[ip] = now
		}
	}
	b.mu.Unlock()
	if changed {
		b.speaker.StatusChanged()
	}
	b.refreshSessions(ctx)
	return err == nil
}

// bgpEntries converts snapshots' Services into translation entries, one per Service and IP. It
// keeps the last conversion: an IP whose Services are the very objects they were then (the
// Service index replaces an IP's list when one of them changes, and the informer replaces a
// Service's object) reuses its entries. Converting reads every Service object, scattered in
// memory: with a thousand Services, those cache misses were most of the conversion's time.
type bgpEntries struct {
	ips     []ServiceIP
	entries []bgpconfig.Service
	ends    []int // ends[i] is where the entries of ips[i] end
}

// input is the translation input for this node's snapshot. passwords holds the "password" key
// of the Secrets the BGPPeers name, by "namespace/name".
func (c *bgpEntries) input(snap *Snapshot, secretNamespace string, passwords map[string]string) bgpconfig.Input {
	in := bgpconfig.Input{
		Node:            bgpconfig.Node{Name: snap.NodeName},
		Passwords:       passwords,
		SecretNamespace: secretNamespace,
	}
	for _, p := range snap.BGPPeers {
		in.Peers = append(in.Peers, *p)
	}
	for _, a := range snap.BGPAdvertisements {
		if a.DeletionTimestamp == nil {
			in.Advertisements = append(in.Advertisements, *a)
		}
	}
	for _, c := range snap.Communities {
		in.Communities = append(in.Communities, *c)
	}
	for _, p := range snap.BFDProfiles {
		in.BFDProfiles = append(in.BFDProfiles, *p)
	}
	for _, p := range snap.Pools {
		in.Pools = append(in.Pools, *p)
	}
	node := snap.Nodes[snap.NodeName]
	if node == nil {
		return in
	}
	in.Node.Labels = node.Labels
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			in.Node.Addresses = append(in.Node.Addresses, ip)
		}
	}
	if excludedFromAnnouncing(node) {
		return in
	}
	in.Services = c.convert(snap)
	return in
}

// convert returns the entries of snap's Services, reusing those of unchanged IPs.
func (c *bgpEntries) convert(snap *Snapshot) []bgpconfig.Service {
	out := make([]bgpconfig.Service, 0, len(c.entries)+1)
	ends := make([]int, 0, len(snap.IPs))
	j := 0 // c.ips before j are below the current IP (both lists are sorted)
	for _, ip := range snap.IPs {
		for j < len(c.ips) && c.ips[j].IP.Less(ip.IP) {
			j++
		}
		first := len(out)
		if j < len(c.ips) && c.ips[j].IP == ip.IP && c.ips[j].Pool.Name == ip.Pool.Name && slices.Equal(c.ips[j].Services, ip.Services) {
			start := 0
			if j > 0 {
				start = c.ends[j-1]
			}
			out = append(out, c.entries[start:c.ends[j]]...)
		} else {
			for _, svc := range ip.Services {
				out = append(out, bgpconfig.Service{
					Name: svc.Namespace + "/" + svc.Name, Labels: svc.Labels, IPs: []netip.Addr{ip.IP}, Pool: ip.Pool.Name,
					LocalTrafficOnly: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
				})
			}
		}
		// Local endpoints come and go while the Services stay the same: looked up each time.
		for k, svc := range ip.Services {
			if e := &out[first+k]; e.LocalTrafficOnly {
				e.HasLocalEndpoints = false
				if snap.Endpoints != nil {
					ready := snap.Endpoints.NodesWithReady(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
					e.HasLocalEndpoints = slices.Contains(ready, snap.NodeName)
				}
			}
		}
		ends = append(ends, len(out))
	}
	c.ips, c.entries, c.ends = snap.IPs, out, ends
	return out
}

// passwords reads the Secrets the BGPPeers name (only those: the speaker does not watch Secrets).
func (b *BGP) passwords(ctx context.Context, snap *Snapshot) map[string]string {
	out := map[string]string{}
	for _, p := range snap.BGPPeers {
		key := bgpconfig.PasswordSecret(p, b.secretNamespace)
		if key == nil {
			continue
		}
		var secret corev1.Secret
		if err := b.speaker.client.Get(ctx, *key, &secret); err != nil {
			continue // reported by the translation as a missing secret
		}
		if pw, ok := secret.Data["password"]; ok {
			out[key.String()] = string(pw)
		}
	}
	return out
}

// nodeProblems keeps the problems that exist on this node only (two peers of the node with one
// address or different router IDs): the controller sets conditions and events for the rest, which
// every node would otherwise report once more.
func nodeProblems(in bgpconfig.Input, problems []bgpconfig.Problem) []bgpconfig.Problem {
	if len(problems) == 0 {
		return nil
	}
	global := bgpconfig.Validate(in)
	return slices.DeleteFunc(slices.Clone(problems), func(p bgpconfig.Problem) bool { return slices.Contains(global, p) })
}

// reportProblems records one Warning event per new problem on the object it concerns.
func (b *BGP) reportProblems(snap *Snapshot, problems []bgpconfig.Problem) {
	current := map[bgpconfig.Problem]bool{}
	for _, p := range problems {
		current[p] = true
		if b.reported[p] || b.speaker.recorder == nil {
			continue
		}
		if obj := problemObject(snap, p); obj != nil {
			b.speaker.recorder.Eventf(obj, corev1.EventTypeWarning, p.Reason, "node %s: %s", snap.NodeName, p.Message)
		}
	}
	b.reported = current
}

func problemObject(snap *Snapshot, p bgpconfig.Problem) runtime.Object {
	find := func(name string, objs []metav1.Object) runtime.Object {
		for _, o := range objs {
			if o.GetName() == name {
				return o.(runtime.Object)
			}
		}
		return nil
	}
	switch p.Kind {
	case "BGPPeer":
		return find(p.Name, asObjects(snap.BGPPeers))
	case "BGPAdvertisement":
		return find(p.Name, asObjects(snap.BGPAdvertisements))
	case "Community":
		return find(p.Name, asObjects(snap.Communities))
	case "BFDProfile":
		return find(p.Name, asObjects(snap.BFDProfiles))
	}
	return nil
}

func asObjects[T any, PT interface {
	*T
	metav1.Object
}](items []*T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i, it := range items {
		out[i] = PT(it)
	}
	return out
}

func (b *BGP) refreshSessions(ctx context.Context) {
	st, err := b.announcer.Status(ctx)
	if err != nil {
		b.speaker.log.Error("BGP session status", "err", err)
		return
	}
	// Message counters change with every update and are not part of the status: leave them out.
	for i := range st {
		st[i].UpdatesSent, st[i].UpdatesReceived = 0, 0
	}
	b.mu.Lock()
	changed := !slices.Equal(st, b.sessions)
	b.sessions = st
	b.mu.Unlock()
	if changed {
		b.speaker.StatusChanged()
	}
}

// Announcements implements Announcer: the IPs of externalTrafficPolicy: Local Services advertised
// to at least one established session. The others are not listed: readers derive them
// (bgpconfig.Announcers), and listing them would rewrite this node's status for every Service
// created; those this node cannot advertise are its deviations (fillStatus). All are listed,
// unmarked, while the CRD lacks the marker (Speaker.BGPListingPruned).
func (b *BGP) Announcements() []v1beta1.Announcement {
	b.mu.Lock()
	defer b.mu.Unlock()
	up := map[string]bool{}
	for _, s := range b.sessions {
		up[s.Name] = s.Established
	}
	var out []v1beta1.Announcement
	listAll := b.speaker.BGPListingPruned()
	for ip, an := range b.announced {
		if an.ClusterPolicy && !listAll {
			continue
		}
		var peers []string
		for _, p := range an.Peers {
			if up[p] {
				peers = append(peers, p)
			}
		}
		if len(peers) == 0 {
			continue
		}
		since := metav1.NewTime(b.since[ip])
		out = append(out, v1beta1.Announcement{
			IP: ip.String(), Protocol: v1beta1.ProtocolBGP, Peers: peers, Since: &since,
		})
	}
	return out
}

// fillStatus writes the BGP sessions, the listing's marker, whether the node withholds its
// announcements, and the deviations into the node's SpeakerStatus.
func (b *BGP) fillStatus(st *v1beta1.SpeakerStatusStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.speaker.BGPListingPruned() {
		st.BGPListing = v1beta1.BGPListingDeviations
	}
	st.BGPWithheld = b.withheld
	devs := b.deviationsLocked()
	st.BGPDeviationsTotal = int32(len(devs))
	st.BGPDeviations = devs[:min(len(devs), v1beta1.MaxListedDeviations)]
	st.BGPSessions = nil
	st.BGPSessionsUp, st.BGPSessionsTotal = 0, int32(len(b.sessions))
	for _, s := range b.sessions {
		out := v1beta1.BGPSessionStatus{
			Peer: s.Name, PeerAddress: s.Address.String(), State: s.State, BFDState: s.BFD,
			LastError: s.Reason,
		}
		if s.Established {
			st.BGPSessionsUp++
			since := metav1.NewTime(s.Since)
			out.Since = &since
		}
		st.BGPSessions = append(st.BGPSessions, out)
	}
}

// deviationsLocked lists, sorted by IP, the Cluster-policy IPs the translation selects for an
// established session whose route the announcer could not advertise (b.mu held). At steady state
// nothing is refused and the walk is over no IP.
func (b *BGP) deviationsLocked() []v1beta1.BGPDeviation {
	if len(b.refused) == 0 {
		return nil
	}
	up := map[string]bool{}
	for _, s := range b.sessions {
		up[s.Name] = s.Established
	}
	type deviation struct {
		ip     netip.Addr
		reason string
	}
	var devs []deviation
	for ip, an := range b.announced {
		if !an.ClusterPolicy || !slices.ContainsFunc(an.Peers, func(p string) bool { return up[p] }) {
			continue
		}
		for prefix, reason := range b.refused {
			if prefix.Contains(ip) {
				devs = append(devs, deviation{ip, reason})
				break
			}
		}
	}
	slices.SortFunc(devs, func(x, y deviation) int { return x.ip.Compare(y.ip) })
	out := make([]v1beta1.BGPDeviation, len(devs))
	for i, d := range devs {
		out[i] = v1beta1.BGPDeviation{IP: d.ip.String(), Reason: d.reason}
	}
	return out
}
