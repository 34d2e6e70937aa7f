package backendspec

import (
	"context"
	"log/slog"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/heraldlb/herald/dataplane"
)

// ProxyHarness drives a backend through the real service proxy (change tracker, endpoint policy,
// incremental syncs), exactly as the speaker does, minus the informers.
type ProxyHarness struct {
	node     string
	proxy    *dataplane.Proxy
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
}

// NewProxyHarness returns a harness for backend running as node; the backend is cleaned up when
// the test ends.
func NewProxyHarness(t *testing.T, node string, backend dataplane.Backend) *ProxyHarness {
	t.Cleanup(func() {
		if err := backend.Cleanup(context.Background()); err != nil {
			t.Errorf("%s cleanup: %v", backend.Name(), err)
		}
	})
	return &ProxyHarness{
		node: node,
		proxy: dataplane.NewProxy(dataplane.ProxyOptions{NodeName: node, Backend: backend,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}),
		services: map[string]*corev1.Service{},
		slices:   map[string]*discoveryv1.EndpointSlice{},
	}
}

func (h *ProxyHarness) NodeName() string { return h.node }

// Sync turns the given world into tracker events (deletes for what disappeared) and runs one sync.
func (h *ProxyHarness) Sync(t *testing.T, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) {
	t.Helper()
	tr := h.proxy.Tracker()
	seenSvc := map[string]bool{}
	for _, s := range services {
		key := s.Namespace + "/" + s.Name
		seenSvc[key] = true
		h.services[key] = s
		tr.OnServiceUpdate(s)
	}
	for key, s := range h.services {
		if !seenSvc[key] {
			tr.OnServiceDelete(s)
			delete(h.services, key)
		}
	}
	seenSlice := map[string]bool{}
	for _, s := range slices {
		key := s.Namespace + "/" + s.Name
		seenSlice[key] = true
		h.slices[key] = s
		tr.OnEndpointSliceUpdate(s)
	}
	for key, s := range h.slices {
		if !seenSlice[key] {
			tr.OnEndpointSliceDelete(s)
			delete(h.slices, key)
		}
	}
	if err := h.proxy.SyncOnce(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
}
