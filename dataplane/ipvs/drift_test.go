package ipvs

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/ipvs"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// The drift check sees each way the kernel state can be changed behind the backend's back, and
// the full sync the proxy then runs puts everything back (fake kernel; the real one is in the
// IPVS VM only).
func TestDriftCheckSeesAndRepairsKernelChanges(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel(t)
	b := k.backend(t)
	web := lbPort("web", 1, ep("10.1.0.1:8080"), ep("10.1.0.2:8080"))
	web.AffinityTimeout = 3 * time.Hour
	st := stateOf(web, lbPort("other", 2, ep("10.1.0.3:8080")))
	if err := b.Sync(ctx, dataplane.SyncRequest{State: st, Full: true}); err != nil {
		t.Fatal(err)
	}
	wantVS, wantIPs, wantTable := k.h.dump(), copyDummy(k.links.dummy), sortedLines(k.nft.Dump())
	check := func() string {
		t.Helper()
		what, err := b.CheckDrift(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return what
	}
	if what := check(); what != "" {
		t.Fatalf("drift reported right after a sync: %s", what)
	}
	for _, f := range []struct {
		name  string
		fault func()
		want  string
	}{
		{"ipvsadm -C", func() { k.h.svcs = map[string]*ipvs.Service{}; k.h.dsts = map[string]map[string]*ipvs.Destination{} }, "virtual server"},
		{"one virtual server deleted", func() { delete(k.h.svcs, "6:10.96.0.1:80") }, "virtual server tcp/10.96.0.1:80 is gone"},
		{"the dummy link deleted", func() { k.links.dummy = nil }, "is not routed to " + DummyLinkName},
		{"a sysctl reset", func() { k.sysctls["net/ipv4/vs/conntrack"] = "0" }, "sysctl net/ipv4/vs/conntrack=0, want 1"},
		{"the nftables table deleted", func() {
			tx := k.nft.NewTransaction()
			tx.Delete(&knftables.Table{})
			if err := k.nft.Run(ctx, tx); err != nil {
				t.Fatal(err)
			}
		}, "nftables table inet " + TableName + " is gone"},
	} {
		t.Run(f.name, func(t *testing.T) {
			f.fault()
			if what := check(); !strings.Contains(what, f.want) {
				t.Fatalf("drift check said %q, want it to say %q", what, f.want)
			}
			if err := b.Sync(ctx, dataplane.SyncRequest{State: st, Full: true}); err != nil {
				t.Fatalf("repairing full sync: %v", err)
			}
			wantDump(t, k.h, wantVS...)
			if !reflect.DeepEqual(k.links.dummy, wantIPs) {
				t.Fatalf("Service IPs after the repair: %v, want %v", k.links.dummy, wantIPs)
			}
			if got := sortedLines(k.nft.Dump()); got != wantTable {
				t.Fatalf("nftables table after the repair:\n%s\nwant:\n%s", got, wantTable)
			}
			if k.sysctls["net/ipv4/vs/conntrack"] != "1" {
				t.Fatal("the sysctl was not set again")
			}
			if what := check(); what != "" {
				t.Fatalf("drift reported after the repair: %s", what)
			}
		})
	}
}

func copyDummy(m map[netip.Addr]bool) map[netip.Addr]bool {
	out := make(map[netip.Addr]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sortedLines makes two Fake dumps comparable: elements are listed in the order they were added.
func sortedLines(s string) string {
	lines := strings.Split(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// A sysctl reset that cannot be undone (read-only /proc/sys) is reported as an error, and does
// not stop the check from seeing, and the sync from repairing, the rest.
func TestDriftCheckWithReadOnlySysctls(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel(t)
	b := k.backend(t)
	st := stateOf(lbPort("web", 1, ep("10.1.0.1:8080")))
	if err := b.Sync(ctx, dataplane.SyncRequest{State: st, Full: true}); err != nil {
		t.Fatal(err)
	}
	b.sysctls.s = readOnlySysctls{k.sysctls}
	k.sysctls["net/ipv4/vs/conntrack"] = "0"
	if what, err := b.CheckDrift(ctx); what != "" || err == nil || !strings.Contains(err.Error(), "cannot be set again") {
		t.Fatalf("CheckDrift = %q, %v; want an error saying the sysctl cannot be set again", what, err)
	}
	delete(k.h.svcs, "6:10.96.0.1:80")
	if what, _ := b.CheckDrift(ctx); !strings.Contains(what, "virtual server tcp/10.96.0.1:80 is gone") {
		t.Fatalf("with a sysctl it cannot set, the check missed a deleted virtual server: %q", what)
	}
}
