package controller_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller"
)

var speakerStatusesGVR = v1beta1.GroupVersion.WithResource("speakerstatuses")

// writeSpeakerStatus writes a node's SpeakerStatus as its speaker does: the object once, then its
// status, stamped now.
func (f *fixture) writeSpeakerStatus(node string, st v1beta1.SpeakerStatusStatus) {
	f.t.Helper()
	ctx := f.t.Context()
	res := f.dyn.Resource(speakerStatusesGVR)
	cur, err := res.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cur, err = res.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1beta1.GroupVersion.String(), "kind": "SpeakerStatus", "metadata": map[string]any{"name": node}}}, metav1.CreateOptions{})
	}
	if err != nil {
		f.t.Fatal(err)
	}
	st.LastUpdate = &metav1.Time{Time: time.Now()}
	st.AnnouncedIPs = int32(len(st.Announcements))
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		f.t.Fatal(err)
	}
	cur.Object["status"] = status
	if _, err := res.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func l2(ips ...string) []v1beta1.Announcement {
	var out []v1beta1.Announcement
	for _, ip := range ips {
		out = append(out, v1beta1.Announcement{IP: ip, Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}})
	}
	return out
}

// waitAnnounced waits for the Service's herald.io/Announced condition to have this status and
// reason, and returns it.
func (f *fixture) waitAnnounced(ns, name string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	f.t.Helper()
	svc := f.wait(ns, name, "Announced "+string(status)+" "+reason, func(s *corev1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, config.ConditionAnnounced)
		return c != nil && c.Status == status && c.Reason == reason
	})
	return meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced)
}

func (f *fixture) announced(ns, name string) *metav1.Condition {
	f.t.Helper()
	svc, err := f.cs.CoreV1().Services(ns).Get(f.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnounced)
}

