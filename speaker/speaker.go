// Package speaker is the per-node agent's orchestration: it watches Nodes, Services and the
// herald.io configuration, builds one Snapshot of what should be announced, hands it to every
// Announcer (L2, BGP), and writes this node's SpeakerStatus.
package speaker

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/addresspool"
	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/dataplane"
)

// Config configures a Speaker.
type Config struct {
	NodeName   string
	RestConfig *rest.Config
	// LBClass: Services with another spec.loadBalancerClass are not announced (unset class is).
	LBClass string
	// Endpoints is the node's one local-endpoint view; the speaker feeds it from its EndpointSlice
	// informer and rebuilds the snapshot when it changes. The data plane reads the same instance.
	Endpoints *dataplane.LocalEndpoints
	Logger    *slog.Logger
	// MembersAlive, if set, reports how many speakers this node hears (itself included).
	MembersAlive func() int
	// DataplaneForwards, if set, reports whether the node's data plane forwards Service traffic
	// (its first sync is committed, or an earlier run's rules are in place). Nothing is announced
	// before it does (for at most maxDataplaneWait): an IP announced from a freshly booted node
	// whose rules are not in yet draws traffic that the node cannot forward.
	DataplaneForwards func() bool
	// LeaseNamespace is Herald's namespace, where this node's speaker Lease is renewed
	// (config.SpeakerLeaseName): liveness is read from it, and the SpeakerStatus is written only
	// when its content changes. Empty: no Lease, and the SpeakerStatus is rewritten every minute
	// to show the speaker alive (speakers before the Leases did that; bench/scale measures it).
	LeaseNamespace string
}

// maxDataplaneWait bounds how long the first announcement waits for the data plane: a data
// plane that cannot program (its failure is in the log, the readiness probe and the
// SpeakerStatus) must not also keep the node silent for ever.
const maxDataplaneWait = 10 * time.Second

// dataplanePoll is how often the first announcement checks the data plane: the wait costs at
// most this much on top of the data plane's first sync.
const dataplanePoll = 5 * time.Millisecond

// Speaker runs the announcers on this node.
type Speaker struct {
	cfg Config
	// log is cfg.Logger with component=speaker; the parts the speaker starts get cfg.Logger and
	// name their own component.
	log        *slog.Logger
	cache      cache.Cache
	client     client.Client
	recorder   record.EventRecorder
	announcers []Announcer
	statusFns  []func(*v1beta1.SpeakerStatusStatus)
	kick       chan struct{}
	statusKick chan struct{}
	// services is fed by the Service informer's events; ips is the snapshot loop's own.
	services *serviceIndex
	ips      ipTable
	// watchPeers, set by WatchPeers, runs in Run until its context ends.
	watchPeers func(ctx context.Context)
	// written is this node's SpeakerStatus as the last successful write returned it (statusLoop's
	// only): the next write starts from it instead of reading the object again, which with
	// thousands of announcements cost the API server as much as the write; nil after a failure.
	written *v1beta1.SpeakerStatus
	// statusGone: this node's SpeakerStatus was deleted (the controller removes those of speakers
	// whose Lease expired long ago); the next write creates it again.
	statusGone atomic.Bool
	// bgpListingPruned: the API server dropped bgpListing from a write (the SpeakerStatus CRD is
	// older than this speaker: Helm does not upgrade CRDs). Readers would then take the status
	// for an older speaker's full list and find the Cluster-policy BGP IPs missing, so the
	// speaker lists them all, as older speakers do, until it restarts.
	bgpListingPruned atomic.Bool
}

// BGPListingPruned reports whether the SpeakerStatus CRD lacks bgpListing (see the field): the
// BGP announcer then lists every IP it advertises, unmarked.
func (s *Speaker) BGPListingPruned() bool { return s.bgpListingPruned.Load() }

