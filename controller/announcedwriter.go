package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

const (
	// announcedWritesPerSecond bounds the writer's own status writes. Each one is an update of the
	// Service that the API server sends to every watcher; speakers decode it and skip it (only its
	// conditions changed), but it is still work on every node: a first rollout to 10,000
	// announced Services takes about 8 minutes rather than keeping the API server busy.
	announcedWritesPerSecond = 20
	// allocQuiet and announcedMaxHold: a write waits until the allocation path has not written for
	// allocQuiet, but not longer than announcedMaxHold, so a steady stream of allocations slows
	// the condition down without starving it.
	allocQuiet       = 500 * time.Millisecond
	announcedMaxHold = 5 * time.Second
	// speakerSweep is how often the writer looks for speakers that went silent: a Lease that is
	// not renewed, or a SpeakerStatus that is not rewritten, sends no event when it stops
	// counting. A look walks the nodes, not the Services.
	speakerSweep = 5 * time.Second
	// speakerGoneAfter: a speaker whose Lease has been expired this long is gone (uninstalled
	// from its node, or the node is off): its SpeakerStatus and Lease are deleted, so the other
	// speakers stop counting it as a membership peer (speaker.MembershipPeers counts a status
	// with a Lease while it exists; the speakers do not watch the Leases). A speaker that comes
	// back creates both again. As speaker.StaleStatusAfter for speakers without a Lease.
	speakerGoneAfter = 5 * time.Minute
	// ingressIPIndex indexes Services by their ingress IPs, to find those a SpeakerStatus lists.
	ingressIPIndex = "ingressIP"
)

// announcedWriter keeps each Service's herald.io/Announced condition (announcedCondition decides
// it) from the nodes' SpeakerStatus objects. It runs beside the allocation and never delays it:
// its own queue and one worker, its own rate of writes, each write a patch of this condition alone,
// held back while the allocation path is writing (the API server is what allocation latency waits
// on, and this condition is worth less than an address). A change of a SpeakerStatus re-examines
// only the Services whose IPs it listed or lists, and those still waiting to be announced.
type announcedWriter struct {
	deps announcedDeps
	// speakerInf delivers the SpeakerStatuses as compactSpeakerStatus keeps them.
	speakerInf crcache.Informer
	queue      workqueue.TypedRateLimitingInterface[string]
	limiter    flowcontrol.RateLimiter
	// configInfs are the informers of what config holds: advertisements, BGPPeers, Communities.
	configInfs []crcache.Informer
	// configDirty: a pool, advertisement, peer or community changed since config was read.
	// derivedDirty: what config.derive reads (marked statuses, liveness, the Nodes' labels, the
	// configuration) changed since it ran. Only the worker reads and replaces config.
	configDirty, derivedDirty atomic.Bool
	config                    *announceConfig

	mu       sync.Mutex
	statuses map[string]*v1beta1.SpeakerStatus // by node
	// leases: until when each node's speaker Lease holds; replaced (never modified) on each
	// change. renewals: each Lease's renewTime as last seen, by node.
	leases   leaseExpiry
	renewals map[string]time.Time
	// speakers are statuses' values, replaced (never modified) on each change.
	speakers []*v1beta1.SpeakerStatus
	// nodeLabels are the Nodes' labels, by name, replaced (never modified) on each change.
	nodeLabels map[string]map[string]string
	// history holds the Services with something to remember (announcedHistory), by key.
	history map[string]announcedHistory
}