// TestAnnouncedFromSpeakerStatuses: with SpeakerStatus objects written as the speakers write
// them, a real apiserver's Services get herald.io/Announced True naming the node, False with
// NoAdvertisement or NoBGPSession (only after the grace period), and follow the speakers; other
// Services are left alone, and a speaker's rewrite that changes nothing writes nothing.
func TestAnnouncedFromSpeakerStatuses(t *testing.T) {
	f := newFixture(t)
	stop := f.runController(t, controller.Options{LoadBalancerClass: config.DefaultLoadBalancerClass, TakeClassless: true}, false)
	defer stop()
	ctx := context.Background()
	f.namespace("ann", nil)
	f.pool("ann-l2", onlyNamespace("ann", map[string]any{"addresses": addrs("10.20.0.0/30")}))
	f.pool("ann-bgp", onlyNamespace("ann", map[string]any{"addresses": addrs("10.20.1.0/30")}))
	f.pool("ann-none", onlyNamespace("ann", map[string]any{"addresses": addrs("10.20.2.0/30")}))
	f.herald("l2advertisements", "L2Advertisement", "ann-l2", map[string]any{"ipAddressPools": []any{"ann-l2"}})
	f.herald("bgpadvertisements", "BGPAdvertisement", "ann-bgp", map[string]any{"ipAddressPools": []any{"ann-bgp"}})

	created := time.Now()
	ip := map[string]string{}
	for name, pool := range map[string]string{"web": "ann-l2", "routed": "ann-bgp", "lonely": "ann-none"} {
		f.service("ann", name, annotate(config.AnnotationAddressPool, pool))
	}
	for _, name := range []string{"web", "routed", "lonely"} {
		ip[name] = ingressIPs(f.waitReason("ann", name, config.ReasonAllocated))[0]
	}
	// Another class's Service with an address a node lists: not Herald's to describe.
	theirs := f.service("ann", "theirs", withClass("example.com/other"))
	theirs.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.20.3.1"}}
	if _, err := f.cs.CoreV1().Services("ann").UpdateStatus(ctx, theirs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	session := func(state string) []v1beta1.BGPSessionStatus {
		return []v1beta1.BGPSessionStatus{{Peer: "router", PeerAddress: "10.20.9.1", State: state}}
	}
	f.writeSpeakerStatus("node1", v1beta1.SpeakerStatusStatus{Announcements: l2(ip["web"], "10.20.3.1"), BGPSessions: session("Active")})
	f.writeSpeakerStatus("node2", v1beta1.SpeakerStatusStatus{BGPSessions: session("Connect")})

	c := f.waitAnnounced("ann", "web", metav1.ConditionTrue, config.ReasonAnnounced)
	if want := ip["web"] + ": L2 from node1"; c.Message != want {
		t.Errorf("web: message %q, want %q", c.Message, want)
	}
	if time.Since(created) < 10*time.Second {
		for _, name := range []string{"routed", "lonely"} {
			if c := f.announced("ann", name); c != nil {
				t.Errorf("%s: %+v within the grace period", name, c)
			}
		}
	}
	c = f.waitAnnounced("ann", "lonely", metav1.ConditionFalse, config.ReasonNoAdvertisement)
	if took := time.Since(created); took < 15*time.Second {
		t.Errorf("lonely: False after %v, before the grace period was over", took)
	}
	if !strings.Contains(c.Message, "no L2Advertisement or BGPAdvertisement selects pool ann-none") {
		t.Errorf("lonely: message %q", c.Message)
	}
	c = f.waitAnnounced("ann", "routed", metav1.ConditionFalse, config.ReasonNoBGPSession)
	if !strings.Contains(c.Message, "selected only by BGPAdvertisement ann-bgp") {
		t.Errorf("routed: message %q", c.Message)
	}
	if ev := f.waitEvents("ann", "routed", 1); len(ev) != 1 || ev[0].Reason != config.ReasonNoBGPSession || ev[0].Type != corev1.EventTypeWarning {
		t.Errorf("routed: events %v, want one Warning %s", summarize(ev), config.ReasonNoBGPSession)
	}

	// node2's session comes up: still nobody announces the address, for another reason; then node2
	// advertises it.
	f.writeSpeakerStatus("node2", v1beta1.SpeakerStatusStatus{BGPSessions: session("Established")})
	f.waitAnnounced("ann", "routed", metav1.ConditionFalse, config.ReasonNoEligibleNode)
	f.writeSpeakerStatus("node2", v1beta1.SpeakerStatusStatus{BGPSessions: session("Established"),
		Announcements: []v1beta1.Announcement{{IP: ip["routed"], Protocol: v1beta1.ProtocolBGP, Peers: []string{"router"}}}})
	c = f.waitAnnounced("ann", "routed", metav1.ConditionTrue, config.ReasonAnnounced)
	if want := ip["routed"] + ": BGP from node2"; c.Message != want {
		t.Errorf("routed: message %q, want %q", c.Message, want)
	}

	// The speakers rewrite their status every minute: nothing changes, nothing is written.
	f.quiesce(ctx)
	writes := f.statusWrites()
	for range 3 {
		f.writeSpeakerStatus("node1", v1beta1.SpeakerStatusStatus{Announcements: l2(ip["web"], "10.20.3.1"), BGPSessions: session("Active")})
		f.writeSpeakerStatus("node2", v1beta1.SpeakerStatusStatus{BGPSessions: session("Established"),
			Announcements: []v1beta1.Announcement{{IP: ip["routed"], Protocol: v1beta1.ProtocolBGP, Peers: []string{"router"}}}})
		time.Sleep(300 * time.Millisecond)
	}
	f.quiesce(ctx)
	if w := f.statusWrites() - writes; w != 0 {
		t.Errorf("%d Service status writes after SpeakerStatus rewrites that changed nothing", w)
	}
	if c := f.announced("ann", "theirs"); c != nil {
		t.Errorf("another class's Service got %+v", c)
	}
	// Each condition was written in a patch of its own: Allocated is still the allocation's.
	for _, name := range []string{"web", "routed", "lonely"} {
		svc, err := f.cs.CoreV1().Services("ann").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated); a == nil || a.Status != metav1.ConditionTrue {
			t.Errorf("%s: Allocated is %+v", name, a)
		}
	}

	// The pool of routed is deleted: routed keeps its address (PoolRemoved, the finalizer keeps the
	// pool), and the speakers keep announcing it by the pool's advertisements, so when nobody does
	// the reason names them, not "no IPAddressPool holds it".
	if err := f.dyn.Resource(poolsGVR).Delete(ctx, "ann-bgp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := ingressIPs(f.waitReason("ann", "routed", config.ReasonPoolRemoved)); !slices.Equal(got, []string{ip["routed"]}) {
		t.Fatalf("routed moved to %v when its pool was deleted", got)
	}
	f.writeSpeakerStatus("node2", v1beta1.SpeakerStatusStatus{BGPSessions: session("Established")})
	c = f.waitAnnounced("ann", "routed", metav1.ConditionFalse, config.ReasonNoEligibleNode)
	if !strings.Contains(c.Message, "selected by BGPAdvertisement ann-bgp") {
		t.Errorf("routed, its pool being deleted: message %q", c.Message)
	}
}

