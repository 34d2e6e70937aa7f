package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

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
// proxy must leave (or never enter) its state, as if deleted.
func TestProxySkipsServicesOfAnotherProxy(t *testing.T) {
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
	claimed.Labels = map[string]string{LabelServiceProxyName: ""}
	services.h.OnUpdate(svc, claimed)
	p.tracker.Apply(&st)
	if _, ok := st.Services[key]; ok {
		t.Fatal("a Service labelled service.kubernetes.io/service-proxy-name is still proxied")
	}

	services.h.OnUpdate(claimed, lbService("3"))
	p.tracker.Apply(&st)
	if len(st.Services[key]) == 0 {
		t.Fatal("the Service is not proxied again once the label is gone")
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
	// The removed endpoint's UDP flows (port 53 and node port 30053) are cleared, once.
	want := []ConntrackFilter{
		{ReplySrc: netip.MustParseAddr("10.1.0.1"), OrigDstPort: 53},
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
