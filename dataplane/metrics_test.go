package dataplane

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
)

// failingBackend fails its syncs while fail is set.
type failingBackend struct{ fail bool }

func (b *failingBackend) Name() string { return "fake" }
func (b *failingBackend) Sync(context.Context, SyncRequest) error {
	if b.fail {
		return errors.New("table busy")
	}
	return nil
}
func (b *failingBackend) Cleanup(context.Context) error { return nil }

// The sync metrics follow the backend: a failure counts and sets sync_failing until a sync
// succeeds; the programmed Services and ports are those of the last successful sync; a sync with
// nothing to do does not reach the backend and is not counted.
func TestProxySyncMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	backend := &failingBackend{fail: true}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: backend, Metrics: m})
	services, slices := &handlerOnly{}, &handlerOnly{}
	if err := p.Register(services, slices, nil); err != nil {
		t.Fatal(err)
	}
	services.h.OnAdd(lbService("1"), true)
	for _, s := range webSlices() {
		slices.h.OnAdd(s, true)
	}
	ctx := context.Background()
	check := func(step string, success, failure, failing, svcs, ports float64) {
		t.Helper()
		for name, c := range map[string]struct {
			got, want float64
		}{
			"syncs success": {testutil.ToFloat64(m.syncs.WithLabelValues(SyncSuccess)), success},
			"syncs failure": {testutil.ToFloat64(m.syncs.WithLabelValues(SyncFailure)), failure},
			"sync_failing":  {testutil.ToFloat64(m.syncFailing), failing},
			"services":      {testutil.ToFloat64(m.services), svcs},
			"service_ports": {testutil.ToFloat64(m.servicePorts), ports},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %v, want %v", step, name, c.got, c.want)
			}
		}
	}
	check("before any sync", 0, 0, 0, 0, 0)
	if err := p.SyncOnce(ctx); err == nil {
		t.Fatal("the failing backend's sync succeeded")
	}
	check("after a failed sync", 0, 1, 1, 0, 0)
	backend.fail = false
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	ports := float64(len(p.state.Services[types.NamespacedName{Namespace: "ns", Name: "web"}]))
	if ports == 0 {
		t.Fatal("the Service has no ports in the state")
	}
	check("after the retry", 1, 1, 0, 1, ports)
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a sync with nothing to do", 1, 1, 0, 1, ports)
	services.h.OnDelete(lbService("1"))
	if err := p.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	check("after the Service went", 2, 1, 0, 0, 0)
	var h dto.Metric
	if err := m.syncDuration.Write(&h); err != nil {
		t.Fatal(err)
	}
	if n := h.GetHistogram().GetSampleCount(); n != 3 {
		t.Errorf("sync_duration_seconds observed %d syncs, want the 3 that reached the backend", n)
	}
	lint, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lint {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}
