package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// handlerOnly is an informer that only hands its handler to the test.
type handlerOnly struct{ h cache.ResourceEventHandler }

func (i *handlerOnly) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	i.h = h
	return i, nil
}
func (i *handlerOnly) HasSynced() bool { return true }

// With informers shared with the speaker the proxy sees every Service: one labelled for another
// proxy, or headless, must leave (or never enter) its state, as if deleted.
func TestProxySkipsServicesOfAnotherProxy(t *testing.T) {
	for _, label := range []string{LabelServiceProxyName, LabelServiceHeadless} {
		t.Run(label, func(t *testing.T) { testProxySkipsLabelled(t, label) })
	}
}

func testProxySkipsLabelled(t *testing.T, label string) {
	services, slices := &handlerOnly{}, &handlerOnly{}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: nil})
	if err := p.Register(services, slices, nil); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	svc := lbService("1")
	services.h.OnAdd(svc, true)
	for _, s := range webSlices() {
		slices.h.OnAdd(s, true)
	}
	var st State
	p.tracker.Apply(&st)
	if len(st.Services[key]) == 0 {
		t.Fatal("the Service is not proxied")
	}

	claimed := lbService("2")
	claimed.Labels = map[string]string{label: ""}
	services.h.OnUpdate(svc, claimed)
	p.tracker.Apply(&st)
	if _, ok := st.Services[key]; ok {
		t.Fatalf("a Service labelled %s is still proxied", label)
	}

	services.h.OnUpdate(claimed, lbService("3"))
	p.tracker.Apply(&st)
	if len(st.Services[key]) == 0 {
		t.Fatal("the Service is not proxied again once the label is gone")
	}
}

// driftingBackend records syncs and reports drift when told to.
type driftingBackend struct {
	mu    sync.Mutex
	syncs []bool // Full of each sync
	drift string
}

func (b *driftingBackend) Name() string                  { return "fake" }
func (b *driftingBackend) Cleanup(context.Context) error { return nil }
func (b *driftingBackend) Sync(_ context.Context, req SyncRequest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncs = append(b.syncs, req.Full)
	return nil
}
func (b *driftingBackend) CheckDrift(context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.drift
	b.drift = ""
	return d, nil
}
func (b *driftingBackend) fullSyncs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, f := range b.syncs {
		if f {
			n++
		}
	}
	return n
}

// The proxy's loop runs a full sync when the drift check reports a change (counting and
// reporting it), and not otherwise.
func TestProxyRepairsDrift(t *testing.T) {
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	b := &driftingBackend{}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	repaired := make(chan string, 1)
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: b, Metrics: metrics, DriftCheckInterval: 10 * time.Millisecond,
		MaxSyncInterval: time.Hour, OnRepair: func(what string) { repaired <- what }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	poll("the first full sync", func() bool { return b.fullSyncs() == 1 })

	b.mu.Lock()
	b.drift = "chain x is gone"
	b.mu.Unlock()
	select {
	case what := <-repaired:
		if what != "chain x is gone" {
			t.Fatalf("OnRepair(%q)", what)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drift was not reported")
	}
	poll("the repairing full sync", func() bool { return b.fullSyncs() == 2 })
	// The proxy counts the full sync once the backend's returns: wait for that too.
	poll("the repairing full sync counted", func() bool {
		return testutil.ToFloat64(metrics.fullSyncs.WithLabelValues(fullSyncDrift)) == 1
	})
	if got := testutil.ToFloat64(metrics.repairs); got != 1 {
		t.Fatalf("repairs = %v, want 1", got)
	}
	if got := testutil.ToFloat64(metrics.fullSyncs.WithLabelValues(fullSyncDrift)); got != 1 {
		t.Fatalf("full syncs for drift = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "herald_dataplane_repairs_total"); err != nil || n != 1 {
		t.Fatalf("herald_dataplane_repairs_total not in the injected registry: %d, %v", n, err)
	}

	// No drift (and MaxSyncInterval far away): no further full sync.
	time.Sleep(100 * time.Millisecond)
	if n := b.fullSyncs(); n != 2 {
		t.Fatalf("%d full syncs without a reason, want 2", n)
	}
}

func TestProxyResyncsEveryMaxSyncInterval(t *testing.T) {
	b := &driftingBackend{}
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: b, Metrics: metrics, MaxSyncInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for b.fullSyncs() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d full syncs in 5 s with MaxSyncInterval 50 ms, want 3", b.fullSyncs())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(metrics.fullSyncs.WithLabelValues(fullSyncPeriodic)); got < 2 {
		t.Fatalf("periodic full syncs = %v, want >= 2", got)
	}
}

// failingConntrack fails its first deletions.
type failingConntrack struct {
	mu       sync.Mutex
	failures int
	calls    [][]ConntrackFilter
}

func (c *failingConntrack) DeleteUDP(filters []ConntrackFilter) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, slices.Clone(filters))
	if len(c.calls) <= c.failures {
		return errors.New("netlink: operation not permitted")
	}
	return nil
}

