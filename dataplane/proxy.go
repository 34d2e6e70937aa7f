package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// LabelServiceProxyName on a Service hands it to another service proxy (as with kube-proxy,
// which skips such Services too).
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	NodeName string
	Backend  Backend
	// Conntrack clears stale UDP entries after each sync; nil disables it.
	Conntrack Conntrack
	// MinSyncInterval bounds how often the backend runs (events in between fold into one
	// sync); MaxSyncInterval is the period of the full resync. Defaults 10 ms and 1 h.
	MinSyncInterval, MaxSyncInterval time.Duration
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxy{
		opts:     opts,
		tracker:  NewChangeTracker(opts.NodeName),
		needFull: true,
		unsynced: map[types.NamespacedName]struct{}{},
	}
	p.runner = newBoundedRunner(p.sync, opts.MinSyncInterval, opts.MaxSyncInterval)
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
			// claims is, for this proxy, gone.
			svc := asService(o)
			if _, claimed := svc.GetLabels()[LabelServiceProxyName]; claimed {
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
	changes := p.tracker.Apply(&p.state)
	for _, c := range changes {
		p.ports += len(c.New) - len(c.Old)
		p.unsynced[c.Service] = struct{}{}
		p.staleFilters = append(p.staleFilters, staleUDPFilters(c.Old, c.New)...)
	}
	if !p.needFull && len(p.unsynced) == 0 {
		p.recordSync(start)
		return nil
	}
	req := SyncRequest{State: &p.state, Changed: p.unsynced, Full: p.needFull}
	err := p.opts.Backend.Sync(ctx, req)
	p.opts.Metrics.syncDone(time.Since(start), err, len(p.state.Services), p.ports)
	if err != nil {
		err = fmt.Errorf("%s sync: %w", p.opts.Backend.Name(), err)
		p.needFull = true
		p.opts.Logger.Error("data plane sync failed; retrying with a full sync", "error", err)
		return err
	}
	p.mu.Lock()
	p.services = len(p.state.Services)
	p.mu.Unlock()
	p.opts.Logger.Debug("data plane synced", "backend", p.opts.Backend.Name(), "full", req.Full,
		"changedServices", len(req.Changed), "services", len(p.state.Services), "took", time.Since(start))
	p.needFull = false
	p.unsynced = map[types.NamespacedName]struct{}{}
	if p.opts.Conntrack != nil && len(p.staleFilters) > 0 {
		if err := p.opts.Conntrack.DeleteUDP(p.staleFilters); err != nil {
			p.opts.Logger.Warn("clearing stale UDP conntrack entries", "error", err)
		}
	}
	p.staleFilters = nil
	if p.opts.OnSynced != nil {
		p.opts.OnSynced(&p.state)
	}
	p.recordSync(start)
	if w, ok := p.opts.Backend.(warmUpper); ok && req.Full {
		w.WarmUp(ctx)
	}
	return nil
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
