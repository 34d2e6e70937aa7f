package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/heraldproxy"
	"github.com/heraldlb/herald/e2e/proc"
)

var (
	heraldProxyKubeconfig = flag.String("herald-proxy", "", "internal: run Herald's data plane against this kubeconfig until SIGTERM")
	proxies               = flag.String("proxies", "kube-proxy,herald", "the proxies the side-by-side comparison runs")
	heapProfile           = flag.String("heap-profile", "", "write the heap profile of Herald's side-by-side process to this file when it stops")
)

const benchNode = "bench-node"

// runHeraldProxy is the helper role: Herald's embedded data plane (nftables) as the speaker
// runs it (e2e/heraldproxy). The process is this benchmark's binary, not the speaker's: its
// figures are the data plane's, without the announcers.
func runHeraldProxy(kubeconfig string) {
	if *heapProfile != "" {
		// Finer than the default 512 KiB, so that the smaller consumers show up too.
		runtime.MemProfileRate = 16 << 10
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- heraldproxy.Run(ctx, heraldproxy.Config{Kubeconfig: kubeconfig, NodeName: benchNode, HealthAddr: "127.0.0.1:10256"})
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-done:
		stop()
		fail("herald data plane: %v", err)
	case <-signals:
	}
	if *heapProfile != "" {
		// Before anything stops: the profile shows what the running data plane holds.
		writeHeapProfile(*heapProfile)
	}
	stop()
	if err := <-done; err != nil {
		fail("herald data plane: %v", err)
	}
}

// writeHeapProfile writes the live heap, as of a collection made now, to path.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fail("heap profile: %v", err)
	}
}