// Issue 16, item 7: a failed deletion of stale UDP conntrack entries is retried, without any
// further change, until it succeeds (it used to be forgotten).
func TestProxyRetriesFailedConntrackDeletion(t *testing.T) {
	ct := &failingConntrack{failures: 2}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: &driftingBackend{}, Conntrack: ct, MinSyncInterval: time.Millisecond})
	p.Tracker().OnServiceUpdate(lbService("1"))
	for _, s := range webSlices() {
		p.Tracker().OnEndpointSliceUpdate(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, last := p.Health(time.Minute)
		if !last.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no first sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The UDP endpoint on n1 goes away: its flows are stale.
	slice := webSlices()[0]
	slice.ResourceVersion = "2"
	slice.Endpoints[0].Addresses = []string{"10.1.0.9"}
	p.Tracker().OnEndpointSliceUpdate(slice)
	p.Trigger()
	for {
		ct.mu.Lock()
		n := len(ct.calls)
		ct.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deletions in 5 s, want the failed ones retried until one succeeds", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	// The successful third attempt holds everything the failed ones tried, and the removed
	// endpoint's flows.
	success := ct.calls[2]
	for _, f := range slices.Concat(ct.calls[0], ct.calls[1]) {
		if !slices.Contains(success, f) {
			t.Fatalf("filter %+v of a failed attempt was dropped: %+v", f, success)
		}
	}
	if !slices.ContainsFunc(success, func(f ConntrackFilter) bool { return f.ReplySrc == netip.MustParseAddr("10.1.0.1") }) {
		t.Fatalf("no filter for the removed endpoint: %+v", success)
	}
	ct.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	ct.mu.Lock()
	if len(ct.calls) != 3 {
		t.Fatalf("%d deletions: the successful one was repeated", len(ct.calls))
	}
}

// fakeBackend records what each Sync was asked, and fails while failing is set.
type fakeBackend struct {
	syncs   []fakeSync
	failing bool
	warmUps int
}

type fakeSync struct {
	full     bool
	changed  []types.NamespacedName
	services int
}

func (b *fakeBackend) Name() string { return "fake" }

func (b *fakeBackend) Sync(_ context.Context, req SyncRequest) error {
	s := fakeSync{full: req.Full, services: len(req.State.Services)}
	for k := range req.Changed {
		s.changed = append(s.changed, k)
	}
	b.syncs = append(b.syncs, s)
	if b.failing {
		return errors.New("kernel says no")
	}
	return nil
}

func (b *fakeBackend) Cleanup(context.Context) error { return nil }

func (b *fakeBackend) WarmUp(context.Context) { b.warmUps++ }

func (b *fakeBackend) last(t *testing.T) fakeSync {
	t.Helper()
	if len(b.syncs) == 0 {
		t.Fatal("the backend was never asked to sync")
	}
	return b.syncs[len(b.syncs)-1]
}

// fakeConntrack records the UDP entries it was asked to clear.
type fakeConntrack struct{ deleted []ConntrackFilter }

func (c *fakeConntrack) DeleteUDP(filters []ConntrackFilter) error {
	c.deleted = append(c.deleted, filters...)
	return nil
}

// TestProxySync drives Proxy.sync by hand with a fake backend: the first sync is full, later ones
// carry only the changed Services, a sync without changes does not reach the backend, a failed
// sync makes the next one full and keeps its changes (and its stale UDP entries) for it, and
// health, OnSynced, the Service count and the warm-up follow only the successful syncs.
func TestProxySync(t *testing.T) {
	ctx := context.Background()
	web := types.NamespacedName{Namespace: "ns", Name: "web"}
	be, ct := &fakeBackend{}, &fakeConntrack{}
	var committed []int
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: be, Conntrack: ct,
		OnSynced: func(st *State) { committed = append(committed, len(st.Services)) },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
	pending := func() bool { healthy, _ := p.Health(0); return !healthy }

	// The first sync is full, even with nothing to proxy.
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if s := be.last(t); !s.full || len(s.changed) != 0 {
		t.Fatalf("first sync %+v, want full with no changes", s)
	}
	if be.warmUps != 1 {
		t.Errorf("%d warm-ups after the first (full) sync, want 1", be.warmUps)
	}

	// A Service and its endpoints arrive: one incremental sync naming it.
	p.tracker.OnServiceUpdate(lbService("1"))
	webSlices := webSlices()
	for _, s := range webSlices {
		p.tracker.OnEndpointSliceUpdate(s)
	}
	p.Trigger()
	if !pending() {
		t.Fatal("healthy with a change waiting and a zero timeout")
	}
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if s := be.last(t); s.full || len(s.changed) != 1 || s.changed[0] != web || s.services != 1 {
		t.Fatalf("sync after the Service arrived %+v, want incremental with ns/web", s)
	}
	if pending() || p.Services() != 1 || len(committed) != 2 || committed[1] != 1 {
		t.Fatalf("after a successful sync: pending %v, Services %d, OnSynced calls %v", pending(), p.Services(), committed)
	}
	// A UDP port that gained endpoints: the entries made while it had none are cleared.
	if !slices.Contains(ct.deleted, ConntrackFilter{OrigDst: netip.MustParseAddr("10.96.0.10"), OrigDstPort: 53}) {
		t.Errorf("conntrack cleared %+v, want the cluster IP's port 53 among them", ct.deleted)
	}
	cleared := len(ct.deleted)
	if be.warmUps != 1 {
		t.Errorf("an incremental sync warmed up the backend (%d warm-ups)", be.warmUps)
	}

	// Nothing changed: the backend is not asked, and the proxy stays healthy.
	n := len(be.syncs)
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if len(be.syncs) != n {
		t.Fatalf("a sync without changes reached the backend: %+v", be.last(t))
	}

	// One UDP endpoint goes while the backend fails: the sync fails, nothing counts as committed,
	// and the stale conntrack entries wait for a successful sync.
	p.tracker.OnEndpointSliceDelete(webSlices[0])
	p.Trigger()
	be.failing = true
	if err := p.SyncOnce(ctx); err == nil {
		t.Fatal("a failed backend sync returned no error")
	}
	if !pending() || len(committed) != 2 || len(ct.deleted) != cleared {
		t.Fatalf("after a failed sync: pending %v, OnSynced calls %v, conntrack cleared %v", pending(), committed, ct.deleted)
	}

	// The next sync, without a new event, is full and still names the Service.
	be.failing = false
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if s := be.last(t); !s.full || len(s.changed) != 1 || s.changed[0] != web {
		t.Fatalf("sync after a failure %+v, want full with ns/web", s)
	}
	if pending() || len(committed) != 3 || be.warmUps != 2 {
		t.Fatalf("after the recovery: pending %v, OnSynced calls %v, warm-ups %d", pending(), committed, be.warmUps)
	}
	// The removed endpoint's UDP flows (port 53 of the ClusterIP and the LB IP, and node port
	// 30053 on any address) are cleared, once.
	want := []ConntrackFilter{
		{OrigDst: netip.MustParseAddr("10.96.0.10"), OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.1.0.1")},
		{OrigDst: netip.MustParseAddr("192.0.2.10"), OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.1.0.1")},
		{ReplySrc: netip.MustParseAddr("10.1.0.1"), OrigDstPort: 30053},
	}
	if !slices.Equal(ct.deleted[cleared:], want) {
		t.Fatalf("conntrack cleared %+v, want %+v", ct.deleted[cleared:], want)
	}
	// A later change (the TCP port's node port) clears nothing more.
	cleared = len(ct.deleted)
	changed := lbService("2")
	changed.Spec.Ports[0].NodePort = 30081
	p.tracker.OnServiceUpdate(changed)
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ct.deleted) != cleared {
		t.Fatalf("stale UDP entries cleared twice: %+v", ct.deleted[cleared:])
	}
}
