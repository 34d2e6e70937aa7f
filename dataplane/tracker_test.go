package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func lbService(rv string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: rv},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web"), NodePort: 30080},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 30053},
			},
			ExternalTrafficPolicy:    v1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:      32000,
			SessionAffinity:          v1.ServiceAffinityClientIP,
			LoadBalancerSourceRanges: []string{" 203.0.113.0/24"},
		},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
			{IP: "192.0.2.10"},
			{IP: "192.0.2.99", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
		}}},
	}
}

// webSlice: two endpoints whose named port "web" resolves to different numbers (two slices).
func webSlices() []*discoveryv1.EndpointSlice {
	mk := func(name string, port int32, addr, node string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{
				{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(port)},
				{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To(int32(5353))},
			},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{addr}, NodeName: ptr.To(node)}},
		}
	}
	return []*discoveryv1.EndpointSlice{mk("web-a", 8080, "10.1.0.1", "n1"), mk("web-b", 9090, "10.2.0.1", "n2")}
}

func TestTrackerBuildsServicePorts(t *testing.T) {
	tr := NewChangeTracker("n1")
	tr.OnServiceUpdate(lbService("1"))
	for _, s := range webSlices() {
		tr.OnEndpointSliceUpdate(s)
	}
	var st State
	changes := tr.Apply(&st)
	if len(changes) != 1 {
		t.Fatalf("changes = %d, want 1", len(changes))
	}
	ports := st.Services[types.NamespacedName{Namespace: "ns", Name: "web"}]
	if len(ports) != 2 {
		t.Fatalf("ports = %d, want 2", len(ports))
	}
	http, dns := ports[0], ports[1] // sorted by name: ns/web/tcp/http, ns/web/udp/dns
	if http.Port != 80 || http.NodePort != 30080 || http.HealthCheckNodePort != 32000 || !http.ExternalPolicyLocal {
		t.Fatalf("http port wrong: %+v", http)
	}
	if got := http.LoadBalancerIPs; len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("LB IPs = %v, want only the VIP-mode one", got)
	}
	if http.AffinityTimeout.Seconds() != 10800 {
		t.Fatalf("affinity timeout = %v, want the API default 10800s", http.AffinityTimeout)
	}
	if len(http.SourceRanges) != 1 || http.SourceRanges[0].String() != "203.0.113.0/24" {
		t.Fatalf("source ranges = %v", http.SourceRanges)
	}
	// Named target port resolved per endpoint, from each endpoint's slice.
	if len(http.ClusterEndpoints) != 2 || http.ClusterEndpoints[0].Port != 8080 || http.ClusterEndpoints[1].Port != 9090 {
		t.Fatalf("cluster endpoints = %+v", http.ClusterEndpoints)
	}
	// ETP Local: external traffic only to n1's endpoint.
	if len(http.ExternalEndpoints) != 1 || http.ExternalEndpoints[0].Addr.String() != "10.1.0.1" {
		t.Fatalf("external endpoints = %+v", http.ExternalEndpoints)
	}
	if dns.Protocol != v1.ProtocolUDP || len(dns.ClusterEndpoints) != 2 || dns.ClusterEndpoints[0].Port != 5353 {
		t.Fatalf("dns port wrong: %+v", dns)
	}

	// Repeated no-op events (resync, or a new resourceVersion with nothing relevant) are dropped.
	tr.OnServiceUpdate(lbService("1"))
	svc := lbService("2")
	svc.Labels = map[string]string{"irrelevant": "edit"}
	tr.OnServiceUpdate(svc)
	if changes := tr.Apply(&st); len(changes) != 0 {
		t.Fatalf("no-op updates produced %d changes", len(changes))
	}

	// Many updates before a sync merge into one change holding only the last.
	for i, port := range []int32{81, 82, 83} {
		s := lbService(string(rune('3' + i)))
		s.Spec.Ports[0].Port = port
		tr.OnServiceUpdate(s)
	}
	changes = tr.Apply(&st)
	if len(changes) != 1 || changes[0].New[0].Port != 83 {
		t.Fatalf("merged changes = %+v", changes)
	}
}

func TestTrackerSkipsWhatIsNotProxied(t *testing.T) {
	tr := NewChangeTracker("n1")
	headless := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "headless"},
		Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}}
	external := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ext"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "example.com"}}
	tr.OnServiceUpdate(headless)
	tr.OnServiceUpdate(external)
	var st State
	if changes := tr.Apply(&st); len(changes) != 0 || len(st.Services) != 0 {
		t.Fatalf("headless/ExternalName proxied: %+v", st.Services)
	}
}

