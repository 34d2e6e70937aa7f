// Package kubelet runs Herald as its users do: a lab whose nodes are real Kubernetes nodes (kubelet,
// containerd, runc, CNI; scheduler and the default controllers), Herald installed with
// `helm install` from its image, no kube-proxy, backends as Deployments whose EndpointSlices come
// from the real endpointslice controller.
//
// It needs root, Debian's containerd, runc and containernetworking-plugins (hack/deps.sh), the
// Kubernetes binaries (hack/k8s-bins.sh, hack/k8s-node-bins.sh), helm (hack/helm.sh), and bin/lab plus
// Herald's image (make build images; $HERALD_BIN_DIR, else the repository's bin/). Without them the
// tests skip, or fail under HERALD_REQUIRE_REAL=1.
package kubelet

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
)

const prefix = "herald-kl-"

func TestMain(m *testing.M) { labsuite.KubeletMain(m, prefix) }

// TestHelmInstallServesLoadBalancer is the user's first path: helm install, a Deployment exposed as
// a LoadBalancer Service, reached from the segment's client and from behind the router; a pod
// reaches its ClusterIP and a NodePort (no kube-proxy: Herald's data plane serves them all).
func TestHelmInstallServesLoadBalancer(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := t.Context()
	heraldInstalled(t, l, cs)
	const ns = "default"
	lbIP := webService(t, l, cs, dyn, "web")

	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string]bool{}
	for _, p := range pods.Items {
		backends[p.Name] = true
	}
	for _, host := range []string{lab.HostClient, lab.HostExternal} {
		var last string
		labsuite.WaitFor(t, 30*time.Second, "the LoadBalancer IP answering "+host, func() (bool, string) {
			r, err := l.Get(ctx, host, netip.AddrPortFrom(lbIP, 80), 2*time.Second)
			if err != nil {
				return false, err.Error()
			}
			last = r.Backend
			return backends[r.Backend], "answered by " + r.Backend
		})
		t.Logf("%s reached %s: backend %s", host, lbIP, last)
	}

	// From inside the pod network, through Herald's data plane on the pod's node: the ClusterIP,
	// and a NodePort on another node.
	s, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := l.Nodes()
	for i, url := range []string{
		fmt.Sprintf("http://%s/", netip.AddrPortFrom(netip.MustParseAddr(s.Spec.ClusterIP), 80)),
		fmt.Sprintf("http://%s/", netip.AddrPortFrom(nodes[1].IPv4, uint16(s.Spec.Ports[0].NodePort))),
	} {
		name := fmt.Sprintf("get-%d", i)
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, lab.GetterPod(ns, name, nodes[0].Name, url), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		labsuite.WaitFor(t, 90*time.Second, "pod "+name+" on "+nodes[0].Name+" reaching "+url, func() (bool, string) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if p.Status.Phase == corev1.PodFailed {
				t.Fatalf("pod %s failed: %s", name, podLog(l, p))
			}
			return p.Status.Phase == corev1.PodSucceeded, string(p.Status.Phase)
		})
	}
}

// webService creates an L2 pool, a 2-replica backend Deployment named name in namespace default
// and a LoadBalancer Service in front of it, and returns the Service's IPv4 LoadBalancer IP once
// both endpoints are Ready.
func webService(t *testing.T, l *lab.Lab, cs kubernetes.Interface, dyn dynamic.Interface, name string) netip.Addr {
	t.Helper()
	ctx := t.Context()
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "kl-"+name, map[string]any{"addresses": []any{lab.L2PoolV4}})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "kl-"+name, map[string]any{"ipAddressPools": []any{"kl-" + name}})
	const ns = "default"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, lab.BackendDeployment(ns, name, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := lab.LoadBalancerService(ns, name)
	svc.Spec.Selector = map[string]string{"app": name}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.AppsV1().Deployments(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	var lbIP netip.Addr
	labsuite.WaitFor(t, 2*time.Minute, "an IPv4 LoadBalancer IP and two ready endpoints", func() (bool, string) {
		s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is4() {
				lbIP = a
			}
		}
		ready := readyEndpoints(ctx, cs, ns, name)
		return lbIP.IsValid() && ready == 2, fmt.Sprintf("ingress %v, ready endpoints %d; %s", s.Status.LoadBalancer.Ingress, ready, podSummary(ctx, cs, ns))
	})
	return lbIP
}