// announcedDeps is what the writer uses of the controller, handed to it explicitly.
type announcedDeps struct {
	log    *slog.Logger
	queues workqueue.MetricsProvider
	// services is the Services' informer: the writer adds its index of ingress IPs and its handlers.
	services cache.SharedIndexInformer
	// service returns a Service as the allocation path last saw or wrote it.
	service func(key string) (svc *corev1.Service, exists bool, err error)
	// handles says whether a Service is this controller's.
	handles func(*corev1.Service) bool
	// crds is the cache of Herald's kinds: SpeakerStatuses (as compactSpeakerStatus keeps them),
	// pools and advertisements; informer gets an informer of it (waiting for the API server).
	crds     crcache.Cache
	informer func(context.Context, client.Object) (crcache.Informer, error)
	// lastAllocWrite is when the allocation path last wrote a Service's status.
	lastAllocWrite func() time.Time
	// patchStatus patches a Service's status subresource.
	patchStatus func(ctx context.Context, svc *corev1.Service, patch map[string]any) error
	// leases is the informer of the speakers' Leases (labelled config.LabelSpeakerLease, in
	// Herald's namespace); removeSpeaker deletes a gone speaker's SpeakerStatus and Lease.
	leases        cache.SharedIndexInformer
	removeSpeaker func(ctx context.Context, node string) error
	recorder      record.EventRecorder
	// nodes is a metadata-only informer of the Nodes: their labels select the nodes of
	// BGPAdvertisements (announceConfig.derive).
	nodes cache.SharedIndexInformer
}

// announcedDeps hands the announced writer what it uses of the controller.
func (c *Controller) announcedDeps() announcedDeps {
	return announcedDeps{
		log: c.log, queues: c.opts.Metrics.queues, services: c.svcInf, handles: c.handles, crds: c.crds, informer: c.informer,
		service: func(key string) (*corev1.Service, bool, error) {
			obj, exists, err := c.services.GetByKey(key)
			if err != nil || !exists {
				return nil, false, err
			}
			return obj.(*corev1.Service), true, nil
		},
		lastAllocWrite: func() time.Time { return time.Unix(0, c.allocWrote.Load()) },
		patchStatus:    c.patchStatus,
		recorder:       c.recorder,
		leases:         c.leaseFactory.Coordination().V1().Leases().Informer(),
		removeSpeaker:  c.removeSpeaker,
		nodes:          c.nodeFactory.ForResource(corev1.SchemeGroupVersion.WithResource("nodes")).Informer(),
	}
}

// newAnnouncedWriter registers the writer's indexer and handlers; it must run before the
// informers start, so that every existing Service and SpeakerStatus arrives as an addition.
// The allocation path waits only for the pools' informer: the SpeakerStatus list (up to 10,000
// entries per node), which only this writer waits for, does not hold up the first allocation.
func newAnnouncedWriter(ctx context.Context, deps announcedDeps) (*announcedWriter, error) {
	a := &announcedWriter{
		deps: deps,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "announced", MetricsProvider: deps.queues}),
		limiter:    flowcontrol.NewTokenBucketRateLimiter(announcedWritesPerSecond, announcedWritesPerSecond),
		statuses:   map[string]*v1beta1.SpeakerStatus{},
		nodeLabels: map[string]map[string]string{},
		leases:     leaseExpiry{},
		renewals:   map[string]time.Time{},
		history:    map[string]announcedHistory{},
	}
	i, err := deps.informer(ctx, &v1beta1.SpeakerStatus{})
	if err != nil {
		return nil, err
	}
	a.speakerInf = i
	for _, obj := range []client.Object{&v1beta1.L2Advertisement{}, &v1beta1.BGPAdvertisement{}, &v1beta1.BGPPeer{}, &v1beta1.Community{}} {
		i, err := deps.informer(ctx, obj)
		if err != nil {
			return nil, err
		}
		a.configInfs = append(a.configInfs, i)
	}
	a.configDirty.Store(true)
	if err := deps.services.AddIndexers(cache.Indexers{ingressIPIndex: indexIngressIPs}); err != nil {
		return nil, err
	}
	if _, err := deps.services.AddEventHandler(a.serviceHandlers()); err != nil {
		return nil, err
	}
	configHandlers := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.configChanged() },
		UpdateFunc: func(old, obj any) {
			if specUpdated(old, obj) {
				a.configChanged()
			}
		},
		DeleteFunc: func(any) { a.configChanged() },
	}
	for _, inf := range a.configInfs {
		if _, err := inf.AddEventHandler(configHandlers); err != nil {
			return nil, err
		}
	}
	// Node objects carry large managedFields (the kubelet's status writes); only labels are read.
	if err := deps.nodes.SetTransform(stripManagedFields); err != nil {
		return nil, err
	}
	if _, err := deps.nodes.AddEventHandler(a.nodeHandlers()); err != nil {
		return nil, err
	}
	if _, err := a.speakerInf.AddEventHandler(a.speakerHandlers()); err != nil {
		return nil, err
	}
	if _, err := deps.leases.AddEventHandler(a.leaseHandlers()); err != nil {
		return nil, err
	}
	return a, nil
}

