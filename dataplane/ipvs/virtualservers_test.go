package ipvs

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func tcpKey(addr string, port uint16) vsKey {
	return vsKey{Addr: netip.MustParseAddr(addr), Proto: unix.IPPROTO_TCP, Port: port}
}

func reals(weight int, addrPorts ...string) map[realKey]int {
	m := map[realKey]int{}
	for _, ap := range addrPorts {
		p := netip.MustParseAddrPort(ap)
		m[realKey{Addr: p.Addr(), Port: p.Port()}] = weight
	}
	return m
}

func wantDump(t *testing.T, f *fakeHandle, want ...string) {
	t.Helper()
	if got := f.dump(); !reflect.DeepEqual(got, want) {
		t.Fatalf("kernel state:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func TestSyncCreatesUpdatesAndDeletes(t *testing.T) {
	f := newFakeHandle()
	v := newVirtualServers(f, time.Minute)
	now := time.Unix(1000, 0)
	desired := map[vsKey]*virtualServer{
		tcpKey("10.96.0.10", 80):   {Scheduler: "rr", Reals: reals(1, "10.1.0.1:8080", "10.1.0.2:8080")},
		tcpKey("fd00:96::10", 443): {Scheduler: "sh", AffinitySeconds: 10800, Reals: reals(1, "[fd00:1::1]:8443")},
	}
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f,
		"6:10.96.0.10:80 rr [10.1.0.1:8080 w1 10.1.0.2:8080 w1]",
		"6:[fd00:96::10]:443 sh persistent 10800 [[fd00:1::1]:8443 w1]")

	// A second identical sync sends nothing at all.
	f.resetCalls()
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("no-op sync made calls %v", f.calls)
	}

	// Scheduler change is an update, not a re-create (connections survive).
	desired[tcpKey("10.96.0.10", 80)].Scheduler = "wlc"
	delete(desired, tcpKey("fd00:96::10", 443))
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	if f.calls["UpdateService"] != 1 || f.calls["NewService"] != 0 || f.calls["DelService"] != 1 {
		t.Fatalf("calls %v", f.calls)
	}
	wantDump(t, f, "6:10.96.0.10:80 wlc [10.1.0.1:8080 w1 10.1.0.2:8080 w1]")
}

func TestGracefulTermination(t *testing.T) {
	f := newFakeHandle()
	v := newVirtualServers(f, time.Minute)
	now := time.Unix(1000, 0)
	key := tcpKey("10.96.0.10", 80)
	desired := map[vsKey]*virtualServer{key: {Scheduler: "rr", Reals: reals(1, "10.1.0.1:8080", "10.1.0.2:8080")}}
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	// 10.1.0.2 has a connection and leaves: it drains at weight 0.
	f.dsts["6:10.96.0.10:80"]["10.1.0.2:8080"].ActiveConnections = 1
	desired[key].Reals = reals(1, "10.1.0.1:8080")
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.1:8080 w1 10.1.0.2:8080 w0]")
	if v.Draining() != 1 {
		t.Fatalf("draining %d, want 1", v.Draining())
	}
	// Still connected before the deadline: kept.
	if err := v.ReapTerminating(now.Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.1:8080 w1 10.1.0.2:8080 w0]")
	// Connection closed: removed at the next reap.
	f.dsts["6:10.96.0.10:80"]["10.1.0.2:8080"].ActiveConnections = 0
	if err := v.ReapTerminating(now.Add(31 * time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.1:8080 w1]")
	if v.Draining() != 0 {
		t.Fatalf("draining %d, want 0", v.Draining())
	}

	// A draining real server that comes back is restored, not re-created.
	f.dsts["6:10.96.0.10:80"]["10.1.0.1:8080"].InactiveConnections = 3
	desired[key].Reals = reals(1, "10.1.0.2:8080")
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	desired[key].Reals = reals(1, "10.1.0.1:8080", "10.1.0.2:8080")
	f.resetCalls()
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	if f.calls["NewDestination"] != 0 || f.calls["UpdateDestination"] != 1 {
		t.Fatalf("calls %v", f.calls)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.1:8080 w1 10.1.0.2:8080 w1]")

	// Connections that never drain are cut at the deadline.
	desired[key].Reals = reals(1, "10.1.0.2:8080")
	if err := v.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	if err := v.ReapTerminating(now.Add(59 * time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.1:8080 w0 10.1.0.2:8080 w1]")
	if err := v.ReapTerminating(now.Add(61 * time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:10.96.0.10:80 rr [10.1.0.2:8080 w1]")
}

func TestAdoptAfterRestart(t *testing.T) {
	f := newFakeHandle()
	first := newVirtualServers(f, time.Minute)
	now := time.Unix(1000, 0)
	owned := tcpKey("10.96.0.10", 80)
	desired := map[vsKey]*virtualServer{owned: {Scheduler: "rr", AffinitySeconds: 60, Reals: reals(1, "10.1.0.1:8080")}}
	if err := first.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	// Someone else's virtual server, not ours to touch.
	foreign := tcpKey("192.0.2.1", 80)
	if err := newVirtualServers(f, time.Minute).Sync(map[vsKey]*virtualServer{foreign: {Scheduler: "rr", Reals: map[realKey]int{}}}, now); err != nil {
		t.Fatal(err)
	}

	second := newVirtualServers(f, time.Minute)
	if err := second.Adopt(func(k vsKey) bool { return k != foreign }); err != nil {
		t.Fatal(err)
	}
	f.resetCalls()
	if err := second.Sync(desired, now); err != nil {
		t.Fatal(err)
	}
	if f.calls["NewService"]+f.calls["NewDestination"]+f.calls["UpdateService"] != 0 {
		t.Fatalf("adopted state re-created: %v", f.calls)
	}
	if err := second.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	wantDump(t, f, "6:192.0.2.1:80 rr []")
}

func TestProbeRejectsSilentHandle(t *testing.T) {
	f := newFakeHandle()
	if err := probeHandle(f); err != nil {
		t.Fatalf("working IPVS: %v", err)
	}
	if len(f.svcs) != 0 {
		t.Fatalf("probe left %v behind", f.dump())
	}
	f.unlisted = true
	if err := probeHandle(f); err == nil || !strings.Contains(err.Error(), "not really there") {
		t.Fatalf("kernel without ip_vs: got %v", err)
	}
}
