package nftables

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/internal/netnsrun"
	"k8s.io/apimachinery/pkg/types"
)

// packetLab is a node namespace running the backend, three backend namespaces behind it (the
// "pods", HTTP on :8080 answering "<name> <client address>", TCP echo on :9000), and two
// clients in front: one inside the allowed source range, one outside it.
//
//	client  172.31.1.2 --- 172.31.1.1 node 10.244.N.1 --- 10.244.N.2 beN (N = 1..3)
//	client2 172.31.2.2 --- 172.31.2.1
type packetLab struct {
	lab              *netnstest.Lab
	node, client, c2 string
	backend          *Backend
}

func newPacketLab(t *testing.T) *packetLab { return newPacketLabNamed(t, "herald-dpt-pkt-") }

// newPacketLabNamed is newPacketLab with its namespaces named by prefix (a test's own prefix
// keeps it apart from the other packet tests when several run at once).
func newPacketLabNamed(t *testing.T, prefix string) *packetLab {
	netnstest.Require(t, "nft")
	l := netnstest.New(t, prefix)
	pl := &packetLab{lab: l, node: l.AddNS("node"), client: l.AddNS("client"), c2: l.AddNS("client2")}
	l.Run(pl.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.Link(pl.node, "c1", "172.31.1.1/24", pl.client, "eth0", "172.31.1.2/24")
	l.Link(pl.node, "c2", "172.31.2.1/24", pl.c2, "eth0", "172.31.2.2/24")
	// Like a real node, the node has a default route (here towards the first client), so
	// Service addresses are routable and reach the forward hook when nothing translates them.
	l.Run(pl.node, "ip", "route", "add", "default", "via", "172.31.1.2")
	for _, c := range []struct{ ns, gw string }{{pl.client, "172.31.1.1"}, {pl.c2, "172.31.2.1"}} {
		l.Run(c.ns, "ip", "route", "add", "default", "via", c.gw)
	}
	for i := 1; i <= 3; i++ {
		be := l.AddNS(fmt.Sprintf("be%d", i))
		l.Link(pl.node, fmt.Sprintf("b%d", i), fmt.Sprintf("10.244.%d.1/24", i), be, "eth0", fmt.Sprintf("10.244.%d.2/24", i))
		l.Run(be, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", i))
		serveBackend(t, be, fmt.Sprintf("be%d", i))
	}
	if err := netnsrun.Do(pl.node, func() (err error) { pl.backend, err = New(); return err }); err != nil {
		t.Fatalf("nftables backend in the node namespace: %v", err)
	}
	t.Cleanup(pl.backend.Close)
	return pl
}

func serveBackend(t *testing.T, ns, name string) {
	ln, err := netnstest.Listen(ns, "tcp4", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s", name, host)
	})}
	go func() { _ = srv.Serve(ln) }() // ErrServerClosed at cleanup
	t.Cleanup(func() { srv.Close() })
	echo, err := netnstest.Listen(ns, "tcp4", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

func (pl *packetLab) sync(t *testing.T, st *dataplane.State, full bool, changed ...types.NamespacedName) {
	t.Helper()
	req := dataplane.SyncRequest{State: st, Full: full, Changed: map[types.NamespacedName]struct{}{}}
	for _, c := range changed {
		req.Changed[c] = struct{}{}
	}
	if err := netnsrun.Do(pl.node, func() error { return pl.backend.Sync(context.Background(), req) }); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// get does one HTTP request on a fresh connection from ns and returns the body.
func get(ns, addr string) (string, error) { return getWithin(ns, addr, 2*time.Second) }

// getWithin is get with a time limit for the whole request.
func getWithin(ns, addr string, limit time.Duration) (string, error) {
	c := &http.Client{Timeout: limit, Transport: &http.Transport{
		DialContext:       netnstest.Dialer(ns, &net.Dialer{Timeout: time.Second}),
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (pl *packetLab) mustGet(t *testing.T, ns, addr string) (backend, client string) {
	t.Helper()
	body, err := get(ns, addr)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", addr, ns, err)
	}
	backend, client, _ = strings.Cut(body, " ")
	return backend, client
}

func beEP(n int, port int32) dataplane.Endpoint {
	return dataplane.Endpoint{Addr: netip.MustParseAddr(fmt.Sprintf("10.244.%d.2", n)), Port: port, Ready: true, Serving: true, Local: true}
}

// TestRealNFTAcceptsEveryRule loads every rule shape into the kernel with the real nft (IPv6,
// affinity, source ranges, reject/drop; the Fake checks references, not nft's syntax), then
// removes it all with incremental syncs, and checks that nothing is left but the base ruleset.
func TestRealNFTAcceptsEveryRule(t *testing.T) {
	netnstest.Require(t, "nft")
	l := netnstest.New(t, "herald-dpt-syntax-")
	ns := l.AddNS("node")
	var b *Backend
	st := everyFeatureWithoutSCTP()
	if err := netnsrun.Do(ns, func() (err error) {
		if b, err = New(); err != nil {
			return err
		}
		return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true})
	}); err != nil {
		t.Fatalf("full sync into the kernel: %v", err)
	}
	base := normalize(l.Run(ns, "nft", "list", "table", "inet", TableName))
	for svc := range st.Services {
		delete(st.Services, svc)
		if err := netnsrun.Do(ns, func() error {
			return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Changed: map[types.NamespacedName]struct{}{svc: {}}})
		}); err != nil {
			t.Fatalf("removing %s: %v", svc, err)
		}
	}
	left := l.Run(ns, "nft", "list", "table", "inet", TableName)
	if err := netnsrun.Do(ns, func() error { return b.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true}) }); err != nil {
		t.Fatal(err)
	}
	if empty := l.Run(ns, "nft", "list", "table", "inet", TableName); normalize(left) != normalize(empty) {
		t.Fatalf("incremental removal left objects behind:\n%s\nwant:\n%s", left, empty)
	}
	if base == normalize(left) {
		t.Fatal("the full sync programmed nothing")
	}
}