// run works until ctx ends, once the SpeakerStatus and advertisement caches hold their first lists
// (until then the queue only collects Services); it returns once its goroutines have.
func (a *announcedWriter) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer a.queue.ShutDown() // before the wait: it ends the worker
	synced := []cache.InformerSynced{a.speakerInf.HasSynced, a.deps.leases.HasSynced, a.deps.nodes.HasSynced}
	for _, inf := range a.configInfs {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() == nil {
			a.deps.log.Error("herald.io/Announced: the SpeakerStatus, Lease, Node or BGP configuration caches did not sync; the condition is not written")
		}
		return
	}
	wg.Go(func() { a.sweep(ctx) })
	wg.Go(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) { work(ctx, a.deps.log, a.queue, a.sync) }, time.Second)
	})
	<-ctx.Done()
}

// configChanged re-examines every Service: the reason they are not announced may have changed,
// and so may the nodes that announce them by BGP (derived from the configuration). Safe on a nil
// writer (cloud-provider mode has none).
func (a *announcedWriter) configChanged() {
	if a == nil {
		return
	}
	a.configDirty.Store(true)
	a.derivedChanged()
}

// derivedChanged re-examines every Service after a change of what announceConfig.derive reads.
// It is a change of nodes (a session, a label, a liveness) or of the configuration: rare, and
// the writes it leads to are paced, and settle (announcedSettle). While a change is pending (no
// Service decided since the last), the Services are all queued already: a burst (every status
// and Lease arriving at the controller's start) queues them once.
func (a *announcedWriter) derivedChanged() {
	if a.derivedDirty.Swap(true) {
		return
	}
	for _, k := range a.deps.services.GetIndexer().ListKeys() {
		a.queue.Add(k)
	}
}

// nodeHandlers follow the Nodes' labels (the informer holds their metadata only).
func (a *announcedWriter) nodeHandlers() cache.ResourceEventHandler {
	set := func(obj any, deleted bool) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		a.mu.Lock()
		old, had := a.nodeLabels[m.GetName()]
		if (deleted && !had) || (!deleted && had && maps.Equal(old, m.GetLabels())) {
			a.mu.Unlock()
			return
		}
		labels := maps.Clone(a.nodeLabels)
		if deleted {
			delete(labels, m.GetName())
		} else {
			labels[m.GetName()] = m.GetLabels()
		}
		a.nodeLabels = labels
		a.mu.Unlock()
		a.derivedChanged()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { set(obj, false) },
		UpdateFunc: func(_, obj any) { set(obj, false) },
		DeleteFunc: func(obj any) { set(obj, true) },
	}
}

// serviceHandlers queue the LoadBalancer Services, and those still carrying the condition (one
// that stopped being a LoadBalancer is forgotten).
func (a *announcedWriter) serviceHandlers() cache.ResourceEventHandler {
	changed := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok && (svc.Spec.Type == corev1.ServiceTypeLoadBalancer ||
			meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced) != nil) {
			enqueueKey(a.queue, svc)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj) },
		DeleteFunc: func(obj any) { enqueueKey(a.queue, obj) },
	}
}

