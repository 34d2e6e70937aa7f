package embedded

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/backendspec"
	"github.com/heraldlb/herald/dataplane/nftables"

	"github.com/heraldlb/herald/internal/testenv"
)

// The whole test process runs in a private network namespace (root only), so the data plane,
// nft and the health ports touch nothing of the machine's.
func TestMain(m *testing.M) { os.Exit(backendspec.RunInNodeNetns(m)) }

func endpointSlice(node string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, NodeName: ptr.To(node)}},
	}
}

func dnsSlice(addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "dns-1", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(int32(5353))}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, NodeName: ptr.To("n2")})
	}
	return s
}

func TestDataPlaneFromAPIObjects(t *testing.T) {
	if !backendspec.InNodeNetns() {
		testenv.Missing(t, "needs root for a private network namespace")
	}
	testenv.Tools(t, "nft", "conntrack")
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080}},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, HealthCheckNodePort: 32100,
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}}},
	}
	dns := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
			Ports: []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)}}},
	}
	client := fake.NewClientset(svc, endpointSlice("n1"), dns, dnsSlice("10.244.1.3", "10.244.1.4"),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The speaker's local-endpoint view, fed by its own informer.
	view := dataplane.NewLocalEndpoints()
	speakerInformers := informers.NewSharedInformerFactory(client, 0)
	if err := view.Register(speakerInformers.Discovery().V1().EndpointSlices().Informer()); err != nil {
		t.Fatal(err)
	}
	speakerInformers.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), view.HasSynced)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	backend, err := Prepare(ctx, "auto", log)
	if err != nil {
		t.Fatal(err)
	}
	recorder := record.NewFakeRecorder(100)
	reg := prometheus.NewRegistry()
	d, err := New(ctx, backend, Options{NodeName: "n1", Client: client, LocalEndpoints: view, Logger: log, HealthAddr: "127.0.0.1:10256",
		Recorder: recorder, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if d.Backend() != "nftables" {
		t.Fatalf("auto chose %q in a namespace without kube-proxy or IPVS, want nftables", d.Backend())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// externalTrafficPolicy: Local: the external addresses have their own chain, which treats
	// the node's own traffic apart (issue 16 item 3).
	eventually(t, "the Service's rules", func() bool {
		out, _ := exec.Command("nft", "list", "map", "inet", nftables.TableName, "service-ips4").CombinedOutput()
		return strings.Contains(string(out), "192.0.2.10 . tcp . 80 : goto ext4-ns/web/tcp/http")
	})
	// The Service count is the last committed sync's: it is recorded after the backend's
	// transaction returns, so it may trail the rules by a moment.
	eventually(t, "status counting both Services", func() bool { return d.Status().Services == 2 })
	// Self-repair: the table deleted behind the data plane's back comes back, with a Warning
	// event on the Node and the repair counted on the injected registry.
	if out, err := exec.Command("nft", "delete", "table", "inet", nftables.TableName).CombinedOutput(); err != nil {
		t.Fatalf("nft delete table: %v %s", err, out)
	}
	eventually(t, "the rules repaired", func() bool {
		out, _ := exec.Command("nft", "list", "map", "inet", nftables.TableName, "service-ips4").CombinedOutput()
		return strings.Contains(string(out), "192.0.2.10 . tcp . 80 : goto ext4-ns/web/tcp/http")
	})
	eventually(t, "the DataPlaneRepaired event", func() bool {
		for {
			select {
			case e := <-recorder.Events:
				if strings.HasPrefix(e, "Warning "+ReasonRepaired+" ") && strings.Contains(e, "table inet herald is gone") {
					return true
				}
			default:
				return false
			}
		}
	})
	if n, err := testutil.GatherAndCount(reg, "herald_dataplane_repairs_total"); err != nil || n != 1 {
		t.Fatalf("herald_dataplane_repairs_total on the injected registry: %d series, %v", n, err)
	}
	if st := d.Status(); st.Backend != "nftables" || st.Reason == "" {
		t.Fatalf("status = %+v", st)
	}
	eventually(t, "healthCheckNodePort 200", func() bool { return status("http://127.0.0.1:32100/") == 200 })
	eventually(t, "/healthz 200", func() bool { return status("http://127.0.0.1:10256/healthz") == 200 })

	// The endpoint moves to another node: this node's health check says so, and external
	// traffic here is dropped (Local policy, endpoints elsewhere).
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, endpointSlice("n2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthCheckNodePort 503", func() bool { return status("http://127.0.0.1:32100/") == 503 })
	eventually(t, "external traffic dropped", func() bool {
		out, _ := exec.Command("nft", "list", "chain", "inet", nftables.TableName, "ext4-ns/web/tcp/http").CombinedOutput()
		return strings.HasSuffix(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(out)), "}")), "}")), "drop")
	})

	// UDP: a flow translated to an endpoint that goes away is cleared (UDP has no end, the client
	// would keep talking to the gone endpoint); flows to endpoints that stay are kept.
	eventually(t, "the UDP Service's rules", func() bool {
		out, _ := exec.Command("nft", "list", "map", "inet", nftables.TableName, "service-ips4").CombinedOutput()
		return strings.Contains(string(out), "10.96.0.20 . udp . 53")
	})
	for i, ep := range []string{"10.244.1.3", "10.244.1.4"} {
		sport := strconv.Itoa(40000 + i)
		if out, err := exec.Command("conntrack", "-I", "-p", "udp", "-s", "172.31.1.2", "-d", "10.96.0.20", "--sport", sport, "--dport", "53",
			"-r", ep, "-q", "172.31.1.2", "--reply-port-src", "5353", "--reply-port-dst", sport, "-t", "120").CombinedOutput(); err != nil {
			t.Fatalf("conntrack -I: %v %s", err, out)
		}
	}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, dnsSlice("10.244.1.4"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale UDP flow cleared", func() bool {
		out, _ := exec.Command("conntrack", "-L", "-p", "udp").CombinedOutput()
		return !strings.Contains(string(out), "src=10.244.1.3") && strings.Contains(string(out), "src=10.244.1.4")
	})

	// Deleting the Service closes its health-check port.
	if err := client.CoreV1().Services("ns").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "health-check port closed", func() bool { return status("http://127.0.0.1:32100/") == 0 })

	cancel()
	<-done
	if err := Cleanup(context.Background(), log); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), nftables.TableName) {
		t.Fatalf("cleanup left the table:\n%s", out)
	}
}