// New connects to the API server (nothing is watched until Run).
func New(cfg Config, recorder record.EventRecorder) (*Speaker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LBClass == "" {
		cfg.LBClass = config.DefaultLoadBalancerClass
	}
	scheme := heraldscheme.New()
	// The cache holds every Service and EndpointSlice of the cluster (shared with the data
	// plane): what neither the announcers nor the data plane read is not kept (managed fields
	// of every kind, and see dataplane.StripForProxy).
	c, err := cache.New(cfg.RestConfig, cache.Options{Scheme: scheme, DefaultTransform: dataplane.StripForProxy})
	if err != nil {
		return nil, fmt.Errorf("speaker: cache: %w", err)
	}
	cl, err := client.New(cfg.RestConfig, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("speaker: client: %w", err)
	}
	return &Speaker{cfg: cfg, log: cfg.Logger.With("component", "speaker"), cache: c, client: cl, recorder: recorder,
		kick: make(chan struct{}, 1), statusKick: make(chan struct{}, 1), services: newServiceIndex(cfg.LBClass)}, nil
}

// Cache is the speaker's informer cache, for parts that watch more (the local-endpoint view
// registers on its EndpointSlice informer).
func (s *Speaker) Cache() cache.Cache { return s.cache }

// Client writes to the API server.
func (s *Speaker) Client() client.Client { return s.client }

// Recorder emits events as this node's speaker.
func (s *Speaker) Recorder() record.EventRecorder { return s.recorder }

// AddAnnouncer registers an announcer; call before Run.
func (s *Speaker) AddAnnouncer(a Announcer) { s.announcers = append(s.announcers, a) }

// AddStatusSource registers a function that fills its part of this node's SpeakerStatus (BGP
// sessions, data plane) each time it is written; call before Run. It must be quick.
func (s *Speaker) AddStatusSource(fill func(*v1beta1.SpeakerStatusStatus)) {
	s.statusFns = append(s.statusFns, fill)
}

// Changed asks for a new snapshot (announcers call it when, e.g., local endpoints changed).
func (s *Speaker) Changed() { signal(s.kick) }

// StatusChanged asks for this node's SpeakerStatus to be rewritten soon.
func (s *Speaker) StatusChanged() { signal(s.statusKick) }

// watched lists the kinds whose changes rebuild the snapshot.
func watched() []client.Object { return append(configKinds(), &corev1.Service{}) }

// Run watches, applies snapshots and runs the announcers until ctx ends, or until an announcer
// fails: then it stops the others and returns that announcer's error. Either way it returns once
// every goroutine it started (the cache, the peer watch, the announcers, the status loop) has
// returned.
func (s *Speaker) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for _, obj := range watched() {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("speaker: informer for %T: %w", obj, err)
		}
		handler := toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.Changed() },
			UpdateFunc: func(any, any) { s.Changed() },
			DeleteFunc: func(any) { s.Changed() },
		}
		if _, isService := obj.(*corev1.Service); isService {
			// The index says whether a snapshot would differ: a Service without ingress IPs is in
			// none, so its creation, and every change before the controller gives it an address,
			// rebuilds nothing.
			handler = toolscache.ResourceEventHandlerFuncs{
				AddFunc: func(obj any) { s.serviceChanged(obj, false) },
				UpdateFunc: func(old, obj any) {
					if !onlyConditionsChanged(old, obj) {
						s.serviceChanged(obj, false)
					}
				},
				DeleteFunc: func(obj any) { s.serviceChanged(obj, true) },
			}
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	if s.cfg.Endpoints != nil {
		inf, err := s.cache.GetInformer(ctx, &discoveryv1.EndpointSlice{})
		if err != nil {
			return fmt.Errorf("speaker: EndpointSlice informer: %w", err)
		}
		if err := s.cfg.Endpoints.Register(inf); err != nil {
			return err
		}
		unsubscribe := s.cfg.Endpoints.Subscribe(func(types.NamespacedName) { s.Changed() })
		defer unsubscribe()
	}
	if s.cfg.LeaseNamespace != "" {
		if err := s.watchOwnStatus(ctx); err != nil {
			return err
		}
	}
	cacheErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); cacheErr <- s.cache.Start(ctx) }()
	if s.cfg.LeaseNamespace != "" {
		// Renewed from the start: the Lease, not the status, says this speaker is alive.
		wg.Go(func() { s.leaseLoop(ctx) })
	}
	if s.watchPeers != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.watchPeers(ctx) }()
	}
	s.prepare(ctx)
	if !s.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil // stopped while syncing: a stop, not a failure
		}
		return fmt.Errorf("speaker: caches did not sync: %w", <-cacheErr)
	}
	s.log.Info("caches synced", "node", s.cfg.NodeName)

	errs := make(chan error, len(s.announcers))
	for _, a := range s.announcers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.statusLoop(ctx) }()

	// The first status write also makes this node a membership peer of the others (MembershipPeers):
	// it does not wait for the data plane.
	s.StatusChanged()
	s.waitForDataplane(ctx)
	s.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err // the deferred stop and wait end the other announcers
		case <-s.kick:
			snap, err := s.buildSnapshot(ctx, true)
			if err != nil {
				s.log.Error("cannot build snapshot", "err", err)
				continue
			}
			for _, a := range s.announcers {
				a.Apply(snap)
			}
		}
	}
}

