package backendspec

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/heraldlb/herald/config"
)

// Harness connects the spec to one backend.
type Harness interface {
	// NodeName is the node the backend runs as: endpoints with this nodeName are local.
	NodeName() string
	// Sync hands the backend the complete current set of Services and EndpointSlices and returns
	// once the kernel holds the result.
	Sync(t *testing.T, services []*corev1.Service, slices []*discoveryv1.EndpointSlice)
}

// SchedulerReader is implemented by harnesses whose backend has per-Service schedulers (IPVS):
// the spec then also checks the kernel's scheduler after a change of the annotation.
type SchedulerReader interface {
	Scheduler(t *testing.T, vip netip.AddrPort, protocol string) string
}

// World is the Kubernetes side of the spec: the Services and EndpointSlices the backend sees.
type World struct {
	h        Harness
	top      *Topology
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
	next     int
}

// Run checks one backend against the spec. Backends serve TCP 8080, UDP 5353 and SCTP 9000.
func Run(t *testing.T, h Harness) {
	top := NewTopology(t, 3)
	for _, b := range top.Backends {
		b.Serve(t, TCP, 8080)
		b.Serve(t, UDP, 5353)
		if sctpSupported() {
			b.Serve(t, SCTP, 9000)
		}
	}
	w := &World{h: h, top: top, services: map[string]*corev1.Service{}, slices: map[string]*discoveryv1.EndpointSlice{}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, w) })
	}
}

// VIPs of a Service made by the World.
type VIPs struct {
	ClusterIP netip.Addr
	LBIP      netip.Addr
	NodePort  uint16
}

// AddService creates an IPv4 LoadBalancer Service (ClusterIP 10.96.0.n, ingress 10.255.0.n,
// NodePort 30000+n) with one port (80 -> 8080 for TCP, 53 -> 5353 for UDP, 9000 -> 9000 for SCTP)
// whose endpoints are backends; mutate adjusts the Service before it is synced.
func (w *World) AddService(t *testing.T, protocol string, backends []*Host, mutate ...func(*corev1.Service)) (*corev1.Service, VIPs) {
	t.Helper()
	return w.addService(t, corev1.IPv4Protocol, protocol, backends, mutate...)
}

// AddService6 is AddService for an IPv6 Service: ClusterIP fd00:96::n, ingress fd00:255::n.
func (w *World) AddService6(t *testing.T, protocol string, backends []*Host, mutate ...func(*corev1.Service)) (*corev1.Service, VIPs) {
	t.Helper()
	return w.addService(t, corev1.IPv6Protocol, protocol, backends, mutate...)
}

func (w *World) addService(t *testing.T, family corev1.IPFamily, protocol string, backends []*Host, mutate ...func(*corev1.Service)) (*corev1.Service, VIPs) {
	t.Helper()
	w.next++
	n := w.next
	vips := VIPs{
		ClusterIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(n)}),
		LBIP:      netip.AddrFrom4([4]byte{10, 255, 0, byte(n)}),
		NodePort:  uint16(30000 + n),
	}
	if family == corev1.IPv6Protocol {
		vips.ClusterIP = netip.MustParseAddr(fmt.Sprintf("fd00:96::%x", n))
		vips.LBIP = netip.MustParseAddr(fmt.Sprintf("fd00:255::%x", n))
	}
	port, target := servicePorts(protocol)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spec", Name: fmt.Sprintf("svc%d", n), UID: types.UID(fmt.Sprintf("uid-%d", n)),
			Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ClusterIP:             vips.ClusterIP.String(),
			ClusterIPs:            []string{vips.ClusterIP.String()},
			IPFamilies:            []corev1.IPFamily{family},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			SessionAffinity:       corev1.ServiceAffinityNone,
			Ports: []corev1.ServicePort{{Name: "p", Protocol: corev1.Protocol(protocol), Port: int32(port),
				TargetPort: intstr.FromInt32(int32(target)), NodePort: int32(vips.NodePort)}},
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{
			Ingress: []corev1.LoadBalancerIngress{{IP: vips.LBIP.String()}}}},
	}
	for _, m := range mutate {
		m(svc)
	}
	w.services[svc.Name] = svc
	w.SetEndpoints(t, svc, backends, nil)
	return svc, vips
}

