// Package scale measures what Herald costs the API server, etcd and the network as the cluster
// grows, on one machine: a real kube-apiserver + etcd with simulated nodes (Node objects, no
// kubelets), the speakers' real status writer (speaker.RunStatusWriter) driven in-process for
// every node, and the membership code over loopback. Figures are printed as BENCH lines
// (hack/bench.sh collects them into bench/results.json under BENCH_ONLY=scale make bench).
package scale

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
	"github.com/heraldlb/herald/speaker"
	"github.com/heraldlb/herald/speaker/membership"
)

const (
	command = "BENCH_ONLY=scale make bench"
	ns      = "herald-system"
)

func emit(figure string, value float64, unit string) {
	line, _ := json.Marshal(map[string]any{"figure": figure, "value": value, "unit": unit, "command": command})
	fmt.Printf("BENCH %s\n", line)
}

// announcer claims a fixed list of BGP announcements (every node announces every Service's IP in
// BGP mode) and can add one more, as a Service created.
type announcer struct {
	mu   sync.Mutex
	anns []v1beta1.Announcement
}

func newAnnouncer(ips int) *announcer {
	a := &announcer{}
	since := metav1.Now()
	for i := range ips {
		a.anns = append(a.anns, v1beta1.Announcement{IP: ipAt(i), Protocol: v1beta1.ProtocolBGP, Peers: []string{"router"}, Since: &since})
	}
	return a
}

func ipAt(i int) string {
	return netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)}).String()
}

func (a *announcer) Apply(*speaker.Snapshot) {}
func (a *announcer) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
func (a *announcer) Announcements() []v1beta1.Announcement {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.anns
}
func (a *announcer) addOne() {
	a.mu.Lock()
	defer a.mu.Unlock()
	since := metav1.Now()
	a.anns = append(a.anns, v1beta1.Announcement{IP: ipAt(len(a.anns)), Protocol: v1beta1.ProtocolBGP, Peers: []string{"router"}, Since: &since})
}

// watcher counts the events of one watch (one per write of the watched objects) and their bytes as
// the API server sends them (JSON), and keeps each object's latest size. When the API server closes
// the stream before the context ends (it drops a watcher that reads too slowly, and ends every
// watch after a timeout), the watcher opens it again from the last resourceVersion it saw, so no
// event is lost or counted twice.
type watcher struct {
	events, bytes atomic.Int64
	// modifiedBytes are the bytes of MODIFIED events alone (writes to existing objects).
	modifiedBytes atomic.Int64
	last          atomic.Int64 // unix nanos of the last event
	// resumed counts the streams reopened; failed holds why the watch could not go on (the API
	// server no longer had the events after the last resourceVersion): the counts stop there.
	resumed atomic.Int64
	failed  atomic.Pointer[string]
	mu      sync.Mutex
	sizes   map[string]int
}

