// Package controllerbench measures the controller on a real kube-apiserver: N pending LoadBalancer
// Services exist, then bin/controller starts; how long until all have addresses, how many status
// writes the apiserver counted per Service, and the controller's peak RSS and CPU time. Prints one
// `BENCH {figure, value, unit, target, command}` line per figure for bench/results.json (run.sh).
//
//	go test -run='^$' -bench=BenchmarkAllocate -benchtime=1x -timeout=30m ./bench/controller
package controllerbench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	controllere2e "github.com/heraldlb/herald/e2e/controller"
	"github.com/heraldlb/herald/internal/realapi"
)

const command = "BENCH_ONLY=controller make bench"

// targets are the issue's: MetalLB v0.15.2 took 99.9 s for 2,000 on this kind of machine.
var targets = map[int]string{2000: "< 5 s", 10000: "< 25 s"}

func BenchmarkAllocate(b *testing.B) {
	for _, n := range []int{2000, 10000, 50000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			allocate(b, n) // once: -benchtime=1x; the figures come from ReportMetric and the BENCH lines
		})
	}
}

func allocate(b *testing.B, n int) {
	bin := controllere2e.BuildController(b)
	api := realapi.Start(b)
	cfg := *api.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	dyn := dynamic.NewForConfigOrDie(&cfg)
	// Protobuf, like the controller: the apiserver then encodes each watch event once for both.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs := kubernetes.NewForConfigOrDie(&cfg)
	controllere2e.Namespace(b, cs, "herald-system")
	controllere2e.Namespace(b, cs, "bench")
	controllere2e.Pool(b, dyn, "bench", "10.0.0.0/16", "fd00:b::/64")
	created := time.Now()
	controllere2e.CreateServices(b, cs, "bench", n)
	b.Logf("%d pending Services created in %v", n, time.Since(created).Round(time.Millisecond))

	writesBefore, err := realapi.Requests(cs, "services", "status", "PATCH", "PUT")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	p := controllere2e.StartController(b, bin, api.Kubeconfig)
	done, err := controllere2e.WaitAllocated(ctx, cs, "bench", n)
	if err != nil {
		b.Fatal(err)
	}
	took := done.Sub(start)
	cpu, err := p.CPUSeconds()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("controller used %.2f s of CPU in %.2f s (the rest of the machine, apiserver and etcd included, is shared)", cpu, took.Seconds())
	time.Sleep(3 * time.Second) // anything written after the last allocation counts too
	rss, err := p.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}
	writesAfter, err := realapi.Requests(cs, "services", "status", "PATCH", "PUT")
	if err != nil {
		b.Fatal(err)
	}
	addrs := controllere2e.Addresses(b, cs, "bench")
	if dup := controllere2e.Duplicates(addrs); len(dup) > 0 || len(addrs) != n {
		b.Fatalf("%d of %d Services have addresses; duplicates: %v", len(addrs), n, dup)
	}
	perService := float64(writesAfter-writesBefore) / float64(n)
	present := withServicesPresent(b, p, cs, n, 100)
	p.Kill()
	floor := statusPatchFloor(b, cs, addrs)
	b.Logf("the floor: %d status patches alone took %v", n, floor.Round(time.Millisecond))
	b.ReportMetric(took.Seconds(), "s-to-all-allocated")
	b.ReportMetric(perService, "status-writes/service")
	b.ReportMetric(float64(rss)/(1<<20), "MiB-peak-RSS")
	b.ReportMetric(cpu, "controller-CPU-s")
	for _, fig := range append([]figure{
		{fmt.Sprintf("controller: %d pending Services allocated", n), took.Seconds(), "s", targets[n]},
		{fmt.Sprintf("controller: status writes per Service (%d Services)", n), perService, "writes", "= 1"},
		{fmt.Sprintf("controller: peak RSS (%d Services)", n), float64(rss) / (1 << 20), "MiB", ""},
		{fmt.Sprintf("controller: CPU time to allocate %d Services", n), cpu, "s", ""},
		{fmt.Sprintf("controller: the floor, %d status patches alone (a client doing only the controller's writes)", n), floor.Seconds(), "s", ""},
	}, present...) {
		printFigure(fig)
	}
}

type figure struct {
	figure string
	value  float64
	unit   string
	target string
}

func printFigure(f figure) {
	line, _ := json.Marshal(map[string]any{"figure": f.figure, "value": f.value, "unit": f.unit, "target": f.target, "command": command})
	fmt.Printf("BENCH %s\n", line)
}