func TestTrackerSelectorlessServiceAndDelete(t *testing.T) {
	tr := NewChangeTracker("n1")
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "manual"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}}
	hand := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "manual-1", Labels: map[string]string{discoveryv1.LabelServiceName: "manual"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(8000))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.168.50.5"}}},
	}
	tr.OnServiceUpdate(svc)
	tr.OnEndpointSliceUpdate(hand)
	var st State
	tr.Apply(&st)
	p := st.Services[types.NamespacedName{Namespace: "ns", Name: "manual"}][0]
	if len(p.ClusterEndpoints) != 1 || p.ClusterEndpoints[0].AddrPort().String() != "192.168.50.5:8000" || p.NodePort != 0 {
		t.Fatalf("hand-written slice not used: %+v", p)
	}
	tr.OnEndpointSliceDelete(hand)
	tr.Apply(&st)
	if p := st.Services[types.NamespacedName{Namespace: "ns", Name: "manual"}][0]; len(p.ClusterEndpoints) != 0 || p.HasEndpoints {
		t.Fatalf("slice delete not applied: %+v", p)
	}
	tr.OnServiceDelete(svc)
	if changes := tr.Apply(&st); len(changes) != 1 || changes[0].New != nil || len(st.Services) != 0 {
		t.Fatalf("service delete not applied: %+v", st.Services)
	}
}

func TestStaleUDPFilters(t *testing.T) {
	mk := func(has bool, eps ...string) []*ServicePort {
		p := &ServicePort{Name: ServicePortName{Port: "dns", Protocol: v1.ProtocolUDP}, Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, HasEndpoints: has}
		for _, e := range eps {
			p.ClusterEndpoints = append(p.ClusterEndpoints, Endpoint{Addr: netip.MustParseAddr(e), Port: 5353})
		}
		p.ExternalEndpoints = p.ClusterEndpoints
		return []*ServicePort{p}
	}
	// An endpoint removed: its flows to the Service address and port, and to the NodePort,
	// are cleared; the filter names the Service address, so a flow between a client and the
	// pod directly on port 53 is left alone (issue 16, item 7).
	got := staleUDPFilters(mk(true, "10.1.0.1", "10.1.0.2"), mk(true, "10.1.0.2"))
	if len(got) != 2 || got[0] != (ConntrackFilter{OrigDst: netip.MustParseAddr("10.96.0.10"), OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.1.0.1")}) ||
		got[1] != (ConntrackFilter{OrigDstPort: 30053, ReplySrc: netip.MustParseAddr("10.1.0.1")}) {
		t.Fatalf("removed endpoint filters = %+v", got)
	}
	// An endpoint no longer selected but still serving (terminating): its flows stay, as in
	// kube-proxy.
	terminating := mk(true, "10.1.0.2")
	terminating[0].ServingUDP = []netip.AddrPort{netip.MustParseAddrPort("10.1.0.1:5353"), netip.MustParseAddrPort("10.1.0.2:5353")}
	if got := staleUDPFilters(mk(true, "10.1.0.1", "10.1.0.2"), terminating); len(got) != 0 {
		t.Fatalf("flows to a still-serving endpoint are cleared: %+v", got)
	}
	// From no endpoints to some: flows that were never translated are cleared.
	got = staleUDPFilters(mk(false), mk(true, "10.1.0.1"))
	if len(got) != 3 || got[0].OrigDst.String() != "10.96.0.10" {
		t.Fatalf("gained endpoints filters = %+v", got)
	}
	// Unchanged endpoints: nothing.
	if got := staleUDPFilters(mk(true, "10.1.0.1"), mk(true, "10.1.0.1")); len(got) != 0 {
		t.Fatalf("unchanged = %+v", got)
	}
	// Leaving the userspace proxy: the flows redirected to its listener are cleared; entering
	// it, the kernel's translations go on serving their flows and stay.
	user := mk(true, "10.1.0.1")
	user[0].Userspace = &UserspaceOptions{ConnectTries: 3}
	if got := staleUDPFilters(user, mk(true, "10.1.0.1")); len(got) != 3 || got[0].OrigDst.String() != "10.96.0.10" || got[0].OrigDstPort != 53 {
		t.Fatalf("leaving userspace = %+v", got)
	}
	if got := staleUDPFilters(mk(true, "10.1.0.1"), user); len(got) != 0 {
		t.Fatalf("entering userspace = %+v", got)
	}
}

// An endpoint listed twice (in two slices while the controller moves it, or twice in one) is
// one endpoint, as the first slice by name says it; slices are found again when updated or
// deleted out of order.
func TestTrackerCountsAnEndpointOnce(t *testing.T) {
	mk := func(name string, ready bool, addrs ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(8080))}},
		}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}})
		}
		return s
	}
	svc := lbService("1")
	svc.Spec.Ports = svc.Spec.Ports[:1]
	svc.Spec.Ports[0].TargetPort = intstr.FromString("http")
	tr := NewChangeTracker("n1")
	tr.OnServiceUpdate(svc)
	tr.OnEndpointSliceUpdate(mk("web-c", true, "10.1.0.3"))
	tr.OnEndpointSliceUpdate(mk("web-a", false, "10.1.0.1", "10.1.0.2", "10.1.0.2"))
	tr.OnEndpointSliceUpdate(mk("web-b", true, "10.1.0.1"))
	var st State
	tr.Apply(&st)
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	addrs := func() (out []string) {
		for _, e := range endpointsForPort(tr.slices[key], &svc.Spec.Ports[0], Node{Name: "n1"}) {
			out = append(out, fmt.Sprintf("%s ready=%v", e.AddrPort(), e.Ready))
		}
		return out
	}
	want := []string{"10.1.0.1:8080 ready=false", "10.1.0.2:8080 ready=false", "10.1.0.3:8080 ready=true"}
	if got := addrs(); !slices.Equal(got, want) {
		t.Fatalf("endpoints = %v, want %v", got, want)
	}
	tr.OnEndpointSliceDelete(mk("web-a", false))
	want = []string{"10.1.0.1:8080 ready=true", "10.1.0.3:8080 ready=true"}
	if got := addrs(); !slices.Equal(got, want) {
		t.Fatalf("after deleting web-a: endpoints = %v, want %v", got, want)
	}
}

