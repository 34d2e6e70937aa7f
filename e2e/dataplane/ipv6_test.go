package dataplane_test

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

// TestDualStackServiceOverIPv6: a dual-stack Service's IPv6 LoadBalancer IP (announced with NDP)
// spreads the client's requests over the three backends, and every node reaches its IPv6
// ClusterIP through its own data plane.
func TestDualStackServiceOverIPv6(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	v4, v6 := "10.77.0.241", "fd00:77::241"
	l2Pool(t, dyn, "dpe-dual", v4+"/32", v6+"/128")
	svc := service(t, l, cs, "dual", v4, l.Pods(), func(svc *corev1.Service) {
		svc.Annotations[config.AnnotationLoadBalancerIPs] = v4 + "," + v6
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	})
	port := uint16(svc.Spec.Ports[0].Port)
	lb := netip.AddrPortFrom(netip.MustParseAddr(v6), port)
	waitForAnswers(t, l, lab.HostClient, lb)
	requireSpread(t, l, lab.HostClient, lb)

	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("the dual-stack Service has ClusterIPs %v, want one per family", svc.Spec.ClusterIPs)
	}
	for _, n := range l.Nodes() {
		requireAnsweredBy(t, l, n.Name, clusterAddr(svc, 1), l.Pods())
	}
}