func servicePorts(protocol string) (port, target int) {
	switch protocol {
	case UDP:
		return 53, 5353
	case SCTP:
		return 9000, 9000
	}
	return 80, 8080
}

// SetEndpoints replaces the Service's EndpointSlice: ready backends, and terminating ones (serving,
// not ready) as a pod being deleted has; then syncs.
func (w *World) SetEndpoints(t *testing.T, svc *corev1.Service, ready, terminating []*Host) {
	t.Helper()
	_, target := servicePorts(string(svc.Spec.Ports[0].Protocol))
	node := w.h.NodeName()
	v6 := svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	addressType := discoveryv1.AddressTypeIPv4
	if v6 {
		addressType = discoveryv1.AddressTypeIPv6
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: addressType,
		Ports: []discoveryv1.EndpointPort{{Name: &svc.Spec.Ports[0].Name, Protocol: &svc.Spec.Ports[0].Protocol,
			Port: ptr(int32(target))}},
	}
	add := func(b *Host, ready bool) {
		addr := b.Addrs[0]
		if v6 {
			addr = b.Addrs6[0]
		}
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(true),
				Terminating: ptr(!ready)},
			NodeName: &node,
		})
	}
	for _, b := range ready {
		add(b, true)
	}
	for _, b := range terminating {
		add(b, false)
	}
	w.slices[slice.Name] = slice
	w.Sync(t)
}

// Sync hands the current world to the backend.
func (w *World) Sync(t *testing.T) {
	t.Helper()
	var svcs []*corev1.Service
	for _, s := range w.services {
		svcs = append(svcs, s.DeepCopy())
	}
	var sls []*discoveryv1.EndpointSlice
	for _, s := range w.slices {
		sls = append(sls, s.DeepCopy())
	}
	w.h.Sync(t, svcs, sls)
}

// Delete removes a Service and its slice.
func (w *World) Delete(t *testing.T, svc *corev1.Service) {
	t.Helper()
	delete(w.services, svc.Name)
	delete(w.slices, svc.Name+"-1")
	w.Sync(t)
}

// spread sends n requests from the client and counts the answers per backend.
func (w *World) spread(t *testing.T, protocol string, src netip.Addr, dst netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		r, err := w.top.Client.Request(protocol, src, dst)
		if err != nil {
			t.Fatalf("%s request %d of %d to %s: %v (answers so far %v)", protocol, i+1, n, dst, err, got)
		}
		got[r.Backend]++
	}
	return got
}

