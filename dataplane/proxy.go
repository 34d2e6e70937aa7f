package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// LabelServiceProxyName on a Service hands it to another service proxy, and LabelServiceHeadless
// makes it headless for the proxies (no rules at all); kube-proxy skips both too.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelServiceHeadless  = "service.kubernetes.io/headless"
)

// NotProxied reports whether a Service's labels keep it out of this proxy (LabelServiceProxyName,
// LabelServiceHeadless).
func NotProxied(labels map[string]string) bool {
	_, claimed := labels[LabelServiceProxyName]
	_, headless := labels[LabelServiceHeadless]
	return claimed || headless
}

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	NodeName string
	Backend  Backend
	// Conntrack clears stale UDP entries after each sync; nil disables it.
	Conntrack Conntrack
	// MinSyncInterval bounds how often the backend runs (events in between fold into one
	// sync); MaxSyncInterval is the period of the full resync, which rewrites every rule
	// whatever the drift check says. Defaults 10 ms and 1 h.
	MinSyncInterval, MaxSyncInterval time.Duration
	// DriftCheckInterval is how often a backend that can (DriftChecker) checks that the kernel
	// still holds what it committed; a difference is repaired at once with a full sync.
	// Default 1 s.
	DriftCheckInterval time.Duration
	// OnRepair is called from the sync goroutine when a drift check found the kernel changed
	// behind the backend's back, with what changed, before the full sync that repairs it (the
	// speaker records an event on its Node).
	OnRepair func(what string)
	// OnSynced is called after every successful sync with the committed state (read-only, valid
	// until the next sync); the healthCheckNodePort servers hook in here.
	OnSynced func(*State)
	// Metrics records each sync; nil records nothing.
	Metrics *Metrics
	Logger  *slog.Logger
}

// Proxy is the service proxy: informer events go into a ChangeTracker, a bounded-frequency
// runner folds them into the desired State and hands the changes to the Backend.
type Proxy struct {
	opts    ProxyOptions
	tracker *ChangeTracker
	runner  *boundedRunner
	synced  []cache.InformerSynced

	// Only the sync goroutine touches these.
	state        State
	needFull     bool
	nodeUnsynced bool                              // the node's IPs or the Service CIDRs changed since the last successful sync
	fullReason   string                            // why needFull is set: a value of the full_syncs metric's reason label
	lastFull     time.Time                         // end of the last successful full sync
	lastCheckErr string                            // the last drift check's error, logged once until it changes
	unsynced     map[types.NamespacedName]struct{} // changes not yet committed (a sync failed)
	staleFilters []ConntrackFilter
	ports        int // ServicePorts in state

	mu       sync.Mutex
	services int       // Services committed by the last successful sync
	lastSync time.Time // end of the last successful sync
	// oldestPending is when the oldest event not yet committed arrived (zero: none).
	oldestPending time.Time
}

// NewProxy returns a Proxy; call Register for its informers, then Run.
func NewProxy(opts ProxyOptions) *Proxy {
	if opts.MinSyncInterval == 0 {
		opts.MinSyncInterval = 10 * time.Millisecond
	}
	if opts.MaxSyncInterval == 0 {
		opts.MaxSyncInterval = time.Hour
	}
	if opts.DriftCheckInterval == 0 {
		opts.DriftCheckInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxy{
		opts:       opts,
		tracker:    NewChangeTracker(opts.NodeName),
		needFull:   true,
		fullReason: fullSyncStart,
		unsynced:   map[types.NamespacedName]struct{}{},
	}
	// The runner wakes the sync at least this often, for the periodic full resync and, where
	// the backend has one, the drift check.
	wake := opts.MaxSyncInterval
	if _, ok := opts.Backend.(DriftChecker); ok {
		wake = min(wake, opts.DriftCheckInterval)
	}
	p.runner = newBoundedRunner(p.sync, opts.MinSyncInterval, wake)
	return p
}

// Tracker is the proxy's change tracker, for callers that feed events themselves.
func (p *Proxy) Tracker() *ChangeTracker { return p.tracker }

// Register feeds the proxy from Service, EndpointSlice and Node informers (nodes may be nil).
func (p *Proxy) Register(services, slices, nodes EventHandlerRegistrar) error {
	add := func(inf EventHandlerRegistrar, update, del func(any)) error {
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { update(o); p.Trigger() },
			UpdateFunc: func(_, o any) { update(o); p.Trigger() },
			DeleteFunc: func(o any) { del(o); p.Trigger() },
		})
		if err == nil {
			p.synced = append(p.synced, reg.HasSynced)
		}
		return err
	}
	if err := add(services,
		func(o any) {
			// Informers shared with the speaker see every Service: one that another proxy
			// claims, or labelled headless, is, for this proxy, gone.
			svc := asService(o)
			if NotProxied(svc.GetLabels()) {
				p.tracker.OnServiceDelete(svc)
			} else {
				p.tracker.OnServiceUpdate(svc)
			}
		},
		func(o any) { p.tracker.OnServiceDelete(asService(o)) }); err != nil {
		return err
	}
	if err := add(slices,
		func(o any) { p.tracker.OnEndpointSliceUpdate(asSlice(o)) },
		func(o any) { p.tracker.OnEndpointSliceDelete(asSlice(o)) }); err != nil {
		return err
	}
	if nodes != nil {
		return add(nodes, func(o any) { n, _ := o.(*v1.Node); p.tracker.OnNodeUpdate(n) }, func(any) {})
	}
	return nil
}

