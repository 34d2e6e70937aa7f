// Package labtest holds the lab's own end-to-end scenarios, run against one lab built for the
// package (prefix herald-lt-) by labsuite: see there for prerequisites and skipping.
package labtest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

func TestMain(m *testing.M) { labsuite.Main(m, "herald-lt-") }

// needLab returns the package's lab, or skips/fails the test with the reason there is none.
func needLab(t *testing.T) *lab.Lab { return labsuite.Lab(t) }

func clientset(t *testing.T, l *lab.Lab) kubernetes.Interface {
	t.Helper()
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNodesRouterAndClientsReachEachOther(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	var hosts []string
	for _, h := range l.Topology.Hosts {
		if h.Kind == lab.KindNode || h.Kind == lab.KindRouter || h.Name == lab.HostClient {
			hosts = append(hosts, h.Name)
		}
	}
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to {
				continue
			}
			dst, _ := l.Host(to)
			for _, ip := range []netip.Addr{dst.IPv4, dst.IPv6} {
				if err := l.Reachable(ctx, from, ip, 3*time.Second); err != nil {
					t.Error(err)
				}
			}
		}
	}
	// The client behind the router reaches the segment through it, both families.
	for _, ip := range []netip.Addr{l.Nodes()[0].IPv4, l.Nodes()[0].IPv6} {
		if err := l.Reachable(ctx, lab.HostExternal, ip, 3*time.Second); err != nil {
			t.Error(err)
		}
	}
}

