package nftables

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// stickyService is a LoadBalancer Service with session affinity in front of the packet lab's
// three backends, and its EndpointSlice.
func stickyService() (*v1.Service, *discoveryv1.EndpointSlice) {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "1"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports:           []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080}},
			SessionAffinity: v1.ServiceAffinityClientIP,
		},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "192.0.2.10"}}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(8080))}},
	}
	for i := 1; i <= 3; i++ {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.244.%d.2", i)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To("node"),
		})
	}
	return svc, slice
}

// TestRepairsRulesChangedBehindItsBack runs the whole proxy (drift check at its default
// interval) with the real nftables backend in the node namespace, breaks its rules from
// outside in several ways while a client keeps connecting to the LoadBalancer IP, and checks
// that traffic is back within 2 s of each fault, with no restart, that the repair is counted
// and reported, and that a sticky client stays on its endpoint when its affinity set survived.
func TestRepairsRulesChangedBehindItsBack(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-sr-repair-")
	pl.lab.Run(pl.client, "ip", "route", "add", "192.0.2.0/24", "via", "172.31.1.1")

	reg := prometheus.NewRegistry()
	metrics, err := dataplane.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	proxy := dataplane.NewProxy(dataplane.ProxyOptions{
		NodeName: "node", Backend: pl.backend, Metrics: metrics,
		OnRepair: func(what string) { mu.Lock(); reports = append(reports, what); mu.Unlock() },
	})
	svc, slice := stickyService()
	proxy.Tracker().OnServiceUpdate(svc)
	proxy.Tracker().OnEndpointSliceUpdate(slice)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The sync goroutine stays on one thread in the node namespace: nft and netlink run there.
		_ = netnsrun.Do(pl.node, func() error { proxy.Run(ctx); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })

	first := waitForTraffic(t, pl, 10*time.Second)
	repairs := func() float64 { return counterValue(t, reg, "herald_dataplane_repairs_total") }

	faults := []struct {
		name        string
		script      string // nft -f input run in the node namespace
		keepsClient bool   // the affinity set survives this fault
	}{
		{"nft flush ruleset", "flush ruleset", false},
		{"nft delete table inet herald", "delete table inet herald", false},
		{"one Service's chain deleted", strings.Join([]string{
			`delete element inet herald service-ips4 { 10.96.0.10 . tcp . 80, 192.0.2.10 . tcp . 80 }`,
			`delete element inet herald service-nodeports4 { tcp . 30080 }`,
			`flush chain inet herald svc4-ns/web/tcp/http`,
			`delete chain inet herald svc4-ns/web/tcp/http`,
		}, "\n"), true},
		{"a rule inserted into a base chain", `insert rule inet herald nat-prerouting ip daddr 192.0.2.10 drop`, true},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			before := repairs()
			nftScript(t, pl.node, f.script)
			broken := time.Now()
			if _, err := get(pl.client, "192.0.2.10:80"); err == nil {
				// A repair within the request's own time would make this test see nothing.
				t.Logf("the first request after the fault was answered already")
			}
			be := waitForTraffic(t, pl, 2*time.Second-time.Since(broken))
			t.Logf("traffic back %v after the fault", time.Since(broken).Round(time.Millisecond))
			if got := repairs(); got != before+1 {
				t.Errorf("herald_dataplane_repairs_total went from %v to %v, want one repair", before, got)
			}
			if f.keepsClient && be != first {
				t.Errorf("the client moved from %s to %s: the repair dropped its affinity entry", first, be)
			}
			first = be
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != len(faults) {
		t.Fatalf("OnRepair reported %d repairs, want %d: %q", len(reports), len(faults), reports)
	}
	for i, want := range []string{"table inet herald is gone", "table inet herald is gone", "chain svc4-ns/web/tcp/http is gone", "chain nat-prerouting has 2 rules, want 1"} {
		if !strings.Contains(reports[i], want) {
			t.Errorf("repair %d reported %q, want it to say %q", i, reports[i], want)
		}
	}
}

// waitForTraffic polls the LoadBalancer IP from the client until it answers (each attempt on a
// fresh connection, with a short timeout) and returns the backend that answered.
func waitForTraffic(t *testing.T, pl *packetLab, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		body, err := getWithin(pl.client, "192.0.2.10:80", 300*time.Millisecond)
		if err == nil {
			be, _, _ := strings.Cut(body, " ")
			return be
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traffic through the LoadBalancer IP within %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counterValue reads a counter without labels from the registry (0 while it has no sample).
func counterValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

// nftScript runs nft -f with script in namespace ns.
func nftScript(t *testing.T, ns, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v\n%s\n%s", ns, err, script, out)
	}
}

// TestFullSyncKeepsAffinityAndStreams: a full sync (the periodic resync, a repair) rewrites
// every rule but keeps the clients recorded in affinity sets, and an established connection
// carries on through it. It also removes what the new state no longer has.
func TestFullSyncKeepsAffinityAndStreams(t *testing.T) {
	pl := newPacketLabNamed(t, "herald-sr-full-")
	pl.lab.Run(pl.client, "ip", "route", "add", "192.0.2.0/24", "via", "172.31.1.1")
	eps := []dataplane.Endpoint{beEP(1, 8080), beEP(2, 8080), beEP(3, 8080)}
	sticky := svcPort("ns", "sticky", "10.96.0.11", 80, eps...)
	sticky.LoadBalancerIPs = addrs("192.0.2.11")
	sticky.AffinityTimeout = time.Hour
	stream := svcPort("ns", "stream", "10.96.0.15", 9000, beEP(1, 9000))
	stream.LoadBalancerIPs = addrs("192.0.2.15")
	gone := svcPort("ns", "gone", "10.96.0.16", 80, eps...)
	gone.AffinityTimeout = time.Minute
	st := state(sticky, stream, gone)
	pl.sync(t, st, true)

	first, _ := pl.mustGet(t, pl.client, "192.0.2.11:80")
	conn, err := netnstest.Dialer(pl.client, &net.Dialer{Timeout: time.Second})(context.Background(), "tcp4", "192.0.2.15:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo := func(i int) error {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(conn, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := echo(0); err != nil {
		t.Fatal(err)
	}

	delete(st.Services, gone.Name.NamespacedName)
	pl.sync(t, st, true)

	set := affinitySetName(ipv4, sticky, beEPByName(first))
	if out := pl.lab.Run(pl.node, "nft", "list", "set", "inet", TableName, set); !strings.Contains(out, "172.31.1.2") {
		t.Fatalf("the full sync emptied the affinity set %s:\n%s", set, out)
	}
	for range 10 {
		if be, _ := pl.mustGet(t, pl.client, "192.0.2.11:80"); be != first {
			t.Fatalf("the sticky client moved from %s to %s across a full sync", first, be)
		}
	}
	if err := echo(1); err != nil {
		t.Fatalf("the established stream broke across a full sync: %v", err)
	}
	table := pl.lab.Run(pl.node, "nft", "list", "table", "inet", TableName)
	if strings.Contains(table, "ns/gone/") {
		t.Fatalf("the full sync left the removed Service's objects:\n%s", table)
	}
	// The table equals what a sync into an empty table makes.
	pl.lab.Run(pl.node, "nft", "delete", "table", "inet", TableName)
	pl.sync(t, st, true)
	if fresh := pl.lab.Run(pl.node, "nft", "list", "table", "inet", TableName); normalize(fresh) != normalize(table) {
		t.Fatalf("a full sync over an existing table differs from one into an empty table:\n--- over\n%s\n--- fresh\n%s", table, fresh)
	}
}

// beEPByName is the packet lab's endpoint on :8080 of backend "beN".
func beEPByName(name string) dataplane.Endpoint {
	var n int
	_, _ = fmt.Sscanf(name, "be%d", &n)
	return beEP(n, 8080)
}

// TestDriftCheckReadsTheTableOnlyAfterForeignCommits: the check runs every second, so while
// nobody else commits to nftables it must not list the table (which costs ~0.4 s of nft CPU at
// 10,000 Services); after a foreign commit it must, and must find nothing wrong when the
// foreign commit left Herald's table alone.
func TestDriftCheckReadsTheTableOnlyAfterForeignCommits(t *testing.T) {
	netnstest.Require(t, "nft")
	l := netnstest.New(t, "herald-sr-cheap-")
	ns := l.AddNS("node")
	st := everyFeatureWithoutSCTP()
	var b *Backend
	if err := netnsrun.Do(ns, func() (err error) {
		if b, err = New(); err != nil {
			return err
		}
		return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	listings := 0
	read := b.readShape
	b.readShape = func(ctx context.Context) (tableShape, error) { listings++; return read(ctx) }
	check := func(wantListings int) {
		t.Helper()
		var what string
		if err := netnsrun.Do(ns, func() (err error) { what, err = b.CheckDrift(context.Background()); return err }); err != nil {
			t.Fatal(err)
		}
		if what != "" {
			t.Fatalf("drift reported on an untouched table: %s", what)
		}
		if listings != wantListings {
			t.Fatalf("the check listed the table %d times in all, want %d", listings, wantListings)
		}
	}
	check(0) // the full sync was the only commit since the backend began
	check(0)
	svc := st.Services[types.NamespacedName{Namespace: "ns", Name: "web"}]
	delete(st.Services, svc[0].Name.NamespacedName)
	if err := netnsrun.Do(ns, func() error {
		return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: map[types.NamespacedName]struct{}{svc[0].Name.NamespacedName: {}}})
	}); err != nil {
		t.Fatal(err)
	}
	check(0) // its own commits do not make the backend doubt
	l.Run(ns, "nft", "add", "table", "ip", "someone-else")
	check(1) // a foreign commit: read once, nothing wrong
	check(1)
}