// waitForDataplane returns once the data plane forwards, at most maxDataplaneWait after it was
// called, or when ctx ends.
func (s *Speaker) waitForDataplane(ctx context.Context) {
	if s.cfg.DataplaneForwards == nil || s.cfg.DataplaneForwards() {
		return
	}
	start := time.Now()
	tick := time.NewTicker(dataplanePoll)
	defer tick.Stop()
	deadline := time.NewTimer(maxDataplaneWait)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			s.log.Warn("announcing before the data plane forwards (no earlier rules, first sync not committed)", "waited", maxDataplaneWait)
			return
		case <-tick.C:
			if s.cfg.DataplaneForwards() {
				s.log.Info("data plane forwards; announcing", "waited", time.Since(start).Round(time.Millisecond))
				return
			}
		}
	}
}

// onlyConditionsChanged reports whether a Service update changed nothing but its status
// conditions (the controller's herald.io/Announced writes), which no snapshot reads: rebuilding
// every node's snapshot for each such write would cost as much as a real change.
func onlyConditionsChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Service)
	c, ok2 := cur.(*corev1.Service)
	if !ok1 || !ok2 {
		return false
	}
	a, b := *o, *c // shallow copies: only their own top-level fields are set below
	a.Status.Conditions, b.Status.Conditions = nil, nil
	a.ResourceVersion, b.ResourceVersion = "", ""
	a.ManagedFields, b.ManagedFields = nil, nil
	return equality.Semantic.DeepEqual(&a, &b)
}

// serviceChanged indexes a Service's new version (or its deletion) and asks for a new snapshot if
// the index changed.
func (s *Speaker) serviceChanged(obj any, deleted bool) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	if deleted {
		svc = nil
	}
	if s.services.set(key, svc) {
		s.Changed()
	}
}

// prepare hands announcers that can start early (Preparer: BGP sessions, which take a second or
// more to come up because routers retry connections on a timer) a snapshot without Services as
// soon as the small configuration kinds are loaded, while the Services, the bulk of the initial
// list, are still loading.
func (s *Speaker) prepare(ctx context.Context) {
	var preparers []Preparer
	for _, a := range s.announcers {
		if p, ok := a.(Preparer); ok {
			preparers = append(preparers, p)
		}
	}
	if len(preparers) == 0 {
		return
	}
	var synced []toolscache.InformerSynced
	for _, obj := range configKinds() {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return // Run's WaitForCacheSync reports it
		}
		synced = append(synced, inf.HasSynced)
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	snap, err := s.buildSnapshot(ctx, false)
	if err != nil {
		s.log.Warn("no early start (BGP sessions open with the first full snapshot)", "err", err)
		return
	}
	for _, p := range preparers {
		p.Prepare(ctx, snap)
	}
}

// configKinds are the kinds a snapshot without Services is built from.
func configKinds() []client.Object {
	return []client.Object{&corev1.Node{}, &v1beta1.IPAddressPool{}, &v1beta1.L2Advertisement{},
		&v1beta1.BGPAdvertisement{}, &v1beta1.BGPPeer{}, &v1beta1.Community{}, &v1beta1.BFDProfile{}}
}

