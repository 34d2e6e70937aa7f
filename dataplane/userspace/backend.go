package userspace

import (
	"context"
	"errors"

	"github.com/heraldlb/herald/dataplane"
)

// Backend is a kernel backend with the userspace proxy in front of it: the proxy opens the
// listeners of the userspace-proxied ports, the kernel backend (built with the proxy as its
// dataplane.UserspaceListeners) redirects their traffic there and forwards every other port
// itself.
type Backend struct {
	kernel dataplane.Backend
	proxy  *Proxy
}

// NewBackend puts proxy in front of kernel, which must redirect to proxy's listeners.
func NewBackend(kernel dataplane.Backend, proxy *Proxy) *Backend {
	return &Backend{kernel: kernel, proxy: proxy}
}

// Name is the kernel backend's: it is what forwards most traffic, and what SpeakerStatus says.
func (b *Backend) Name() string { return b.kernel.Name() }

// Kernel is the wrapped kernel backend.
func (b *Backend) Kernel() dataplane.Backend { return b.kernel }

// Proxy is the userspace proxy.
func (b *Backend) Proxy() *Proxy { return b.proxy }

// Sync opens the listeners first (the kernel backend renders redirects to their ports), then
// syncs the kernel, then closes the listeners nothing redirects to any more. A listener that
// could not open leaves its port to the kernel backend; the sync still fails, so the proxy
// retries it with a full sync.
func (b *Backend) Sync(ctx context.Context, req dataplane.SyncRequest) error {
	openErr := b.proxy.open(req)
	if err := b.kernel.Sync(ctx, req); err != nil {
		return errors.Join(openErr, err)
	}
	b.proxy.closeRetired()
	return openErr
}

// Cleanup removes the kernel backend's state; the proxy holds nothing outside the process.
func (b *Backend) Cleanup(ctx context.Context) error { return b.kernel.Cleanup(ctx) }

// CheckDrift passes the kernel backend's drift check through (dataplane.Proxy looks for it): the
// rules that redirect to the proxy are the kernel's, and must be repaired like the others.
func (b *Backend) CheckDrift(ctx context.Context) (string, error) {
	if dc, ok := b.kernel.(dataplane.DriftChecker); ok {
		return dc.CheckDrift(ctx)
	}
	return "", nil
}

// WarmUp passes the kernel backend's warm-up through (dataplane.Proxy looks for it).
func (b *Backend) WarmUp(ctx context.Context) {
	if w, ok := b.kernel.(interface{ WarmUp(ctx context.Context) }); ok {
		w.WarmUp(ctx)
	}
}
