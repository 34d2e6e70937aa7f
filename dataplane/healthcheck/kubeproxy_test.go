package healthcheck

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/proc"

	"github.com/heraldlb/herald/internal/testenv"
)

// TestSameAnswerAsKubeProxy runs the real kube-proxy v1.34.4 (nftables mode) and a real apiserver
// in a network namespace of their own, gives them an externalTrafficPolicy: Local Service, and
// compares kube-proxy's healthCheckNodePort answer with Herald's for the same Service and
// endpoints: status, headers (Date aside) and body, byte for byte; with a local endpoint (200)
// and without (503).
func TestSameAnswerAsKubeProxy(t *testing.T) {
	netnstest.Require(t, "nft")
	bins, err := controlplane.CachedBinaries()
	kubeProxy := filepath.Join(bins.KubeDir, "kube-proxy")
	if err == nil {
		_, err = os.Stat(kubeProxy)
	}
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	l := netnstest.New(t, "herald-dpt-kp-")
	ns := l.AddNS("node")
	dir := t.TempDir()
	wrap := func(argv []string) []string { return append([]string{"ip", "netns", "exec", ns}, argv...) }
	dial := netnstest.Dialer(ns, &net.Dialer{Timeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Binaries: bins, Address: "127.0.0.1",
		ServiceCIDRs: "10.96.0.0/16", NodePortRange: "30000-32767", Wrap: wrap, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	rc, err := cp.RESTConfig(dial)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)

	const node = "kp-node"
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}}, metav1.CreateOptions{})
		return err
	})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	mustCreate(t, func() (err error) {
		svc, err = cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
		return err
	})
	slice := func(nodeName string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To(nodeName), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
	}
	mustCreate(t, func() error {
		_, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice(node), metav1.CreateOptions{})
		return err
	})

	kp, err := proc.Start("kube-proxy", wrap([]string{kubeProxy, "--kubeconfig=" + cp.Kubeconfig, "--proxy-mode=nftables",
		"--hostname-override=" + node, "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
		"--nodeport-addresses=127.0.0.0/8", "--conntrack-max-per-core=0", "--cluster-cidr=10.244.0.0/16"}),
		filepath.Join(dir, "kube-proxy.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kp.Stop(5 * time.Second); err != nil {
			t.Error(err)
		}
	})

	// Herald's server for the same Service, from the same endpoints.
	view := dataplane.NewLocalEndpoints()
	herald := NewServiceServers(node, view, func() (bool, time.Time) { return true, time.Now() }, func(string, string) (net.Listener, error) {
		return net.Listen("tcp", "127.0.0.1:0")
	}, nil)
	defer herald.Close()
	key := types.NamespacedName{Namespace: "default", Name: "web"}
	herald.Sync(map[types.NamespacedName]int32{key: svc.Spec.HealthCheckNodePort}, AllAddresses)
	heraldAddr := herald.servers[key].addr

	kubeProxyURL := "http://127.0.0.1:" + strconv.Itoa(int(svc.Spec.HealthCheckNodePort)) + "/"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dial}}
	for _, tc := range []struct {
		name, node string
		code       int
	}{{"local endpoint", node, 200}, {"endpoint elsewhere", "other-node", 503}} {
		t.Run(tc.name, func(t *testing.T) {
			s := slice(tc.node)
			if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			view.OnEndpointSliceUpdate(s)
			var want lab.HTTPAnswer
			deadline := time.Now().Add(90 * time.Second)
			for {
				want, err = lab.FetchHTTP(client, kubeProxyURL)
				if err == nil && want.Code == tc.code {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("kube-proxy never answered %d (last: %+v, %v); its log:\n%s", tc.code, want, err, kp.Tail(3000))
				}
				time.Sleep(200 * time.Millisecond)
			}
			got, err := lab.FetchHTTP(http.DefaultClient, "http://"+heraldAddr+"/")
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("Herald answers\n%s\nkube-proxy answers\n%s", got, want)
			}
		})
	}
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := create()
		if err == nil {
			return
		}
		// Right after start the apiserver may still refuse (default ServiceAccount, quota).
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