// buildSnapshot reads the cache and, with withServices, the Service index (without, Snapshot.IPs
// is empty). Only the snapshot loop calls it.
func (s *Speaker) buildSnapshot(ctx context.Context, withServices bool) (*Snapshot, error) {
	noCopy := client.UnsafeDisableDeepCopy // the snapshot is read-only
	var (
		nodes corev1.NodeList
		pools v1beta1.IPAddressPoolList
		l2s   v1beta1.L2AdvertisementList
		bgps  v1beta1.BGPAdvertisementList
		peers v1beta1.BGPPeerList
		comms v1beta1.CommunityList
		bfds  v1beta1.BFDProfileList
	)
	for _, l := range []client.ObjectList{&nodes, &pools, &l2s, &bgps, &peers, &comms, &bfds} {
		if err := s.cache.List(ctx, l, noCopy); err != nil {
			return nil, err
		}
	}
	snap := &Snapshot{
		NodeName:          s.cfg.NodeName,
		Nodes:             map[string]*corev1.Node{},
		Pools:             ptrs(pools.Items),
		L2Advertisements:  ptrs(l2s.Items),
		BGPAdvertisements: ptrs(bgps.Items),
		BGPPeers:          ptrs(peers.Items),
		Communities:       ptrs(comms.Items),
		BFDProfiles:       ptrs(bfds.Items),
	}
	if s.cfg.Endpoints != nil {
		snap.Endpoints = s.cfg.Endpoints
	}
	for i := range nodes.Items {
		snap.Nodes[nodes.Items[i].Name] = &nodes.Items[i]
	}
	addresspool.SortObjects(snap.Pools)
	if withServices {
		snap.Pools, snap.IPs = s.ips.update(snap.Pools, s.services)
	}
	return snap, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// RunStatusWriter only writes this node's SpeakerStatus (from the announcers' Announcements, when
// StatusChanged asks) and renews its Lease, until ctx ends: no watches, snapshots or announcers.
// bench/scale drives it for many simulated nodes in one process; Run runs the same two loops.
func (s *Speaker) RunStatusWriter(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.cfg.LeaseNamespace != "" {
		wg.Go(func() { s.leaseLoop(ctx) })
	}
	s.StatusChanged()
	s.statusLoop(ctx)
}

// statusLoop writes this node's SpeakerStatus when asked and its content changed. Without a
// Lease (Config.LeaseNamespace empty) it also rewrites it every minute, so a reader can tell a
// live speaker from a dead one by lastUpdate; with one, a node whose announcements, sessions and
// data plane hold still writes nothing (the Lease's renewals are its only writes). Writes are spaced as v1beta1.StatusWriteSpacing
// says: each sends the whole object to the API server and to every speaker watching it (measured
// in the BGP lab bench at 400 Services, writing every 500 ms cost the API server 50 ms of CPU per
// Service created, three quarters of its work).
//
// The count of speakers this node hears is checked every second, and a change written at once: a
// reader (heraldctl status, an operator after a restart) must not see a stale count for a minute.
func (s *Speaker) statusLoop(ctx context.Context) {
	var refresh <-chan time.Time // the minute's rewrite, without a Lease only
	if s.cfg.LeaseNamespace == "" {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		refresh = tick.C
	}
	members := time.NewTicker(time.Second)
	defer members.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh:
		case <-s.statusKick:
		case <-members.C:
			if s.cfg.MembersAlive == nil || s.written == nil || int32(s.cfg.MembersAlive()) == s.written.Status.MembersAlive {
				continue
			}
		}
		var anns []v1beta1.Announcement
		for _, a := range s.announcers {
			anns = append(anns, a.Announcements()...)
		}
		slices.SortFunc(anns, func(a, b v1beta1.Announcement) int {
			return cmp.Or(strings.Compare(a.IP, b.IP), strings.Compare(string(a.Protocol), string(b.Protocol)))
		})
		if s.statusGone.Swap(false) {
			s.written = nil
		}
		wrote, err := s.writeStatus(ctx, anns)
		if err != nil {
			s.log.Error("cannot write SpeakerStatus", "err", err)
			s.StatusChanged() // retry after the pause below
		}
		if !wrote && err == nil {
			continue // nothing changed: no write to space the next one from
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(v1beta1.StatusWriteSpacing(min(len(anns), v1beta1.MaxListedAnnouncements))):
		}
	}
}