// Issue 16, item 8: an unset serving condition reads as true (the API's rule, kube-proxy's
// too), so a terminating endpoint with ready=false and serving unset still takes traffic when
// no endpoint is ready; it used to read as ready's value (false) and the Service had none.
func TestTrackerReadsUnsetServingAsTrue(t *testing.T) {
	tr := NewChangeTracker("n1")
	svc := lbService("1")
	svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	tr.OnServiceUpdate(svc)
	slice := webSlices()[0]
	slice.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Terminating: ptr.To(true)}
	tr.OnEndpointSliceUpdate(slice)
	var st State
	tr.Apply(&st)
	http := st.Services[types.NamespacedName{Namespace: "ns", Name: "web"}][0]
	if len(http.ClusterEndpoints) != 1 || !http.ClusterEndpoints[0].Serving || !http.HasEndpoints {
		t.Fatalf("a terminating endpoint with serving unset is not used: %+v", http)
	}
}

func TestTrackerReadsUserspaceMode(t *testing.T) {
	tr := NewChangeTracker("n1")
	svc := lbService("1")
	svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{Name: "sctp", Protocol: v1.ProtocolSCTP, Port: 9})
	svc.Annotations = map[string]string{"herald.io/proxy-mode": "userspace", "herald.io/userspace-connect-tries": "5",
		"herald.io/userspace-proxy-protocol": "v2"}
	tr.OnServiceUpdate(svc)
	var st State
	tr.Apply(&st)
	ports := st.Services[types.NamespacedName{Namespace: "ns", Name: "web"}]
	want := &UserspaceOptions{ConnectTries: 5, ProxyProtocol: true}
	for _, p := range ports {
		switch p.Protocol {
		case v1.ProtocolSCTP:
			if p.Userspace != nil {
				t.Errorf("SCTP port in userspace mode: the proxy speaks TCP and UDP only")
			}
		default:
			if p.Userspace == nil || *p.Userspace != *want {
				t.Errorf("%s: userspace %+v, want %+v", p.Name, p.Userspace, want)
			}
		}
	}

	// A typo leaves the Service in the kernel (the controller reports it).
	svc = lbService("2")
	svc.Annotations = map[string]string{"herald.io/proxy-mode": "userpsace"}
	tr.OnServiceUpdate(svc)
	if changes := tr.Apply(&st); len(changes) != 1 || changes[0].New[0].Userspace != nil {
		t.Fatalf("after a typo: %+v", changes)
	}
}
