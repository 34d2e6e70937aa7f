package ipvs

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane/backendspec"
)

func TestMain(m *testing.M) { os.Exit(backendspec.RunInNodeNetns(m)) }

// kernelParts returns the real kernel access of the backend in the test's node namespace, or skips
// when the kernel has no IPVS. Inside the VM (HERALD_IN_VM=1) a missing IPVS is a failure; on a
// build machine without ip_vs these tests are covered by `make test-ipvs` instead.
func kernelParts(t *testing.T) (*ipvs.Handle, Links, knftables.Interface) {
	t.Helper()
	if !backendspec.InNodeNetns() {
		t.Skip("needs root and a private node network namespace")
	}
	if err := Probe(); err != nil {
		if os.Getenv("HERALD_IN_VM") == "1" {
			t.Fatalf("IPVS probe failed inside the VM: %v", err)
		}
		t.Skipf("this kernel has no IPVS (%v): run these tests in the VM with `go run ./hack/ipvs-vm -test ./dataplane/ipvs`", err)
	}
	h, err := ipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	links, err := NewNetlinkLinks()
	if err != nil {
		t.Fatal(err)
	}
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	return h, links, nft
}

// TestKernelDataPath programs the IPVS layer of the backend (virtual servers, dummy link, nftables
// table, sysctls) directly and checks it with real packets between namespaces.
func TestKernelDataPath(t *testing.T) {
	h, links, nft := kernelParts(t)
	top := backendspec.NewTopology(t, 3)
	for _, b := range top.Backends {
		b.Serve(t, backendspec.TCP, 8080)
		b.Serve(t, backendspec.UDP, 5353)
		b.Serve(t, backendspec.SCTP, 9000)
	}
	keeper := &sysctlKeeper{s: ProcSysctls{}, stateFile: filepath.Join(t.TempDir(), "sysctls.json")}
	if err := keeper.apply(true); err != nil {
		t.Fatal(err)
	}
	if err := links.EnsureDummy(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = links.DeleteDummy() })
	lb := netip.MustParseAddr("10.255.0.10")
	if err := links.AddServiceIP(lb); err != nil {
		t.Fatal(err)
	}
	if ips, err := links.ServiceIPs(); err != nil || len(ips) != 1 || ips[0] != lb {
		t.Fatalf("Service IPs routed to %s: %v, %v; want [%s]", DummyLinkName, ips, err, lb)
	}
	if nodeAddrs, err := links.NodeAddrs(); err != nil || !slices.Contains(nodeAddrs, top.NodeIP) || slices.Contains(nodeAddrs, lb) {
		t.Fatalf("node addresses %v, %v: want %s and not the Service IP", nodeAddrs, err, top.NodeIP)
	}
	ctx := context.Background()
	fw := newFirewall(nft)
	t.Cleanup(func() { _ = fw.Delete(ctx) })
	vs := newVirtualServers(h, 3*time.Second)
	t.Cleanup(func() { _ = vs.DeleteAll() })

	reals := func(port uint16, backends ...*backendspec.Host) map[realKey]int {
		m := map[realKey]int{}
		for _, b := range backends {
			m[realKey{Addr: b.Addrs[0], Port: port}] = 1
		}
		return m
	}
	all := top.Backends
	web := vsKey{Addr: lb, Proto: unix.IPPROTO_TCP, Port: 80}
	dns := vsKey{Addr: lb, Proto: unix.IPPROTO_UDP, Port: 53}
	sctp := vsKey{Addr: lb, Proto: unix.IPPROTO_SCTP, Port: 9000}
	nodePort := vsKey{Addr: top.NodeIP, Proto: unix.IPPROTO_TCP, Port: 30080}
	empty := vsKey{Addr: lb, Proto: unix.IPPROTO_TCP, Port: 81}
	desired := map[vsKey]*virtualServer{
		web:      {Scheduler: "rr", Reals: reals(8080, all...)},
		dns:      {Scheduler: "rr", Reals: reals(5353, all...)},
		sctp:     {Scheduler: "rr", Reals: reals(9000, all...)},
		nodePort: {Scheduler: "rr", Reals: reals(8080, all...)},
		empty:    {Scheduler: "rr", Reals: map[realKey]int{}},
	}
	sets := firewallSets{}
	sets.add(familyIPv4.set(setServiceIPs), lb.String())
	for _, k := range []vsKey{web, dns, sctp, empty} {
		sets.add(familyIPv4.set(setServicePorts), k.Addr.String(), protoName(k.Proto), itoa(int(k.Port)))
	}
	sets.add(familyIPv4.set(setMasquerade), lb.String(), "tcp", "80")
	sets.add(familyIPv4.set(setNodePortMasq), "tcp", "30080")
	sets.add(familyIPv4.set(setNoEndpoints), lb.String(), "tcp", "81")
	sync := func() {
		t.Helper()
		if err := vs.Sync(desired, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := syncSets(ctx, fw, sets); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	client := top.Client
	spread := func(proto string, dst netip.AddrPort, n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for i := 0; i < n; i++ {
			r, err := client.Request(proto, netip.Addr{}, dst)
			if err != nil {
				t.Fatalf("%s request %d to %s: %v", proto, i, dst, err)
			}
			got[r.Backend]++
		}
		return got
	}

	t.Run("round robin with masquerade", func(t *testing.T) {
		got := spread(backendspec.TCP, netip.AddrPortFrom(lb, 80), 30)
		for _, b := range all {
			if got[b.Name] != 10 {
				t.Fatalf("round robin over 30 requests: %v, want 10 each", got)
			}
		}
		r, err := client.Request(backendspec.TCP, netip.Addr{}, netip.AddrPortFrom(lb, 80))
		if err != nil {
			t.Fatal(err)
		}
		if r.Source == client.Addrs[0] {
			t.Fatalf("backend saw the client's own address %s: not masqueraded", r.Source)
		}
	})
	t.Run("UDP and SCTP", func(t *testing.T) {
		if got := spread(backendspec.UDP, netip.AddrPortFrom(lb, 53), 6); len(got) != 3 {
			t.Fatalf("UDP spread %v, want all 3 backends", got)
		}
		if got := spread(backendspec.SCTP, netip.AddrPortFrom(lb, 9000), 6); len(got) != 3 {
			t.Fatalf("SCTP spread %v, want all 3 backends", got)
		}
	})
	t.Run("NodePort", func(t *testing.T) {
		if got := spread(backendspec.TCP, netip.AddrPortFrom(top.NodeIP, 30080), 3); len(got) != 3 {
			t.Fatalf("NodePort spread %v", got)
		}
	})
	t.Run("unused port and no endpoints rejected", func(t *testing.T) {
		// A listener of the node on every address must not answer on a Service IP.
		l, err := net.Listen("tcp", ":82")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		defer func() { l.Close(); <-served }()
		go func() {
			defer close(served)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("node 0.0.0.0\n"))
				c.Close()
			}
		}()
		start := time.Now()
		if r, err := client.Request(backendspec.TCP, netip.Addr{}, netip.AddrPortFrom(lb, 82)); err == nil || time.Since(start) > time.Second {
			t.Fatalf("port 82 of the LB IP: %+v, %v after %v; want an immediate rejection", r, err, time.Since(start))
		}
		start = time.Now()
		_, err = client.Request(backendspec.TCP, netip.Addr{}, netip.AddrPortFrom(lb, 81))
		if err == nil || time.Since(start) > time.Second {
			t.Fatalf("Service without endpoints: err=%v after %v, want an immediate rejection", err, time.Since(start))
		}
	})
	t.Run("source ranges", func(t *testing.T) {
		sets.add(familyIPv4.set(setFirewall), lb.String(), "tcp", "80")
		sets.add(familyIPv4.set(setFirewallAllow), lb.String(), "tcp", "80", "10.0.1.2/32")
		sync()
		defer func() {
			delete(sets, familyIPv4.set(setFirewall))
			delete(sets, familyIPv4.set(setFirewallAllow))
			sync()
		}()
		if _, err := client.Request(backendspec.TCP, client.Addrs[0], netip.AddrPortFrom(lb, 80)); err != nil {
			t.Fatalf("allowed source %s: %v", client.Addrs[0], err)
		}
		if _, err := client.Request(backendspec.TCP, client.Addrs[1], netip.AddrPortFrom(lb, 80)); err == nil {
			t.Fatalf("source %s outside the ranges got through", client.Addrs[1])
		}
	})
	t.Run("graceful termination", func(t *testing.T) {
		conn, err := client.Open(backendspec.TCP, netip.Addr{}, netip.AddrPortFrom(lb, 80))
		if err != nil {
			t.Fatal(err)
		}
		var leaving *backendspec.Host
		var staying []*backendspec.Host
		for _, b := range all {
			if b.Name == conn.First.Backend {
				leaving = b
			} else {
				staying = append(staying, b)
			}
		}
		desired[web].Reals = reals(8080, staying...)
		sync()
		if got := spread(backendspec.TCP, netip.AddrPortFrom(lb, 80), 6); got[leaving.Name] != 0 {
			t.Fatalf("new connections reached the terminating backend: %v", got)
		}
		if name, err := conn.Ping(); err != nil || name != leaving.Name {
			t.Fatalf("established connection after its backend left: %q, %v", name, err)
		}
		if vs.Draining() != 1 {
			t.Fatalf("draining %d, want 1", vs.Draining())
		}
		conn.Close()
		// IPVS counts the closed connection as inactive until its TIME_WAIT-like state expires, so
		// the deadline (3 s here) is what removes it; check it is gone after that.
		deadline := time.Now().Add(10 * time.Second)
		for vs.Draining() > 0 && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			if err := vs.ReapTerminating(time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		dsts, err := h.GetDestinations(vs.service(web, nil))
		if err != nil {
			t.Fatal(err)
		}
		if vs.Draining() != 0 || len(dsts) != 2 {
			t.Fatalf("after draining: %d draining, %d real servers in the kernel, want 0 and 2", vs.Draining(), len(dsts))
		}
		desired[web].Reals = reals(8080, all...)
		sync()
	})
	t.Run("persistence and scheduler change", func(t *testing.T) {
		desired[web].AffinitySeconds = 60
		sync()
		if got := spread(backendspec.TCP, netip.AddrPortFrom(lb, 80), 9); len(got) != 1 {
			t.Fatalf("persistent virtual server spread one client over %v", got)
		}
		desired[web].AffinitySeconds = 0
		desired[web].Scheduler = "sh"
		sync()
		svc, err := h.GetService(vs.service(web, nil))
		if err != nil || svc.SchedName != "sh" || svc.Flags&flagPersistent != 0 {
			t.Fatalf("kernel has %+v, %v; want scheduler sh without persistence", svc, err)
		}
		if got := spread(backendspec.TCP, netip.AddrPortFrom(lb, 80), 6); len(got) != 1 {
			t.Fatalf("source hashing spread one client over %v", got)
		}
	})
	if err := keeper.restore(); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestProbeAgreesWithKernel runs the real probe: it must succeed in the VM and, anywhere, agree with
// /proc/net/ip_vs (which exists exactly when ip_vs is loaded; the probe loads it when it can).
func TestProbeAgreesWithKernel(t *testing.T) {
	if !backendspec.InNodeNetns() {
		t.Skip("needs root and a private node network namespace")
	}
	err := Probe()
	_, statErr := os.Stat("/proc/net/ip_vs")
	if os.Getenv("HERALD_IN_VM") == "1" && err != nil {
		t.Fatalf("probe failed on the VM's kernel, which has ip_vs: %v", err)
	}
	if (err == nil) != (statErr == nil) {
		t.Fatalf("probe says %v but /proc/net/ip_vs: %v", err, statErr)
	}
	t.Logf("probe: %v", err)
}