// announcer flushes the client's neighbour entry for ip, sends one request to it, and returns the
// node whose MAC the client then resolved ip to (with a description for failure messages).
func announcer(ctx context.Context, l *lab.Lab, ip netip.Addr) (string, string) {
	if _, err := l.Exec(ctx, lab.HostClient, "ip", "neigh", "flush", "to", ip.String()); err != nil {
		return "", err.Error()
	}
	if _, err := l.Get(ctx, lab.HostClient, netip.AddrPortFrom(ip, 80), 2*time.Second); err != nil {
		return "", err.Error()
	}
	out, err := l.Exec(ctx, lab.HostClient, "ip", "neigh", "show", "to", ip.String())
	if err != nil {
		return "", err.Error()
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			if h := l.HostByMAC(f[i+1]); h != nil {
				return h.Name, "resolved to " + h.Name
			}
		}
	}
	return "", "neighbour entry: " + strings.TrimSpace(string(out))
}

// TestCordonKeepsAndExcludeLabelMoves: `kubectl cordon` is not an exclusion: the node keeps
// answering for the IP (its speaker and data plane still run, and a move would break the
// connections through it; Kubernetes' service controller keeps unschedulable nodes in load
// balancers since v1.19). The node.kubernetes.io/exclude-from-external-load-balancers label moves
// the IP off the node, and it stays reachable; undone, the node may announce again.
func TestCordonKeepsAndExcludeLabelMoves(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := t.Context()
	heraldInstalled(t, l, cs)
	ip := webService(t, l, cs, dyn, "cordon")
	var owner string
	labsuite.WaitFor(t, 30*time.Second, "one node answering ARP for "+ip.String(), func() (bool, string) {
		var desc string
		owner, desc = announcer(ctx, l, ip)
		return owner != "", desc
	})
	patch := func(p string) {
		if _, err := cs.CoreV1().Nodes().Patch(ctx, owner, types.MergePatchType, []byte(p), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	patch(`{"spec":{"unschedulable":true}}`)
	// The speakers see the cordon within a second; five more show it changed nothing.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if now, desc := announcer(ctx, l, ip); now != "" && now != owner {
			t.Fatalf("cordon of %s: %s moved (%s); a cordon is not an exclusion", owner, ip, desc)
		}
	}
	patch(`{"spec":{"unschedulable":null}}`)

	patch(`{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":""}}}`)
	took := labsuite.WaitFor(t, 30*time.Second, "exclude label of "+owner+" moving "+ip.String(), func() (bool, string) {
		now, desc := announcer(ctx, l, ip)
		return now != "" && now != owner, desc
	})
	t.Logf("exclude label of %s: IP moved in %s", owner, took.Round(time.Millisecond))
	patch(`{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":null}}}`)
}

