package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/nftables"
)

// Helper roles: the benchmark starts itself again inside the backend namespace (an HTTP server)
// and inside the client namespace (a load generator), so no thread ever switches namespaces.
var (
	serveAddr = flag.String("serve", "", "internal: serve HTTP on this address")
	loadURL   = flag.String("load", "", "internal: GET this URL for -duration with -conns keep-alive connections, print requests/s")
	duration  = flag.Duration("duration", 2*time.Second, "internal: load duration")
	conns     = flag.Int("conns", 8, "internal: concurrent connections")
)

const benchNSPrefix = "herald-dpt-bench-"

// helperRole runs the helper roles; it reports whether this process was one.
func helperRole() bool {
	switch {
	case *serveAddr != "":
		body := strings.Repeat("x", 64)
		err := http.ListenAndServe(*serveAddr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
		fail("serve: %v", err)
	case *loadURL != "":
		fmt.Println(load(*loadURL, *duration, *conns))
	default:
		return false
	}
	return true
}

func load(url string, d time.Duration, n int) float64 {
	tr := &http.Transport{MaxIdleConnsPerHost: n, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	var done atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := c.Get(url)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body) // drained so the connection is reused
				resp.Body.Close()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds()
}

// throughput compares requests/s through a LoadBalancer IP (DNAT + masquerade by the nftables
// backend) with requests/s straight to the backend, alternating rounds so both see the same load
// from the machine's other work. Topology: client 172.31.9.2 -- node -- 10.244.9.2 backend.
func throughput(rounds int) {
	self, err := os.Executable()
	if err != nil {
		fail("%v", err)
	}
	cleanupNS()
	atExit(cleanupNS)
	defer runCleanups()
	client, be := benchNSPrefix+"client", benchNSPrefix+"be"
	// This process is the node: its namespace is the private one unshare made.
	node := strconv.Itoa(os.Getpid())
	run("ip", "link", "set", "lo", "up")
	run("sysctl", "-qw", "net.ipv4.ip_forward=1")
	for _, l := range []struct{ ns, ifNode, addrNode, addrPeer, peerNet string }{
		{client, "cl", "172.31.9.1/24", "172.31.9.2/24", "172.31.9.1"},
		{be, "be", "10.244.9.1/24", "10.244.9.2/24", "10.244.9.1"},
	} {
		run("ip", "netns", "add", l.ns)
		run("ip", "link", "add", l.ifNode, "type", "veth", "peer", "name", "eth0", "netns", l.ns)
		run("ip", "addr", "add", l.addrNode, "dev", l.ifNode)
		run("ip", "link", "set", l.ifNode, "up")
		run("ip", "-n", l.ns, "addr", "add", l.addrPeer, "dev", "eth0")
		run("ip", "-n", l.ns, "link", "set", "eth0", "up")
		run("ip", "-n", l.ns, "link", "set", "lo", "up")
		run("ip", "-n", l.ns, "route", "add", "default", "via", l.peerNet)
	}
	_ = node
	server := exec.Command("ip", "netns", "exec", be, self, "-serve", ":8080")
	server.Env = os.Environ()
	if err := server.Start(); err != nil {
		fail("backend server: %v", err)
	}
	atExit(func() { _ = server.Process.Kill(); _ = server.Wait() }) // at exit: only reaping matters

	backend, err := nftables.New()
	if err != nil {
		fail("%v", err)
	}
	ep := dataplane.Endpoint{Addr: netip.MustParseAddr("10.244.9.2"), Port: 8080, Ready: true, Serving: true}
	port := &dataplane.ServicePort{
		Name:     dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: "web"}, Port: "http", Protocol: corev1.ProtocolTCP},
		Protocol: corev1.ProtocolTCP, Port: 80,
		ClusterIPs:       []netip.Addr{netip.MustParseAddr("10.96.9.1")},
		LoadBalancerIPs:  []netip.Addr{netip.MustParseAddr("192.0.2.9")},
		ClusterEndpoints: []dataplane.Endpoint{ep}, ExternalEndpoints: []dataplane.Endpoint{ep}, HasEndpoints: true,
	}
	st := &dataplane.State{NodeName: "node-0", Services: map[types.NamespacedName][]*dataplane.ServicePort{port.Name.NamespacedName: {port}}}
	if err := backend.Sync(context.Background(), dataplane.SyncRequest{State: st, Full: true}); err != nil {
		fail("sync: %v", err)
	}
	atExit(func() {
		if err := backend.Cleanup(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "bench/dataplane: cleanup: %v\n", err)
		}
	})
	run("ip", "-n", client, "route", "add", "192.0.2.0/24", "via", "172.31.9.1")

	measure := func(url string) float64 {
		out, err := exec.Command("ip", "netns", "exec", client, self, "-load", url, "-duration", duration.String(), "-conns", strconv.Itoa(*conns)).Output()
		if err != nil {
			fail("load %s: %v", url, err)
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		return v
	}
	time.Sleep(200 * time.Millisecond) // the server's listener
	var direct, viaLB []float64
	for range rounds {
		direct = append(direct, measure("http://10.244.9.2:8080/"))
		viaLB = append(viaLB, measure("http://192.0.2.9:80/"))
	}
	slices.Sort(direct)
	slices.Sort(viaLB)
	d, l := direct[len(direct)/2], viaLB[len(viaLB)/2]
	bench("nftables data plane: HTTP requests/s straight to the backend (median of rounds)", d, "req/s", "")
	bench("nftables data plane: HTTP requests/s through the LoadBalancer IP (median of rounds)", l, "req/s", "")
	bench("nftables data plane: throughput through the LoadBalancer IP relative to direct", 100*l/d, "%", ">= 95 %")
}

func run(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		fail("%s: %v %s", strings.Join(args, " "), err, out)
	}
}

// cleanupNS removes this benchmark's namespaces, also those of an earlier run that died.
func cleanupNS() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, benchNSPrefix) {
			if err := exec.Command("ip", "netns", "del", name).Run(); err != nil {
				fmt.Fprintf(os.Stderr, "bench/dataplane: ip netns del %s: %v\n", name, err)
			}
		}
	}
}
