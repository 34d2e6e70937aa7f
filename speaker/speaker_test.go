package speaker

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/internal/realapi"
	"github.com/heraldlb/herald/speaker/l2"
)

// recordingAnnouncer keeps the snapshots it is given and claims one fixed announcement.
type recordingAnnouncer struct {
	mu   sync.Mutex
	last *Snapshot
}

func (r *recordingAnnouncer) Apply(s *Snapshot) { r.mu.Lock(); r.last = s; r.mu.Unlock() }
func (r *recordingAnnouncer) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
func (r *recordingAnnouncer) Announcements() []v1beta1.Announcement {
	return []v1beta1.Announcement{{IP: "10.0.0.100", Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}}}
}
func (r *recordingAnnouncer) policies() map[netip.Addr]l2.Policy {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	return L2Policies(r.last)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// preparingAnnouncer records the snapshot it is prepared with, and whether it came first.
type preparingAnnouncer struct {
	recordingAnnouncer
	prepared     *Snapshot
	appliedFirst bool
}

func (p *preparingAnnouncer) Prepare(_ context.Context, s *Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prepared, p.appliedFirst = s, p.last != nil
}

func (p *preparingAnnouncer) Announcements() []v1beta1.Announcement { return nil }

// TestSpeakerAgainstARealAPIServer: the speaker builds its snapshot from real objects (pools,
// advertisements, Services, Nodes, EndpointSlices through the data plane's local-endpoint view),
// writes its SpeakerStatus, finds its membership peers from SpeakerStatuses, and puts one event on
// a Service when it starts announcing it.
func TestSpeakerAgainstARealAPIServer(t *testing.T) {
	api := realapi.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := api.Client(t)
	create := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
	for _, n := range []string{"a", "b", "c"} {
		node := node(n, map[string]string{"zone": "1"}, "")
		node.Status = corev1.NodeStatus{}
		create(node)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0." + map[string]string{"a": "1", "b": "2", "c": "3"}[n]}}
		if err := c.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	create(pool("lan", nil, "10.0.0.100-10.0.0.120"))
	create(&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}})
	web := lbService("default", "web", corev1.ServiceExternalTrafficPolicyLocal, nil)
	web.Spec.Ports = []corev1.ServicePort{{Port: 80}}
	create(web)
	web.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.100", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
	if err := c.Status().Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}, NodeName: ptr.To("b"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	create(slice)

	cs := kubernetes.NewForConfigOrDie(api.Config)
	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer events.Shutdown()
	var dataplaneForwards atomic.Bool
	var membersAlive atomic.Int32
	membersAlive.Store(1)
	spk, err := New(Config{NodeName: "a", RestConfig: api.Config, Endpoints: dataplane.NewLocalEndpoints(), DataplaneForwards: dataplaneForwards.Load,
		MembersAlive: func() int { return int(membersAlive.Load()) }},
		events.NewRecorder(heraldscheme.New(), corev1.EventSource{Component: "herald-speaker", Host: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingAnnouncer{}
	spk.AddAnnouncer(rec)
	prep := &preparingAnnouncer{}
	spk.AddAnnouncer(prep)
	var peersMu sync.Mutex
	var peers map[string]netip.AddrPort
	if err := spk.WatchPeers(ctx, 9652, func(p map[string]netip.AddrPort) { peersMu.Lock(); peers = p; peersMu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := spk.Run(ctx); err != nil {
			t.Errorf("speaker: %v", err)
		}
	}()

	// Nothing is announced before the data plane forwards: the caches have
	// synced (the first SpeakerStatus is written after that), yet no snapshot reached the announcers.
	eventually(t, "a first SpeakerStatus (caches synced)", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &v1beta1.SpeakerStatus{}) == nil
	})
	time.Sleep(200 * time.Millisecond)
	rec.mu.Lock()
	early := rec.last
	rec.mu.Unlock()
	if early != nil {
		t.Errorf("a snapshot with %d IPs reached the announcers before the data plane forwarded", len(early.IPs))
	}
	dataplaneForwards.Store(true)

	ip := netip.MustParseAddr("10.0.0.100")
	eventually(t, "web's IP with candidate b (the node with its endpoint)", func() bool {
		return slices.Equal(rec.policies()[ip].Candidates, []string{"b"})
	})
	// A Preparer got, before any snapshot, one with the configuration but without Services.
	prep.mu.Lock()
	if prep.prepared == nil || prep.appliedFirst || len(prep.prepared.IPs) != 0 || len(prep.prepared.L2Advertisements) != 1 || len(prep.prepared.Nodes) != 3 {
		t.Errorf("Prepare: snapshot %+v, after a full one: %v; want one before any, with the configuration and no IPs", prep.prepared, prep.appliedFirst)
	}
	prep.mu.Unlock()
	// The endpoint moves to c: so does the candidacy.
	slice.Endpoints[0].NodeName = ptr.To("c")
	if err := c.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	eventually(t, "candidate c after the endpoint moved", func() bool {
		return slices.Equal(rec.policies()[ip].Candidates, []string{"c"})
	})

	var st v1beta1.SpeakerStatus
	eventually(t, "SpeakerStatus a with the announcer's entries", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &st) == nil && st.Status.AnnouncedIPs == 1 && len(st.Status.Announcements) == 1
	})
	if len(st.OwnerReferences) != 1 || st.OwnerReferences[0].Kind != "Node" || st.OwnerReferences[0].Name != "a" {
		t.Errorf("SpeakerStatus owner references %v, want Node a", st.OwnerReferences)
	}
	if st.Status.LastUpdate == nil {
		t.Error("SpeakerStatus without lastUpdate")
	}
	// Later writes start from what the last one returned; a SpeakerStatus deleted meanwhile makes
	// the next write fail, and the one after it reads (here: recreates) the object again.
	if err := c.Delete(ctx, &st); err != nil {
		t.Fatal(err)
	}
	var again v1beta1.SpeakerStatus
	eventually(t, "SpeakerStatus a recreated after its deletion", func() bool {
		spk.StatusChanged()
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &again) == nil && again.UID != st.UID && again.Status.AnnouncedIPs == 1
	})

	// A peer is heard: the SpeakerStatus says so within seconds, not at the next minute's write.
	// First no write is pending (the object has not changed for 2 s).
	for rv, since := "", time.Now(); time.Since(since) < 2*time.Second; time.Sleep(100 * time.Millisecond) {
		var st v1beta1.SpeakerStatus
		if err := c.Get(ctx, client.ObjectKey{Name: "a"}, &st); err != nil {
			t.Fatal(err)
		}
		if st.ResourceVersion != rv {
			rv, since = st.ResourceVersion, time.Now()
		}
	}
	membersAlive.Store(2)
	heard := time.Now()
	for {
		var st v1beta1.SpeakerStatus
		if err := c.Get(ctx, client.ObjectKey{Name: "a"}, &st); err == nil && st.Status.MembersAlive == 2 {
			t.Logf("membersAlive 2 written %v after the peer was heard", time.Since(heard).Round(time.Millisecond))
			break
		}
		if time.Since(heard) > 5*time.Second {
			t.Fatal("the SpeakerStatus still says 1 member alive 5 s after a peer was heard")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Membership peers are the nodes whose speaker wrote a SpeakerStatus: a only, then b too.
	eventually(t, "peer a", func() bool { peersMu.Lock(); defer peersMu.Unlock(); return len(peers) == 1 && peers["a"].IsValid() })
	create(&v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "b"}})
	eventually(t, "peers a and b", func() bool {
		peersMu.Lock()
		defer peersMu.Unlock()
		return len(peers) == 2 && peers["b"] == netip.MustParseAddrPort("10.0.0.2:9652")
	})

	// Becoming the announcing node puts one event on the Service.
	adapter := &L2{speaker: spk, node: "a", snap: &Snapshot{IPs: []ServiceIP{{IP: ip, Services: []*corev1.Service{web}}}}}
	adapter.onChange([]l2.Change{{IP: ip, Gained: true, Interfaces: []string{"eth0"}}})
	eventually(t, "an L2Announcing event on default/web", func() bool {
		list, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=" + EventL2Announcing})
		return err == nil && len(list.Items) == 1 && list.Items[0].Message == "node a answers ARP for 10.0.0.100 on [eth0]"
	})
}