// TestSpeakerPodDeletedMovesNothing: deleting the announcing node's speaker pod is a restart (the
// DaemonSet recreates it on the same node): the node's kernel answers for the IP while no speaker
// runs there (failover.restartHold, 30 s by default), the new speaker takes it back, and the IP
// never moves; a client keeps being answered through that node all along (docs/l2.md rule 8).
func TestSpeakerPodDeletedMovesNothing(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := t.Context()
	heraldInstalled(t, l, cs)
	ip := webService(t, l, cs, dyn, "restart")
	var owner string
	labsuite.WaitFor(t, 30*time.Second, "one node answering ARP for "+ip.String(), func() (bool, string) {
		var desc string
		owner, desc = announcer(ctx, l, ip)
		return owner != "", desc
	})
	const hold = 15 * time.Second // the chart's default failover.restartHold
	pods, err := cs.CoreV1().Pods(lab.HeraldNamespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + owner})
	if err != nil {
		t.Fatal(err)
	}
	var speaker string
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Name, "herald-speaker-") {
			speaker = p.Name
		}
	}
	if speaker == "" {
		t.Fatalf("no speaker pod on %s: %s", owner, podSummary(ctx, cs, lab.HeraldNamespace))
	}
	deleted := time.Now()
	if err := cs.CoreV1().Pods(lab.HeraldNamespace).Delete(ctx, speaker, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Until the DaemonSet's new pod on that node is Ready, the client keeps resolving the IP and
	// making a request through it: always answered, always by the same node.
	observations, unanswered := 0, 0
	var ready time.Duration
	for {
		got, desc := announcer(ctx, l, ip)
		observations++
		switch {
		case got == "":
			unanswered++
			t.Logf("%v after the delete: %s", time.Since(deleted).Round(time.Millisecond), desc)
		case got != owner:
			t.Fatalf("%v after %s's speaker pod was deleted, %s answers for %s: the restart moved it", time.Since(deleted).Round(time.Millisecond), owner, got, ip)
		}
		ds, err := cs.AppsV1().DaemonSets(lab.HeraldNamespace).Get(ctx, "herald-speaker", metav1.GetOptions{})
		if err == nil && ds.Status.NumberReady == int32(len(l.Nodes())) && ds.Status.UpdatedNumberScheduled == int32(len(l.Nodes())) && time.Since(deleted) > 3*time.Second {
			ready = time.Since(deleted)
			break
		}
		if time.Since(deleted) > hold {
			t.Fatalf("the new speaker pod was not Ready within the %v hold: %s", hold, podSummary(ctx, cs, lab.HeraldNamespace))
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("speaker pod %s on %s deleted; the DaemonSet's new one Ready after %v; %d observations, %d unanswered, none by another node",
		speaker, owner, ready.Round(time.Millisecond), observations, unanswered)
	if unanswered > 0 {
		t.Errorf("%d of %d requests to %s were not answered during the restart", unanswered, observations, ip)
	}
	// The new speaker answers itself and takes the address back from the kernel.
	labsuite.WaitFor(t, 30*time.Second, ip.String()+" no longer held in "+owner+"'s kernel", func() (bool, string) {
		out, err := l.Exec(ctx, owner, "ip", "-o", "addr", "show")
		if err != nil {
			return false, err.Error()
		}
		return !strings.Contains(string(out), " "+ip.String()+"/32 "), string(out)
	})
	if got, desc := announcer(ctx, l, ip); got != owner {
		t.Errorf("after the restart %s is answered by %q (%s), want %s", ip, got, desc, owner)
	}
}

// TestKubeletStoppedNodeKeepsAnnouncing: a node whose kubelet stops goes NotReady (the node
// lifecycle controller, within the lab's 16 s grace period); as docs/concepts.md says, its speaker,
// still alive, keeps announcing the IP, and the Service stays reachable through it while the pods
// on that node leave the endpoints. Resumed, the node is Ready again.
func TestKubeletStoppedNodeKeepsAnnouncing(t *testing.T) {
	l := labsuite.Lab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := t.Context()
	heraldInstalled(t, l, cs)
	ip := webService(t, l, cs, dyn, "notready")
	var owner string
	labsuite.WaitFor(t, 30*time.Second, "one node answering ARP for "+ip.String(), func() (bool, string) {
		var desc string
		owner, desc = announcer(ctx, l, ip)
		return owner != "", desc
	})
	if err := l.SignalKubelet(owner, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := l.SignalKubelet(owner, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	took := labsuite.WaitFor(t, time.Minute, owner+" NotReady after its kubelet stopped", func() (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, owner, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return !nodeReady(n), "still Ready"
	})
	t.Logf("%s NotReady %s after its kubelet stopped", owner, took.Round(time.Millisecond))
	// Pods on the NotReady node leave the endpoints (their Ready condition goes False).
	labsuite.WaitFor(t, time.Minute, "no ready endpoint left on "+owner, func() (bool, string) {
		slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=notready"})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.NodeName != nil && *e.NodeName == owner && e.Conditions.Ready != nil && *e.Conditions.Ready {
					return false, "a ready endpoint on " + owner
				}
			}
		}
		return true, ""
	})
	// Still announced by the same node, for 5 s, and answering whenever there is a ready endpoint.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		now, desc := announcer(ctx, l, ip)
		if now != owner && readyEndpoints(ctx, cs, "default", "notready") > 0 {
			t.Fatalf("%s stopped announcing %s while NotReady with its speaker alive: %s", owner, ip, desc)
		}
	}
	resume()
	labsuite.WaitFor(t, time.Minute, owner+" Ready again", func() (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, owner, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), "not Ready yet"
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

var heraldOnce struct {
	sync.Mutex
	done bool
}

// heraldInstalled installs Herald with helm into the suite's lab (once: the tests share it) and
// waits until its speakers and controller are Ready.
func heraldInstalled(t *testing.T, l *lab.Lab, cs kubernetes.Interface) {
	t.Helper()
	heraldOnce.Lock()
	defer heraldOnce.Unlock()
	if heraldOnce.done {
		return
	}
	ctx := t.Context()
	out, err := l.InstallHerald()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	took := labsuite.WaitFor(t, 4*time.Minute, "Herald's speakers and controller Ready", func() (bool, string) {
		ds, err := cs.AppsV1().DaemonSets(lab.HeraldNamespace).Get(ctx, "herald-speaker", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		d, err := cs.AppsV1().Deployments(lab.HeraldNamespace).Get(ctx, "herald-controller", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ds.Status.NumberReady == int32(len(l.Nodes())) && d.Status.ReadyReplicas >= 1,
			fmt.Sprintf("speakers ready %d/%d, controllers ready %d; %s", ds.Status.NumberReady, len(l.Nodes()), d.Status.ReadyReplicas, podSummary(ctx, cs, lab.HeraldNamespace))
	})
	t.Logf("helm install to Herald Ready: %s", took.Round(time.Millisecond))
	heraldOnce.done = true
}

// TestUnreadyBackendLeavesDataPlane: a backend whose readiness probe starts failing is gone from
// Herald's data plane within a second of the EndpointSlice update (by the real endpointslice
// controller) that marks it not ready, and comes back when it is Ready again. Reached from the
// client through a NodePort, with a new connection per request.
func TestUnreadyBackendLeavesDataPlane(t *testing.T) {
	l := labsuite.Lab(t)
	cs, _ := labsuite.Clients(t, l)
	ctx := t.Context()
	heraldInstalled(t, l, cs)

	const ns, name = "default", "readiness"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, lab.BackendDeployment(ns, name, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := lab.LoadBalancerService(ns, name)
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Selector = map[string]string{"app": name}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, 2*time.Minute, "two ready endpoints", func() (bool, string) {
		n := readyEndpoints(ctx, cs, ns, name)
		return n == 2, fmt.Sprintf("%d ready; %s", n, podSummary(ctx, cs, ns))
	})
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods: %v %v", pods, err)
	}
	victim, other := pods.Items[0], pods.Items[1].Name
	nodePort := netip.AddrPortFrom(l.Nodes()[0].IPv4, uint16(svc.Spec.Ports[0].NodePort))
	seen := func(want string, within time.Duration) {
		labsuite.WaitFor(t, within, want+" answering through "+nodePort.String(), func() (bool, string) {
			r, err := l.Get(ctx, lab.HostClient, nodePort, time.Second)
			if err != nil {
				return false, err.Error()
			}
			return r.Backend == want, "answered by " + r.Backend
		})
	}
	seen(victim.Name, 30*time.Second)
	seen(other, 30*time.Second)

	w, err := cs.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	setReady(t, l, victim.Status.PodIP, false)
	var updated time.Time
	for updated.IsZero() {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("EndpointSlice watch ended")
			}
			if es, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
				for _, e := range es.Endpoints {
					if e.TargetRef != nil && e.TargetRef.Name == victim.Name && e.Conditions.Ready != nil && !*e.Conditions.Ready {
						updated = time.Now()
					}
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no EndpointSlice update marking %s not ready within 30 s of its probe failing", victim.Name)
		}
	}
	// Every request for 3 s: the last answer from the unready backend must come within 1 s.
	var lastVictim time.Time
	answers := map[string]int{}
	for time.Since(updated) < 3*time.Second {
		r, err := l.Get(ctx, lab.HostClient, nodePort, time.Second)
		if err != nil {
			answers["error: "+err.Error()]++
			continue
		}
		answers[r.Backend]++
		if r.Backend == victim.Name {
			lastVictim = time.Now()
		}
	}
	if gone := lastVictim.Sub(updated); !lastVictim.IsZero() && gone > time.Second {
		t.Errorf("the unready backend still answered %s after its EndpointSlice update (answers in 3 s: %v)", gone.Round(time.Millisecond), answers)
	}
	if answers[other] == 0 {
		t.Errorf("no answer from the ready backend %s after the update: %v", other, answers)
	}
	t.Logf("unready backend: last answer %s after the EndpointSlice update (answers in 3 s: %v)", lastVictim.Sub(updated).Round(time.Millisecond), answers)

	setReady(t, l, victim.Status.PodIP, true)
	seen(victim.Name, 30*time.Second)
}

// setReady makes the backend at podIP pass or fail its readiness probe (lab.ReadyPath).
func setReady(t *testing.T, l *lab.Lab, podIP string, ready bool) {
	t.Helper()
	c, err := l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s%s?ready=%t", netip.AddrPortFrom(netip.MustParseAddr(podIP), lab.BackendPort), lab.ReadyPath, ready)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// readyEndpoints counts the ready endpoints of a Service's EndpointSlices (written by the real
// endpointslice controller).
func readyEndpoints(ctx context.Context, cs kubernetes.Interface, ns, svc string) int {
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range slices.Items {
		if s.AddressType != "IPv4" {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				n++
			}
		}
	}
	return n
}

// podSummary says in one line what each pod of a namespace is doing (for failure messages).
func podSummary(ctx context.Context, cs kubernetes.Interface, ns string) string {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, p := range pods.Items {
		state := string(p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				state += " " + c.Name + ":" + w.Reason + " " + w.Message
			}
			if c.RestartCount > 0 {
				state += fmt.Sprintf(" %s restarts:%d", c.Name, c.RestartCount)
			}
		}
		parts = append(parts, p.Name+"@"+p.Spec.NodeName+" "+state)
	}
	return "pods: " + strings.Join(parts, "; ")
}

// podLog returns a pod's container logs as the kubelet wrote them.
func podLog(l *lab.Lab, p *corev1.Pod) string {
	files, _ := filepath.Glob(filepath.Join(l.Dir, "nodes", "*", "pod-logs", p.Namespace+"_"+p.Name+"_*", "*", "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s", f, data)
	}
	return b.String()
}