// watch counts the events of path from now on, until ctx ends. streamTimeout, if set, asks the API
// server to end each stream after that long (TestWatcherResumes; the benchmark passes 0).
func watch(ctx context.Context, b testing.TB, wg *sync.WaitGroup, cs kubernetes.Interface, path string, streamTimeout time.Duration) *watcher {
	w := &watcher{sizes: map[string]int{}}
	// The list gives the resourceVersion to watch from (an empty collection at the start of a
	// phase; its objects, if any, are counted as they are later rewritten).
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath(path).Param("limit", "1").DoRaw(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var list struct {
		Metadata metav1.ListMeta `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		b.Fatal(err)
	}
	rv := list.Metadata.ResourceVersion
	wg.Go(func() {
		for ctx.Err() == nil {
			req := cs.CoreV1().RESTClient().Get().AbsPath(path).Param("watch", "true").
				Param("resourceVersion", rv).Param("allowWatchBookmarks", "true")
			if streamTimeout > 0 {
				req = req.Param("timeoutSeconds", strconv.Itoa(int(streamTimeout.Seconds())))
			}
			stream, err := req.Stream(ctx)
			if err != nil {
				if ctx.Err() == nil {
					w.fail(fmt.Sprintf("watching %s from resourceVersion %s: %v", path, rv, err))
				}
				return
			}
			rv = w.read(stream, rv)
			stream.Close()
			if ctx.Err() != nil || w.failed.Load() != nil {
				return
			}
			w.resumed.Add(1)
		}
	})
	return w
}

func (w *watcher) fail(why string) { w.failed.Store(&why) }

// read counts the events of one stream until it ends, and returns the last resourceVersion seen.
func (w *watcher) read(stream io.Reader, rv string) string {
	r := bufio.NewReaderSize(stream, 4<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return rv
		}
		// The event's type, object name and resourceVersion, found without decoding the object
		// (up to 1 MB): a reader that decodes each one falls behind, and the API server drops it.
		// (In both kinds' JSON, metadata's name and resourceVersion come before anything else
		// holding those keys.)
		typ, name := field(line, `"type":"`), field(line, `"name":"`)
		if v := field(line, `"resourceVersion":"`); v != "" {
			rv = v
		}
		switch typ {
		case "", "BOOKMARK":
			continue
		case "ERROR": // 410 Gone: the events after rv are compacted away
			w.fail(fmt.Sprintf("watch error after resourceVersion %s: %.300s", rv, line))
			return rv
		}
		w.events.Add(1)
		w.bytes.Add(int64(len(line)))
		if typ == "MODIFIED" {
			w.modifiedBytes.Add(int64(len(line)))
		}
		w.last.Store(time.Now().UnixNano())
		w.mu.Lock()
		if typ == "DELETED" {
			delete(w.sizes, name)
		} else {
			w.sizes[name] = len(line)
		}
		w.mu.Unlock()
	}
}

// field returns the string value after the first occurrence of key (`"key":"`) in line.
func field(line []byte, key string) string {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return ""
	}
	v := line[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return string(v[:j])
	}
	return ""
}

func (w *watcher) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := 0
	for _, s := range w.sizes {
		t += s
	}
	return t
}

// quiet waits until the watch has at least min events and none for d; it fails the benchmark if
// the watch could not go on, whose counts would then be short, or if the API server outgrows
// maxAPIServerRSS.
func (w *watcher) quiet(ctx context.Context, b testing.TB, api *apiServer, minEvents int64, d time.Duration) {
	for ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		api.check(b)
		if why := w.failed.Load(); why != nil {
			b.Fatalf("after %d events: %s: the counts would be short", w.events.Load(), *why)
		}
		if w.events.Load() >= minEvents && time.Since(time.Unix(0, w.last.Load())) >= d {
			return
		}
	}
}

