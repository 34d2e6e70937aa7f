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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

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
// the API server sends them (JSON), and keeps each object's latest size.
type watcher struct {
	events, bytes atomic.Int64
	last          atomic.Int64 // unix nanos of the last event
	// closed: the stream ended before the context did (the API server drops a watcher that
	// reads too slowly); its counts stop there.
	closed atomic.Bool
	mu     sync.Mutex
	sizes  map[string]int
}

func watch(ctx context.Context, b *testing.B, cs kubernetes.Interface, path string) *watcher {
	w := &watcher{sizes: map[string]int{}}
	stream, err := cs.CoreV1().RESTClient().Get().AbsPath(path).Param("watch", "true").Param("allowWatchBookmarks", "false").Stream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer stream.Close()
		r := bufio.NewReaderSize(stream, 4<<20)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				w.closed.Store(ctx.Err() == nil)
				return
			}
			// The event's type and object name, found without decoding the object (up to 1 MB):
			// a reader that decodes each one falls behind, and the API server drops it.
			typ, name := field(line, `"type":"`), field(line, `"name":"`)
			if typ == "" {
				continue
			}
			w.events.Add(1)
			w.bytes.Add(int64(len(line)))
			w.last.Store(time.Now().UnixNano())
			w.mu.Lock()
			if typ == "DELETED" {
				delete(w.sizes, name)
			} else {
				w.sizes[name] = len(line)
			}
			w.mu.Unlock()
		}
	}()
	return w
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
// the API server closed the watch, whose counts would then be short.
func (w *watcher) quiet(ctx context.Context, b *testing.B, minEvents int64, d time.Duration) {
	for ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		if w.closed.Load() {
			b.Fatalf("the API server closed a watch after %d events (a reader too slow on this machine): the counts would be short", w.events.Load())
		}
		if w.events.Load() >= minEvents && time.Since(time.Unix(0, w.last.Load())) >= d {
			return
		}
	}
}

func storageBytes(ctx context.Context, cs kubernetes.Interface) float64 {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "apiserver_storage_size_bytes{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return v
		}
	}
	return 0
}

// BenchmarkStatusWriters runs, for each design (before: SpeakerStatus rewritten every minute to
// show liveness; after: a Lease renewed every 10 s and the status written only on change) and each
// size (nodes × announcements per node), the nodes' real status writers against one API server:
// steady state, then one Service created (one more announcement on every node, as in BGP mode).
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
	sizes := [][2]int{{10, 1000}, {100, 1000}, {1000, 100}}
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
		}{{"before (status rewritten every minute)", "", time.Minute}, {"after (Lease)", ns, 30 * time.Second}} {
			phase, stop := context.WithCancel(ctx)
			statuses := watch(phase, b, cs, "/apis/herald.io/v1beta1/speakerstatuses")
			leases := watch(phase, b, cs, "/apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases")
			time.Sleep(time.Second)
			began := time.Now()
			var wg sync.WaitGroup
			var writers []*speaker.Speaker
			var ans []*announcer
			for i := range n {
				a := newAnnouncer(anns)
				spk, err := speaker.New(speaker.Config{NodeName: fmt.Sprintf("node%04d", i), RestConfig: &cfg, Logger: log,
					LeaseNamespace: design.leaseNS}, record.NewFakeRecorder(1))
				if err != nil {
					b.Fatal(err)
				}
				spk.AddAnnouncer(a)
				writers, ans = append(writers, spk), append(ans, a)
				wg.Go(func() { spk.RunStatusWriter(phase) })
			}
			statuses.quiet(phase, b, int64(n), 3*time.Second)
			label := fmt.Sprintf("scale, %d nodes × %d announcements, %s", n, anns, design.name)
			emit(label+": first status of every node written", time.Unix(0, statuses.last.Load()).Sub(began).Seconds(), "s")

			e0, b0, l0, lb0 := statuses.events.Load(), statuses.bytes.Load(), leases.events.Load(), leases.bytes.Load()
			time.Sleep(design.window)
			secs := design.window.Seconds()
			emit(label+": steady state, API writes/s from Herald", float64(statuses.events.Load()-e0+leases.events.Load()-l0)/secs, "writes/s")
			emit(label+": steady state, bytes/s written by Herald (= watch bytes to a controller)",
				float64(statuses.bytes.Load()-b0+leases.bytes.Load()-lb0)/secs, "B/s")

			// One Service created: every node announces one more IP.
			e0, b0 = statuses.events.Load(), statuses.bytes.Load()
			for i, a := range ans {
				a.addOne()
				writers[i].StatusChanged()
			}
			statuses.quiet(phase, b, e0+int64(n), 3*time.Second)
			emit(label+": one Service created, API writes", float64(statuses.events.Load()-e0), "writes")
			emit(label+": one Service created, bytes written", float64(statuses.bytes.Load()-b0), "B")
			emit(label+": Herald's objects in etcd (SpeakerStatuses + Leases, JSON)", float64(statuses.total()+leases.total()), "B")
			emit(label+": etcd database size (apiserver_storage_size_bytes)", storageBytes(ctx, cs), "B")

			stop()
			wg.Wait()
			for _, del := range []func() error{
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
			sent := func() float64 {
				t := 0.0
				for _, r := range regs {
					mf, _ := r.Gather()
					for _, f := range mf {
						if f.GetName() == "herald_membership_bytes_sent_total" {
							t += f.GetMetric()[0].GetCounter().GetValue()
						}
					}
				}
				return t
			}
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
