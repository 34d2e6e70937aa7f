// Command ipvs measures the IPVS data-plane backend against the nftables backend in the same
// kernel: the time to program N Services x M endpoints from scratch, and to apply one change with N
// present (a new Service; new endpoints for an existing one). It runs inside the VM of
// hack/ipvs-vm (the build machines' kernels have no ip_vs), through run.sh, and prints one
// BENCH line per figure. Emulation (no KVM) makes absolute times slow; the ratios are the figures
// that carry over to real hardware.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	mobyipvs "github.com/moby/ipvs"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/ipvs"
	"github.com/heraldlb/herald/dataplane/nftables"
)

const command = "BENCH_ONLY=ipvs make bench"

func main() {
	services := flag.Int("services", 10000, "Services to program")
	endpoints := flag.Int("endpoints", 2, "endpoints per Service")
	repeats := flag.Int("repeats", 7, "single changes measured per kind and round (the median is reported)")
	rounds := flag.Int("rounds", 2, "rounds, alternating the backends; the fastest full sync is reported (the VM shares a busy host)")
	flag.Parse()
	// The benchmark programs the namespace it runs in: only ever the VM's, which has no network
	// device and disappears after the run.
	if os.Getenv("HERALD_IN_VM") != "1" {
		fmt.Fprintln(os.Stderr, "bench/ipvs runs inside the IPVS VM: use bench/ipvs/run.sh")
		os.Exit(2)
	}
	if err := ipvs.Probe(); err != nil {
		fail("IPVS probe: %v", err)
	}
	ipvsBackend, err := ipvs.New(ipvs.Options{StrictARP: true})
	if err != nil {
		fail("%v", err)
	}
	nftBackend, err := nftables.New()
	if err != nil {
		fail("%v", err)
	}
	var ipvsRuns, nftRuns []times
	for r := 0; r < *rounds; r++ {
		ipvsRuns = append(ipvsRuns, measure(ipvsBackend, *services, *endpoints, *repeats, verifyIPVS))
		nftRuns = append(nftRuns, measure(nftBackend, *services, *endpoints, *repeats, verifyNFT))
	}
	ipvsTimes, nftTimes := summarize(ipvsRuns), summarize(nftRuns)

	desc := fmt.Sprintf("%d Services x %d endpoints, in the qemu VM (TCG emulation)", *services, *endpoints)
	for _, r := range []struct {
		name string
		t    summary
	}{{"IPVS", ipvsTimes}, {"nftables", nftTimes}} {
		bench(r.name+" backend: program "+desc+", fastest round", r.t.full.Seconds(), "s")
		bench(r.name+" backend: add one Service with "+fmt.Sprint(*services)+" present (VM, median)", ms(r.t.add), "ms")
		bench(r.name+" backend: change one Service's endpoints with "+fmt.Sprint(*services)+" present (VM, median)", ms(r.t.change), "ms")
	}
	bench("program time ratio nftables/IPVS ("+desc+", fastest rounds)", nftTimes.full.Seconds()/ipvsTimes.full.Seconds(), "x")
	bench("one-change time ratio nftables/IPVS (new Service, VM, medians)", float64(nftTimes.add)/float64(ipvsTimes.add), "x")
	bench("one-change time ratio nftables/IPVS (endpoints of one Service, VM, medians)", float64(nftTimes.change)/float64(ipvsTimes.change), "x")
}

// times are one backend's measurements: a full sync and single changes of two kinds.
type times struct {
	full        time.Duration
	add, change []time.Duration
}

// summary is what is reported for one backend.
type summary struct{ full, add, change time.Duration }

// summarize keeps the fastest full sync (the one least disturbed by the host) and the medians of
// all single changes.
func summarize(runs []times) summary {
	sum := summary{full: runs[0].full}
	var adds, changes []time.Duration
	for _, r := range runs {
		sum.full = min(sum.full, r.full)
		adds = append(adds, r.add...)
		changes = append(changes, r.change...)
	}
	sum.add, sum.change = median(adds), median(changes)
	return sum
}

