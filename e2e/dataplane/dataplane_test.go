// Package dataplane_test checks the speaker's embedded data plane in the shared lab: real
// speakers on three nodes, L2 announcements, real HTTP requests from the client on the segment.
package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

func TestMain(m *testing.M) { labsuite.Main(m, "herald-dpe-") }

const namespace = "dataplane-e2e"

// service creates a LoadBalancer Service on ip backed by every pod of the lab.
func service(t *testing.T, l *lab.Lab, cs kubernetes.Interface, name, ip string, etp corev1.ServiceExternalTrafficPolicy) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	svc := lab.LoadBalancerService(namespace, name)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip}
	svc.Spec.ExternalTrafficPolicy = etp
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	created, err := l.CreateBackendService(ctx, cs, svc, l.Pods())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Services(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, controller := l.Processes[lab.RoleController]; !controller {
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
		if created, err = cs.CoreV1().Services(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return created
}

// TestClientReachesServiceThroughTheDataPlane: the client on the segment reaches a Service's
// LoadBalancer IP (announced over L2, forwarded by the owner's nftables data plane) with requests
// spread over the three backends, reaches its NodePort on every node, and with
// externalTrafficPolicy: Local the backend sees the client's own address.
func TestClientReachesServiceThroughTheDataPlane(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "dpe", map[string]any{
		"addresses": []any{"10.77.0.230-10.77.0.231"}, "autoAssign": false})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "dpe", map[string]any{"ipAddressPools": []any{"dpe"}})

	cluster := service(t, l, cs, "cluster", "10.77.0.230", corev1.ServiceExternalTrafficPolicyCluster)
	local := service(t, l, cs, "local", "10.77.0.231", corev1.ServiceExternalTrafficPolicyLocal)

	node := l.Nodes()[0].Name
	labsuite.WaitFor(t, 30*time.Second, "the speaker reports its data plane", func() (bool, string) {
		st, err := dyn.Resource(labsuite.HeraldResource("speakerstatuses")).Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		backend, _, _ := unstructured.NestedString(st.Object, "status", "dataplane", "backend")
		return backend == "nftables", "backend " + backend
	})

	lbAddr := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.230"), 80)
	labsuite.WaitFor(t, 30*time.Second, "the LoadBalancer IP answers", func() (bool, string) {
		counts, err := l.Spread(ctx, lab.HostClient, lbAddr, 6, 2*time.Second)
		return err == nil && counts[""] == 0, fmt.Sprint(counts, err)
	})
	const requests = 300
	counts, err := l.Spread(ctx, lab.HostClient, lbAddr, requests, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if counts[""] > 0 {
		t.Errorf("%d of %d requests to %s failed", counts[""], requests, lbAddr)
	}
	for _, pod := range l.Pods() {
		// The bound: with 3 backends each gets 20-47 % of 300 requests.
		if n := counts[pod.Name]; n < requests*20/100 || n > requests*47/100 {
			t.Errorf("backend %s got %d of %d requests, want 20-47 %%: %v", pod.Name, n, requests, counts)
		}
	}
	t.Logf("answers per backend: %v", counts)

	nodePort := cluster.Spec.Ports[0].NodePort
	for _, n := range l.Nodes() {
		addr := netip.AddrPortFrom(n.IPv4, uint16(nodePort))
		if r, err := l.Get(ctx, lab.HostClient, addr, 2*time.Second); err != nil || r.Backend == "" {
			t.Errorf("NodePort %s on %s: %+v %v", addr, n.Name, r, err)
		}
	}

	client, err := l.Host(lab.HostClient)
	if err != nil {
		t.Fatal(err)
	}
	localAddr := netip.AddrPortFrom(netip.MustParseAddr(local.Annotations[config.AnnotationLoadBalancerIPs]), 80)
	labsuite.WaitFor(t, 30*time.Second, "the Local-policy Service answers with the client's own address", func() (bool, string) {
		r, err := l.Get(ctx, lab.HostClient, localAddr, 2*time.Second)
		return err == nil && r.ClientIP() == client.IPv4, fmt.Sprintf("%+v %v (client is %s)", r, err, client.IPv4)
	})
}
