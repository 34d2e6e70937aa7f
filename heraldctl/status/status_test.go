package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

var now = time.Date(2026, 11, 23, 5, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }

func lbService(ns, name string, ips []string, conds ...metav1.Condition) corev1.Service {
	s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	s.Status.Conditions = conds
	return s
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
}

func fixture() ([]v1beta1.IPAddressPool, []corev1.Service, []v1beta1.SpeakerStatus) {
	pools := []v1beta1.IPAddressPool{{
		ObjectMeta: metav1.ObjectMeta{Name: "dup", CreationTimestamp: *ago(time.Hour)},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"192.0.2.0/29"}},
		Status: v1beta1.IPAddressPoolStatus{Conditions: []metav1.Condition{
			cond(config.ConditionOverlap, metav1.ConditionTrue, "Overlap", "192.0.2.0/30 is also in pool web"),
			cond(config.ConditionValid, metav1.ConditionTrue, "Valid", ""),
		}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: "web", CreationTimestamp: *ago(2 * time.Hour)},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"192.0.2.0/30", "2001:db8::10-2001:db8::1f"}},
		Status: v1beta1.IPAddressPoolStatus{
			IPv4: &v1beta1.AddressCounts{Total: "4", InUse: "1", Free: "3"},
			IPv6: &v1beta1.AddressCounts{Total: "16", InUse: "1", Free: "15"},
		},
	}}
	services := []corev1.Service{
		lbService("shop", "web", []string{"192.0.2.1", "2001:db8::10"},
			cond(config.ConditionAllocated, metav1.ConditionTrue, config.ReasonAllocated, "from pool web"),
			cond(config.ConditionAnnounced, metav1.ConditionTrue, config.ReasonAnnounced, "")),
		lbService("shop", "pending", nil,
			cond(config.ConditionAllocated, metav1.ConditionFalse, config.ReasonPoolExhausted, `IPAddressPool "web" has no free IPv4 address`)),
		lbService("shop", "dark", []string{"192.0.2.2"},
			cond(config.ConditionAllocated, metav1.ConditionTrue, config.ReasonAllocated, ""),
			cond(config.ConditionAnnounced, metav1.ConditionFalse, config.ReasonNoBGPSession, "no node has an established session")),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "internal"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}},
	}
	speakers := []v1beta1.SpeakerStatus{{
		ObjectMeta: metav1.ObjectMeta{Name: "node-b"},
		Status: v1beta1.SpeakerStatusStatus{
			LastUpdate: ago(5 * time.Second), AnnouncedIPs: 1, MembersAlive: 2,
			Announcements: []v1beta1.Announcement{{IP: "192.0.2.1", Protocol: v1beta1.ProtocolBGP, Peers: []string{"tor"}}},
			BGPSessions: []v1beta1.BGPSessionStatus{
				{Peer: "tor", PeerAddress: "10.0.0.1", State: "Established", BFDState: "Up", Since: ago(time.Minute)},
			},
			Dataplane: v1beta1.DataplaneStatus{Backend: "nftables", Reason: "kernel has no ip_vs",
				UserspaceServices: []string{"shop/web/tcp/"}, UserspaceServicesTotal: 1},
		},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: v1beta1.SpeakerStatusStatus{
			LastUpdate: ago(2 * time.Second), AnnouncedIPs: 2, MembersAlive: 2,
			Announcements: []v1beta1.Announcement{
				{IP: "192.0.2.1", Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}},
				{IP: "2001:db8::10", Protocol: v1beta1.ProtocolL2, Interfaces: []string{"eth0"}},
			},
			BGPSessions: []v1beta1.BGPSessionStatus{
				{Peer: "tor", PeerAddress: "10.0.0.1", State: "Active", LastError: "connection refused: is the router configured for 10.0.1.1?"},
			},
		},
	}}
	services[0].Annotations = map[string]string{config.AnnotationProxyMode: config.ProxyModeUserspace}
	return pools, services, speakers
}