// RegisterServiceCIDRs feeds the proxy the cluster's ServiceCIDR objects (networking.k8s.io/v1);
// the first sync waits for their first list, like for Services.
func (p *Proxy) RegisterServiceCIDRs(inf EventHandlerRegistrar) error {
	of := func(o any) *networkingv1.ServiceCIDR {
		if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = t.Obj
		}
		sc, _ := o.(*networkingv1.ServiceCIDR)
		return sc
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.tracker.OnServiceCIDRUpdate(of(o)); p.Trigger() },
		UpdateFunc: func(_, o any) { p.tracker.OnServiceCIDRUpdate(of(o)); p.Trigger() },
		DeleteFunc: func(o any) { p.tracker.OnServiceCIDRDelete(of(o)); p.Trigger() },
	})
	if err == nil {
		p.synced = append(p.synced, reg.HasSynced)
	}
	return err
}

// Run waits for the informers' first lists (so the first sync is complete, never a partial
// table that drops half the Services), then syncs until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	if !cache.WaitForCacheSync(ctx.Done(), p.synced...) {
		return
	}
	p.runner.Loop(ctx)
}

// Trigger asks for a sync soon (for callers that feed the tracker themselves).
func (p *Proxy) Trigger() {
	p.mu.Lock()
	if p.oldestPending.IsZero() {
		p.oldestPending = time.Now()
	}
	p.mu.Unlock()
	p.runner.Trigger()
}

// SyncOnce runs one sync now, on the caller's goroutine; for tests and benchmarks that do not
// call Run (never call both).
func (p *Proxy) SyncOnce(ctx context.Context) error { return p.sync(ctx) }

// Health says whether the proxy keeps up, with kube-proxy's rule: unhealthy when a change has
// waited longer than timeout to be committed (a failing or stuck backend); healthy while
// starting and when idle. lastUpdated is the end of the last successful sync.
func (p *Proxy) Health(timeout time.Duration) (healthy bool, lastUpdated time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oldestPending.IsZero() || time.Since(p.oldestPending) < timeout, p.lastSync
}

