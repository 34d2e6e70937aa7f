package heraldctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/heraldctl/status"
	"github.com/heraldlb/herald/internal/realapi"
)

// TestStatusAgainstRealAPIServer writes the objects the controller and speakers write (pool
// status, Service status and conditions, SpeakerStatus) into a real kube-apiserver with Herald's
// CRDs, and checks what heraldctl status makes of them.
func TestStatusAgainstRealAPIServer(t *testing.T) {
	api := realapi.Start(t)
	c := api.Client(t)

	pool := &v1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"192.0.2.0/29", "2001:db8::/125"}},
	}
	mustCreate(t, c, pool)
	pool.Status.IPv4 = &v1beta1.AddressCounts{Total: "8", InUse: "1", Free: "7"}
	pool.Status.IPv6 = &v1beta1.AddressCounts{Total: "8", InUse: "0", Free: "8"}
	mustUpdateStatus(t, c, pool)

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	mustCreate(t, c, svc)
	vip := corev1.LoadBalancerIPModeVIP
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.3", IPMode: &vip}}
	svc.Status.Conditions = []metav1.Condition{
		{Type: config.ConditionAllocated, Status: metav1.ConditionTrue, Reason: config.ReasonAllocated, Message: "from IPAddressPool web", LastTransitionTime: metav1.Now()},
		{Type: config.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: config.ReasonAnnounced, Message: "by node-a", LastTransitionTime: metav1.Now()},
	}
	mustUpdateStatus(t, c, svc)

	pending := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pending"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 443}}},
	}
	mustCreate(t, c, pending)
	pending.Status.Conditions = []metav1.Condition{{Type: config.ConditionAllocated, Status: metav1.ConditionFalse,
		Reason: config.ReasonNoPool, Message: `IPAddressPool "gone" does not exist`, LastTransitionTime: metav1.Now()}}
	mustUpdateStatus(t, c, pending)

	spk := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	mustCreate(t, c, spk)
	since := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	spk.Status = v1beta1.SpeakerStatusStatus{
		LastUpdate: &since, AnnouncedIPs: 1, MembersAlive: 3, BGPSessionsUp: 1, BGPSessionsTotal: 1,
		Announcements: []v1beta1.Announcement{{IP: "192.0.2.3", Protocol: v1beta1.ProtocolBGP, Peers: []string{"tor"}}},
		BGPSessions:   []v1beta1.BGPSessionStatus{{Peer: "tor", PeerAddress: "10.0.0.1", State: "Established", BFDState: "Up", Since: &since}},
		Dataplane:     v1beta1.DataplaneStatus{Backend: "nftables"},
	}
	mustUpdateStatus(t, c, spk)

	// node-b's speaker is of this version: it lists no Cluster-policy BGP IP (bgpListing:
	// Deviations); heraldctl derives that it announces web's IP, as the controller does, from its
	// Established session, its Node's labels, its Lease and the BGPAdvertisement.
	mustCreate(t, c, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b", Labels: map[string]string{"rack": "b"}}})
	mustCreate(t, c, &v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "rack-b"}, Spec: v1beta1.BGPAdvertisementSpec{
		AdvertisementSelection: v1beta1.AdvertisementSelection{NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}}}})
	renewed := metav1.NewMicroTime(time.Now())
	mustCreate(t, c, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: config.SpeakerLeasePrefix + "node-b",
		Labels: map[string]string{config.LabelSpeakerLease: "true"}}, Spec: coordinationv1.LeaseSpec{RenewTime: &renewed, LeaseDurationSeconds: ptr.To(int32(40))}})
	spkB := &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}
	mustCreate(t, c, spkB)
	spkB.Status = v1beta1.SpeakerStatusStatus{LastUpdate: &since, BGPListing: v1beta1.BGPListingDeviations, BGPSessionsUp: 1, BGPSessionsTotal: 1,
		BGPSessions: []v1beta1.BGPSessionStatus{{Peer: "tor", PeerAddress: "10.0.0.1", State: "Established", Since: &since}}}
	mustUpdateStatus(t, c, spkB)

	code, out, errOut := run(t, "", "status", "--kubeconfig", api.Kubeconfig, "-o", "json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d: %s", code, errOut)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, out)
	}
	if len(r.Pools) != 1 || r.Pools[0].IPv4 == nil || r.Pools[0].IPv4.Free != "7" || r.Pools[0].IPv6.Free != "8" {
		t.Errorf("pools: %+v", r.Pools)
	}
	if len(r.Services) != 2 {
		t.Fatalf("services: %+v", r.Services)
	}
	p, w := r.Services[0], r.Services[1]
	if p.Name != "pending" || p.Allocated == nil || p.Allocated.Reason != config.ReasonNoPool {
		t.Errorf("pending Service: %+v", p)
	}
	if w.Pool != "web" || len(w.IPs) != 1 || w.IPs[0] != "192.0.2.3" || len(w.AnnouncedBy) != 2 ||
		w.AnnouncedBy[0].Node != "node-a" || w.AnnouncedBy[0].Protocol != v1beta1.ProtocolBGP ||
		w.AnnouncedBy[1].Node != "node-b" || w.AnnouncedBy[1].Protocol != v1beta1.ProtocolBGP {
		t.Errorf("web Service: %+v", w)
	}
	if len(r.Nodes) != 2 || len(r.Nodes[0].Sessions) != 1 || r.Nodes[0].Sessions[0].State != "Established" || r.Nodes[0].Sessions[0].BFDState != "Up" ||
		r.Nodes[1].AnnouncedIPs != 1 {
		t.Errorf("nodes: %+v", r.Nodes)
	}

	code, out, errOut = run(t, "", "status", "--kubeconfig", api.Kubeconfig, "-o", "yaml")
	var fromYAML status.Report
	if code != 0 || yaml.Unmarshal([]byte(out), &fromYAML) != nil || len(fromYAML.Services) != 2 {
		t.Errorf("status -o yaml: exit %d, %s\n%s", code, errOut, out)
	}

	code, out, errOut = run(t, "", "status", "--kubeconfig", api.Kubeconfig)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"default/web", "node-a (BGP to tor)", "node-b (BGP to tor)", `pending: NoPool: IPAddressPool "gone" does not exist`, "Established  Up"} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}

	if code, _, errOut := run(t, "", "status", "--kubeconfig", api.Kubeconfig, "-o", "wide"); code != 1 || !strings.Contains(errOut, "want json or yaml") {
		t.Errorf("-o wide: exit %d, %s", code, errOut)
	}
}

func mustCreate(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func mustUpdateStatus(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Status().Update(context.Background(), obj); err != nil {
		t.Fatalf("updating the status of %T %s: %v", obj, obj.GetName(), err)
	}
}