// writeStatus writes this node's SpeakerStatus with anns and what the status sources fill in,
// and reports whether it wrote: with a Lease, a status whose content (all but lastUpdate) is
// what was last written is not written again. lastUpdate is then when the content last changed.
func (s *Speaker) writeStatus(ctx context.Context, anns []v1beta1.Announcement) (bool, error) {
	if s.written == nil {
		st, err := s.readOrCreateStatus(ctx)
		if err != nil {
			return false, err
		}
		s.written = st
	}
	st := s.written.DeepCopy()
	st.Status.Announcements = anns[:min(len(anns), v1beta1.MaxListedAnnouncements)]
	st.Status.AnnouncedIPs = int32(len(anns))
	if s.cfg.MembersAlive != nil {
		st.Status.MembersAlive = int32(s.cfg.MembersAlive())
	}
	for _, fill := range s.statusFns {
		fill(&st.Status)
	}
	if s.cfg.LeaseNamespace != "" && st.Status.LastUpdate != nil && sameContent(&st.Status, &s.written.Status) {
		return false, nil
	}
	now := metav1.Now()
	st.Status.LastUpdate = &now
	s.written = nil // until this write succeeds
	marked := st.Status.BGPListing != ""
	// A conflict (the object changed since: say, recreated) makes the next write read it again.
	if err := s.client.Status().Update(ctx, st); err != nil {
		return false, err
	}
	s.written = st // as the API server returned it
	if marked && st.Status.BGPListing == "" && !s.bgpListingPruned.Swap(true) {
		s.log.Warn("the SpeakerStatus CRD has no bgpListing field (apply config/crd: helm upgrade does not change CRDs); " +
			"listing every BGP IP, as older speakers do, until this speaker restarts")
		s.StatusChanged()
	}
	return true, nil
}

// sameContent reports whether two statuses say the same, whatever their lastUpdate.
func sameContent(a, b *v1beta1.SpeakerStatusStatus) bool {
	x, y := *a, *b
	x.LastUpdate, y.LastUpdate = nil, nil
	return equality.Semantic.DeepEqual(&x, &y)
}

// watchOwnStatus notices the deletion of this node's SpeakerStatus, to create it again: its
// writes come only with a change of content.
func (s *Speaker) watchOwnStatus(ctx context.Context) error {
	inf, err := s.cache.GetInformer(ctx, &v1beta1.SpeakerStatus{})
	if err != nil {
		return fmt.Errorf("speaker: SpeakerStatus informer: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if st, ok := obj.(*v1beta1.SpeakerStatus); ok && st.Name == s.cfg.NodeName {
			s.statusGone.Store(true)
			s.StatusChanged()
		}
	}})
	return err
}

// readOrCreateStatus reads this node's SpeakerStatus, creating it if it does not exist.
func (s *Speaker) readOrCreateStatus(ctx context.Context) (*v1beta1.SpeakerStatus, error) {
	var st v1beta1.SpeakerStatus
	err := s.client.Get(ctx, client.ObjectKey{Name: s.cfg.NodeName}, &st)
	if apierrors.IsNotFound(err) {
		st = v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: s.cfg.NodeName, OwnerReferences: s.nodeOwner(ctx)}}
		if s.cfg.LeaseNamespace != "" {
			st.Labels = map[string]string{config.LabelSpeakerLease: "true"}
		}
		if err := s.client.Create(ctx, &st); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		if err := s.client.Get(ctx, client.ObjectKey{Name: s.cfg.NodeName}, &st); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if s.cfg.LeaseNamespace != "" && st.Labels[config.LabelSpeakerLease] != "true" {
		// An older speaker's status: the label tells readers that this node's liveness is in its
		// Lease, and that an old lastUpdate does not mean a dead speaker.
		base := st.DeepCopy()
		if st.Labels == nil {
			st.Labels = map[string]string{}
		}
		st.Labels[config.LabelSpeakerLease] = "true"
		if err := s.client.Patch(ctx, &st, client.MergeFrom(base)); err != nil {
			return nil, err
		}
	}
	return &st, nil
}
