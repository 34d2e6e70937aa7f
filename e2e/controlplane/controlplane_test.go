package controlplane

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/internal/testenv"
)

// TestOnLoopback starts the whole control plane on 127.0.0.1 (free ports) and checks that it serves,
// that it is dual-stack, and that kube-controller-manager creates default ServiceAccounts.
func TestOnLoopback(t *testing.T) {
	bins, err := CachedBinaries()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	etcdPort := freePort(t)
	apiPort := freePort(t)
	for apiPort == etcdPort || apiPort == etcdPort+1 || apiPort+1 == etcdPort {
		apiPort = freePort(t)
	}
	cp, err := Start(ctx, Config{
		Dir: t.TempDir(), Binaries: bins, Address: "127.0.0.1",
		Port: apiPort, EtcdPort: etcdPort,
		ServiceCIDRs: "10.96.0.0/16,fd00:96::/112", NodePortRange: "30000-32767",
	})
	if cp != nil {
		t.Cleanup(cp.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cp.RESTConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ds"},
		Spec: corev1.ServiceSpec{
			IPFamilyPolicy: func() *corev1.IPFamilyPolicy { p := corev1.IPFamilyPolicyRequireDualStack; return &p }(),
			Ports:          []corev1.ServicePort{{Port: 80}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Errorf("ClusterIPs %v, want two families", svc.Spec.ClusterIPs)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no default ServiceAccount from kube-controller-manager: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cp.Stop()
	for _, p := range cp.Processes {
		if p.Alive() {
			t.Errorf("%s still runs after Stop", p.Name)
		}
	}
}

// freePort returns a TCP port free on loopback now, with the one above it free too (etcd's peer port).
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		next, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err == nil {
			next.Close()
			return port
		}
	}
	t.Fatal("no free port pair")
	return 0
}