func indexIngressIPs(obj any) ([]string, error) {
	if svc, ok := obj.(*corev1.Service); ok && svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return ingressIPs(svc), nil
	}
	return nil, nil
}

func (a *announcedWriter) speakerHandlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.speakerChanged(nil, asSpeakerStatus(obj)) },
		UpdateFunc: func(old, obj any) { a.speakerChanged(asSpeakerStatus(old), asSpeakerStatus(obj)) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			a.speakerChanged(asSpeakerStatus(obj), nil)
		},
	}
}

func asSpeakerStatus(obj any) *v1beta1.SpeakerStatus {
	st, _ := obj.(*v1beta1.SpeakerStatus)
	return st
}

// speakerChanged records a SpeakerStatus (cur nil: deleted) and queues the Services it concerns.
func (a *announcedWriter) speakerChanged(old, cur *v1beta1.SpeakerStatus) {
	a.mu.Lock()
	switch {
	case cur != nil:
		a.statuses[cur.Name] = cur
	case old != nil:
		delete(a.statuses, old.Name)
	}
	a.speakers = slices.Collect(maps.Values(a.statuses))
	leases := a.leases
	a.mu.Unlock()
	ips, others, derived := speakerChanges(old, cur, leases, time.Now())
	a.enqueueIPs(ips)
	switch {
	case derived:
		a.derivedChanged()
	case others:
		a.enqueuePending()
	}
}

// marked reports whether a status lists only its deviations (bgpListing: Deviations): the
// Cluster-policy IPs it advertises by BGP are derived.
func marked(st *v1beta1.SpeakerStatus) bool {
	return st != nil && st.Status.BGPListing == v1beta1.BGPListingDeviations
}

// speakerChanges compares two versions of one SpeakerStatus (nil: absent). It returns the IPs
// whose announcement by this node changed, whether the change may matter to Services whose IPs
// no node lists (a status appearing or going, a speaker going silent or coming back, a change of
// its cap or of its established BGP sessions), and whether it changes what is derived of a
// marked status, so of every Service (the same, of a marked status; its listing, withholding or
// capped deviations).
func speakerChanges(old, cur *v1beta1.SpeakerStatus, leases leaseExpiry, now time.Time) (ips []string, others, derived bool) {
	wasLive, isLive := leases.live(old, now), leases.live(cur, now)
	anyMarked := marked(old) || marked(cur)
	switch {
	case !wasLive && !isLive:
		return nil, old == nil || cur == nil, false
	case wasLive && !isLive:
		return listedIPs(old), true, anyMarked
	case !wasLive && isLive:
		return listedIPs(cur), true, anyMarked
	}
	ips = diffAnnouncements(old.Status.Announcements, cur.Status.Announcements)
	sessions := !slices.Equal(establishedPeers(old), establishedPeers(cur))
	others = isCapped(old) != isCapped(cur) || sessions
	o, c := old.Status, cur.Status
	derived = anyMarked && (sessions || marked(old) != marked(cur) || (o.BGPWithheld == "") != (c.BGPWithheld == "") ||
		(int(o.BGPDeviationsTotal) > len(o.BGPDeviations)) != (int(c.BGPDeviationsTotal) > len(c.BGPDeviations)))
	if anyMarked && !derived && !slices.Equal(o.BGPDeviations, c.BGPDeviations) {
		// A deviation more or less: the Services of those IPs.
		ips = append(ips, diffDeviations(o.BGPDeviations, c.BGPDeviations)...)
	}
	return ips, others, derived
}