// TestAnnouncedDerivedFromSessions: speakers of this version list no Cluster-policy BGP IP, only
// their sessions (bgpListing: Deviations); the controller derives who announces from the
// Established sessions, the BGPAdvertisements' nodeSelectors and the Nodes' labels (fails on a
// controller that needs the lists: it finds nobody). A cluster half upgraded is counted whole: an
// older speaker's status (unmarked) is read as the full list it is. A node listing the IP among
// its deviations does not announce it.
func TestAnnouncedDerivedFromSessions(t *testing.T) {
	f := newFixture(t)
	stop := f.runController(t, controller.Options{LoadBalancerClass: config.DefaultLoadBalancerClass, TakeClassless: true}, false)
	defer stop()
	ctx := context.Background()
	for name, rack := range map[string]string{"der-a": "a", "der-b": "b", "der-old": "a"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"rack": rack}}}
		if _, err := f.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.namespace("der", nil)
	f.pool("der-bgp", onlyNamespace("der", map[string]any{"addresses": addrs("10.21.1.0/29")}))
	f.herald("bgpadvertisements", "BGPAdvertisement", "der-rack-a", map[string]any{"ipAddressPools": []any{"der-bgp"},
		"nodeSelectors": []any{map[string]any{"matchLabels": map[string]any{"rack": "a"}}}})
	ip := map[string]string{}
	for _, name := range []string{"fresh", "mixed", "refused"} {
		f.service("der", name, annotate(config.AnnotationAddressPool, "der-bgp"))
	}
	for _, name := range []string{"fresh", "mixed", "refused"} {
		ip[name] = ingressIPs(f.waitReason("der", name, config.ReasonAllocated))[0]
	}

	established := []v1beta1.BGPSessionStatus{{Peer: "router", PeerAddress: "10.21.9.1", State: "Established"}}
	// der-a: selected (rack a), session up; it lists nothing but its deviation, refused's IP.
	f.writeSpeakerStatus("der-a", v1beta1.SpeakerStatusStatus{BGPListing: v1beta1.BGPListingDeviations, BGPSessions: established,
		BGPDeviationsTotal: 1, BGPDeviations: []v1beta1.BGPDeviation{{IP: ip["refused"], Reason: "adding route: refused"}}})
	// der-b: session up, but its rack is not selected.
	f.writeSpeakerStatus("der-b", v1beta1.SpeakerStatusStatus{BGPListing: v1beta1.BGPListingDeviations, BGPSessions: established})
	// der-old: an older speaker (no marker), listing what it advertises.
	f.writeSpeakerStatus("der-old", v1beta1.SpeakerStatusStatus{BGPSessions: established, Announcements: []v1beta1.Announcement{
		{IP: ip["mixed"], Protocol: v1beta1.ProtocolBGP, Peers: []string{"router"}}}})

	for name, want := range map[string]string{"fresh": ip["fresh"] + ": BGP from der-a", "mixed": ip["mixed"] + ": BGP from der-a, der-old"} {
		if c := f.waitAnnounced("der", name, metav1.ConditionTrue, config.ReasonAnnounced); c.Message != want {
			t.Errorf("%s: message %q, want %q", name, c.Message, want)
		}
	}
	c := f.waitAnnounced("der", "refused", metav1.ConditionFalse, config.ReasonNoEligibleNode)
	if !strings.Contains(c.Message, "selected by BGPAdvertisement der-rack-a") {
		t.Errorf("refused: message %q", c.Message)
	}
}
