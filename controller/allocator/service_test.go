package allocator

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
)

func apiService(annotations map[string]string, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			Ports:      []corev1.ServicePort{{Port: 80}, {Port: 53, Protocol: corev1.ProtocolUDP}},
			Selector:   map[string]string{"app": "web"},
			IPFamilies: []corev1.IPFamily{v4},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func TestServiceFromAPI(t *testing.T) {
	for _, tc := range []struct {
		name      string
		svc       *corev1.Service
		pool, key string
		requested []string
		err       string
	}{
		{name: "herald annotations", svc: apiService(map[string]string{
			config.AnnotationAddressPool: "a", config.AnnotationAllowSharedIP: "k", config.AnnotationLoadBalancerIPs: "10.0.0.1, fd00::1"}),
			pool: "a", key: "k", requested: []string{"10.0.0.1", "fd00::1"}},
		{name: "metallb.io aliases", svc: apiService(map[string]string{
			"metallb.io/address-pool": "b", "metallb.io/allow-shared-ip": "m", "metallb.io/loadBalancerIPs": "10.0.0.2"}),
			pool: "b", key: "m", requested: []string{"10.0.0.2"}},
		{name: "metallb.universe.tf aliases", svc: apiService(map[string]string{
			"metallb.universe.tf/address-pool": "c", "metallb.universe.tf/loadBalancerIPs": "10.0.0.3"}),
			pool: "c", requested: []string{"10.0.0.3"}},
		{name: "herald wins over an alias", svc: apiService(map[string]string{
			config.AnnotationAddressPool: "h", "metallb.io/address-pool": "m"}), pool: "h"},
		{name: "spec.loadBalancerIP", svc: apiService(nil, func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.0.0.4" }),
			requested: []string{"10.0.0.4"}},
		{name: "annotation wins over spec.loadBalancerIP", svc: apiService(map[string]string{config.AnnotationLoadBalancerIPs: "10.0.0.5"},
			func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.0.0.4" }), requested: []string{"10.0.0.5"}},
		{name: "malformed address names the annotation", svc: apiService(map[string]string{"metallb.io/loadBalancerIPs": "10.0.0.x"}),
			err: `metallb.io/loadBalancerIPs: "10.0.0.x" is not an IP address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ServiceFromAPI(tc.svc, nil)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Pool != tc.pool || s.SharingKey != tc.key || !slices.Equal(toStrings(s.RequestedIPs), tc.requested) {
				t.Fatalf("got pool %q key %q requested %v", s.Pool, s.SharingKey, s.RequestedIPs)
			}
			if want := []Port{{"TCP", 80}, {"UDP", 53}}; !slices.Equal(s.Ports, want) || s.Key != "ns/web" {
				t.Fatalf("ports %v key %s", s.Ports, s.Key)
			}
		})
	}
	local := apiService(nil, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.9"}, {Hostname: "lb.example"}}
	})
	s, _ := ServiceFromAPI(local, nil)
	if s.BackendKey != "app=web" || !slices.Equal(s.Current, []netip.Addr{netip.MustParseAddr("10.0.0.9")}) {
		t.Fatalf("Local: backend key %q, current %v", s.BackendKey, s.Current)
	}
}

func TestPoolFromAPI(t *testing.T) {
	p := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{
		Addresses:  []v1beta1.AddressBlock{"10.0.0.0/30", "fd00::1-fd00::2"},
		AutoAssign: ptr.To(false),
		ServiceAllocation: &v1beta1.ServiceAllocation{Priority: 3, Namespaces: []string{"a"},
			NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": "x"}}}},
	}}
	got := PoolFromAPI(p)
	if got.Err != nil || got.AutoAssign || got.Priority != 3 || len(got.Blocks) != 2 || len(got.NamespaceSelectors) != 1 ||
		!slices.Equal(got.Namespaces, []string{"a"}) {
		t.Fatalf("%+v", got)
	}
	p.Spec.Addresses = []v1beta1.AddressBlock{"10.0.0.9-10.0.0.1"}
	if err := PoolFromAPI(p).Err; err == nil || !strings.Contains(err.Error(), "spec.addresses") {
		t.Fatalf("reversed range: %v", err)
	}
	p.Spec.Addresses = []v1beta1.AddressBlock{"10.0.0.0/30"}
	p.Spec.ServiceAllocation.ServiceSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "In"}}}}
	if err := PoolFromAPI(p).Err; err == nil || !strings.Contains(err.Error(), "serviceSelectors") {
		t.Fatalf("bad selector: %v", err)
	}
}
