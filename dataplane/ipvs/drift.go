package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

var _ dataplane.DriftChecker = (*Backend)(nil)

// CheckDrift implements dataplane.DriftChecker: it compares what the kernel holds with what the
// backend committed, cheaply enough to run every second: the virtual servers (one netlink dump:
// `ipvsadm -C` or a deleted one; their schedulers and persistence), the Service IPs routed to
// the dummy link (one route dump: the link deleted, an address removed), that the nftables
// table still exists (one `nft list chains` of a table of a few chains), and the sysctls. Real
// servers are not read (one more dump per virtual server); the periodic full resync covers
// them. When something differs, the backend forgets what it believed, so the full sync that
// repairs it re-reads the kernel (as after a restart) and rewrites what differs.
func (b *Backend) CheckDrift(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.initialized {
		return "", nil // nothing committed yet, or already forgotten: the next sync re-reads
	}
	diffs, err := b.sysctls.drifted(b.strict)
	if err != nil {
		return "", err
	}
	// Reset sysctls are set here rather than left to the repairing sync: where /proc/sys is
	// read-only (an unprivileged speaker) that sync would fail on them every time and repair
	// nothing else. Then they are reported as an error, and the rest is checked as usual.
	var sysctlErr error
	if len(diffs) > 0 {
		if err := b.sysctls.apply(b.strict); err != nil {
			sysctlErr = fmt.Errorf("%s, and they cannot be set again: %w", strings.Join(diffs, "; "), err)
			diffs = nil
		}
	}
	svcs, err := b.vs.h.GetServices()
	if err != nil {
		return "", fmt.Errorf("listing IPVS virtual servers: %w", err)
	}
	inKernel := make(map[vsKey]*virtualServer, len(svcs))
	for _, s := range svcs {
		if key, ok := keyOf(s); ok {
			vs := &virtualServer{Scheduler: s.SchedName}
			if s.Flags&flagPersistent != 0 {
				vs.AffinitySeconds = s.Timeout
			}
			inKernel[key] = vs
		}
	}
	for key, want := range b.vs.committed {
		got, ok := inKernel[key]
		switch {
		case !ok:
			diffs = append(diffs, "virtual server "+key.String()+" is gone")
		case got.Scheduler != want.Scheduler || got.AffinitySeconds != want.AffinitySeconds:
			diffs = append(diffs, fmt.Sprintf("virtual server %s has scheduler %s and persistence %d s, want %s and %d s",
				key, got.Scheduler, got.AffinitySeconds, want.Scheduler, want.AffinitySeconds))
		}
	}
	ips, err := b.links.ServiceIPs()
	if err != nil {
		return "", fmt.Errorf("listing %s addresses: %w", DummyLinkName, err)
	}
	for a := range b.serviceIPs {
		if !slices.Contains(ips, a) {
			diffs = append(diffs, fmt.Sprintf("Service IP %s is not routed to %s", a, DummyLinkName))
		}
	}
	if b.fw.defined {
		if _, err := b.fw.nft.List(ctx, "chain"); knftables.IsNotFound(err) {
			diffs = append(diffs, "nftables table inet "+TableName+" is gone")
		} else if err != nil {
			return "", fmt.Errorf("listing the chains of nftables table %s: %w", TableName, err)
		}
	}
	if len(diffs) == 0 {
		return "", sysctlErr
	}
	slices.Sort(diffs)
	b.forget()
	const shown = 5
	if len(diffs) > shown {
		return strings.Join(diffs[:shown], "; ") + fmt.Sprintf("; and %d more", len(diffs)-shown), nil
	}
	return strings.Join(diffs, "; "), nil
}

// forget drops the backend's memory of the kernel's state, so the next sync starts over as
// after a restart: it sets the sysctls, makes the dummy link, adopts what the kernel still
// holds, redefines the nftables table, and rewrites what differs.
func (b *Backend) forget() {
	// The addresses of what it committed stay its own: adopt takes over their virtual servers
	// even when their Service IPs are no longer on the dummy link (it was deleted).
	b.formerlyOwned = map[netip.Addr]struct{}{}
	for a := range b.serviceIPs {
		b.formerlyOwned[a] = struct{}{}
	}
	for key := range b.vs.committed {
		b.formerlyOwned[key.Addr] = struct{}{}
	}
	b.initialized = false
	b.serviceIPs = map[netip.Addr]struct{}{}
	b.vs.committed = map[vsKey]*virtualServer{}
	b.vs.terminating = map[vsKey]map[realKey]time.Time{}
	b.fw.defined = false
}