func TestPacketsThroughNFTables(t *testing.T) {
	pl := newPacketLab(t)
	eps := []dataplane.Endpoint{beEP(1, 8080), beEP(2, 8080), beEP(3, 8080)}

	web := svcPort("ns", "web", "10.96.0.10", 80, eps...)
	web.NodePort = 30080
	web.LoadBalancerIPs = addrs("192.0.2.10")

	sticky := svcPort("ns", "sticky", "10.96.0.11", 80, eps...)
	sticky.LoadBalancerIPs = addrs("192.0.2.11")
	sticky.AffinityTimeout = time.Minute

	ranged := svcPort("ns", "ranged", "10.96.0.12", 80, eps...)
	ranged.LoadBalancerIPs = addrs("192.0.2.12")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("172.31.1.0/24")}

	local := svcPort("ns", "local", "10.96.0.13", 80, eps...)
	local.LoadBalancerIPs = addrs("192.0.2.13")
	local.ExternalPolicyLocal = true
	local.ShortCircuitEndpoints = local.ClusterEndpoints
	local.ExternalEndpoints = []dataplane.Endpoint{beEP(2, 8080)}

	empty := svcPort("ns", "empty", "10.96.0.14", 80)
	empty.LoadBalancerIPs = addrs("192.0.2.14")

	stream := svcPort("ns", "stream", "10.96.0.15", 9000, beEP(1, 9000), beEP(2, 9000))
	stream.Name.Port = "echo"
	stream.LoadBalancerIPs = addrs("192.0.2.15")

	st := state(web, sticky, ranged, local, empty, stream)
	pl.sync(t, st, true)
	// The clients reach Service addresses through the node, as an announcement would arrange.
	for c, gw := range map[string]string{pl.client: "172.31.1.1", pl.c2: "172.31.2.1"} {
		pl.lab.Run(c, "ip", "route", "add", "10.96.0.0/16", "via", gw)
		pl.lab.Run(c, "ip", "route", "add", "192.0.2.0/24", "via", gw)
	}

	t.Run("LoadBalancer IP spreads evenly and masquerades", func(t *testing.T) {
		counts := map[string]int{}
		for range 300 {
			be, src := pl.mustGet(t, pl.client, "192.0.2.10:80")
			counts[be]++
			if !strings.HasPrefix(src, "10.244.") {
				t.Fatalf("Cluster policy: backend saw %s, want the node's address (masquerade)", src)
			}
		}
		t.Logf("spread over 300: %v", counts)
		for _, be := range []string{"be1", "be2", "be3"} {
			if pct := counts[be] * 100 / 300; pct < 20 || pct > 47 {
				t.Errorf("%s got %d%% of requests, want 20-47%%", be, pct)
			}
		}
	})
	t.Run("NodePort", func(t *testing.T) {
		seen := map[string]bool{}
		for range 30 {
			be, _ := pl.mustGet(t, pl.client, "172.31.1.1:30080")
			seen[be] = true
		}
		if len(seen) < 2 {
			t.Fatalf("NodePort reached only %v", seen)
		}
	})
	t.Run("ClusterIP from a client and from the node", func(t *testing.T) {
		pl.mustGet(t, pl.client, "10.96.0.10:80")
		pl.mustGet(t, pl.node, "10.96.0.10:80")
	})
	t.Run("session affinity sticks", func(t *testing.T) {
		first, _ := pl.mustGet(t, pl.client, "192.0.2.11:80")
		for range 20 {
			if be, _ := pl.mustGet(t, pl.client, "192.0.2.11:80"); be != first {
				t.Fatalf("affinity broken: %s then %s", first, be)
			}
		}
	})
	t.Run("source ranges drop other clients", func(t *testing.T) {
		pl.mustGet(t, pl.client, "192.0.2.12:80")
		if _, err := get(pl.c2, "192.0.2.12:80"); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("client outside the ranges: err = %v, want a timeout (dropped)", err)
		}
		pl.mustGet(t, pl.c2, "192.0.2.10:80") // the same client reaches an unrestricted Service
	})
	t.Run("Local policy keeps the client address", func(t *testing.T) {
		for range 10 {
			be, src := pl.mustGet(t, pl.client, "192.0.2.13:80")
			if be != "be2" || src != "172.31.1.2" {
				t.Fatalf("Local policy: reached %s seeing %s, want be2 seeing 172.31.1.2", be, src)
			}
		}
	})
	t.Run("Local policy: the node's own connections reach any endpoint", func(t *testing.T) {
		seen := map[string]bool{}
		for range 30 {
			be, _ := pl.mustGet(t, pl.node, "192.0.2.13:80")
			seen[be] = true
		}
		if len(seen) < 2 {
			t.Fatalf("from the node, the Local Service reached only %v (want any endpoint, not just the local one)", seen)
		}
	})
	t.Run("no endpoints: rejected at once", func(t *testing.T) {
		start := time.Now()
		_, err := get(pl.client, "192.0.2.14:80")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v, want connection refused", err)
		}
		// Refused on the first SYN: a dropped one would be retransmitted only after 1 s.
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Fatalf("rejection took %v", d)
		}
	})
	t.Run("a long-lived stream survives an endpoint change", func(t *testing.T) {
		conn, err := netnstest.Dialer(pl.client, &net.Dialer{Timeout: time.Second})(context.Background(), "tcp4", "192.0.2.15:9000")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		ping := func(i int) error {
			if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
				return err
			}
			if _, err := fmt.Fprintf(conn, "ping %d\n", i); err != nil {
				return err
			}
			line, err := r.ReadString('\n')
			if err == nil && line != fmt.Sprintf("ping %d\n", i) {
				err = fmt.Errorf("echo %q", line)
			}
			return err
		}
		if err := ping(0); err != nil {
			t.Fatal(err)
		}
		// Replace every endpoint with be3: the chain the stream was translated by is
		// rewritten, but an established connection follows its conntrack entry, not the rules.
		p := *stream
		p.ClusterEndpoints = []dataplane.Endpoint{beEP(3, 9000)}
		p.ExternalEndpoints = p.ClusterEndpoints
		st.Services[stream.Name.NamespacedName] = []*dataplane.ServicePort{&p}
		pl.sync(t, st, false, stream.Name.NamespacedName)
		for i := 1; i <= 20; i++ {
			if err := ping(i); err != nil {
				t.Fatalf("stream broke after the endpoint change: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// A new connection follows the new endpoints.
		c, err := netnstest.Dialer(pl.client, &net.Dialer{Timeout: time.Second})(context.Background(), "tcp4", "192.0.2.15:9000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ct := pl.lab.Run(pl.node, "conntrack", "-L", "-p", "tcp", "--orig-dst", "192.0.2.15", "--orig-port-src", strings.Split(c.LocalAddr().String(), ":")[1])
		if !strings.Contains(ct, "src=10.244.3.2") {
			t.Fatalf("a new connection did not go to the new endpoint:\n%s", ct)
		}
	})
	t.Run("incremental syncs leave the table as a full sync would", func(t *testing.T) {
		inc := pl.lab.Run(pl.node, "nft", "list", "table", "inet", TableName)
		pl.sync(t, st, true)
		full := pl.lab.Run(pl.node, "nft", "list", "table", "inet", TableName)
		if normalize(inc) != normalize(full) {
			t.Fatalf("incremental and full tables differ:\n--- incremental\n%s\n--- full\n%s", inc, full)
		}
	})
	t.Run("cleanup removes the table", func(t *testing.T) {
		if err := netnsrun.Do(pl.node, func() error { return pl.backend.Cleanup(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		if out := pl.lab.Run(pl.node, "nft", "list", "tables"); strings.Contains(out, TableName) {
			t.Fatalf("table still there:\n%s", out)
		}
	})
}

// normalize makes two listings of the same table comparable: the dynamic contents of affinity
// sets (clients recorded by traffic) are dropped, and lines are sorted, since nft lists chains
// in creation order and elements in hash order, and a full sync creates them in another order
// than a series of incremental ones. Element lines lose their separators for the same reason.
func normalize(s string) string {
	var out []string
	inAffinitySet := false
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "set aff"):
			inAffinitySet = true
		case line == "}":
			inAffinitySet = false
		case inAffinitySet && strings.HasPrefix(line, "elements"):
			continue
		}
		line = strings.TrimPrefix(line, "elements = { ")
		line = strings.TrimSuffix(strings.TrimSuffix(line, ","), " }")
		out = append(out, line)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// A restarted speaker may announce before its first sync only because the earlier run's table
// is in the kernel: a fresh node has none, and a synced one does.
func TestHasEarlierRules(t *testing.T) {
	netnstest.Require(t, "nft")
	l := netnstest.New(t, "herald-dpt-earlier-")
	ns := l.AddNS("node")
	has := func() bool {
		t.Helper()
		var got bool
		if err := netnsrun.Do(ns, func() (err error) {
			b, err := New()
			if err != nil {
				return err
			}
			defer b.Close()
			got, err = b.HasEarlierRules(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if has() {
		t.Fatal("a fresh node reports an earlier run's rules")
	}
	if err := netnsrun.Do(ns, func() error {
		b, err := New()
		if err != nil {
			return err
		}
		defer b.Close()
		return b.Sync(context.Background(), dataplane.SyncRequest{State: everyFeatureWithoutSCTP(), Full: true})
	}); err != nil {
		t.Fatal(err)
	}
	if !has() {
		t.Fatal("the table a run left behind is not reported")
	}
}

// everyFeatureWithoutSCTP is everyFeature for this kernel, which may lack SCTP; SCTP rules are
// checked by the Fake and in the IPVS VM.
func everyFeatureWithoutSCTP() *dataplane.State {
	st := everyFeature()
	for svc, ports := range st.Services {
		if ports[0].Protocol == "SCTP" {
			delete(st.Services, svc)
		}
	}
	return st
}
