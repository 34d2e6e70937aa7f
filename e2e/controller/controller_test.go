package controllere2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/internal/realapi"
)

type cluster struct {
	api realapi.API
	cs  kubernetes.Interface
	dyn dynamic.Interface
}

func start(t *testing.T) cluster {
	api := realapi.Start(t)
	cfg := *api.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	dyn := dynamic.NewForConfigOrDie(&cfg)
	// Protobuf, like the controller: the apiserver then encodes each watch event once for both.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	c := cluster{api: api, cs: kubernetes.NewForConfigOrDie(&cfg), dyn: dyn}
	Namespace(t, c.cs, "herald-system")
	Namespace(t, c.cs, "e2e")
	return c
}

func waitAll(t *testing.T, c cluster, n int, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := WaitAllocated(ctx, c.cs, "e2e", n); err != nil {
		t.Fatal(err)
	}
}

// TestSIGKILLMidAllocation kills bin/controller (SIGKILL: no clean shutdown, the Lease is not
// released) while it is giving 2,000 Services their addresses, restarts it, and checks that no
// address moved, none is held twice, and each Service was written exactly once.
func TestSIGKILLMidAllocation(t *testing.T) {
	bin := BuildController(t)
	c := start(t)
	Pool(t, c.dyn, "e2e", "10.20.0.0/20")
	const n = 2000
	CreateServices(t, c.cs, "e2e", n)
	writes := count(t, c)
	first := StartController(t, bin, c.api.Kubeconfig)
	waitAll(t, c, n/3, 2*time.Minute)
	first.Kill()
	time.Sleep(3 * time.Second) // writes the dead process had in flight land (or not) now
	before := Addresses(t, c.cs, "e2e")
	atKill := count(t, c)
	if len(before) >= n {
		t.Fatalf("the controller finished all %d before it was killed: nothing tested", n)
	}
	t.Logf("killed with %d of %d allocated", len(before), n)

	second := StartController(t, bin, c.api.Kubeconfig) // waits for the dead leader's Lease to expire
	waitAll(t, c, n, 3*time.Minute)
	time.Sleep(2 * time.Second)
	metrics := scrape(t, second.MetricsAddr)
	for _, want := range []string{
		`herald_controller_addresses_in_use{family="IPv4",pool="e2e"} 2000`,
		`herald_controller_addresses{family="IPv4",pool="e2e"} 4096`,
		`herald_controller_workqueue_queue_duration_seconds_count{name="services"}`,
		`herald_controller_allocations_total{pool="e2e"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	after := Addresses(t, c.cs, "e2e")
	for svc, ip := range before {
		if after[svc] != ip {
			t.Errorf("%s moved from %s to %s across the restart", svc, ip, after[svc])
		}
	}
	if dup := Duplicates(after); len(dup) > 0 {
		t.Errorf("addresses held twice: %v", dup)
	}
	if len(after) != n {
		t.Errorf("%d of %d Services have addresses", len(after), n)
	}
	// The first process wrote once per address it gave, plus perhaps requests cut off by the kill
	// (counted by the apiserver, applied or not); the second wrote exactly the Services that had none.
	if w := count(t, c); w-atKill != n-len(before) {
		t.Errorf("after the restart: %d status writes for %d Services still without an address", w-atKill, n-len(before))
	}
	if first := atKill - writes; first < len(before) || first > len(before)+workers {
		t.Errorf("first process: %d status writes for %d addresses given", first, len(before))
	}
}

// TestTwoReplicas runs two controllers at once: one leads (Lease), the other waits; killing the
// leader hands over without moving or duplicating anything.
func TestTwoReplicas(t *testing.T) {
	bin := BuildController(t)
	c := start(t)
	Pool(t, c.dyn, "e2e", "10.21.0.0/22")
	a := StartController(t, bin, c.api.Kubeconfig)
	b := StartController(t, bin, c.api.Kubeconfig)
	const n = 300
	CreateServices(t, c.cs, "e2e", n)
	waitAll(t, c, n, time.Minute)
	lease, err := c.cs.CoordinationV1().Leases("herald-system").Get(context.Background(), "herald-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leader, standby := a, b
	if !ledBy(t, a, *lease.Spec.HolderIdentity) {
		leader, standby = b, a
	}
	if ledBy(t, standby, "") {
		t.Fatal("both replicas say they became leader")
	}
	before := Addresses(t, c.cs, "e2e")
	leader.Kill()
	// New Services while the Lease of the dead leader runs out: the standby must take over.
	for i := n; i < n+100; i++ {
		createNamed(t, c, i)
	}
	waitAll(t, c, n+100, time.Minute)
	if !ledBy(t, standby, "") {
		t.Fatal("the standby allocated without saying it became leader")
	}
	after := Addresses(t, c.cs, "e2e")
	for svc, ip := range before {
		if after[svc] != ip {
			t.Errorf("%s moved from %s to %s on leader change", svc, ip, after[svc])
		}
	}
	if dup := Duplicates(after); len(dup) > 0 {
		t.Errorf("addresses held twice: %v", dup)
	}
}

// workers is the controller's number of parallel Service workers: at most that many writes are in
// flight when it is killed.
const workers = 32

// count is the apiserver's count of Service status write requests (any outcome).
func count(t *testing.T, c cluster) int {
	t.Helper()
	n, err := realapi.Requests(c.cs, "services", "status", "PATCH", "PUT")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// ledBy reports whether the process logged that it became leader (with this identity, if given).
func ledBy(t *testing.T, p *Process, identity string) bool {
	t.Helper()
	log, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, `msg="became leader"`) && (identity == "" || strings.Contains(line, "identity="+identity)) {
			return true
		}
	}
	return false
}

func createNamed(t *testing.T, c cluster, i int) {
	t.Helper()
	CreateServicesFrom(t, c.cs, "e2e", i, i+1)
}

// TestCloudProviderModeBinary runs bin/controller --mode=cloud-provider: the upstream service
// controller with Herald's allocator gives class-less Services addresses and its finalizer.
func TestCloudProviderModeBinary(t *testing.T) {
	bin := BuildController(t)
	c := start(t)
	Pool(t, c.dyn, "e2e", "10.22.0.0/24")
	StartController(t, bin, c.api.Kubeconfig, "--mode=cloud-provider", "--leader-elect=false")
	const n = 50
	CreateServices(t, c.cs, "e2e", n)
	waitAll(t, c, n, time.Minute)
	list, err := c.cs.CoreV1().Services("e2e").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if !slices.Contains(s.Finalizers, "service.kubernetes.io/load-balancer-cleanup") {
			t.Errorf("%s: no upstream finalizer: %v", s.Name, s.Finalizers)
		}
		if in := s.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IPMode == nil {
			t.Errorf("%s: ingress %+v", s.Name, in)
		}
	}
	if dup := Duplicates(Addresses(t, c.cs, "e2e")); len(dup) > 0 {
		t.Errorf("addresses held twice: %v", dup)
	}
}

// TestBadFlags: a wrong --mode is refused with a message, before anything runs.
func TestBadFlags(t *testing.T) {
	bin := BuildController(t)
	out, err := exec.Command(bin, "--mode=bogus", "--kubeconfig=/nonexistent").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--mode must be native or cloud-provider") {
		t.Fatalf("err %v, output %s", err, out)
	}
}
