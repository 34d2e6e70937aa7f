// Package bgp is the BGP mode's end-to-end suite: a lab of its own (namespace prefix herald-bge-),
// the real bin/speaker on three nodes, BIRD 2 as the router, and the configuration written as
// herald.io objects through the real API server.
//
// Needs what the lab needs (root, bird2, arping, ndisc6, the Kubernetes binaries of
// hack/k8s-bins.sh); without it the tests skip, or fail when HERALD_REQUIRE_REAL=1.
package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

func TestMain(m *testing.M) { labsuite.Main(m, "herald-bge-") }

func needLab(t *testing.T) *lab.Lab { return labsuite.Lab(t) }

// routesOf returns, per BIRD protocol, the routes BIRD holds for prefix.
func routesOf(ctx context.Context, l *lab.Lab, prefix netip.Prefix) (map[string]lab.BirdRoute, error) {
	all, err := l.BirdRoutes(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]lab.BirdRoute{}
	for _, r := range all {
		if r.Prefix == prefix {
			out[r.Protocol] = r
		}
	}
	return out, nil
}

func protocols(routes map[string]lab.BirdRoute) []string {
	var out []string
	for p := range routes {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func TestBGPAdvertisesServiceFromEveryNode(t *testing.T) {
	l := needLab(t)
	if _, ok := l.Speaker(l.Nodes()[0].Name); !ok {
		t.Fatal("no speaker in the lab")
	}
	ctx := context.Background()
	c, dyn := labsuite.Clients(t, l)
	router := l.Topology.Host(lab.HostRouter)

	labsuite.Create(t, dyn, "bfdprofiles", "BFDProfile", "fast", map[string]any{
		"receiveInterval": int64(100), "transmitInterval": int64(100), "detectMultiplier": int64(3),
	})
	for _, peer := range []struct {
		name string
		addr netip.Addr
	}{{"router-v4", router.IPv4}, {"router-v6", router.IPv6}} {
		labsuite.Create(t, dyn, "bgppeers", "BGPPeer", peer.name, map[string]any{
			"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": peer.addr.String(),
			"holdTime": "9s", "bfdProfile": "fast",
		})
	}
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "bgp", map[string]any{
		"addresses": []any{lab.BGPPoolV4, lab.BGPPoolV6},
	})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "bgp", map[string]any{
		"ipAddressPools": []any{"bgp"}, "communities": []any{"65000:77"},
	})

	v4, v6 := netip.MustParseAddr("10.79.0.10"), netip.MustParseAddr("fd00:79::10")
	svc := lab.LoadBalancerService("bgp-e2e", "web")
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: v4.String() + "," + v6.String()}
	created, err := l.CreateBackendService(ctx, c, svc, l.Pods())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Services(created.Namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})
	if _, ok := l.Processes[lab.RoleController]; !ok {
		// No controller in the lab yet: write the status it would write.
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: v4.String()}, {IP: v6.String()}}
		if _, err := c.CoreV1().Services(created.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	nodes := l.Nodes()
	for _, fam := range []struct {
		ip     netip.Addr
		suffix string
	}{{v4, "v4"}, {v6, "v6"}} {
		prefix := netip.PrefixFrom(fam.ip, fam.ip.BitLen())
		took := labsuite.WaitFor(t, 60*time.Second, "routes for "+prefix.String()+" from every node", func() (bool, string) {
			routes, err := routesOf(ctx, l, prefix)
			if err != nil {
				return false, err.Error()
			}
			return len(routes) == len(nodes), fmt.Sprint(protocols(routes))
		})
		t.Logf("%s in BIRD from all %d nodes %v after the Service got its IP", prefix, len(nodes), took)
		routes, _ := routesOf(ctx, l, prefix)
		for _, n := range nodes {
			r, ok := routes[n.Name+fam.suffix]
			if !ok {
				t.Errorf("no route for %s from %s: %v", prefix, n.Name, protocols(routes))
				continue
			}
			want := n.IPv4
			if fam.ip.Is6() {
				want = n.IPv6
			}
			if len(r.NextHops) != 1 || r.NextHops[0] != want {
				t.Errorf("route for %s from %s via %v, want %v", prefix, n.Name, r.NextHops, want)
			}
			if got := r.Attrs["BGP.community"]; got != "(65000,77)" {
				t.Errorf("route from %s has communities %q, want (65000,77)", n.Name, got)
			}
		}
	}

	// The controller reads the speakers' SpeakerStatus objects: the Service is herald.io/Announced,
	// each of its IPs by BGP from every node.
	if _, ok := l.Processes[lab.RoleController]; !ok {
		t.Error("no controller in the lab: the herald.io/Announced condition cannot be checked")
	} else {
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		slices.Sort(names)
		labsuite.WaitFor(t, 30*time.Second, "herald.io/Announced True, by BGP from every node", func() (bool, string) {
			got, err := c.CoreV1().Services(created.Namespace).Get(ctx, created.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			var want []string
			for _, in := range got.Status.LoadBalancer.Ingress {
				want = append(want, in.IP+": BGP from "+strings.Join(names, ", "))
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, config.ConditionAnnounced)
			return len(want) == 2 && cond != nil && cond.Status == metav1.ConditionTrue && cond.Reason == config.ReasonAnnounced &&
				cond.Message == strings.Join(want, "; "), fmt.Sprintf("%+v, want message %q", cond, strings.Join(want, "; "))
		})
	}

	// The nodes' SpeakerStatus shows both sessions Established with BFD Up: node1's, and node2's,
	// which is frozen next (frozen before its BFD session is up, only the hold time would tell).
	for _, n := range nodes[:2] {
		labsuite.WaitFor(t, 20*time.Second, n.Name+"'s SpeakerStatus with both sessions and BFD up", func() (bool, string) {
			st, err := dyn.Resource(labsuite.HeraldResource("speakerstatuses")).Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			sessions, _, _ := unstructured.NestedSlice(st.Object, "status", "bgpSessions")
			up := 0
			for _, s := range sessions {
				m := s.(map[string]any)
				if m["state"] == "Established" && m["bfdState"] == "Up" {
					up++
				}
			}
			return up == 2, fmt.Sprint(sessions)
		})
	}

	// A frozen speaker: BFD (100 ms x 3) makes BIRD drop node2's routes, far inside the 9 s hold time.
	v4Prefix := netip.PrefixFrom(v4, 32)
	if err := l.SignalSpeaker(nodes[1].Name, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Thawed whatever happens below: the lab's other tests need node2's speaker.
	t.Cleanup(func() { _ = l.SignalSpeaker(nodes[1].Name, syscall.SIGCONT) })
	took := labsuite.WaitFor(t, 5*time.Second, "node2's route gone after SIGSTOP", func() (bool, string) {
		routes, err := routesOf(ctx, l, v4Prefix)
		_, present := routes[nodes[1].Name+"v4"]
		return err == nil && !present, fmt.Sprint(protocols(routes), err)
	})
	t.Logf("frozen speaker's route gone from BIRD after %v", took)
	if took > 2*time.Second {
		t.Errorf("BIRD dropped the frozen speaker's route after %v: slower than BFD's 300 ms detection", took)
	}
	if err := l.SignalSpeaker(nodes[1].Name, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// SIGTERM: node3's speaker closes its sessions with a Cease; BIRD drops its routes at once.
	if err := l.SignalSpeaker(nodes[2].Name, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took = labsuite.WaitFor(t, 5*time.Second, "node3's route gone after SIGTERM", func() (bool, string) {
		routes, err := routesOf(ctx, l, v4Prefix)
		_, present := routes[nodes[2].Name+"v4"]
		return err == nil && !present, fmt.Sprint(protocols(routes), err)
	})
	t.Logf("stopped speaker's route gone from BIRD after %v", took)
	// The log line may reach the file a moment after BIRD answered without the route.
	labsuite.WaitFor(t, 5*time.Second, "a Cease from node3 in BIRD's log", func() (bool, string) {
		logb, err := os.ReadFile(l.BirdLog())
		return strings.Contains(string(logb), nodes[2].Name+"v4: Received: Administrative shutdown"), fmt.Sprint(err)
	})
	if err := l.StartSpeaker(t.Context(), nodes[2].Name); err != nil {
		t.Fatal(err)
	}

	// Deleting the Service withdraws it everywhere (node2 and node3 are back by then).
	labsuite.WaitFor(t, 30*time.Second, "every node's route back", func() (bool, string) {
		routes, err := routesOf(ctx, l, v4Prefix)
		return err == nil && len(routes) == len(nodes), fmt.Sprint(protocols(routes), err)
	})
	if err := c.CoreV1().Services(created.Namespace).Delete(ctx, created.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, 10*time.Second, "routes withdrawn after the Service was deleted", func() (bool, string) {
		routes, err := routesOf(ctx, l, v4Prefix)
		return err == nil && len(routes) == 0, fmt.Sprint(protocols(routes), err)
	})
}

// TestLocalTrafficPolicyFollowsEndpoints: with externalTrafficPolicy Local only nodes holding a
// ready endpoint advertise the Service, and a node withdraws when its last endpoint goes.
func TestLocalTrafficPolicyFollowsEndpoints(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	c, dyn := labsuite.Clients(t, l)
	router := l.Topology.Host(lab.HostRouter)
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "local-v4", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv4.String(),
	})
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "bgp-local", map[string]any{"addresses": []any{"10.79.0.128/25"}})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "bgp-local", map[string]any{"ipAddressPools": []any{"bgp-local"}})

	ip := netip.MustParseAddr("10.79.0.200")
	svc := lab.LoadBalancerService("bgp-e2e-local", "web")
	svc.Spec.IPFamilyPolicy = nil
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	var node1Pods, node2Pods []*lab.Host
	for _, p := range l.Pods() {
		switch p.Node {
		case l.Nodes()[0].Name:
			node1Pods = append(node1Pods, p)
		case l.Nodes()[1].Name:
			node2Pods = append(node2Pods, p)
		}
	}
	created, err := l.CreateBackendService(ctx, c, svc, node1Pods)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Services(created.Namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})
	if _, ok := l.Processes[lab.RoleController]; !ok {
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
		if _, err := c.CoreV1().Services(created.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	prefix := netip.PrefixFrom(ip, 32)
	only := func(node string) func() (bool, string) {
		return func() (bool, string) {
			routes, err := routesOf(ctx, l, prefix)
			_, ok := routes[node+"v4"]
			return err == nil && len(routes) == 1 && ok, fmt.Sprint(protocols(routes), err)
		}
	}
	labsuite.WaitFor(t, 60*time.Second, "route from node1 only", only(l.Nodes()[0].Name))
	// The endpoints move to node2: node1 withdraws, node2 advertises.
	if err := l.SetEndpoints(ctx, c, created, node2Pods); err != nil {
		t.Fatal(err)
	}
	took := labsuite.WaitFor(t, 10*time.Second, "route from node2 only", only(l.Nodes()[1].Name))
	t.Logf("route moved with the endpoints in %v", took)
}

// TestBadPeerIsReportedAndIsolated: a BGPPeer whose password Secret is missing gets a Valid False
// condition and an event from the controller, and no session, while a good peer next to it
// establishes.
func TestBadPeerIsReportedAndIsolated(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	c, dyn := labsuite.Clients(t, l)
	router := l.Topology.Host(lab.HostRouter)
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "good-v6", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv6.String(),
	})
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "no-secret", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv4.String(),
		"passwordSecret": map[string]any{"name": "missing"},
	})
	labsuite.WaitFor(t, 30*time.Second, "a SecretNotFound event on BGPPeer no-secret", func() (bool, string) {
		events, err := c.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=no-secret"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range events.Items {
			if e.Reason == "SecretNotFound" && e.InvolvedObject.Kind == "BGPPeer" && strings.Contains(e.Message, "missing") {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(events.Items), " events")
	})
	labsuite.WaitFor(t, 30*time.Second, "condition Valid False (SecretNotFound) on BGPPeer no-secret", func() (bool, string) {
		peer, err := dyn.Resource(labsuite.HeraldResource("bgppeers")).Get(ctx, "no-secret", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(peer.Object, "status", "conditions")
		for _, c := range conds {
			if m := c.(map[string]any); m["type"] == "Valid" && m["status"] == "False" && m["reason"] == "SecretNotFound" {
				return true, ""
			}
		}
		return false, fmt.Sprint(conds)
	})
	node := l.Nodes()[0].Name
	labsuite.WaitFor(t, 30*time.Second, "good-v6 established and no-secret absent in "+node+"'s SpeakerStatus", func() (bool, string) {
		st, err := dyn.Resource(labsuite.HeraldResource("speakerstatuses")).Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		sessions, _, _ := unstructured.NestedSlice(st.Object, "status", "bgpSessions")
		good, bad := false, false
		for _, s := range sessions {
			m := s.(map[string]any)
			good = good || (m["peer"] == "good-v6" && m["state"] == "Established")
			bad = bad || m["peer"] == "no-secret"
		}
		return good && !bad, fmt.Sprint(sessions)
	})
}