func TestBuild(t *testing.T) {
	pools, services, speakers := fixture()
	r := Build(pools, services, speakers, nil)
	if len(r.Pools) != 2 || r.Pools[0].Name != "dup" || r.Pools[1].Name != "web" {
		t.Fatalf("pools: %+v", r.Pools)
	}
	if got := r.Pools[0].Problems; len(got) != 1 || got[0] != "Overlap: 192.0.2.0/30 is also in pool web" {
		t.Errorf("dup problems = %q", got)
	}
	if len(r.Services) != 3 {
		t.Fatalf("services (only LoadBalancer ones): %+v", r.Services)
	}
	dark, pending, web := r.Services[0], r.Services[1], r.Services[2]
	// "dup" overlaps the older "web" (so its Overlap condition is True): the IP is web's.
	if web.Pool != "web" || dark.Pool != "web" {
		t.Errorf("pools of web, dark = %q, %q", web.Pool, dark.Pool)
	}
	if len(web.AnnouncedBy) != 3 {
		t.Fatalf("web announced by %+v", web.AnnouncedBy)
	}
	if a := web.AnnouncedBy[0]; a.Node != "node-a" || a.IP != "192.0.2.1" || a.Protocol != v1beta1.ProtocolL2 {
		t.Errorf("first announcer %+v", a)
	}
	if pending.Allocated == nil || pending.Allocated.Reason != config.ReasonPoolExhausted || len(pending.IPs) != 0 {
		t.Errorf("pending: %+v", pending)
	}
	if len(r.Nodes) != 2 || r.Nodes[0].Name != "node-a" || r.Nodes[1].Dataplane != "nftables (kernel has no ip_vs)" {
		t.Errorf("nodes: %+v", r.Nodes)
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	pools, services, speakers := fixture()
	if err := Build(pools, services, speakers, nil).WriteTable(&b, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"web   192.0.2.0/30,2001:db8::10-2001:db8::1f  1/3",
		"Overlap: 192.0.2.0/30 is also in pool web",
		"shop/web      192.0.2.1,2001:db8::10  web   userspace  node-a (L2 eth0), node-b (BGP to tor)  announced",
		`shop/pending  -                       -     kernel     -                                      pending: PoolExhausted: IPAddressPool "web" has no free IPv4 address`,
		"not announced: NoBGPSession: no node has an established session",
		"node-b  1          2        nftables (kernel has no ip_vs), userspace proxy: 1 Service ports  5s ago",
		"node-a  tor   10.0.0.1  Active       -    -         connection refused",
		"node-b  tor   10.0.0.1  Established  Up   1m0s ago  -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "internal") {
		t.Errorf("ClusterIP Service listed:\n%s", out)
	}
}

func TestWriteTableEmptyClusterSaysWhatToDo(t *testing.T) {
	var b bytes.Buffer
	if err := Build(nil, nil, nil, nil).WriteTable(&b, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"create an IPAddressPool", "are the speakers running?"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("empty report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestBuildPoolIsTheOwner: a Service's pool is the one the controller gave the address from,
// whatever the pools' status says (the controller may not have written it yet): the older of two
// overlapping pools, and a pool being deleted only for what no other pool holds.
func TestBuildPoolIsTheOwner(t *testing.T) {
	pool := func(name string, age time.Duration, block v1beta1.AddressBlock) v1beta1.IPAddressPool {
		return v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: *ago(age)},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{block}}}
	}
	leaving := pool("leaving", 3*time.Hour, "198.51.100.0/24")
	leaving.DeletionTimestamp = ago(0)
	pools := []v1beta1.IPAddressPool{pool("old", 2*time.Hour, "192.0.2.0/24"), pool("new", time.Hour, "192.0.2.128/25"),
		leaving, pool("kept", time.Hour, "198.51.100.128/25")}
	services := []corev1.Service{lbService("a", "in-both", []string{"192.0.2.200"}), lbService("a", "held", []string{"198.51.100.1"}),
		lbService("a", "taken-over", []string{"198.51.100.200"}), lbService("a", "nowhere", []string{"203.0.113.1"})}
	want := map[string]string{"in-both": "old", "held": "leaving", "taken-over": "kept", "nowhere": ""}
	for _, s := range Build(pools, services, nil, nil).Services {
		if s.Pool != want[s.Name] {
			t.Errorf("%s (%v): pool %q, want %q", s.Name, s.IPs, s.Pool, want[s.Name])
		}
	}
}
