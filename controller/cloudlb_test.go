package controller_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller"
	"github.com/heraldlb/herald/controller/allocator"
)

func lbService(name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
	}
}

func TestCloudLoadBalancer(t *testing.T) {
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"10.0.0.0/31"}}}
	a := allocator.New()
	a.SetPools([]allocator.Pool{allocator.PoolFromAPI(pool)})
	lb := &controller.CloudLoadBalancer{Allocator: a, NamespaceLabels: func(string) map[string]string { return nil }}
	ctx := context.Background()
	svc := lbService("web", nil)
	if _, exists, _ := lb.GetLoadBalancer(ctx, "c", svc); exists {
		t.Fatal("exists before Ensure")
	}
	st, err := lb.EnsureLoadBalancer(ctx, "c", svc, nil)
	if err != nil || len(st.Ingress) != 1 || st.Ingress[0].IP != "10.0.0.0" || *st.Ingress[0].IPMode != corev1.LoadBalancerIPModeVIP {
		t.Fatalf("%+v %v", st, err)
	}
	if got, exists, _ := lb.GetLoadBalancer(ctx, "c", svc); !exists || got.Ingress[0].IP != "10.0.0.0" {
		t.Fatalf("Get after Ensure: %+v", got)
	}
	bad := lbService("bad", map[string]string{config.AnnotationAddressPool: "nope"})
	if _, err := lb.EnsureLoadBalancer(ctx, "c", bad, nil); err == nil || !strings.HasPrefix(err.Error(), config.ReasonNoPool) {
		t.Fatalf("unknown pool: %v", err)
	}
	if err := lb.EnsureLoadBalancerDeleted(ctx, "c", svc); err != nil {
		t.Fatal(err)
	}
	if _, exists, _ := lb.GetLoadBalancer(ctx, "c", svc); exists {
		t.Fatal("exists after delete")
	}
	if name := lb.GetLoadBalancerName(ctx, "c", svc); name == "" {
		t.Fatal("empty name")
	}
}