// The controller's herald.io/Announced writes change only a Service's conditions: no snapshot is
// rebuilt for them, while every change a snapshot can read still rebuilds one.
func TestOnlyConditionsChanged(t *testing.T) {
	base := lbService("ns", "web", corev1.ServiceExternalTrafficPolicyCluster, nil, "10.0.0.100")
	base.ResourceVersion = "1"
	change := func(f func(*corev1.Service)) *corev1.Service {
		svc := base.DeepCopy()
		svc.ResourceVersion = "2"
		f(svc)
		return svc
	}
	for _, tc := range []struct {
		name string
		cur  *corev1.Service
		want bool
	}{
		{"a condition written", change(func(s *corev1.Service) {
			s.Status.Conditions = []metav1.Condition{{Type: "herald.io/Announced", Status: metav1.ConditionTrue}}
		}), true},
		{"an ingress IP", change(func(s *corev1.Service) { s.Status.LoadBalancer.Ingress[0].IP = "10.0.0.101" }), false},
		{"a label", change(func(s *corev1.Service) { s.Labels = map[string]string{"app": "other"} }), false},
		{"an annotation", change(func(s *corev1.Service) { s.Annotations = map[string]string{"herald.io/address-pool": "b"} }), false},
		{"the traffic policy", change(func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }), false},
	} {
		if got := onlyConditionsChanged(base, tc.cur); got != tc.want {
			t.Errorf("%s: onlyConditionsChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// failingAnnouncer fails as soon as it runs.
type failingAnnouncer struct{}

func (failingAnnouncer) Apply(*Snapshot)                       {}
func (failingAnnouncer) Run(context.Context) error             { return errors.New("announcer broke") }
func (failingAnnouncer) Announcements() []v1beta1.Announcement { return nil }

// stoppedAnnouncer records that its Run returned, which it does a moment after its ctx ends (as
// an announcer withdrawing its addresses does).
type stoppedAnnouncer struct{ returned atomic.Bool }

func (*stoppedAnnouncer) Apply(*Snapshot)                       {}
func (*stoppedAnnouncer) Announcements() []v1beta1.Announcement { return nil }
func (a *stoppedAnnouncer) Run(ctx context.Context) error {
	<-ctx.Done()
	time.Sleep(200 * time.Millisecond) // withdrawing; Run's caller must wait for it
	a.returned.Store(true)
	return nil
}

// TestRunStopsAndWaitsForTheOtherAnnouncers: when one announcer fails, Run returns its error only
// after it has stopped the other announcers and they have returned (no announcer is left running
// on a speaker that is going away), while the caller's context is still live.
func TestRunStopsAndWaitsForTheOtherAnnouncers(t *testing.T) {
	api := realapi.Start(t)
	spk, err := New(Config{NodeName: "a", RestConfig: api.Config}, &record.FakeRecorder{})
	if err != nil {
		t.Fatal(err)
	}
	other := &stoppedAnnouncer{}
	spk.AddAnnouncer(other)
	spk.AddAnnouncer(failingAnnouncer{})
	done := make(chan error, 1)
	go func() { done <- spk.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || err.Error() != "announcer broke" {
			t.Errorf("Run returned %v, want the failing announcer's error", err)
		}
		if !other.returned.Load() {
			t.Error("Run returned while another announcer was still running")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after an announcer failed")
	}
}