// TestWatcherResumes: a watch the API server ends (here after a second, as it ends a slow reader's)
// is opened again from its last resourceVersion, so every write is counted once, and each object's
// latest size is kept.
func TestWatcherResumes(t *testing.T) {
	api := realapi.Start(t)
	cs := kubernetes.NewForConfigOrDie(api.Config)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := watch(ctx, t, &wg, cs, "/apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases", time.Second)
	leases := cs.CoordinationV1().Leases(ns)
	const n = 3
	for i := range n {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("herald-sc-%d", i)}}
		if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // past the stream's end
	}
	for i := range n {
		l, err := leases.Get(ctx, fmt.Sprintf("herald-sc-%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l.Spec.HolderIdentity = ptr.To("a-longer-holder-identity")
		if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for w.events.Load() < 2*n && time.Now().Before(deadline) && w.failed.Load() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if why := w.failed.Load(); why != nil {
		t.Fatal(*why)
	}
	time.Sleep(time.Second) // an event counted twice would show now
	if got := w.events.Load(); got != 2*n {
		t.Errorf("counted %d events of %d writes (streams reopened: %d)", got, 2*n, w.resumed.Load())
	}
	if w.resumed.Load() < 2 {
		t.Errorf("streams reopened %d times: the API server did not end them as asked, the test proves nothing", w.resumed.Load())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.sizes) != n {
		t.Errorf("sizes of %d objects, want %d: %v", len(w.sizes), n, w.sizes)
	}
}

// apiFigures are the API server's own counts (its /metrics) of what Herald's objects cost it:
// independent of any watch of the benchmark's, so they hold however slowly it reads.
type apiFigures struct {
	// statusWrites: requests writing SpeakerStatuses (creates, updates, patches) the API server
	// served; etcdWrites: the creates and updates of SpeakerStatuses it sent to etcd.
	statusWrites, etcdWrites float64
	// serviceStatusWrites: requests writing Services' status (the controller's patches).
	serviceStatusWrites float64
	// watchBytes: bytes of SpeakerStatus and Lease events the API server sent to all watchers
	// (here the controller and the benchmark's own watches).
	watchBytes float64
	// storage: etcd's database size (apiserver_storage_size_bytes).
	storage float64
}

func readAPIFigures(ctx context.Context, b *testing.B, cs kubernetes.Interface) apiFigures {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var f apiFigures
	for _, line := range strings.Split(string(raw), "\n") {
		name, labels, _ := strings.Cut(line, "{")
		has := func(l ...string) bool {
			for _, x := range l {
				if !strings.Contains(labels, x) {
					return false
				}
			}
			return true
		}
		write := has(`verb="POST"`) || has(`verb="PUT"`) || has(`verb="PATCH"`) || has(`verb="APPLY"`)
		var to *float64
		switch {
		case name == "apiserver_request_total" && has(`resource="speakerstatuses"`) && write:
			to = &f.statusWrites
		case name == "apiserver_request_total" && has(`resource="services"`, `subresource="status"`) && write:
			to = &f.serviceStatusWrites
		case name == "etcd_requests_total" && has(`resource="speakerstatuses"`) && (has(`operation="create"`) || has(`operation="update"`)):
			to = &f.etcdWrites
		case name == "apiserver_watch_events_sizes_sum" && (has(`resource="speakerstatuses"`) || has(`resource="leases"`)):
			to = &f.watchBytes
		case name == "apiserver_storage_size_bytes":
			to = &f.storage
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			b.Fatalf("apiserver metrics: %q: %v", line, err)
		}
		*to += v
	}
	return f
}

// maxAPIServerRSS: past this the benchmark stops rather than take the memory of the machine it
// shares (at 100 nodes × 10,000 listed IPs the API server grew past 22 GB: every rewrite of a
// 0.9 MB status is kept in its watch cache, decoded).
const maxAPIServerRSS = 6 << 30

// apiServer is the benchmark's kube-apiserver process (envtest's child of this test process).
type apiServer struct{ pid int }

func findAPIServer(b *testing.B) *apiServer {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || f.comm != "kube-apiserver" || f.ppid != os.Getpid() {
			continue
		}
		return &apiServer{pid: pid}
	}
	b.Fatal("no kube-apiserver child of this process")
	return nil
}

func (a *apiServer) rss(b testing.TB) float64 {
	f, err := procStat(a.pid)
	if err != nil {
		b.Fatal(err)
	}
	return f.rss
}

func (a *apiServer) check(b testing.TB) {
	if rss := a.rss(b); rss > maxAPIServerRSS {
		b.Fatalf("the API server's RSS reached %.1f GB: this size does not fit on this machine", rss/1e9)
	}
}

// stat is what /proc/<pid>/stat says of a process.
type stat struct {
	comm string
	ppid int
	cpu  time.Duration // user + system
	rss  float64       // bytes
}

func procStat(pid int) (stat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command's name is in parentheses; the fields after it are, from 0: state, ppid, …,
	// utime (11) and stime (12) in clock ticks (100 a second on Linux), rss (21) in pages.
	open, end := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || end < open {
		return stat{}, fmt.Errorf("/proc/%d/stat: %q", pid, raw)
	}
	f := strings.Fields(string(raw[end+2:]))
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	pages, _ := strconv.ParseFloat(f[21], 64)
	return stat{comm: string(raw[open+1 : end]), ppid: ppid,
		cpu: time.Duration((utime + stime) * float64(time.Second) / 100), rss: pages * float64(os.Getpagesize())}, nil
}

// controllerProcess is Herald's real controller (bin/controller built from this tree) run as a
// process against the API server, so its RSS and CPU are its own, not the simulated nodes'.
type controllerProcess struct {
	cmd *exec.Cmd
}

// buildController builds cmd/controller once for the whole benchmark.
func buildController(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "controller")
	build := exec.Command("go", "build", "-o", bin, "./cmd/controller")
	build.Dir = realapi.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the controller: %v\n%s", err, out)
	}
	return bin
}

