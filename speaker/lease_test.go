package speaker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
)

// fixedAnnouncer announces what it is told to.
type fixedAnnouncer struct {
	mu   sync.Mutex
	anns []v1beta1.Announcement
}

func (f *fixedAnnouncer) Apply(*Snapshot) {}
func (f *fixedAnnouncer) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
func (f *fixedAnnouncer) Announcements() []v1beta1.Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.anns)
}
func (f *fixedAnnouncer) set(ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.anns = nil
	for _, ip := range ips {
		f.anns = append(f.anns, v1beta1.Announcement{IP: ip, Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}})
	}
}

// TestSteadyStateWritesOnlyTheLease: against a real apiserver, a speaker whose announcements hold
// still writes nothing for 30 s but its Lease's renewals (every 10 s), even when asked to write its
// status (announcers ask on every event, most of which change nothing); a change of its content is
// written; an older speaker's status is taken over (labelled); a deleted status is created again.
// Writes are counted from watches: each write is one event with a new resourceVersion.
func TestSteadyStateWritesOnlyTheLease(t *testing.T) {
	api := realapi.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := api.Client(t)
	const ns = "herald-system"
	for _, obj := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, node("a", nil, "")} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// What an older speaker left: an unlabelled status, rewritten a minute ago.
	old := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	if err := c.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	old.Status.LastUpdate = &metav1.Time{Time: time.Now().Add(-time.Minute)}
	if err := c.Status().Update(ctx, old); err != nil {
		t.Fatal(err)
	}

	cs := kubernetes.NewForConfigOrDie(api.Config)
	ann := &fixedAnnouncer{}
	ann.set("10.0.0.100")
	spk, err := New(Config{NodeName: "a", RestConfig: api.Config, LeaseNamespace: ns, MembersAlive: func() int { return 1 }},
		record.NewFakeRecorder(100))
	if err != nil {
		t.Fatal(err)
	}
	spk.AddAnnouncer(ann)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- spk.Run(runCtx) }()
	defer func() { stop(); <-done }()

	var st v1beta1.SpeakerStatus
	eventually(t, "the status taken over: labelled, listing the announcement", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &st) == nil && st.Labels[config.LabelSpeakerLease] == "true" &&
			st.Status.AnnouncedIPs == 1
	})
	var lease coordinationv1.Lease
	eventually(t, "the Lease", func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: config.SpeakerLeaseName("a")}, &lease) == nil
	})
	if lease.Spec.LeaseDurationSeconds == nil || *lease.Spec.LeaseDurationSeconds != config.SpeakerLeaseDuration ||
		lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "a" || len(lease.OwnerReferences) != 1 {
		t.Errorf("Lease %+v %+v, want held by a for %d s, owned by Node a", lease.Spec, lease.OwnerReferences, config.SpeakerLeaseDuration)
	}
	time.Sleep(time.Second) // the first writes' echoes

	// Steady state: 30 s of being asked to write, nothing to say.
	statuses, err := watchFrom(ctx, c, &v1beta1.SpeakerStatusList{})
	if err != nil {
		t.Fatal(err)
	}
	defer statuses.Stop()
	leases, err := cs.CoordinationV1().Leases(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: lease.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer leases.Stop()
	end := time.After(30 * time.Second)
	kick := time.NewTicker(500 * time.Millisecond)
	defer kick.Stop()
	statusWrites, renewals := 0, 0
	for steady := true; steady; {
		select {
		case <-end:
			steady = false
		case <-kick.C:
			spk.StatusChanged()
		case ev := <-statuses.ResultChan():
			if ev.Type != watch.Bookmark {
				statusWrites++
			}
		case ev := <-leases.ResultChan():
			if ev.Type == watch.Modified {
				renewals++
			}
		}
	}
	if statusWrites != 0 {
		t.Errorf("%d SpeakerStatus writes in 30 s of steady state, want 0", statusWrites)
	}
	if renewals < 2 || renewals > 4 {
		t.Errorf("%d Lease renewals in 30 s, want 3 (every %d s)", renewals, config.SpeakerLeaseRenew)
	}

	// A change is written, once.
	ann.set("10.0.0.100", "10.0.0.101")
	spk.StatusChanged()
	eventually(t, "the status listing both IPs", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &st) == nil && st.Status.AnnouncedIPs == 2
	})
	// Deleted (as the controller deletes a gone speaker's): created again.
	if err := c.Delete(ctx, &st); err != nil {
		t.Fatal(err)
	}
	var again v1beta1.SpeakerStatus
	eventually(t, "the status created again", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "a"}, &again) == nil && again.UID != st.UID && again.Status.AnnouncedIPs == 2 &&
			again.Labels[config.LabelSpeakerLease] == "true"
	})
}

// watchFrom watches every object of list's kind from now on (the list's resourceVersion).
func watchFrom(ctx context.Context, c client.WithWatch, list client.ObjectList) (watch.Interface, error) {
	if err := c.List(ctx, list); err != nil {
		return nil, err
	}
	return c.Watch(ctx, list, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}})
}