// checkSpread sends spreadRequests TCP requests from the client to each destination and checks
// that every backend gets its share.
func (w *World) checkSpread(t *testing.T, dsts ...netip.AddrPort) {
	t.Helper()
	for _, dst := range dsts {
		got := w.spread(t, TCP, netip.Addr{}, dst, spreadRequests)
		for _, b := range w.top.Backends {
			if share := float64(got[b.Name]) / spreadRequests; share < 0.20 || share > 0.47 {
				t.Fatalf("%s: %s got %.0f%% of %d requests (%v), want 20-47%%", dst, b.Name, share*100, spreadRequests, got)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

type specCase struct {
	name string
	run  func(t *testing.T, w *World)
}

// Requests per spread check: with a uniform random choice among 3 backends, each gets 20-47 %
// except with probability well under 0.1 %.
const spreadRequests = 150

var cases = []specCase{
	{"spread over endpoints through LB IP, ClusterIP and NodePort", func(t *testing.T, w *World) {
		_, v := w.AddService(t, TCP, w.top.Backends)
		w.checkSpread(t, netip.AddrPortFrom(v.LBIP, 80), netip.AddrPortFrom(v.ClusterIP, 80), netip.AddrPortFrom(w.top.NodeIP, v.NodePort))
	}},
	{"IPv6: spread, NodePort, source ranges, Local keeps the client address", func(t *testing.T, w *World) {
		c := w.top.Client
		_, v := w.AddService6(t, TCP, w.top.Backends)
		w.checkSpread(t, netip.AddrPortFrom(v.LBIP, 80), netip.AddrPortFrom(v.ClusterIP, 80), netip.AddrPortFrom(w.top.NodeIP6, v.NodePort))
		if r, err := c.Request(TCP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 80)); err != nil || r.Source == c.Addrs6[0] {
			t.Fatalf("Cluster policy: backend saw %v (%v), want the node's address, not the client's", r.Source, err)
		}
		_, u := w.AddService6(t, UDP, w.top.Backends)
		if got := w.spread(t, UDP, netip.Addr{}, netip.AddrPortFrom(u.LBIP, 53), 30); len(got) < 2 {
			t.Fatalf("UDP over IPv6 answers %v, want more than one backend", got)
		}
		_, ranged := w.AddService6(t, TCP, w.top.Backends[:1], func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{c.Addrs6[0].String() + "/128"}
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32001
		})
		dst := netip.AddrPortFrom(ranged.LBIP, 80)
		if r, err := c.Request(TCP, c.Addrs6[0], dst); err != nil || r.Source != c.Addrs6[0] {
			t.Fatalf("allowed source %s, Local policy: backend saw %v (%v), want the client's address", c.Addrs6[0], r.Source, err)
		}
		if r, err := c.Request(TCP, c.Addrs6[1], dst); err == nil {
			t.Fatalf("source %s outside the ranges reached %s", c.Addrs6[1], r.Backend)
		}
	}},
	{"UDP", func(t *testing.T, w *World) {
		_, v := w.AddService(t, UDP, w.top.Backends)
		if got := w.spread(t, UDP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 53), 30); len(got) < 2 {
			t.Fatalf("UDP answers %v, want more than one backend", got)
		}
	}},
	{"SCTP", func(t *testing.T, w *World) {
		if !sctpSupported() {
			t.Skip("this kernel has no SCTP; the spec runs with SCTP inside the IPVS VM (make test-ipvs)")
		}
		_, v := w.AddService(t, SCTP, w.top.Backends)
		if got := w.spread(t, SCTP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 9000), 30); len(got) < 2 {
			t.Fatalf("SCTP answers %v, want more than one backend", got)
		}
	}},
	{"session affinity ClientIP", func(t *testing.T, w *World) {
		_, v := w.AddService(t, TCP, w.top.Backends, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
		})
		if got := w.spread(t, TCP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 80), 20); len(got) != 1 {
			t.Fatalf("one client was spread over %v", got)
		}
	}},
	{"loadBalancerSourceRanges", func(t *testing.T, w *World) {
		c := w.top.Client
		_, v := w.AddService(t, TCP, w.top.Backends, func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{c.Addrs[0].String() + "/32", "10.0.2.0/24"}
		})
		dst := netip.AddrPortFrom(v.LBIP, 80)
		for _, allowed := range []netip.Addr{c.Addrs[0], c.Addrs[2]} {
			if _, err := c.Request(TCP, allowed, dst); err != nil {
				t.Fatalf("allowed source %s: %v", allowed, err)
			}
		}
		if r, err := c.Request(TCP, c.Addrs[1], dst); err == nil {
			t.Fatalf("source %s outside the ranges reached %s", c.Addrs[1], r.Backend)
		}
	}},
	{"no endpoints: rejected at once", func(t *testing.T, w *World) {
		_, v := w.AddService(t, TCP, nil)
		start := time.Now()
		_, err := w.top.Client.Request(TCP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 80))
		if err == nil || time.Since(start) > time.Second || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Service without endpoints: %v after %v, want connection refused at once", err, time.Since(start))
		}
	}},
	{"externalTrafficPolicy Cluster masquerades, Local keeps the client address", func(t *testing.T, w *World) {
		c := w.top.Client
		_, cluster := w.AddService(t, TCP, w.top.Backends[:1])
		if r, err := c.Request(TCP, netip.Addr{}, netip.AddrPortFrom(cluster.LBIP, 80)); err != nil || r.Source == c.Addrs[0] {
			t.Fatalf("Cluster policy: backend saw %v (%v), want the node's address, not the client's", r.Source, err)
		}
		_, local := w.AddService(t, TCP, w.top.Backends[:1], func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
		})
		if r, err := c.Request(TCP, netip.Addr{}, netip.AddrPortFrom(local.LBIP, 80)); err != nil || r.Source != c.Addrs[0] {
			t.Fatalf("Local policy: backend saw %v (%v), want the client's %s", r.Source, err, c.Addrs[0])
		}
	}},
	{"graceful termination keeps established connections", func(t *testing.T, w *World) {
		svc, v := w.AddService(t, TCP, w.top.Backends)
		dst := netip.AddrPortFrom(v.LBIP, 80)
		conn, err := w.top.Client.Open(TCP, netip.Addr{}, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var leaving *Host
		var staying []*Host
		for _, b := range w.top.Backends {
			if b.Name == conn.First.Backend {
				leaving = b
			} else {
				staying = append(staying, b)
			}
		}
		// The pod is being deleted: terminating, then gone from the slice.
		w.SetEndpoints(t, svc, staying, []*Host{leaving})
		if got := w.spread(t, TCP, netip.Addr{}, dst, 20); got[leaving.Name] != 0 {
			t.Fatalf("new connections reached the terminating endpoint: %v", got)
		}
		w.SetEndpoints(t, svc, staying, nil)
		if got := w.spread(t, TCP, netip.Addr{}, dst, 20); got[leaving.Name] != 0 || len(got) != 2 {
			t.Fatalf("after removal: %v", got)
		}
		if name, err := conn.Ping(); err != nil || name != leaving.Name {
			t.Fatalf("established connection after its endpoint left: %q, %v", name, err)
		}
	}},
	{"scheduler annotation change", func(t *testing.T, w *World) {
		svc, v := w.AddService(t, TCP, w.top.Backends)
		dst := netip.AddrPortFrom(v.LBIP, 80)
		svc.Annotations[config.AnnotationIPVSScheduler] = "sh"
		w.Sync(t)
		// Source hashing sends one client to one backend; other backends ignore the annotation and
		// must simply keep serving.
		got := w.spread(t, TCP, netip.Addr{}, dst, 10)
		if r, ok := w.h.(SchedulerReader); ok {
			if s := r.Scheduler(t, dst, TCP); s != "sh" {
				t.Fatalf("kernel scheduler %q after the annotation said sh", s)
			}
			if len(got) != 1 {
				t.Fatalf("sh spread one client over %v", got)
			}
		}
		svc.Annotations[config.AnnotationIPVSScheduler] = "no-such-scheduler"
		w.Sync(t)
		if r, ok := w.h.(SchedulerReader); ok {
			if s := r.Scheduler(t, dst, TCP); s != "rr" {
				t.Fatalf("invalid annotation: kernel scheduler %q, want the rr fallback", s)
			}
		}
		if got := w.spread(t, TCP, netip.Addr{}, dst, 6); len(got) == 0 {
			t.Fatal("no answers after an invalid scheduler annotation")
		}
	}},
	{"hairpin: an endpoint reaching its own Service through the ClusterIP", func(t *testing.T, w *World) {
		self := w.top.Backends[0]
		_, v := w.AddService(t, TCP, []*Host{self})
		r, err := self.Request(TCP, netip.Addr{}, netip.AddrPortFrom(v.ClusterIP, 80))
		if err != nil {
			t.Fatalf("endpoint to its own ClusterIP: %v", err)
		}
		// Its own address as source would make it answer itself directly, past the translation.
		if r.Backend != self.Name || r.Source == self.Addrs[0] {
			t.Fatalf("hairpin answer from %s seen from %s, want %s seen from the node", r.Backend, r.Source, self.Name)
		}
	}},
	{"Service deleted: unreachable", func(t *testing.T, w *World) {
		svc, v := w.AddService(t, TCP, w.top.Backends)
		w.Delete(t, svc)
		if r, err := w.top.Client.Request(TCP, netip.Addr{}, netip.AddrPortFrom(v.LBIP, 80)); err == nil {
			t.Fatalf("deleted Service still answered from %s", r.Backend)
		}
	}},
}