func (p *Proxy) sync(ctx context.Context) error {
	start := time.Now()
	nodeIPs, serviceCIDRs := p.state.NodeIPs, p.state.ServiceCIDRs
	changes := p.tracker.Apply(&p.state)
	if !slices.Equal(nodeIPs, p.state.NodeIPs) || !slices.Equal(serviceCIDRs, p.state.ServiceCIDRs) {
		p.nodeUnsynced = true
	}
	for _, c := range changes {
		p.ports += len(c.New) - len(c.Old)
		p.unsynced[c.Service] = struct{}{}
		p.staleFilters = append(p.staleFilters, staleUDPFilters(c.Old, c.New)...)
	}
	if !p.needFull && time.Since(p.lastFull) >= p.opts.MaxSyncInterval {
		p.needFull, p.fullReason = true, fullSyncPeriodic
	}
	if !p.needFull && p.drifted(ctx) {
		p.needFull, p.fullReason = true, fullSyncDrift
	}
	if !p.needFull && len(p.unsynced) == 0 && !p.nodeUnsynced {
		p.recordSync(start)
		return p.clearStaleFlows()
	}
	req := SyncRequest{State: &p.state, Changed: p.unsynced, Full: p.needFull}
	err := p.opts.Backend.Sync(ctx, req)
	p.opts.Metrics.syncDone(time.Since(start), err, len(p.state.Services), p.ports)
	if err != nil {
		err = fmt.Errorf("%s sync: %w", p.opts.Backend.Name(), err)
		p.needFull, p.fullReason = true, fullSyncFailure
		p.opts.Logger.Error("data plane sync failed; retrying with a full sync", "error", err)
		return err
	}
	p.mu.Lock()
	p.services = len(p.state.Services)
	p.mu.Unlock()
	p.opts.Logger.Debug("data plane synced", "backend", p.opts.Backend.Name(), "full", req.Full,
		"changedServices", len(req.Changed), "services", len(p.state.Services), "took", time.Since(start))
	if req.Full {
		p.opts.Metrics.fullSync(p.fullReason)
		p.lastFull = time.Now()
	}
	p.needFull, p.nodeUnsynced = false, false
	p.unsynced = map[types.NamespacedName]struct{}{}
	flowsErr := p.clearStaleFlows()
	if p.opts.OnSynced != nil {
		p.opts.OnSynced(&p.state)
	}
	p.recordSync(start)
	if w, ok := p.opts.Backend.(warmUpper); ok && req.Full {
		w.WarmUp(ctx)
	}
	return flowsErr
}

// maxStaleFilters bounds the conntrack filters kept for a retry while deletions keep failing.
const maxStaleFilters = 10000

// clearStaleFlows deletes the conntrack entries that committed changes left stale. A failed
// deletion keeps its filters and returns an error, so the runner retries soon (with backoff)
// even when nothing else changes: a stale UDP entry captures its client's packets for as long
// as the client keeps sending.
func (p *Proxy) clearStaleFlows() error {
	if p.opts.Conntrack == nil || len(p.staleFilters) == 0 {
		p.staleFilters = nil
		return nil
	}
	if err := p.opts.Conntrack.DeleteUDP(p.staleFilters); err != nil {
		if n := len(p.staleFilters); n > maxStaleFilters {
			p.staleFilters = slices.Clone(p.staleFilters[n-maxStaleFilters:])
		}
		p.opts.Logger.Warn("clearing stale UDP conntrack entries failed; retrying", "filters", len(p.staleFilters), "error", err)
		return fmt.Errorf("clearing stale UDP conntrack entries: %w", err)
	}
	p.staleFilters = nil
	return nil
}

// drifted runs the backend's drift check, if it has one, and reports a difference (log,
// metric, OnRepair). A check that fails is logged (once until its error changes) and counts as
// no difference: the periodic full resync still comes.
func (p *Proxy) drifted(ctx context.Context) bool {
	dc, ok := p.opts.Backend.(DriftChecker)
	if !ok || p.lastFull.IsZero() {
		return false
	}
	what, err := dc.CheckDrift(ctx)
	if err != nil {
		p.opts.Metrics.driftCheckFailed()
		if msg := err.Error(); msg != p.lastCheckErr {
			p.lastCheckErr = msg
			p.opts.Logger.Warn("data plane drift check failed", "backend", p.opts.Backend.Name(), "error", err)
		}
		return false
	}
	p.lastCheckErr = ""
	if what == "" {
		return false
	}
	p.opts.Metrics.repaired()
	p.opts.Logger.Warn("data plane rules were changed behind the proxy's back; rewriting them all",
		"backend", p.opts.Backend.Name(), "change", what)
	if p.opts.OnRepair != nil {
		p.opts.OnRepair(what)
	}
	return true
}

// warmUpper is a backend with work worth doing right after a full sync, once the sync is
// recorded, rather than in the time of the next change (the nftables backend starts its nft
// session).
type warmUpper interface{ WarmUp(ctx context.Context) }

// Services is how many Services the last successful sync committed (for SpeakerStatus).
func (p *Proxy) Services() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.services
}

// recordSync notes a successful sync that covered every event that arrived before start.
func (p *Proxy) recordSync(start time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastSync = time.Now()
	if !p.oldestPending.After(start) {
		p.oldestPending = time.Time{}
	}
}

func asService(obj any) *v1.Service {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, _ := obj.(*v1.Service)
	return s
}