// diffDeviations returns the IPs in one list of deviations and not the other.
func diffDeviations(a, b []v1beta1.BGPDeviation) []string {
	in := func(list []v1beta1.BGPDeviation) map[string]bool {
		m := make(map[string]bool, len(list))
		for _, d := range list {
			m[d.IP] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out []string
	for ip := range ina {
		if !inb[ip] {
			out = append(out, ip)
		}
	}
	for ip := range inb {
		if !ina[ip] {
			out = append(out, ip)
		}
	}
	slices.Sort(out)
	return out
}

func listedIPs(st *v1beta1.SpeakerStatus) []string {
	out := make([]string, len(st.Status.Announcements))
	for i, an := range st.Status.Announcements {
		out[i] = an.IP
	}
	return out
}

// establishedPeers lists a status's Established sessions as "peer/address" (the address's family
// decides which IPs it takes).
func establishedPeers(st *v1beta1.SpeakerStatus) []string {
	var out []string
	for _, s := range st.Status.BGPSessions {
		if s.State == bgpEstablished {
			out = append(out, s.Peer+"/"+s.PeerAddress)
		}
	}
	slices.Sort(out)
	return out
}

func compareAnnouncements(x, y v1beta1.Announcement) int {
	return cmp.Or(strings.Compare(x.IP, y.IP), strings.Compare(string(x.Protocol), string(y.Protocol)))
}

// diffAnnouncements returns, sorted and once each, the IPs with an entry (IP and protocol) in one
// list and not the other; both lists are sorted by compareAnnouncements.
func diffAnnouncements(a, b []v1beta1.Announcement) []string {
	var out []string
	add := func(ip string) {
		if len(out) == 0 || out[len(out)-1] != ip {
			out = append(out, ip)
		}
	}
	for i, j := 0, 0; i < len(a) || j < len(b); {
		c := 0
		switch {
		case i == len(a):
			c = 1
		case j == len(b):
			c = -1
		default:
			c = compareAnnouncements(a[i], b[j])
		}
		switch {
		case c < 0:
			add(a[i].IP)
			i++
		case c > 0:
			add(b[j].IP)
			j++
		default:
			i++
			j++
		}
	}
	return out
}

// compactSpeakerStatus is the cache's transform of a SpeakerStatus: it keeps what the condition
// reads (the node, lastUpdate, each announcement's IP and protocol, the count, the sessions' peers,
// addresses and states, the BGP listing's marker, withholding and deviations' IPs). On a node with thousands of IPs the rest (interfaces, peers and a time per entry)
// is most of the object. It also sorts the announcements, as the API says they are, should a
// writer not have.
func compactSpeakerStatus(obj any) (any, error) {
	st, ok := obj.(*v1beta1.SpeakerStatus)
	if !ok {
		return obj, nil // a deletion's tombstone
	}
	st.ManagedFields = nil
	anns := st.Status.Announcements
	for i, an := range anns {
		anns[i] = v1beta1.Announcement{IP: an.IP, Protocol: an.Protocol}
	}
	if !slices.IsSortedFunc(anns, compareAnnouncements) {
		slices.SortFunc(anns, compareAnnouncements)
	}
	sessions := st.Status.BGPSessions
	for i, s := range sessions {
		sessions[i] = v1beta1.BGPSessionStatus{Peer: s.Peer, PeerAddress: s.PeerAddress, State: s.State}
	}
	devs := st.Status.BGPDeviations
	for i, d := range devs {
		devs[i] = v1beta1.BGPDeviation{IP: d.IP}
	}
	st.Status = v1beta1.SpeakerStatusStatus{LastUpdate: st.Status.LastUpdate, AnnouncedIPs: st.Status.AnnouncedIPs,
		Announcements: anns, BGPSessions: sessions, BGPListing: st.Status.BGPListing, BGPWithheld: st.Status.BGPWithheld,
		BGPDeviationsTotal: st.Status.BGPDeviationsTotal, BGPDeviations: devs}
	return st, nil
}

// sweep re-examines, every speakerSweep, the Services of the speakers that went silent since the
// last look, and removes the speakers gone for speakerGoneAfter.
func (a *announcedWriter) sweep(ctx context.Context) {
	last := time.Now()
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		now := time.Now()
		silent, derived := false, false
		speakers, leases := a.speakerList()
		for _, st := range speakers {
			if leases.live(st, last) && !leases.live(st, now) {
				silent, derived = true, derived || marked(st)
				a.enqueueIPs(listedIPs(st))
			}
		}
		switch {
		case derived:
			a.derivedChanged()
		case silent:
			a.enqueuePending()
		}
		for node, until := range leases {
			if now.Sub(until) < speakerGoneAfter {
				continue
			}
			if err := a.deps.removeSpeaker(ctx, node); err != nil {
				a.deps.log.Error("cannot remove a gone speaker's SpeakerStatus and Lease", "node", node, "err", err)
				continue
			}
			a.deps.log.Info("speaker gone: its Lease expired long ago; its SpeakerStatus and Lease are deleted", "node", node, "expired", until)
		}
		last = now
	}, speakerSweep)
}

