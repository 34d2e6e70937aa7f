// Command dataplane measures Herald's embedded service proxy with its nftables backend: HTTP
// requests/s through a LoadBalancer IP against straight to the backend; the time to program N
// Services x M endpoints from start (API objects through the change tracker, the endpoint policy
// and one nft transaction); the time from one change with N present to its rule being live; and
// the process's memory. It runs in a private network namespace (it re-executes
// itself under `unshare -n`, so it needs root) and prints one BENCH line per figure for
// bench/report.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/nftables"
)

const (
	command  = "BENCH_ONLY=dataplane make bench"
	netnsEnv = "HERALD_DPT_BENCH_NETNS"
)

func main() {
	services := flag.Int("services", 10000, "Services to program")
	endpoints := flag.Int("endpoints", 2, "endpoints per Service")
	changes := flag.Int("changes", 20, "single changes to time (the median and the maximum are reported)")
	rounds := flag.Int("throughput-rounds", 5, "rounds of the throughput comparison (0: skip it)")
	vsKubeProxy := flag.Bool("kube-proxy", false, "also run kube-proxy v1.34.4 and Herald side by side on a real apiserver (minutes; needs hack/k8s-bins.sh)")
	inProcess := flag.Bool("in-process", true, "measure the data plane in this process (false: only the side-by-side comparison)")
	flag.Parse()
	if *heraldProxyKubeconfig != "" {
		runHeraldProxy(*heraldProxyKubeconfig)
		return
	}
	if helperRole() {
		return
	}
	if os.Getenv(netnsEnv) != "1" {
		reexecInNetns()
		return
	}

	if *inProcess {
		inProcessFigures(*services, *endpoints, *changes)
	}
	// These run other processes: after the CPU accounting of inProcessFigures.
	if *rounds > 0 {
		throughput(*rounds)
	}
	if *vsKubeProxy {
		versusKubeProxy(*services, *endpoints)
	}
}

// inProcessFigures times the data plane fed straight from API objects in this process: the
// full sync, single changes, CPU time and memory.
func inProcessFigures(services, endpoints, changes int) {
	backend, err := nftables.New()
	if err != nil {
		fail("nftables: %v", err)
	}
	defer backend.Close()
	proxy := dataplane.NewProxy(dataplane.ProxyOptions{NodeName: "node-0", Backend: backend,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tracker := proxy.Tracker()
	ctx := context.Background()

	// Build the objects first: an apiserver would hold them already.
	svcs := make([]*corev1.Service, services)
	eps := make([]*discoveryv1.EndpointSlice, services)
	for i := range services {
		svcs[i], eps[i] = objects(i, endpoints, 0)
	}
	runtime.GC()

	start, cpu0 := time.Now(), cpuTimes()
	for i := range svcs {
		tracker.OnServiceUpdate(svcs[i])
		tracker.OnEndpointSliceUpdate(eps[i])
	}
	if err := proxy.SyncOnce(ctx); err != nil {
		fail("full sync: %v", err)
	}
	full, fullCPU := time.Since(start), cpuTimes().sub(cpu0)
	if err := live(services - 1); err != nil {
		fail("after the full sync: %v", err)
	}
	desc := fmt.Sprintf("%d Services x %d endpoints", services, endpoints)
	bench("nftables data plane: program "+desc+" from start", full.Seconds(), "s", target(services, "< 3 s"))
	bench("nftables data plane: program "+desc+", CPU time of the speaker", fullCPU.self.Seconds(), "s", "")
	bench("nftables data plane: program "+desc+", CPU time of nft (user+sys)", fullCPU.children.Seconds(), "s", "")
	bench(fmt.Sprintf("nftables data plane: transaction of the full sync (%s)", desc), float64(backend.LastTransactionSize()), "operations", "")

	// One change at a time with N present: alternately a new Service, and new endpoints for an
	// existing one; each timed from the informer event to the committed transaction, then
	// checked live in the kernel.
	var times []time.Duration
	var changeCPU cpu // summed: the kernel counts CPU time in 10 ms ticks
	for c := range changes {
		var svc *corev1.Service
		var slice *discoveryv1.EndpointSlice
		idx := services + c
		if c%2 == 1 {
			idx = c * 7 % services
			svc = svcs[idx]
			_, slice = objects(idx, endpoints, c)
		} else {
			svc, slice = objects(idx, endpoints, 0)
		}
		t0, c0 := time.Now(), cpuTimes()
		tracker.OnServiceUpdate(svc)
		tracker.OnEndpointSliceUpdate(slice)
		if err := proxy.SyncOnce(ctx); err != nil {
			fail("change %d: %v", c, err)
		}
		times = append(times, time.Since(t0))
		d := cpuTimes().sub(c0)
		changeCPU.self += d.self
		changeCPU.children += d.children
		if err := live(idx); err != nil {
			fail("change %d not live: %v", c, err)
		}
	}
	slices.Sort(times)
	bench("nftables data plane: one change with "+strconv.Itoa(services)+" Services present, to live (median)", ms(times[len(times)/2]), "ms", target(services, "< 50 ms"))
	bench("nftables data plane: one change with "+strconv.Itoa(services)+" Services present, to live (max)", ms(times[len(times)-1]), "ms", "")
	// Every figure names the size: a run at another size must not replace it (bench/report keeps
	// one value per name).
	present := " with " + strconv.Itoa(services) + " Services present"
	bench("nftables data plane: one change"+present+", CPU time of the speaker (mean)", ms(changeCPU.self)/float64(changes), "ms", "")
	bench("nftables data plane: one change"+present+", CPU time of nft (mean)", ms(changeCPU.children)/float64(changes), "ms", "")
	bench("nftables data plane: transaction of one new Service"+present, float64(backend.LastTransactionSize()), "operations", "")

	rss, hwm := memory()
	bench("nftables data plane: RSS with "+desc, rss, "MiB", "")
	bench("nftables data plane: peak RSS with "+desc, hwm, "MiB", "")
	if err := backend.Cleanup(ctx); err != nil {
		fail("cleanup: %v", err)
	}
}

// objects returns Service i (a LoadBalancer with a NodePort for even i, ClusterIP otherwise)
// and its EndpointSlice; gen varies the endpoint addresses.
func objects(i, endpoints, gen int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: clusterIP(i), ClusterIPs: []string{clusterIP(i)},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if i%2 == 0 {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.Ports[0].NodePort = int32(30000 + i/2)
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("192.168.%d.%d", i/250, i%250+1)}}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", ResourceVersion: strconv.Itoa(gen + 1), Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}},
	}
	for e := range endpoints {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+e+gen%50, i/250, i%250+1)},
			NodeName:  ptr.To(fmt.Sprintf("node-%d", e)),
		})
	}
	return svc, slice
}

