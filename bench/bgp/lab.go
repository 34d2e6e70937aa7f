package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/speaker/bgp/bgptest"
)

// The lab figures use the whole product: Services written to the real API server, the real
// speakers (bin/speaker) on three lab nodes, the lab's BIRD with its committed timers. Without a
// controller in the lab the benchmark writes each Service's status itself, as the controller
// would; the clock starts before the Service is created either way.

const (
	labPrefix    = "herald-bgb-"
	labNamespace = "bench-bgp"
)

// labService is the i-th benchmark Service, asking for the i-th address of 100.64.0.0/16.
func labService(i int) (*corev1.Service, netip.Addr) {
	ip := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: labNamespace, Name: fmt.Sprintf("s%d", i),
			Annotations: map[string]string{config.AnnotationLoadBalancerIPs: ip.String()},
		},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(lab.BackendPort)}},
		},
	}, ip
}

// benchLab is a lab brought up for the benchmark: BIRD peering with every node, the benchmark's
// pool and advertisement, its namespace.
type benchLab struct {
	l             *lab.Lab
	bird          *bgptest.Bird
	c             kubernetes.Interface
	dyn           dynamic.Interface
	hasController bool
	nodes         []*lab.Host
	protos        []bgptest.BirdPeer
	// noNodePorts creates the Services without NodePorts (allocateLoadBalancerNodePorts false).
	noNodePorts bool
}

// startLab builds the binaries, brings the lab up and configures BGP; close tears it all down.
func startLab(dir string, chartValues []string) (b *benchLab, closeLab func(), err error) {
	ctx := context.Background()
	bin := filepath.Join(dir, "bin")
	for _, name := range []string{"speaker", "controller"} {
		if _, err := os.Stat(filepath.Join("cmd", name)); err != nil {
			continue
		}
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name).CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("building %s: %w\n%s", name, err, out)
		}
	}
	labDir := filepath.Join(dir, "lab")
	var closers []func()
	closeLab = func() {
		for _, f := range slices.Backward(closers) {
			f()
		}
	}
	defer func() {
		if err != nil {
			closeLab()
		}
	}()
	l, err := lab.Up(ctx, lab.Config{Dir: labDir, Prefix: labPrefix, BinDir: bin, CRDDir: filepath.Join("config", "crd"), ChartValues: chartValues})
	closers = append(closers, func() {
		if os.Getenv("BGP_BENCH_KEEP") != "" {
			_ = exec.Command("cp", "-r", filepath.Join(labDir, "logs"), filepath.Join(dir, "lab-logs")).Run()
		}
		_ = lab.Down(context.Background(), labDir, labPrefix)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("lab up: %w", err)
	}
	bird, err := bgptest.DialBird(l.BirdSocket)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, func() { bird.Close() })
	rc, err := l.RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	rc.QPS, rc.Burst = 1000, 2000 // the benchmark's own writes must not be what is measured
	b = &benchLab{l: l, bird: bird, c: kubernetes.NewForConfigOrDie(rc), dyn: dynamic.NewForConfigOrDie(rc), nodes: l.Nodes()}
	_, b.hasController = l.Processes[lab.RoleController]

	router := l.Topology.Host(lab.HostRouter)
	for _, o := range []struct {
		resource, kind, name string
		spec                 map[string]any
	}{
		{"bfdprofiles", "BFDProfile", "fast", map[string]any{"receiveInterval": int64(100), "transmitInterval": int64(100), "detectMultiplier": int64(3)}},
		// BFD comes with the last figure: on this shared 2-core machine the processes stall for
		// 250-450 ms now and then, which a 300 ms BFD detection time turns into session resets
		// that would be measured as route latency.
		{"bgppeers", "BGPPeer", "router", map[string]any{
			"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv4.String(),
			"holdTime": "9s",
		}},
		{"ipaddresspools", "IPAddressPool", "bench", map[string]any{"addresses": []any{"100.64.0.0/16"}}},
		{"bgpadvertisements", "BGPAdvertisement", "bench", map[string]any{"ipAddressPools": []any{"bench"}}},
	} {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "herald.io/v1beta1", "kind": o.kind, "metadata": map[string]any{"name": o.name}, "spec": o.spec,
		}}
		gvr := schema.GroupVersionResource{Group: "herald.io", Version: "v1beta1", Resource: o.resource}
		if _, err := b.dyn.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", o.kind, o.name, err)
		}
	}
	if _, err := b.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: labNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, nil, err
	}
	for _, h := range b.nodes {
		b.protos = append(b.protos, bgptest.BirdPeer{Name: h.Name + "v4"})
	}
	if err := waitEstablishedBird(bird, b.protos, 60*time.Second); err != nil {
		return nil, nil, err
	}
	return b, closeLab, nil
}