// measure runs one backend through a full sync of n Services, then repeats single-Service changes
// (a new Service; new endpoints for an existing one), checks the kernel, and cleans up.
func measure(b dataplane.Backend, n, m, repeats int, verify func(n int) error) times {
	ctx := context.Background()
	if err := b.Cleanup(ctx); err != nil {
		fail("%s: cleanup before: %v", b.Name(), err)
	}
	state := &dataplane.State{NodeName: "vm", Services: map[types.NamespacedName][]*dataplane.ServicePort{}}
	for i := 0; i < n; i++ {
		addService(state, i, m, 0)
	}
	var t times
	start := time.Now()
	if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Full: true}); err != nil {
		fail("%s: full sync: %v", b.Name(), err)
	}
	t.full = time.Since(start)
	if err := verify(n); err != nil {
		fail("%s after the full sync: %v", b.Name(), err)
	}

	for r := 0; r < repeats; r++ {
		added := addService(state, n+r, m, 0)
		start = time.Now()
		if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: map[types.NamespacedName]struct{}{added: {}}}); err != nil {
			fail("%s: adding a Service: %v", b.Name(), err)
		}
		t.add = append(t.add, time.Since(start))
		if err := verify(n + r + 1); err != nil {
			fail("%s after adding a Service: %v", b.Name(), err)
		}
		changed := addService(state, r*n/repeats, m, 1) // same Service, endpoints moved
		start = time.Now()
		if err := b.Sync(ctx, dataplane.SyncRequest{State: state, Changed: map[types.NamespacedName]struct{}{changed: {}}}); err != nil {
			fail("%s: changing endpoints: %v", b.Name(), err)
		}
		t.change = append(t.change, time.Since(start))
	}

	if err := b.Cleanup(ctx); err != nil {
		fail("%s: cleanup: %v", b.Name(), err)
	}
	fmt.Fprintf(os.Stderr, "%s: full %v, adds %v, endpoint changes %v\n", b.Name(), t.full, t.add, t.change)
	return t
}

// addService puts Service i (ClusterIP 10.96.x.y:80/TCP) with m endpoints into state; generation
// moves the endpoints to other addresses.
func addService(state *dataplane.State, i, m, generation int) types.NamespacedName {
	name := types.NamespacedName{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}
	var eps []dataplane.Endpoint
	for e := 0; e < m; e++ {
		eps = append(eps, dataplane.Endpoint{
			Addr: netip.AddrFrom4([4]byte{10, byte(1 + e + 16*generation), byte(i >> 8), byte(i)}),
			Port: 8080, NodeName: "vm", Ready: true, Serving: true,
		})
	}
	state.Services[name] = []*dataplane.ServicePort{{
		Name:     dataplane.ServicePortName{NamespacedName: name, Protocol: v1.ProtocolTCP},
		Protocol: v1.ProtocolTCP, Port: 80,
		ClusterIPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
		ClusterEndpoints: eps, ExternalEndpoints: eps, HasEndpoints: true,
	}}
	return name
}

// verifyIPVS checks the kernel holds one virtual server per Service.
func verifyIPVS(n int) error {
	h, err := mobyipvs.New("")
	if err != nil {
		return err
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return err
	}
	if len(svcs) != n {
		return fmt.Errorf("%d IPVS virtual servers, want %d", len(svcs), n)
	}
	return nil
}

// verifyNFT checks the nftables table mentions every Service's ClusterIP.
func verifyNFT(n int) error {
	out, err := exec.Command("nft", "list", "table", "inet", nftables.TableName).Output()
	if err != nil {
		return fmt.Errorf("nft list: %w", err)
	}
	got := strings.Count(string(out), "10.96.")
	if got < n {
		return fmt.Errorf("the table mentions %d ClusterIPs, want at least %d", got, n)
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func bench(figure string, value float64, unit string) {
	b, _ := json.Marshal(map[string]any{"figure": figure, "value": value, "unit": unit, "command": command})
	fmt.Printf("BENCH %s\n", b)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/ipvs: "+format+"\n", args...)
	os.Exit(1)
}
