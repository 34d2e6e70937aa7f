package labtest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/speaker"
)

// L2 end to end: the real speakers in the lab's nodes announce Service IPs with ARP and NDP, from
// Services, a pool and an L2Advertisement in the real apiserver.

const l2Namespace = "l2-e2e"

// l2Setup creates a pool holding ips and an L2Advertisement for every pool, and removes them (and
// the test's Services) at the end.
func l2Setup(t *testing.T, l *lab.Lab, ips ...string) (client.Client, kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	cfg, err := l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, l)
	var blocks []v1beta1.AddressBlock
	for _, ip := range ips {
		blocks = append(blocks, v1beta1.AddressBlock(ip+"-"+ip))
	}
	name := "l2e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1beta1.IPAddressPoolSpec{Addresses: blocks, AutoAssign: ptr.To(false)}}
	adv := &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, obj := range []client.Object{pool, adv} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l2Namespace}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		svcs, _ := cs.CoreV1().Services(l2Namespace).List(ctx, metav1.ListOptions{})
		for _, s := range svcs.Items {
			_ = cs.CoreV1().Services(l2Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
		}
		_ = c.Delete(ctx, adv)
		_ = c.Delete(ctx, pool)
	})
	return c, cs
}

// l2Service creates a LoadBalancer Service asking for ip, with endpoints on pods, and makes sure it
// gets ip: from the controller when the lab runs one, else written here as the controller would.
func l2Service(t *testing.T, l *lab.Lab, cs kubernetes.Interface, name, ip string, etp corev1.ServiceExternalTrafficPolicy, pods []*lab.Host) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	svc := lab.LoadBalancerService(l2Namespace, name)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip}
	svc.Spec.ExternalTrafficPolicy = etp
	family := corev1.IPv4Protocol
	if netip.MustParseAddr(ip).Is6() {
		family = corev1.IPv6Protocol
	}
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{family}
	created, err := l.CreateBackendService(ctx, cs, svc, pods)
	if err != nil {
		t.Fatal(err)
	}
	if _, controller := l.Processes[lab.RoleController]; !controller {
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
		if created, err = cs.CoreV1().Services(l2Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return created
}

// answeringNode waits until ip resolves to exactly one node's MAC and returns that node.
func answeringNode(t *testing.T, l *lab.Lab, ip netip.Addr, within time.Duration) *lab.Host {
	t.Helper()
	var macs []string
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		var err error
		if macs, err = l.ResolveMACs(context.Background(), lab.HostClient, ip, 2); err != nil {
			t.Fatal(err)
		}
		if len(macs) == 1 {
			if h := l.HostByMAC(macs[0]); h != nil && h.Kind == lab.KindNode {
				return h
			}
		}
	}
	t.Fatalf("%s resolves to %v, want exactly one node's MAC", ip, macs)
	return nil
}