// create creates the i-th benchmark Service; without a controller in the lab it writes the
// Service's status itself, as the controller would.
func (b *benchLab) create(ctx context.Context, i int) (netip.Addr, error) {
	svc, ip := labService(i)
	if b.noNodePorts {
		svc.Spec.AllocateLoadBalancerNodePorts = new(bool)
	}
	created, err := b.c.CoreV1().Services(labNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil || b.hasController {
		return ip, err
	}
	created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
	_, err = b.c.CoreV1().Services(labNamespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return ip, err
}

// createMany creates Services from..to-1 with 16 parallel clients.
func (b *benchLab) createMany(ctx context.Context, from, to int) error {
	var wg sync.WaitGroup
	errs := make(chan error, to-from)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := b.create(ctx, i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// timeOneByOne creates Services from..from+n-1 one at a time, each timed from the create call to
// its route from every node in BIRD. It returns the times from the call sent and from the call
// returned, and, where a watch saw the IP in the Service's status, the two stages around it.
func (b *benchLab) timeOneByOne(from, n int) (took, sinceCreated, createCall, toStatus, fromStatus []time.Duration, err error) {
	statusAt, stopWatch, err := watchIngress(b.c)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	defer stopWatch()
	for i := from; i < from+n; i++ {
		start := time.Now()
		ip, err := b.create(context.Background(), i)
		if err != nil {
			return nil, nil, nil, nil, nil, err
		}
		created := time.Now()
		if err := waitRoutesBird(b.bird, netip.PrefixFrom(ip, 32), len(b.nodes), 30*time.Second); err != nil {
			return nil, nil, nil, nil, nil, fmt.Errorf("service %d: %w", i, err)
		}
		end := time.Now()
		took = append(took, end.Sub(start))
		sinceCreated = append(sinceCreated, end.Sub(created))
		createCall = append(createCall, created.Sub(start))
		if at, ok := statusAt(fmt.Sprintf("s%d", i)); ok {
			toStatus = append(toStatus, at.Sub(created))
			fromStatus = append(fromStatus, end.Sub(at))
		}
	}
	return took, sinceCreated, createCall, toStatus, fromStatus, nil
}

func runLab(dir string, n, restartN int, chartValues []string) error {
	ctx := context.Background()
	b, closeLab, err := startLab(dir, chartValues)
	if err != nil {
		return err
	}
	defer closeLab()
	l, bird, dyn, nodes := b.l, b.bird, b.dyn, b.nodes

	// 1. Services one at a time: from the create call to the route from every node in BIRD, and,
	// to tell the controller's part from the speakers', from the moment a watch sees the IP in the
	// Service's status.
	// The Service exists once the create call returns: the target is measured from there. The
	// call itself (admission, ClusterIP and NodePort allocation, the write to etcd: the API
	// server's work, none of it Herald's) is reported too, with the whole from call sent. The
	// stages show where the time goes: create returned -> IP seen in status (the controller and
	// two watches), IP seen -> routes (the speakers, GoBGP and BIRD).
	// Background CPU (heartbeats, keepalives, BFD) over a quiet moment, so the CPU per Service
	// below can be read net of it.
	idleFrom, idleStart := processCPU(l), time.Now()
	time.Sleep(3 * time.Second)
	logCPUPerSecond(l, idleFrom, time.Since(idleStart))
	cpuBefore := processCPU(l)
	phaseStart := time.Now()
	took, sinceCreated, createCall, toStatus, fromStatus, err := b.timeOneByOne(0, n)
	if err != nil {
		return err
	}
	logCPUPerService(l, cpuBefore, n, time.Since(phaseStart))
	percentiles("BGP lab: Service created (create call returned) -> route from all 3 nodes in BIRD", sinceCreated, "< 50 ms")
	percentiles("BGP lab: Service create call sent -> route from all 3 nodes in BIRD (with the API server's create)", took, "")
	percentiles("BGP lab: Service create call (API server)", createCall, "")
	percentiles("BGP lab: Service create call returned -> IP in status (controller)", toStatus, "")
	percentiles("BGP lab: Service IP in status -> route from all 3 nodes in BIRD (speakers only)", fromStatus, "")

	if restartN == 0 {
		return nil // -restart-routes 0: the per-Service figures alone (iterating on them)
	}
	// 2. Up to restartN Services, then node1's speaker stops (SIGTERM) and starts again.
	if err := b.createMany(ctx, n, restartN); err != nil {
		return err
	}
	node1 := nodes[0].Name
	proto := node1 + "v4"
	if err := waitProtoCountBird(bird, proto, restartN, 120*time.Second); err != nil {
		return err
	}
	start := time.Now()
	if err := l.SignalSpeaker(node1, syscall.SIGTERM); err != nil {
		return err
	}
	if err := waitProtoCountBird(bird, proto, 0, 30*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP lab: speaker SIGTERM -> its %d routes gone from BIRD", restartN), time.Since(start), "< 200 ms")
	if p, ok := l.Speaker(node1); ok {
		_ = p.Stop(10 * time.Second)
	}
	// A pod start runs the chart's init step (which probes the data-plane backend) before the
	// speaker's process; the target counts from the process start (StartSpeaker returns just
	// after it), the pod's whole restart is reported next to it.
	podStart := time.Now()
	if err := l.StartSpeaker(context.Background(), node1); err != nil {
		return err
	}
	start = time.Now()
	if err := waitProtoCountBird(bird, proto, restartN, 120*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP lab: speaker restarted with %d Services (process start) -> all its routes back in BIRD", restartN), time.Since(start), "< 2000 ms")
	report(fmt.Sprintf("BGP lab: speaker pod restarted with %d Services (init step included) -> all its routes back in BIRD", restartN), time.Since(podStart), "")

	// 3. Frozen speaker, BFD 100 ms x 3: the peer gets its BFD profile (its sessions restart).
	peers := dyn.Resource(schema.GroupVersionResource{Group: "herald.io", Version: "v1beta1", Resource: "bgppeers"})
	if _, err := peers.Patch(ctx, "router", types.MergePatchType, []byte(`{"spec":{"bfdProfile":"fast"}}`), metav1.PatchOptions{}); err != nil {
		return err
	}
	if err := waitBFDUpBird(bird, nodes[0].IPv4, 60*time.Second); err != nil {
		return err
	}
	if err := waitProtoCountBird(bird, proto, restartN, 60*time.Second); err != nil {
		return err
	}
	start = time.Now()
	if err := l.SignalSpeaker(node1, syscall.SIGSTOP); err != nil {
		return err
	}
	defer func() { _ = l.SignalSpeaker(node1, syscall.SIGCONT) }()
	if err := waitProtoCountBird(bird, proto, 0, 30*time.Second); err != nil {
		return err
	}
	report(fmt.Sprintf("BGP lab: speaker frozen (SIGSTOP, BFD 100 ms x 3) -> its %d routes gone from BIRD", restartN), time.Since(start), "< 500 ms")
	return nil
}

// watchIngress watches the benchmark's Services and remembers when each first had an ingress IP.
func watchIngress(c kubernetes.Interface) (func(name string) (time.Time, bool), func(), error) {
	w, err := c.CoreV1().Services(labNamespace).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			svc, ok := ev.Object.(*corev1.Service)
			if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			mu.Lock()
			if _, dup := seen[svc.Name]; !dup {
				seen[svc.Name] = time.Now()
			}
			mu.Unlock()
		}
	}()
	get := func(name string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		t, ok := seen[name]
		return t, ok
	}
	return get, w.Stop, nil
}

// percentiles reports the p50 and p99 of ds (the target applies to the p99).
func percentiles(name string, ds []time.Duration, target string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	report(fmt.Sprintf("%s, p50 of %d", name, len(ds)), ds[len(ds)/2], "")
	report(fmt.Sprintf("%s, p99 of %d", name, len(ds)), ds[len(ds)*99/100], target)
}

// processCPU reads the CPU time (user + system) each lab process has used so far, by role, and
// that of the control plane's processes (etcd, kube-apiserver, ...) by command name.
func processCPU(l *lab.Lab) map[string]time.Duration {
	out := map[string]time.Duration{}
	seen := map[int]bool{}
	for role, p := range l.Processes {
		if cpu, _, ok := readProcessCPU(p.PID); ok {
			out[role] = cpu
			seen[p.PID] = true
		}
	}
	if cp := l.Topology.Host(lab.HostControlPlane); cp != nil {
		if pids, err := exec.Command("ip", "netns", "pids", cp.Netns).Output(); err == nil {
			for _, field := range strings.Fields(string(pids)) {
				pid, _ := strconv.Atoi(field)
				if seen[pid] {
					continue // the controller runs there too
				}
				if cpu, comm, ok := readProcessCPU(pid); ok {
					out["control plane/"+comm] += cpu
				}
			}
		}
	}
	var self syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil {
		out["bench (this process)"] = time.Duration(self.Utime.Nano() + self.Stime.Nano())
	}
	return out
}

// readProcessCPU reads a process's CPU time (user + system) and command name from /proc.
func readProcessCPU(pid int) (time.Duration, string, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// "pid (comm) state ...": the name may hold spaces; after it, utime is field 14, stime 15.
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return 0, "", false
	}
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 13 {
		return 0, "", false
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100, string(data[open+1 : end]), true // USER_HZ is 100
}

// logCPUPerSecond prints, per lab process, the CPU time it used per second of wall time since before.
func logCPUPerSecond(l *lab.Lab, before map[string]time.Duration, wall time.Duration) {
	after := processCPU(l)
	for _, role := range slices.Sorted(maps.Keys(after)) {
		perSecond := time.Duration(float64(after[role]-before[role]) / wall.Seconds())
		log.Printf("CPU per second, no Service changing (load average %s): %-22s %v", loadAverage(), role, perSecond.Round(10*time.Microsecond))
	}
}

// logCPUPerService prints, per lab process, the CPU time it used per Service since before, over
// wall time in all.
func logCPUPerService(l *lab.Lab, before map[string]time.Duration, n int, wall time.Duration) {
	after := processCPU(l)
	for _, role := range slices.Sorted(maps.Keys(after)) {
		if d := after[role] - before[role]; d > 0 {
			log.Printf("CPU per Service created, %v per Service (load average %s): %-22s %v", (wall / time.Duration(n)).Round(time.Millisecond),
				loadAverage(), role, (d / time.Duration(n)).Round(10*time.Microsecond))
		}
	}
}

func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