// versusKubeProxy runs a real apiserver and, one after the other, kube-proxy v1.34.4 in nftables
// mode and Herald's data plane against the same N Services x M endpoints, in a network namespace
// of their own, and reports for each: from process start to every Service programmed, one new
// Service from its creation to its rule in the kernel, and peak RSS.
func versusKubeProxy(services, endpoints int) {
	bins, err := controlplane.CachedBinaries()
	kubeProxy := filepath.Join(bins.KubeDir, "kube-proxy")
	if err == nil {
		_, err = os.Stat(kubeProxy)
	}
	if err != nil {
		fail("kube-proxy comparison: %v", err)
	}
	self, _ := os.Executable()
	cleanupNS()
	atExit(cleanupNS)
	defer runCleanups()
	ns := benchNSPrefix + "kp"
	run("ip", "netns", "add", ns)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	wrap := func(argv []string) []string { return append([]string{"ip", "netns", "exec", ns}, argv...) }
	dial := dialIn(ns)
	dir, err := os.MkdirTemp("", "herald-bench-kp-")
	if err != nil {
		fail("%v", err)
	}
	atExit(func() { os.RemoveAll(dir) })
	ctx := context.Background()
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Binaries: bins, Address: "127.0.0.1",
		ServiceCIDRs: "10.96.0.0/12", NodePortRange: "20000-39999", Wrap: wrap, Dial: dial})
	if err != nil {
		fail("control plane: %v", err)
	}
	atExit(cp.Stop)
	rc, err := cp.RESTConfig(dial)
	if err != nil {
		fail("%v", err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)
	retry(func() error {
		_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: benchNode}}, metav1.CreateOptions{})
		return err
	})
	t0 := time.Now()
	ips := createServices(ctx, cs, 0, services, endpoints)
	fmt.Fprintf(os.Stderr, "bench/dataplane: %d Services and EndpointSlices created in %v\n", services, time.Since(t0).Round(time.Second))
	last := ips[len(ips)-1]

	type result struct {
		full, change time.Duration
		hwm          float64
	}
	measure := func(name string, argv []string, dispatch dispatchMap, extra int) result {
		p, err := proc.Start(name, wrap(argv), filepath.Join(dir, name+".log"), nil)
		if err != nil {
			fail("%v", err)
		}
		// Stopped when this measurement ends, or by fail; stopping twice is harmless.
		stopProxy := func() {
			if err := p.Stop(10 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "stopping %s: %v\n", name, err)
			}
		}
		atExit(stopProxy)
		defer stopProxy()
		start := time.Now()
		// Ten minutes for the default 10,000 x 2; kube-proxy's first sync grows with the size.
		programmed, err := dispatch.waitFor(last, max(10*time.Minute, time.Duration(services*endpoints)*30*time.Millisecond), p.Alive)
		if err != nil {
			fail("%s: %v\n%s", name, err, p.Tail(3000))
		}
		watch, err := dispatch.watch()
		if err != nil {
			fail("%s: watching element events: %v", name, err)
		}
		defer watch.close()
		newIP := createServices(ctx, cs, services+extra, 1, endpoints)[0]
		created := time.Now()
		live, err := watch.until(newIP, time.Minute)
		if err != nil {
			fail("%s: %v\n%s", name, err, p.Tail(3000))
		}
		return result{programmed.Sub(start), live.Sub(created), peakRSS(p.PID)}
	}
	type side struct {
		who string
		r   result
	}
	var sides []side
	if slices.Contains(strings.Split(*proxies, ","), "kube-proxy") {
		kp := measure("kube-proxy", []string{kubeProxy, "--kubeconfig=" + cp.Kubeconfig, "--proxy-mode=nftables",
			"--hostname-override=" + benchNode, "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
			"--nodeport-addresses=127.0.0.0/8", "--conntrack-max-per-core=0", "--cluster-cidr=10.244.0.0/16"},
			kubeProxyMap.in(ns), 0)
		run("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "kube-proxy")
		run("ip", "netns", "exec", ns, "nft", "delete", "table", "ip6", "kube-proxy")
		sides = append(sides, side{"kube-proxy v1.34.4 nftables", kp})
	}
	if slices.Contains(strings.Split(*proxies, ","), "herald") {
		hp := measure("herald", []string{self, "-herald-proxy", cp.Kubeconfig, "-heap-profile=" + *heapProfile}, heraldMap.in(ns), 1)
		sides = append(sides, side{"Herald nftables data plane", hp})
	}

	desc := fmt.Sprintf("%d Services x %d endpoints, real apiserver", services, endpoints)
	for _, r := range sides {
		bench(r.who+": process start to every Service programmed, "+desc, r.r.full.Seconds(), "s", "")
		bench(r.who+": one new Service, creation to rule in the kernel, "+desc, ms(r.r.change), "ms", "")
		bench(r.who+": peak RSS, "+desc, r.r.hwm, "MiB", "")
	}
}

// nodePorts is the size of the control plane's NodePortRange in versusKubeProxy (20000-39999).
const nodePorts = 20000

// createServices creates n Services (NodePort for even indexes, while the NodePort range lasts:
// the first 40,000) with one EndpointSlice each, from index first on, 16 at a time, and returns
// their ClusterIPs.
func createServices(ctx context.Context, cs kubernetes.Interface, first, n, endpoints int) []netip.Addr {
	ips := make([]netip.Addr, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				svc, slice := objects(first+i, endpoints, 0)
				svc.ResourceVersion, slice.ResourceVersion = "", ""
				svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
				if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
					svc.Spec.Type = corev1.ServiceTypeNodePort
					if first+i >= 2*nodePorts { // the range is full: the rest are ClusterIPs
						svc.Spec.Type = corev1.ServiceTypeClusterIP
					}
					svc.Spec.Ports[0].NodePort = 0
					svc.Status = corev1.ServiceStatus{}
				}
				svc.Namespace, slice.Namespace = "default", "default"
				var created *corev1.Service
				retry(func() (err error) {
					created, err = cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
					return err
				})
				retry(func() error {
					_, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
					return err
				})
				ips[i] = netip.MustParseAddr(created.Spec.ClusterIP)
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return ips
}

func peakRSS(pid int) float64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func retry(fn func() error) {
	deadline := time.Now().Add(time.Minute)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fail("%v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dialIn opens connections from inside the named namespace (on a thread switched into it).
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			h, err := netns.GetFromName(ns)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				ch <- res{nil, err}
				return
			}
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