func startController(b *testing.B, bin, kubeconfig string) *controllerProcess {
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--leader-elect=false", "--namespace", ns,
		"--metrics-addr=", "--log-level=error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return &controllerProcess{cmd: cmd}
}

// usage returns the process's CPU time so far (user + system) and its resident memory.
func (c *controllerProcess) usage(b *testing.B) (cpu time.Duration, rss float64) {
	f, err := procStat(c.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return f.cpu, f.rss
}

func (c *controllerProcess) stop(b *testing.B) {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := c.cmd.Wait(); err != nil {
		b.Fatalf("the controller, stopped: %v", err)
	}
}

// BenchmarkStatusWriters runs, for each design (before: SpeakerStatus rewritten every minute to
// show liveness; after: a Lease renewed every 10 s and the status written only on change) and each
// size (nodes × announcements per node), the nodes' real status writers against one API server,
// with Herald's controller running as a process reading them: steady state, then one Service
// created (one more announcement on every node, as in BGP mode).
func BenchmarkStatusWriters(b *testing.B) {
	api := realapi.Start(b)
	cfg := *api.Config
	cfg.QPS, cfg.Burst = 1000, 2000
	cs := kubernetes.NewForConfigOrDie(&cfg)
	// The simulated nodes speak HTTP/1.1, each request on a connection of its own, as separate
	// speakers would: over one shared HTTP/2 connection (client-go shares one transport per TLS
	// configuration) a hundred concurrent status writes of 100 KB stalled.
	cfg.NextProtos = []string{"http/1.1"}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// Every node listing 10,000 IPs does not fit beyond 10 nodes: at 100 nodes the API server
	// grew past 22 GB (maxAPIServerRSS), and 1,000 nodes would be 0.9 GB in etcd (its quota is
	// 2 GB). The larger sizes keep nodes × IPs at 100,000.
	sizes := [][2]int{{10, 10000}, {100, 1000}, {1000, 100}}
	if s := os.Getenv("HERALD_SCALE_SIZES"); s != "" { // e.g. "10x1000,100x1000"
		sizes = nil
		for _, p := range strings.Split(s, ",") {
			var n, a int
			if _, err := fmt.Sscanf(p, "%dx%d", &n, &a); err != nil {
				b.Fatalf("HERALD_SCALE_SIZES %q: %v", s, err)
			}
			sizes = append(sizes, [2]int{n, a})
		}
	}
	// What the derived design's controller reads: a pool for the Service created, a BGPAdvertisement
	// of it to every node.
	mustCreate(ctx, b, cs, "/apis/herald.io/v1beta1/ipaddresspools", `{"apiVersion":"herald.io/v1beta1","kind":"IPAddressPool",`+
		`"metadata":{"name":"scale"},"spec":{"addresses":["10.200.0.0/16"]}}`)
	mustCreate(ctx, b, cs, "/apis/herald.io/v1beta1/bgpadvertisements", `{"apiVersion":"herald.io/v1beta1","kind":"BGPAdvertisement",`+
		`"metadata":{"name":"scale"},"spec":{"ipAddressPools":["scale"]}}`)
	controllerBin := buildController(b)
	apiProc := findAPIServer(b)
	nodes := 0
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, size := range sizes {
		n, anns := size[0], size[1]
		for ; nodes < n; nodes++ {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node%04d", nodes)}}
			if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		for _, design := range []struct {
			name, leaseNS string
			window        time.Duration
			derived       bool
		}{
			{"before (status rewritten every minute)", "", time.Minute, false},
			{"after (Lease)", ns, 30 * time.Second, false},
			{"derived (Lease; statuses list no Cluster-policy IP)", ns, 30 * time.Second, true},
		} {
			if os.Getenv("HERALD_SCALE_DESIGNS") == "derived" && !design.derived {
				continue
			}
			label := fmt.Sprintf("scale, %d nodes × %d announcements, %s", n, anns, design.name)
			statusWriters(ctx, b, cs, &cfg, apiProc, controllerBin, api.Kubeconfig, log, label, n, anns, design.leaseNS, design.window, design.derived)
		}
	}
}

// mustCreate posts one object (JSON) to path.
func mustCreate(ctx context.Context, b *testing.B, cs kubernetes.Interface, path, body string) {
	if err := cs.CoreV1().RESTClient().Post().AbsPath(path).Body([]byte(body)).SetHeader("Content-Type", "application/json").Do(ctx).Error(); err != nil {
		b.Fatal(err)
	}
}

// derivedStatus is what a node's speaker of the derived design reports beside its (empty) list:
// the marker and an Established session.
func derivedStatus(st *v1beta1.SpeakerStatusStatus) {
	st.BGPListing = v1beta1.BGPListingDeviations
	st.BGPSessionsUp, st.BGPSessionsTotal = 1, 1
	st.BGPSessions = []v1beta1.BGPSessionStatus{{Peer: "router", PeerAddress: "10.255.0.1", State: "Established"}}
}

// statusWriters runs one design at one size (see BenchmarkStatusWriters) and removes what it made.
// In the derived design the nodes list none of the IPs (they are Cluster-policy BGP IPs, which the
// controller derives), and the Service created is a real one: the controller allocates it and
// writes its herald.io/Announced condition, derived from the nodes' sessions.
func statusWriters(ctx context.Context, b *testing.B, cs kubernetes.Interface, cfg *rest.Config, api *apiServer, controllerBin, kubeconfig string,
	log *slog.Logger, label string, n, anns int, leaseNS string, window time.Duration, derived bool) {
	ctrl := startController(b, controllerBin, kubeconfig)
	phase, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	statuses := watch(phase, b, &wg, cs, "/apis/herald.io/v1beta1/speakerstatuses", 0)
	leases := watch(phase, b, &wg, cs, "/apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases", 0)
	// The Service created in the derived design: its events after its creation are the
	// controller's writes.
	services := watch(phase, b, &wg, cs, "/api/v1/namespaces/default/services", 0)
	time.Sleep(time.Second)
	began := time.Now()
	cpu0, _ := ctrl.usage(b)
	var writers []*speaker.Speaker
	var ans []*announcer
	for i := range n {
		a := newAnnouncer(anns)
		if derived {
			a = newAnnouncer(0)
		}
		spk, err := speaker.New(speaker.Config{NodeName: fmt.Sprintf("node%04d", i), RestConfig: cfg, Logger: log,
			LeaseNamespace: leaseNS}, record.NewFakeRecorder(1))
		if err != nil {
			b.Fatal(err)
		}
		spk.AddAnnouncer(a)
		if derived {
			spk.AddStatusSource(derivedStatus)
		}
		writers, ans = append(writers, spk), append(ans, a)
		wg.Go(func() { spk.RunStatusWriter(phase) })
	}
	// Two events a node: its status created (empty), then written.
	statuses.quiet(phase, b, api, int64(2*n), 3*time.Second)
	cpu1, _ := ctrl.usage(b)
	emit(label+": first status of every node written", time.Unix(0, statuses.last.Load()).Sub(began).Seconds(), "s")
	emit(label+": controller CPU reading the first statuses", (cpu1 - cpu0).Seconds(), "s")

	// Steady state: nothing changes but time.
	b0, l0, lb0 := statuses.bytes.Load(), leases.events.Load(), leases.bytes.Load()
	m0 := readAPIFigures(ctx, b, cs)
	time.Sleep(window)
	m1 := readAPIFigures(ctx, b, cs)
	cpu2, rss := ctrl.usage(b)
	secs := window.Seconds()
	emit(label+": steady state, API writes/s from Herald", (m1.statusWrites-m0.statusWrites+float64(leases.events.Load()-l0))/secs, "writes/s")
	emit(label+": steady state, etcd writes/s of SpeakerStatuses", (m1.etcdWrites-m0.etcdWrites)/secs, "writes/s")
	emit(label+": steady state, bytes/s written by Herald (= watch bytes to a controller)",
		float64(statuses.bytes.Load()-b0+leases.bytes.Load()-lb0)/secs, "B/s")
	emit(label+": steady state, controller CPU", (cpu2-cpu1).Seconds()/secs, "cores")
	emit(label+": steady state, controller RSS", rss, "B")
	emit(label+": steady state, API server RSS", api.rss(b), "B")

	// One Service created: every node announces one more IP (listing it, except in the derived
	// design).
	e0 := statuses.events.Load()
	b0, lb0 = statuses.bytes.Load(), leases.bytes.Load()
	m0 = readAPIFigures(ctx, b, cs)
	s0 := services.modifiedBytes.Load()
	if derived {
		createAnnouncedService(phase, b, cs)
	} else {
		for i, a := range ans {
			a.addOne()
			writers[i].StatusChanged()
		}
		statuses.quiet(phase, b, api, e0+int64(n), 3*time.Second)
	}
	m1 = readAPIFigures(ctx, b, cs)
	cpu3, _ := ctrl.usage(b)
	emit(label+": one Service created, API writes", m1.statusWrites-m0.statusWrites+m1.serviceStatusWrites-m0.serviceStatusWrites, "writes")
	emit(label+": one Service created, speaker writes", m1.statusWrites-m0.statusWrites, "writes")
	emit(label+": one Service created, controller writes (Service status)", m1.serviceStatusWrites-m0.serviceStatusWrites, "writes")
	emit(label+": one Service created, bytes written", float64(statuses.bytes.Load()-b0+services.modifiedBytes.Load()-s0), "B")
	// The API server's count of watch bytes covers every watcher: the controller's and ours.
	emit(label+": one Service created, watch bytes sent to the controller",
		m1.watchBytes-m0.watchBytes-float64(statuses.bytes.Load()-b0+leases.bytes.Load()-lb0), "B")
	emit(label+": one Service created, controller CPU", (cpu3 - cpu2).Seconds(), "s")
	emit(label+": Herald's objects in etcd (SpeakerStatuses + Leases, JSON)", float64(statuses.total()+leases.total()), "B")
	emit(label+": etcd database size (apiserver_storage_size_bytes)", m1.storage, "B")
	if r := statuses.resumed.Load() + leases.resumed.Load(); r > 0 {
		b.Logf("%s: the API server closed the watches %d times; each was resumed from its last resourceVersion", label, r)
	}

	ctrl.stop(b)
	stop()
	wg.Wait()
	for _, del := range []func() error{
		func() error {
			err := cs.CoreV1().Services("default").Delete(ctx, "scale", metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		},
		func() error {
			return cs.CoreV1().RESTClient().Delete().AbsPath("/apis/herald.io/v1beta1/speakerstatuses").Do(ctx).Error()
		},
		func() error {
			return cs.CoordinationV1().Leases(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: config.LabelSpeakerLease})
		},
	} {
		if err := del(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeats runs members of the real membership code on loopback (127.0.0.1, each its own
// port, heartbeats every 50 ms to every other), each carrying an L2 state of a given number of
// owned IPs (17 bytes an IP, as the L2 state encodes them: 3,000 IPs are 51 KB), and reports the
// bytes each node sends per second once converged (herald_membership_bytes_sent_total). The wire
// before version 2 sent the whole state in every heartbeat: its figure is computed from the same
// format (header + state + MAC per heartbeat).
func BenchmarkHeartbeats(b *testing.B) {
	key := membership.DeriveKey([]byte("herald-scale-bench"))
	for _, members := range []int{3, 10, 30} {
		for _, owned := range []int{0, 1000, 3000} {
			ctx, cancel := context.WithCancel(context.Background())
			regs := make([]*prometheus.Registry, members)
			ms := make([]*membership.Membership, members)
			peers := map[string]netip.AddrPort{}
			for i := range members {
				regs[i] = prometheus.NewRegistry()
				m, err := membership.New(membership.Config{Name: fmt.Sprintf("node%02d", i), Key: key,
					Listen: netip.MustParseAddrPort("127.0.0.1:0"), Metrics: membership.NewMetrics(regs[i]),
					DeadAfter: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				ms[i] = m
				peers[fmt.Sprintf("node%02d", i)] = m.LocalAddr()
			}
			var wg sync.WaitGroup
			payload := make([]byte, 1+17*owned) // a byte naming the node, then the IPs
			for i, m := range ms {
				others := map[string]netip.AddrPort{}
				for name, addr := range peers {
					if name != fmt.Sprintf("node%02d", i) {
						others[name] = addr
					}
				}
				m.SetPeers(others)
				payload[0] = byte(i) // each node's own state
				m.SetPayload(append([]byte(nil), payload...))
				wg.Go(func() {
					if err := m.Run(ctx); err != nil && ctx.Err() == nil {
						b.Error(err)
					}
				})
			}
			time.Sleep(2 * time.Second) // converge: every state delivered and acknowledged
			sent := func() float64 { return counterSum(regs, "herald_membership_bytes_sent_total") }
			s0, t0 := sent(), time.Now()
			time.Sleep(3 * time.Second)
			perNode := (sent() - s0) / time.Since(t0).Seconds() / float64(members)
			cancel()
			wg.Wait()
			label := fmt.Sprintf("scale, heartbeats, %d members, %d owned IPs each", members, owned)
			emit(label+": bytes/s sent per node (wire v2, measured on loopback)", perNode, "B/s")
			// Version 1: magic, version, name length, name, epoch, seq, sent, payload length, payload, MAC.
			v1 := float64(4+2+len("node00")+8+8+8+4+len(payload)+32) * float64(members-1) * 20
			emit(label+": bytes/s sent per node (wire v1, before, from its format)", v1, "B/s")
		}
	}
}

// counterSum adds up the counter name (a metric without labels) over the members' registries.
func counterSum(regs []*prometheus.Registry, name string) float64 {
	t := 0.0
	for _, r := range regs {
		mf, _ := r.Gather()
		for _, f := range mf {
			if f.GetName() == name {
				t += f.GetMetric()[0].GetCounter().GetValue()
			}
		}
	}
	return t
}

// createAnnouncedService creates a LoadBalancer Service and waits until the controller has
// allocated it and written its herald.io/Announced condition True (derived from the nodes'
// sessions), then for any write after it.
func createAnnouncedService(ctx context.Context, b *testing.B, cs kubernetes.Interface) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "scale"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := cs.CoreV1().Services("default").Get(ctx, "scale", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if c := apimeta.FindStatusCondition(got.Status.Conditions, config.ConditionAnnounced); c != nil && c.Status == metav1.ConditionTrue {
			time.Sleep(3 * time.Second)
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the Service created was not Announced within 2 minutes: %+v", got.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