func TestL2SpeakersAnswerForServiceIPs(t *testing.T) {
	l := needLab(t)
	ips := []string{"10.77.0.240", "10.77.0.241", "10.77.0.242", "fd00:77::240"}
	c, cs := l2Setup(t, l, ips...)
	for i, ip := range ips {
		l2Service(t, l, cs, fmt.Sprintf("web%d", i), ip, corev1.ServiceExternalTrafficPolicyCluster, l.Pods())
	}
	owners := map[string]string{}
	for _, ip := range ips {
		owners[ip] = answeringNode(t, l, netip.MustParseAddr(ip), 15*time.Second).Name
	}
	t.Logf("owners: %v", owners)
	// NDP: the owner of the IPv6 address joined its solicited-node group, which is how the
	// snooping switch delivers the solicitations to it (and to no other node).
	v6 := netip.MustParseAddr(ips[3])
	groups, err := l.MulticastGroups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes() {
		joined := false
		for _, g := range groups[n.Port] {
			joined = joined || g == lab.SolicitedNodeGroup(v6)
		}
		if joined != (n.Name == owners[ips[3]]) {
			t.Errorf("%s joined %s: %v; only the owner %s should", n.Name, lab.SolicitedNodeGroup(v6), joined, owners[ips[3]])
		}
	}

	// Each node's SpeakerStatus lists exactly the IPs it answers for.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list v1beta1.SpeakerStatusList
		if err := c.List(context.Background(), &list); err != nil {
			t.Fatal(err)
		}
		listed := map[string][]string{}
		for _, st := range list.Items {
			for _, a := range st.Status.Announcements {
				if a.Protocol == v1beta1.ProtocolL2 {
					listed[a.IP] = append(listed[a.IP], st.Name)
				}
			}
		}
		ok := true
		for _, ip := range ips {
			ok = ok && len(listed[ip]) == 1 && listed[ip][0] == owners[ip]
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SpeakerStatuses list %v, want each IP once on its owner %v", listed, owners)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The announcing node put one event on each Service, and nobody else did.
	announcers := func(svc string) []string {
		evs, err := cs.CoreV1().Events(l2Namespace).List(context.Background(), metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.name=%s,reason=%s", svc, speaker.EventL2Announcing)})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs.Items {
			out = append(out, e.Message)
		}
		return out
	}
	for i, ip := range ips {
		if got := announcers(fmt.Sprintf("web%d", i)); len(got) != 1 || !strings.Contains(got[0], "node "+owners[ip]+" ") {
			t.Errorf("web%d: L2Announcing events %q, want one naming %s", i, got, owners[ip])
		}
	}

	// SIGKILL the owner of the first IP's speaker: another node answers within a second.
	ip := netip.MustParseAddr(ips[0])
	old := owners[ips[0]]
	t0 := time.Now()
	if err := l.SignalSpeaker(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var next *lab.Host
	for time.Since(t0) < 5*time.Second && next == nil {
		macs, _ := l.ResolveMACs(context.Background(), lab.HostClient, ip, 1)
		if len(macs) == 1 {
			if h := l.HostByMAC(macs[0]); h != nil && h.Name != old {
				next = h
			}
		}
	}
	if next == nil {
		t.Fatalf("nobody took %s over after %s's speaker was killed", ip, old)
	}
	took := time.Since(t0)
	t.Logf("%s's speaker killed: %s answered for %s within %v (arping's own start included)", old, next.Name, ip, took)
	if took > 1500*time.Millisecond {
		t.Errorf("failover took %v", took)
	}
	if got := announcers("web0"); len(got) != 2 || !strings.Contains(got[0]+got[1], "node "+next.Name+" ") {
		t.Errorf("after the failover web0 has L2Announcing events %q, want a second one naming %s", got, next.Name)
	}
	// The speaker comes back: the healthy new owner keeps the IP, and only it answers.
	if err := l.StartSpeaker(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if macs, _ := l.ResolveMACs(context.Background(), lab.HostClient, ip, 5); len(macs) != 1 || macs[0] != next.MAC {
		t.Errorf("after %s returned, %s resolves to %v, want only %s", old, ip, macs, next.MAC)
	}
}

func TestL2LocalTrafficPolicyFollowsEndpoints(t *testing.T) {
	l := needLab(t)
	_, cs := l2Setup(t, l, "10.77.0.243")
	ip := netip.MustParseAddr("10.77.0.243")
	podsOn := func(node string) []*lab.Host {
		var out []*lab.Host
		for _, p := range l.Pods() {
			if p.Node == node {
				out = append(out, p)
			}
		}
		return out
	}
	nodes := l.Nodes()
	first, second := nodes[1].Name, nodes[2].Name
	svc := l2Service(t, l, cs, "local", ip.String(), corev1.ServiceExternalTrafficPolicyLocal, podsOn(first))
	if n := answeringNode(t, l, ip, 15*time.Second); n.Name != first {
		t.Fatalf("%s answered by %s, want %s (the only node with an endpoint)", ip, n.Name, first)
	}
	if err := l.SetEndpoints(context.Background(), cs, svc, podsOn(second)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for {
		if n := answeringNode(t, l, ip, 5*time.Second); n.Name == second {
			break
		}
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("%s did not move to %s with its endpoints", ip, second)
		}
	}
	t.Logf("owner followed the endpoints to %s within %v", second, time.Since(t0))
}

// TestL2FailoverWithoutAPIServer: the control plane is cut off the segment (frames dropped at the
// switch), then the owner's speaker is killed: the others still take over, because liveness comes
// from the speakers' own heartbeats.
func TestL2FailoverWithoutAPIServer(t *testing.T) {
	l := needLab(t)
	_, cs := l2Setup(t, l, "10.77.0.244")
	ip := netip.MustParseAddr("10.77.0.244")
	l2Service(t, l, cs, "noapi", ip.String(), corev1.ServiceExternalTrafficPolicyCluster, l.Pods())
	old := answeringNode(t, l, ip, 15*time.Second)
	ctx := context.Background()
	if err := l.DropFrames(ctx, lab.HostControlPlane); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.RestoreLink(context.Background(), lab.HostControlPlane) })
	if err := l.SignalSpeaker(old.Name, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	next := answeringNode(t, l, ip, 5*time.Second)
	for next.Name == old.Name && time.Since(t0) < 5*time.Second {
		next = answeringNode(t, l, ip, 5*time.Second)
	}
	if next.Name == old.Name {
		t.Fatalf("%s still answered by the killed %s", ip, old.Name)
	}
	t.Logf("with the API server unreachable, %s took %s over within %v", next.Name, ip, time.Since(t0))
	if err := l.RestoreLink(ctx, lab.HostControlPlane); err != nil {
		t.Fatal(err)
	}
	if err := l.StartSpeaker(t.Context(), old.Name); err != nil {
		t.Fatal(err)
	}
}

// TestL2RestartMovesNothing: the owner's speaker is stopped for a restart (SIGTERM, started again
// 2 s later, as a rolling upgrade does) while a client keeps resolving the address and making
// requests to it: the node's kernel answers meanwhile, with the same MAC, so the owner never
// changes and no request fails; the restarted speaker answers again and leaves nothing held.
func TestL2RestartMovesNothing(t *testing.T) {
	l := needLab(t)
	_, cs := l2Setup(t, l, "10.77.0.245")
	ip := netip.MustParseAddr("10.77.0.245")
	l2Service(t, l, cs, "restart", ip.String(), corev1.ServiceExternalTrafficPolicyCluster, l.Pods())
	owner := answeringNode(t, l, ip, 15*time.Second)
	httpc, err := l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var (
		mu                    sync.Mutex
		macs                  = map[string]int{}
		requests, failed, arp int
		watch                 sync.WaitGroup
	)
	watch.Add(2)
	go func() { // the client's view of who answers
		defer watch.Done()
		for ctx.Err() == nil {
			got, err := l.ResolveMACs(ctx, lab.HostClient, ip, 1)
			mu.Lock()
			arp++
			for _, m := range got {
				macs[m]++
			}
			if err != nil && ctx.Err() == nil {
				t.Errorf("arping: %v", err)
			}
			mu.Unlock()
		}
	}()
	go func() { // and its traffic
		defer watch.Done()
		for ctx.Err() == nil {
			resp, err := httpc.Get("http://" + ip.String() + "/")
			mu.Lock()
			requests++
			if err != nil {
				failed++
				t.Logf("request failed: %v", err)
			} else {
				resp.Body.Close()
			}
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	if err := l.SignalSpeaker(owner.Name, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	held, err := l.Exec(context.Background(), owner.Name, "ip", "-o", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(held), " "+ip.String()+"/32 ") {
		t.Errorf("with its speaker stopped, %s's kernel does not hold %s:\n%s", owner.Name, ip, held)
	}
	if err := l.StartSpeaker(context.Background(), owner.Name); err != nil {
		t.Fatal(err)
	}
	// The restarted speaker takes the address back from the kernel.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := l.Exec(context.Background(), owner.Name, "ip", "-o", "addr", "show")
		if err == nil && !strings.Contains(string(out), " "+ip.String()+"/32 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted speaker on %s left %s held:\n%s", owner.Name, ip, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	stop()
	watch.Wait()
	t.Logf("%d ARP resolutions, MACs seen %v; %d requests, %d failed", arp, macs, requests, failed)
	if len(macs) != 1 || macs[owner.MAC] == 0 {
		t.Errorf("%s was answered by %v across the restart; want only %s's %s", ip, macs, owner.Name, owner.MAC)
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the restart", failed, requests)
	}
	if n := answeringNode(t, l, ip, 5*time.Second); n.Name != owner.Name {
		t.Errorf("after the restart %s is answered by %s, want %s", ip, n.Name, owner.Name)
	}
}