// TestClientBehindRouterReachesService: the router learns the Service IP from every node (ECMP in
// its kernel table) and a client behind it gets answers from the backends through the nodes' data
// plane.
func TestClientBehindRouterReachesService(t *testing.T) {
	l := needLab(t)
	ctx := context.Background()
	c, dyn := labsuite.Clients(t, l)
	router := l.Topology.Host(lab.HostRouter)
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "reach-v4", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": router.IPv4.String(),
	})
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "bgp-reach", map[string]any{"addresses": []any{"10.79.0.64/26"}})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "bgp-reach", map[string]any{"ipAddressPools": []any{"bgp-reach"}})
	ip := netip.MustParseAddr("10.79.0.70")
	svc := lab.LoadBalancerService("bgp-e2e-reach", "web")
	svc.Spec.IPFamilyPolicy = nil
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	created, err := l.CreateBackendService(ctx, c, svc, l.Pods())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Services(created.Namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})
	if _, ok := l.Processes[lab.RoleController]; !ok {
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
		if _, err := c.CoreV1().Services(created.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	prefix := netip.PrefixFrom(ip, 32)
	labsuite.WaitFor(t, 60*time.Second, "routes from every node", func() (bool, string) {
		routes, err := routesOf(ctx, l, prefix)
		return err == nil && len(routes) == len(l.Nodes()), fmt.Sprint(protocols(routes), err)
	})
	labsuite.WaitFor(t, 30*time.Second, "node1's SpeakerStatus naming its data-plane backend", func() (bool, string) {
		st, err := dyn.Resource(labsuite.HeraldResource("speakerstatuses")).Get(ctx, l.Nodes()[0].Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		backend, _, _ := unstructured.NestedString(st.Object, "status", "dataplane", "backend")
		return backend != "" && backend != "off", "backend " + backend
	})
	addr := netip.AddrPortFrom(ip, 80)
	// The speakers advertise as soon as they see the IP, which can be a moment before every node's
	// data plane has programmed the Service (a known gap: announcing should wait for the rules).
	// So wait for one answer from every node's path first, then require every request to succeed.
	labsuite.WaitFor(t, 30*time.Second, "every node's data plane answering", func() (bool, string) {
		counts, err := l.Spread(ctx, lab.HostExternal, addr, 12, 2*time.Second)
		return err == nil && counts[""] == 0, fmt.Sprint(counts, err)
	})
	counts, err := l.Spread(ctx, lab.HostExternal, addr, 20, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if counts[""] > 0 {
		t.Errorf("%d of 20 requests from behind the router to %s failed: %v", counts[""], addr, counts)
	}
	t.Logf("answers per backend: %v", counts)
}