func TestBirdIsUpWithOneSessionPerNodeAndFamily(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	ps, err := l.BirdProtocols(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bgp := map[string]lab.BirdProtocol{}
	for _, p := range ps {
		if p.Proto == "BGP" {
			bgp[p.Name] = p
		}
	}
	for _, n := range l.Nodes() {
		for _, fam := range []string{"v4", "v6"} {
			p, ok := bgp[n.Name+fam]
			if !ok {
				t.Errorf("BIRD has no session %s%s; it has %v", n.Name, fam, ps)
				continue
			}
			if p.State != "start" && p.State != "up" {
				t.Errorf("session %s is %q (%s), want start or up", p.Name, p.State, p.Info)
			}
		}
	}
	if len(bgp) != 2*len(l.Nodes()) {
		t.Errorf("BIRD has %d BGP sessions, want %d", len(bgp), 2*len(l.Nodes()))
	}
	// The route table is readable (with no BGPPeer configured it may well be empty).
	if _, err := l.BirdRoutes(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := l.Birdc(ctx, "show", "bfd", "sessions")
	if err != nil {
		t.Fatalf("BFD is not configured: %v", err)
	}
	if !strings.Contains(string(out), "bfd1") {
		t.Errorf("show bfd sessions: %s", out)
	}
}

func TestBackendsAnswerWithTheClientAddressTheySaw(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	client, _ := l.Host(lab.HostClient)
	ext, _ := l.Host(lab.HostExternal)
	for _, pod := range l.Pods() {
		for _, c := range []struct {
			from *lab.Host
			dst  netip.Addr
			want netip.Addr
		}{
			{client, pod.IPv4, client.IPv4}, {client, pod.IPv6, client.IPv6},
			{ext, pod.IPv4, ext.IPv4}, {ext, pod.IPv6, ext.IPv6},
		} {
			r, err := l.Get(ctx, c.from.Name, netip.AddrPortFrom(c.dst, lab.BackendPort), 3*time.Second)
			if err != nil {
				t.Errorf("%s -> %s: %v", c.from.Name, c.dst, err)
				continue
			}
			if r.Backend != pod.Name || r.Node != pod.Node {
				t.Errorf("%s answered as %s on %s", pod.Name, r.Backend, r.Node)
			}
			// Routed, never NATed: the backend sees the client's own address.
			if r.ClientIP() != c.want {
				t.Errorf("%s saw client %s, want %s", pod.Name, r.Client, c.want)
			}
		}
	}
	// UDP too: one datagram, one answer naming the backend.
	pod := l.Pods()[0]
	out, err := l.Exec(ctx, lab.HostClient, "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/udp/%s/%d; echo hi >&3; timeout 2 head -n1 <&3", pod.IPv4, lab.BackendPort))
	if err != nil || !strings.Contains(string(out), `"backend":"`+pod.Name+`"`) {
		t.Errorf("UDP echo from %s: %v %s", pod.Name, err, out)
	}
}

func TestClientResolvesEachNodeToItsOwnMAC(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	for _, n := range l.Nodes() {
		for _, ip := range []netip.Addr{n.IPv4, n.IPv6} {
			macs, err := l.ResolveMACs(ctx, lab.HostClient, ip, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(macs) != 1 || macs[0] != n.MAC {
				t.Errorf("%s (%s) resolves to %v, want exactly [%s]", n.Name, ip, macs, n.MAC)
			}
		}
	}
	// The switch snoops multicast: it learned that each host joined its solicited-node group.
	groups, err := l.MulticastGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes() {
		want := lab.SolicitedNodeGroup(n.IPv6)
		found := false
		for _, g := range groups[n.Port] {
			found = found || g == want
		}
		if !found {
			t.Errorf("switch port %s has not joined %s (groups %v)", n.Port, want, groups[n.Port])
		}
	}
	// Nobody has this address: no answer, and no error.
	if macs, err := l.ResolveMACs(ctx, lab.HostClient, netip.MustParseAddr("10.77.0.199"), 1); err != nil || len(macs) != 0 {
		t.Errorf("unused address: %v, %v", macs, err)
	}
}

// TestLinkFaults checks the fault helpers other suites rely on: a cut link loses carrier, dropped
// frames keep it, and restoring brings traffic back (timed with the benchmark helper).
func TestLinkFaults(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	node := l.Nodes()[len(l.Nodes())-1]
	pod := l.Pods()[len(l.Pods())-1]
	t.Cleanup(func() { _ = l.RestoreLink(context.Background(), node.Name) })
	probe, err := l.HTTPProbe(lab.HostClient, netip.AddrPortFrom(pod.IPv4, lab.BackendPort), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	carrier := func() string {
		out, err := l.Exec(ctx, node.Name, "cat", "/sys/class/net/eth0/carrier")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	for _, fault := range []struct {
		name    string
		apply   func(context.Context, string) error
		carrier string
	}{{"cut", l.CutLink, "0"}, {"drop", l.DropFrames, "1"}} {
		if err := fault.apply(ctx, node.Name); err != nil {
			t.Fatal(err)
		}
		if got := carrier(); got != fault.carrier {
			t.Errorf("%s: %s's carrier = %s, want %s", fault.name, node.Name, got, fault.carrier)
		}
		if err := l.Reachable(ctx, lab.HostClient, node.IPv4, 500*time.Millisecond); err == nil {
			t.Errorf("%s: %s still reachable", fault.name, node.Name)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := lab.TimeToFirstSuccess(pctx, func(ctx context.Context) error { return l.RestoreLink(ctx, node.Name) }, probe, time.Millisecond)
		cancel()
		if err != nil {
			t.Fatalf("%s: after restoring: %v", fault.name, err)
		}
		t.Logf("%s: backend behind %s reachable %s after restoring (%d attempts)", fault.name, node.Name, m.Elapsed, m.Attempts)
	}
}

func TestAPIServerIsDualStackWithRoomForTenThousandServices(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	c := clientset(t, l)
	svc, err := c.CoreV1().Services(metav1.NamespaceDefault).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dualstack"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeNodePort,
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Ports:          []corev1.ServicePort{{Port: 80, NodePort: 39999}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Services(svc.Namespace).Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Errorf("ClusterIPs = %v, want one per family", svc.Spec.ClusterIPs)
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(l.Nodes()) {
		t.Fatalf("%d Nodes, want %d", len(nodes.Items), len(l.Nodes()))
	}
	for _, n := range nodes.Items {
		ready := false
		for _, cond := range n.Status.Conditions {
			ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
		}
		if !ready || len(n.Status.Addresses) < 2 || len(n.Spec.PodCIDRs) != 2 || len(n.Spec.Taints) != 0 {
			t.Errorf("node %s: ready=%v addresses=%v podCIDRs=%v taints=%v", n.Name, ready, n.Status.Addresses, n.Spec.PodCIDRs, n.Spec.Taints)
		}
	}
	// kube-controller-manager runs: new namespaces get their default ServiceAccount.
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sa-check"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.CoreV1().ServiceAccounts("sa-check").Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no default ServiceAccount: is kube-controller-manager running? %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var poolGVR = schema.GroupVersionResource{Group: "herald.io", Version: "v1beta1", Resource: "ipaddresspools"}

func TestControllerAssignsAnIPFromThePool(t *testing.T) {
	l := needLab(t)
	if _, ok := l.Processes[lab.RoleController]; !ok {
		t.Skip("skipped: no Herald controller in the lab (cmd/controller does not exist yet)")
	}
	ctx := context.Background()
	c := clientset(t, l)
	rc, err := l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "herald.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "labtest"},
		"spec":     map[string]any{"addresses": []any{lab.L2PoolV4, lab.L2PoolV6}},
	}}
	if _, err := dyn.Resource(poolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dyn.Resource(poolGVR).Delete(context.Background(), "labtest", metav1.DeleteOptions{}) })
	svc, err := l.CreateBackendService(ctx, c, lab.LoadBalancerService("labtest", "web"), l.Pods())
	if err != nil {
		t.Fatal(err)
	}
	first4 := netip.MustParseAddr(strings.Split(lab.L2PoolV4, "-")[0])
	last4 := netip.MustParseAddr(strings.Split(lab.L2PoolV4, "-")[1])
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := c.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if in := got.Status.LoadBalancer.Ingress; len(in) > 0 {
			var ips []string
			for _, ing := range in {
				ips = append(ips, ing.IP)
				ip, err := netip.ParseAddr(ing.IP)
				if err != nil {
					t.Fatalf("ingress %q: %v", ing.IP, err)
				}
				if ip.Is4() && (ip.Less(first4) || last4.Less(ip)) {
					t.Errorf("IP %s is outside the pool %s", ip, lab.L2PoolV4)
				}
			}
			t.Logf("assigned %v", ips)
			return
		}
		if time.Now().After(deadline) {
			p := l.Processes[lab.RoleController]
			t.Fatalf("no IP after 20 s; status %+v\ncontroller log:\n%s", got.Status, p.Tail(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSpeakerSignalHelper checks that a speaker can be frozen, killed and restarted by the helpers
// the failover suites use.
func TestSpeakerSignalHelper(t *testing.T) {
	l := needLab(t)
	node := l.Nodes()[0].Name
	p, ok := l.Speaker(node)
	if !ok {
		t.Skip("skipped: no speaker in the lab (cmd/speaker not built)")
	}
	if !p.Alive() {
		t.Fatalf("speaker on %s is not running:\n%s", node, p.Tail(3000))
	}
	if err := l.SignalSpeaker(node, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Alive() {
		if time.Now().After(deadline) {
			t.Fatal("speaker survived SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.StartSpeaker(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	p2, _ := l.Speaker(node)
	if p2.PID == p.PID || !p2.Alive() {
		t.Fatalf("restarted speaker: %+v alive=%v", p2, p2.Alive())
	}
}