func (a *announcedWriter) speakerList() ([]*v1beta1.SpeakerStatus, leaseExpiry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.speakers, a.leases
}

func (a *announcedWriter) leaseHandlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.leaseChanged(obj, false) },
		UpdateFunc: func(_, obj any) { a.leaseChanged(obj, false) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			a.leaseChanged(obj, true)
		},
	}
}

// leaseChanged records a speaker Lease's renewal (or its deletion), and queues the node's Services
// if that made its speaker live or not.
func (a *announcedWriter) leaseChanged(obj any, deleted bool) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || !strings.HasPrefix(l.Name, config.SpeakerLeasePrefix) {
		return
	}
	node := strings.TrimPrefix(l.Name, config.SpeakerLeasePrefix)
	now := time.Now()
	var renew time.Time
	if l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.Time
	}
	a.mu.Lock()
	old := a.leases
	leases := maps.Clone(old)
	switch {
	case deleted:
		delete(leases, node)
		delete(a.renewals, node)
	case !renew.Equal(a.renewals[node]) || old[node].IsZero():
		a.renewals[node] = renew
		leases[node] = now.Add(time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, config.SpeakerLeaseDuration)) * time.Second)
	default:
		a.mu.Unlock()
		return // not renewed (a change of labels, say): no later expiry
	}
	a.leases = leases
	st := a.statuses[node]
	a.mu.Unlock()
	if st != nil && old.live(st, now) != leases.live(st, now) {
		a.enqueueIPs(listedIPs(st))
		if marked(st) {
			a.derivedChanged()
		} else {
			a.enqueuePending()
		}
	}
}

// enqueueIPs queues the Services holding any of ips.
func (a *announcedWriter) enqueueIPs(ips []string) {
	idx := a.deps.services.GetIndexer()
	for _, ip := range ips {
		keys, _ := idx.IndexKeys(ingressIPIndex, ip) // only fails for an unknown index
		for _, k := range keys {
			a.queue.Add(k)
		}
	}
}

// enqueuePending queues the Services waiting for their IPs to be announced.
func (a *announcedWriter) enqueuePending() {
	a.mu.Lock()
	var keys []string
	for k, h := range a.history {
		if h.pending() {
			keys = append(keys, k)
		}
	}
	a.mu.Unlock()
	for _, k := range keys {
		a.queue.Add(k)
	}
}

// sync brings one Service's condition to what the speakers say. A write waits for its turn
// (pace), then the Service is decided again: the speakers or the Service may have moved on.
func (a *announcedWriter) sync(ctx context.Context, key string) error {
	if _, _, write, err := a.decide(ctx, key); err != nil || !write {
		return err
	}
	if err := a.pace(ctx); err != nil {
		return err
	}
	svc, want, write, err := a.decide(ctx, key)
	if err != nil || !write {
		return err
	}
	return a.write(ctx, svc, want)
}

