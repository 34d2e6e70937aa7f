package charts

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
)

// TestControllerRunsWithTheChartsRBAC installs the chart into a real apiserver and runs the real
// controller as the chart's ServiceAccount (impersonated: the rules the chart grants, nothing
// more). It must allocate a Service, write a BGPPeer's Valid condition (which reads a Secret) and
// the Service's herald.io/Announced condition (which reads SpeakerStatuses): a permission missing
// from controller-rbac.yaml shows here, not in a user's cluster.
func TestControllerRunsWithTheChartsRBAC(t *testing.T) {
	requireHelm(t)
	api := realapi.Start(t)
	ctx := context.Background()
	if out, err := runHelm(t, "install", "herald", chartDir, "--create-namespace", "--kubeconfig", api.Kubeconfig,
		"--namespace", "herald-system", "--set", "dataplane.mode=off"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	kc, err := clientcmd.LoadFromFile(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		a.Impersonate = "system:serviceaccount:herald-system:herald-controller"
	}
	saKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, saKubeconfig); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "controller")
	build := exec.Command("go", "build", "-o", bin, "./cmd/controller")
	build.Dir = realapi.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the controller: %v\n%s", err, out)
	}
	var logs strings.Builder
	ctrl := exec.Command(bin, "--kubeconfig", saKubeconfig, "--namespace", "herald-system", "--metrics-addr", "")
	ctrl.Stdout, ctrl.Stderr = &logs, &logs
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Process.Kill(); _ = ctrl.Wait() })

	cs := kubernetes.NewForConfigOrDie(api.Config)
	dyn := dynamic.NewForConfigOrDie(api.Config)
	create := func(resource string, obj any) {
		t.Helper()
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(v1beta1.GroupVersion.WithResource(resource)).Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create("ipaddresspools", &v1beta1.IPAddressPool{TypeMeta: metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "IPAddressPool"},
		ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressBlock{"192.0.2.0/28"}}})
	create("bgppeers", &v1beta1.BGPPeer{TypeMeta: metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "BGPPeer"},
		ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "192.0.2.254",
			PasswordSecret: &v1beta1.SecretReference{Name: "no-such-secret", Namespace: "herald-system"}}})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		got, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		allocated := err == nil && len(got.Status.LoadBalancer.Ingress) == 1 &&
			meta.IsStatusConditionTrue(got.Status.Conditions, config.ConditionAllocated)
		peer, perr := dyn.Resource(v1beta1.GroupVersion.WithResource("bgppeers")).Get(ctx, "r", metav1.GetOptions{})
		var valid *metav1.Condition
		if perr == nil {
			var p v1beta1.BGPPeer
			if runtime.DefaultUnstructuredConverter.FromUnstructured(peer.Object, &p) == nil {
				valid = meta.FindStatusCondition(p.Status.Conditions, config.ConditionValid)
			}
		}
		if allocated && valid != nil && valid.Status == metav1.ConditionFalse && strings.Contains(valid.Message, "no-such-secret") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("as the chart's ServiceAccount the controller did not allocate (%v) and report the missing Secret (%+v); forbidden in its log:\n%s",
				allocated, valid, forbidden(logs.String()))
		}
	}

	// A node's speaker lists the Service's IP: the controller, reading SpeakerStatuses, says so.
	got, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := got.Status.LoadBalancer.Ingress[0].IP
	create("speakerstatuses", &v1beta1.SpeakerStatus{TypeMeta: metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "SpeakerStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: "node1"}})
	st := &v1beta1.SpeakerStatus{TypeMeta: metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "SpeakerStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: v1beta1.SpeakerStatusStatus{
			LastUpdate: &metav1.Time{Time: time.Now()}, AnnouncedIPs: 1,
			Announcements: []v1beta1.Announcement{{IP: ip, Protocol: v1beta1.ProtocolL2}}}}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(st)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: u}
	speakers := dyn.Resource(v1beta1.GroupVersion.WithResource("speakerstatuses"))
	cur, err := speakers.Get(ctx, "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj.SetResourceVersion(cur.GetResourceVersion()) // an update of a custom resource must name it
	if _, err := speakers.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := ip + ": L2 from node1"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		got, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		var c *metav1.Condition
		if err == nil {
			c = meta.FindStatusCondition(got.Status.Conditions, config.ConditionAnnounced)
		}
		if c != nil && c.Status == metav1.ConditionTrue && c.Message == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("as the chart's ServiceAccount the controller did not write herald.io/Announced True %q (got %+v); forbidden in its log:\n%s",
				want, c, forbidden(logs.String()))
		}
	}
	if f := forbidden(logs.String()); f != "" {
		t.Errorf("the controller was refused something:\n%s", f)
	}
}

// forbidden returns the log lines that report a refused request.
func forbidden(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "forbidden") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
