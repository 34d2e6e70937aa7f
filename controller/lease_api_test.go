package controller_test

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller"
)

// TestAnnouncedFollowsSpeakerLeases: against a real apiserver, a speaker with a Lease counts as
// alive while the Lease is renewed, however old its SpeakerStatus's lastUpdate (it is written only
// when its content changes), and stops counting once the Lease expires; a speaker from before the
// Leases (no Lease, its status unlabelled) still counts while its status is fresh, so an upgrade
// leaves no gap.
func TestAnnouncedFollowsSpeakerLeases(t *testing.T) {
	f := newFixture(t)
	stop := f.runController(t, controller.Options{LoadBalancerClass: config.DefaultLoadBalancerClass, TakeClassless: true}, false)
	defer stop()
	ctx := context.Background()
	f.namespace("lease", nil)
	f.namespace(controller.DefaultSecretNamespace, nil)
	f.pool("lease-l2", onlyNamespace("lease", map[string]any{"addresses": addrs("10.30.0.0/30")}))
	f.herald("l2advertisements", "L2Advertisement", "lease-l2", map[string]any{"ipAddressPools": []any{"lease-l2"}})
	f.service("lease", "leased")
	f.service("lease", "legacy")
	leasedIP := ingressIPs(f.waitReason("lease", "leased", config.ReasonAllocated))[0]
	legacyIP := ingressIPs(f.waitReason("lease", "legacy", config.ReasonAllocated))[0]

	// node1 renews a Lease of 2 s every 300 ms; its status was last changed an hour ago.
	leases := f.cs.CoordinationV1().Leases(controller.DefaultSecretNamespace)
	lease, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: config.SpeakerLeaseName("node1"), Labels: map[string]string{config.LabelSpeakerLease: "true"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("node1"), LeaseDurationSeconds: ptr.To[int32](2),
			RenewTime: &metav1.MicroTime{Time: time.Now()}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	renewing, stopRenewing := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		for renewing.Err() == nil {
			time.Sleep(300 * time.Millisecond)
			lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			next, err := leases.Update(renewing, lease, metav1.UpdateOptions{})
			if err != nil {
				if renewing.Err() == nil {
					t.Errorf("renewing the Lease: %v", err)
				}
				return
			}
			lease = next
		}
	}()
	defer func() { stopRenewing(); <-renewed }() // a failure must not leave it writing
	f.writeOldSpeakerStatus("node1", true, time.Hour, l2(leasedIP))
	// node2 is a speaker from before the Leases: no Lease, an unlabelled status written just now.
	f.writeOldSpeakerStatus("node2", false, 0, l2(legacyIP))

	if c := f.waitAnnounced("lease", "leased", metav1.ConditionTrue, config.ReasonAnnounced); c.Message != leasedIP+": L2 from node1" {
		t.Errorf("leased: message %q", c.Message)
	}
	if c := f.waitAnnounced("lease", "legacy", metav1.ConditionTrue, config.ReasonAnnounced); c.Message != legacyIP+": L2 from node2" {
		t.Errorf("legacy: message %q", c.Message)
	}

	// node1's speaker dies: its Lease expires (2 s), the writer's sweep sees it (5 s), and after the
	// grace (15 s) leased is not announced.
	stopRenewing()
	<-renewed
	died := time.Now()
	f.waitAnnounced("lease", "leased", metav1.ConditionFalse, config.ReasonNoEligibleNode)
	if took := time.Since(died); took < 2*time.Second || took > 40*time.Second {
		t.Errorf("leased: False %v after the last renewal, want after the Lease's 2 s and the grace", took)
	}
	if c := f.announced("lease", "legacy"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("legacy (no Lease, fresh status): %+v, want still True", c)
	}
}

// writeOldSpeakerStatus writes a node's SpeakerStatus whose lastUpdate is age ago, labelled as a
// speaker with a Lease writes it (withLease) or not, as a speaker from before the Leases does.
func (f *fixture) writeOldSpeakerStatus(node string, withLease bool, age time.Duration, anns []v1beta1.Announcement) {
	f.t.Helper()
	ctx := f.t.Context()
	meta := map[string]any{"name": node}
	if withLease {
		meta["labels"] = map[string]any{config.LabelSpeakerLease: "true"}
	}
	res := f.dyn.Resource(speakerStatusesGVR)
	cur, err := res.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1beta1.GroupVersion.String(), "kind": "SpeakerStatus", "metadata": meta}}, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	st := v1beta1.SpeakerStatusStatus{LastUpdate: &metav1.Time{Time: time.Now().Add(-age)}, AnnouncedIPs: int32(len(anns)), Announcements: anns}
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		f.t.Fatal(err)
	}
	cur.Object["status"] = status
	if _, err := res.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}