// withServicesPresent measures the controller once the n Services are allocated (issue 20): its
// RSS and CPU at steady state (10 s with nothing changing), then m Services created one at a
// time, each timed from the create call returned to its address in a watch, and the controller's
// CPU per Service over them.
func withServicesPresent(b *testing.B, p *controllere2e.Process, cs kubernetes.Interface, n, m int) []figure {
	b.Helper()
	ctx := context.Background()
	cpu0, err := p.CPUSeconds()
	if err != nil {
		b.Fatal(err)
	}
	quiet := time.Now()
	time.Sleep(10 * time.Second)
	cpu1, err := p.CPUSeconds()
	if err != nil {
		b.Fatal(err)
	}
	steadyCores := (cpu1 - cpu0) / time.Since(quiet).Seconds()
	steadyRSS, err := p.RSS()
	if err != nil {
		b.Fatal(err)
	}

	// From now on: a watch without a version would first replay the n Services as added.
	now, err := cs.CoreV1().Services("bench").List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	w, err := cs.CoreV1().Services("bench").Watch(ctx, metav1.ListOptions{ResourceVersion: now.ResourceVersion})
	if err != nil {
		b.Fatal(err)
	}
	finished := make(chan struct{})
	defer func() { w.Stop(); <-finished }()
	allocated := make(chan string, m) // each of the m once: the watcher never blocks
	waited := map[string]bool{}
	for i := n; i < n+m; i++ {
		waited[fmt.Sprintf("svc-%d", i)] = true
	}
	go func() { // ends when w.Stop closes the result channel
		defer close(finished)
		for ev := range w.ResultChan() {
			if svc, ok := ev.Object.(*corev1.Service); ok && len(svc.Status.LoadBalancer.Ingress) > 0 && waited[svc.Name] {
				delete(waited, svc.Name)
				allocated <- svc.Name
			}
		}
	}()
	var took []time.Duration
	for i := n; i < n+m; i++ {
		controllere2e.CreateServicesFrom(b, cs, "bench", i, i+1)
		created := time.Now()
		name := fmt.Sprintf("svc-%d", i)
		for got := ""; got != name; {
			select {
			case got = <-allocated:
			case <-time.After(30 * time.Second):
				b.Fatalf("%s not allocated after 30 s", name)
			}
		}
		took = append(took, time.Since(created))
	}
	cpu2, err := p.CPUSeconds()
	if err != nil {
		b.Fatal(err)
	}
	rss, err := p.RSS()
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	label := fmt.Sprintf("with %d Services present", n)
	b.Logf("%s: steady %.3f cores, RSS %d MiB; %d created one by one: p50 %v, p99 %v, CPU %.1f ms each",
		label, steadyCores, steadyRSS>>20, m, took[m/2], took[m*99/100], (cpu2-cpu1)*1000/float64(m))
	return []figure{
		{"controller: steady state RSS, " + label, float64(steadyRSS) / (1 << 20), "MiB", ""},
		{"controller: steady state CPU, " + label, steadyCores, "cores", ""},
		{fmt.Sprintf("controller: one Service created (create call returned) -> address seen in a watch, %s, p50 of %d", label, m), ms(took[m/2]), "ms", ""},
		{fmt.Sprintf("controller: one Service created (create call returned) -> address seen in a watch, %s, p99 of %d", label, m), ms(took[m*99/100]), "ms", ""},
		{"controller: CPU per Service created one by one, " + label, (cpu2 - cpu1) * 1000 / float64(m), "ms", ""},
		{fmt.Sprintf("controller: RSS after %d more created one by one, %s", m, label), float64(rss) / (1 << 20), "MiB", ""},
	}
}

// statusPatchFloor is what the apiserver alone allows: a client doing nothing but one status patch
// per Service, as the controller writes it (the ingress IP and the conditions, protobuf, 32 at a
// time as its workers, the same client rate), against the same apiserver and the same Services
// with the controller stopped. The patches move each Service to another address so that every
// one is a real write.
func statusPatchFloor(b *testing.B, cs kubernetes.Interface, addrs map[string]string) time.Duration {
	b.Helper()
	ctx := context.Background()
	names := slices.Sorted(maps.Keys(addrs))
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan int)
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for i := range next {
				patch := fmt.Sprintf(`{"status":{"loadBalancer":{"ingress":[{"ip":"10.1.%d.%d","ipMode":"VIP"}]},`+
					`"conditions":[{"type":"herald.io/Allocated","status":"True","reason":"Allocated","message":"floor","lastTransitionTime":%q}]}}`,
					i/250, i%250+1, time.Now().UTC().Format(time.RFC3339))
				if _, err := cs.CoreV1().Services("bench").Patch(ctx, names[i], types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		b.Fatalf("the floor: %d of %d status patches failed", n, len(names))
	}
	return took
}