// status is the HTTP status of a GET, 0 when nothing answers.
func status(url string) int {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body) // only the status matters
	resp.Body.Close()
	return resp.StatusCode
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUserspaceModeThroughTheDataPlane: a Service annotated herald.io/proxy-mode: userspace,
// fed from API objects, goes through the userspace proxy: its chain redirects, SpeakerStatus
// lists it, and a dead endpoint among its ready ones costs no connection.
func TestUserspaceModeThroughTheDataPlane(t *testing.T) {
	if !backendspec.InNodeNetns() {
		testenv.Missing(t, "needs root for a private network namespace")
	}
	testenv.Tools(t, "nft")
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"route", "replace", "10.96.0.0/16", "dev", "lo", "src", "127.0.0.1"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	live, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "live\n")
			c.Close()
		}
	}()
	dead, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := int32(dead.Addr().(*net.TCPAddr).Port)
	dead.Close()
	slice := func(name string, port int32) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "us"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(port)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}, NodeName: ptr.To("n1")}},
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "us", Annotations: map[string]string{"herald.io/proxy-mode": "userspace"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.30", ClusterIPs: []string{"10.96.0.30"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	client := fake.NewClientset(svc, slice("us-live", int32(live.Addr().(*net.TCPAddr).Port)), slice("us-dead", deadPort),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	backend, err := Prepare(ctx, "nftables", log)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, backend, Options{NodeName: "n1", Client: client, LocalEndpoints: dataplane.NewLocalEndpoints(), Logger: log,
		HealthAddr: "127.0.0.1:10257"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if err := Cleanup(context.Background(), log); err != nil {
			t.Error(err)
		}
	}()

	eventually(t, "the redirect to the proxy", func() bool {
		out, _ := exec.Command("nft", "list", "chain", "inet", nftables.TableName, "svc4-ns/us/tcp/http").CombinedOutput()
		return strings.Contains(string(out), "redirect to :")
	})
	if st := d.Status(); len(st.UserspaceServices) != 1 || st.UserspaceServices[0] != "ns/us/tcp/http" || st.UserspaceServicesTotal != 1 {
		t.Fatalf("status = %+v, want the userspace Service listed", st)
	}
	for i := range 20 {
		c, err := net.DialTimeout("tcp", "10.96.0.30:80", 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "live\n" {
			t.Fatalf("connection %d: %q, %v (the dead endpoint must be retried past)", i, b, err)
		}
	}
}