// decide evaluates a Service and reports whether its condition is to be written: want, or, nil,
// removed (the Service has no IP any more).
func (a *announcedWriter) decide(ctx context.Context, key string) (svc *corev1.Service, want *metav1.Condition, write bool, err error) {
	svc, exists, err := a.deps.service(key)
	if err != nil {
		return nil, nil, false, err
	}
	if !exists || !a.deps.handles(svc) {
		a.remember(key, announcedHistory{}) // not ours (any more): whatever it carries is not ours to change
		return nil, nil, false, nil
	}
	old := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced)
	if len(ingressIPs(svc)) == 0 {
		a.remember(key, announcedHistory{})
		return svc, nil, old != nil, nil
	}
	if a.configDirty.Swap(false) {
		cfg, err := a.loadConfig(ctx)
		if err != nil {
			a.configDirty.Store(true) // read again on the retry
			return nil, nil, false, err
		}
		a.config = cfg
		a.derivedDirty.Store(true)
	}
	a.mu.Lock()
	h, speakers, leases, nodeLabels := a.history[key], a.speakers, a.leases, a.nodeLabels
	a.mu.Unlock()
	if a.derivedDirty.Swap(false) {
		a.config.leases = leases
		a.config.derive(speakers, nodeLabels, time.Now())
	}
	cfg := *a.config
	cfg.leases = leases
	want, recheck, h := announcedCondition(svc, speakers, &cfg, h, time.Now())
	a.remember(key, h)
	if recheck > 0 {
		a.queue.AddAfter(key, recheck)
	}
	return svc, want, want != nil && conditionChanged(old, want), nil
}

// remember keeps h when it holds something to remember, and forgets the Service otherwise.
func (a *announcedWriter) remember(key string, h announcedHistory) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h.pending() || h.message != "" {
		a.history[key] = h
	} else {
		delete(a.history, key)
	}
}

// loadConfig reads the pools, advertisements, BGPPeers and Communities from the cache.
func (a *announcedWriter) loadConfig(ctx context.Context) (*announceConfig, error) {
	var l2 v1beta1.L2AdvertisementList
	var bgp v1beta1.BGPAdvertisementList
	var peers v1beta1.BGPPeerList
	var communities v1beta1.CommunityList
	if err := errors.Join(a.deps.crds.List(ctx, &l2), a.deps.crds.List(ctx, &bgp), a.deps.crds.List(ctx, &peers),
		a.deps.crds.List(ctx, &communities)); err != nil {
		return nil, fmt.Errorf("listing the cached advertisements, BGPPeers and Communities: %w", err)
	}
	return newAnnounceConfig(listPools(ctx, a.deps.crds, a.deps.log), l2.Items, bgp.Items, peers.Items, communities.Items), nil
}

// pace waits for the writer's turn: its own rate, then a quiet moment of the allocation path.
func (a *announcedWriter) pace(ctx context.Context) error {
	if err := a.limiter.Wait(ctx); err != nil {
		return err
	}
	holdUntil := time.Now().Add(announcedMaxHold)
	for {
		wait := min(allocQuiet-time.Since(a.deps.lastAllocWrite()), time.Until(holdUntil))
		if wait <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// write patches the Service's herald.io/Announced condition alone (the conditions merge by type),
// or removes it when want is nil. A change to False is also a Warning event.
func (a *announcedWriter) write(ctx context.Context, svc *corev1.Service, want *metav1.Condition) error {
	old := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced)
	var cond any = map[string]any{"type": config.ConditionAnnounced, "$patch": "delete"}
	if want != nil {
		cond = stamped(*want, old)
	}
	if err := a.deps.patchStatus(ctx, svc, map[string]any{"status": map[string]any{"conditions": []any{cond}}}); err != nil {
		return err
	}
	name := svc.Namespace + "/" + svc.Name
	switch {
	case want == nil:
		a.deps.log.Debug("service has no IP any more; herald.io/Announced removed", "service", name)
	case want.Status == metav1.ConditionFalse:
		a.deps.recorder.Event(svc, corev1.EventTypeWarning, want.Reason, want.Message)
		a.deps.log.Info("service not announced", "service", name, "reason", want.Reason, "message", want.Message)
	default:
		a.deps.log.Debug("service announced", "service", name, "message", want.Message)
	}
	return nil
}