// target is the target, set for the default size (10,000 Services) it was given for.
func target(services int, t string) string {
	if services != 10000 {
		return ""
	}
	return t
}

func clusterIP(i int) string { return fmt.Sprintf("10.96.%d.%d", i/250, i%250+1) }

// live asks the kernel for Service i's dispatch element (a lookup, not a listing).
func live(i int) error {
	out, err := exec.Command("nft", "get", "element", "inet", nftables.TableName, "service-ips4",
		"{ "+clusterIP(i)+" . tcp . 80 }").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	if !strings.Contains(string(out), "goto svc4-bench/svc-") {
		return fmt.Errorf("unexpected element: %s", out)
	}
	return nil
}

// cpu is CPU time (user+sys) of this process and of its children (the nft runs: finished ones
// and the running nft session). On a shared machine wall times swing with the load; CPU times
// show the work itself.
type cpu struct{ self, children time.Duration }

func (c cpu) sub(o cpu) cpu { return cpu{c.self - o.self, c.children - o.children} }

func cpuTimes() cpu {
	var self, children syscall.Rusage
	// getrusage fails only for an invalid who or a bad pointer, neither possible here.
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	d := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return cpu{d(self), d(children) + runningChildrenCPU()}
}

// runningChildrenCPU is the CPU time of this process's children that still run (utime and
// stime from /proc/<pid>/stat; RUSAGE_CHILDREN counts a child only once it has ended).
func runningChildrenCPU() time.Duration {
	const clockTick = 100 // USER_HZ, 100 on every Linux this runs on
	entries, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	var ticks int64
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command name (which may hold spaces) start after the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 13 && f[1] == self {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += ut + st
		}
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// memory returns VmRSS and VmHWM of this process in MiB.
func memory() (rss, hwm float64) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// reexecInNetns runs this program again in a new network namespace, which disappears with it.
func reexecInNetns() {
	self, err := os.Executable()
	if err != nil {
		fail("%v", err)
	}
	cmd := exec.Command("unshare", append([]string{"-n", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fail("in a private network namespace (needs root and unshare): %v", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func bench(figure string, value float64, unit, target string) {
	b, _ := json.Marshal(map[string]any{"figure": figure, "value": value, "unit": unit, "target": target, "command": command})
	fmt.Printf("BENCH %s\n", b)
}

// cleanups undo what the benchmark started (processes, namespaces, tables), last first; fail
// runs them too, since os.Exit skips deferred calls.
var cleanups []func()

func atExit(fn func()) { cleanups = append(cleanups, fn) }

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/dataplane: "+format+"\n", args...)
	runCleanups()
	os.Exit(1)
}
