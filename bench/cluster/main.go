// Command cluster measures Herald on the lab's real nodes (issue 15): kubelets, containerd and CNI
// on every node, Herald installed with `helm install` from its image, backends as a Deployment
// whose EndpointSlices come from Kubernetes' endpointslice controller.
//
//   - helm install -> first Service reachable: a fresh lab (`lab up --kubelet`, images imported,
//     no Herald) where a 2-replica backend Deployment and its LoadBalancer Service already run;
//     from the start of `helm install` (then the IPAddressPool and L2Advertisement, created as
//     soon as helm returns, as a user would) to the first HTTP answer from the Service's IP at the
//     client on the nodes' segment.
//   - readiness false -> endpoint gone, Herald vs kube-proxy v1.34.4 (nftables mode) in the same
//     cluster: kube-proxy runs on one node beside Herald's speaker, each in its own nftables table
//     (Herald's data plane set to nftables: auto would stand down where kube-proxy's rules are).
//     Both read the same EndpointSlice update. Per trial one backend's readiness probe starts
//     failing; to the commit, seen by an nftables monitor in that node's namespace, after which
//     the proxy's table no longer DNATs to the pod, from two moments: a watch seeing the pod's
//     Ready condition turn false (the kubelet's status update: the endpointslice controller's
//     time is included), and a watch seeing the EndpointSlice update (the proxy's own time). All
//     moments are taken by this program: when it lags (a loaded machine) the intervals are off by
//     its lag, the same for both proxies. -trials trials (default 100), the two backends in turn;
//     each starts 1.5 s after the previous one was undone, so that kube-proxy's
//     --nftables-min-sync-period (1 s) is not held against it by the benchmark's own last change.
//
// Needs root and what `lab up --kubelet` needs (hack/deps.sh, hack/k8s-node-bins.sh, helm, make
// build images); everything runs in herald-cb-* namespaces.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bench/internal/labprobe"
	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
)

const (
	labPrefix = "herald-cb-"
	namespace = "bench-cluster"
	service   = "web"
	command   = "BENCH_ONLY=cluster make bench"
	// The node where kube-proxy runs beside Herald's speaker.
	proxyNode = "node3"
	// Quiet time after a trial is undone, longer than kube-proxy's --nftables-min-sync-period.
	settle = 1500 * time.Millisecond
)

var lbIP = netip.MustParseAddr("10.77.0.200")

func main() {
	trials := flag.Int("trials", 100, "readiness trials")
	bin := flag.String("bin", "bin", "Herald's binaries and images (make build images)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "herald-cluster-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(dir, *bin, *trials); err != nil {
		log.Fatalf("bench/cluster: %v", err)
	}
}

func run(dir, bin string, trials int) error {
	ctx := context.Background()
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	images, _ := filepath.Glob(filepath.Join(bin, "images", "herald-*.tar"))
	if len(images) == 0 {
		return fmt.Errorf("no Herald image in %s/images: run make images", bin)
	}
	labDir := filepath.Join(dir, "lab")
	began := time.Now()
	l, err := lab.Up(ctx, lab.Config{Dir: labDir, Prefix: labPrefix, BinDir: bin, Kubelet: true, Images: images,
		Logf: func(format string, a ...any) { fmt.Fprintf(os.Stderr, "lab: "+format+"\n", a...) }})
	defer func() { _ = lab.Down(context.Background(), labDir, labPrefix) }()
	if err != nil {
		return fmt.Errorf("lab up --kubelet: %w", err)
	}
	fmt.Fprintf(os.Stderr, "lab up --kubelet in %s\n", time.Since(began).Round(time.Millisecond))
	cs, err := l.Client()
	if err != nil {
		return err
	}
	if err := backends(ctx, cs); err != nil {
		return err
	}
	if err := installToReachable(ctx, l); err != nil {
		return err
	}
	return readiness(ctx, l, cs, trials)
}

// backends creates the Deployment (2 replicas, readiness probe every second) and its LoadBalancer
// Service asking for lbIP, and waits for both endpoints to be ready: what a user has running when
// they install a load balancer.
func backends(ctx context.Context, cs kubernetes.Interface) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, lab.BackendDeployment(namespace, service, 2), metav1.CreateOptions{}); err != nil {
		return err
	}
	svc := lab.LoadBalancerService(namespace, service)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: lbIP.String()}
	svc.Spec.Selector = map[string]string{"app": service}
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	return poll(ctx, 3*time.Minute, "two ready backends", func() bool { return len(readyPods(ctx, cs)) == 2 })
}

// installToReachable times helm install -> first answer from the Service's IP at the client.
func installToReachable(ctx context.Context, l *lab.Lab) error {
	reach, err := l.HTTPProbe(lab.HostClient, netip.AddrPortFrom(lbIP, 80), 500*time.Millisecond)
	if err != nil {
		return err
	}
	var helmTook time.Duration
	took, err := labprobe.Timed(ctx, 5*time.Minute, func(ctx context.Context) error {
		start := time.Now()
		// nftables, not auto: kube-proxy joins one node later (readiness), and auto stands down
		// where kube-proxy's rules are.
		if out, err := l.InstallHerald("dataplane.mode=nftables"); err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		helmTook = time.Since(start)
		// The chart's CRDs are established when helm returns; a user applies the pool next.
		return poll(ctx, time.Minute, "the IPAddressPool and L2Advertisement created", func() bool {
			_, err := labprobe.SetUpL2(ctx, l, namespace)
			return err == nil
		})
	}, reach)
	if err != nil {
		return fmt.Errorf("helm install -> Service reachable: %w", err)
	}
	for _, f := range []labprobe.Figure{
		{Figure: "Herald: helm install -> first LoadBalancer Service answering the client (fresh kubelet lab, images imported)", Value: took.Seconds(), Unit: "s"},
		{Figure: "Herald: helm install command (returns before the pods run)", Value: helmTook.Seconds(), Unit: "s"},
	} {
		f.Command = command
		b, _ := json.Marshal(f)
		fmt.Printf("BENCH %s\n", b)
	}
	return nil
}

// proxy is one service proxy's nftables table on proxyNode.
type proxy struct {
	name  string
	table *nftables.Table
}

var proxies = []proxy{
	{"Herald", &nftables.Table{Family: nftables.TableFamilyINet, Name: "herald"}},
	{"kube-proxy v1.34.4 nftables", &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "kube-proxy"}},
}

// dnatsTo says whether any rule of p's table loads ip as an immediate (the address of a `dnat to
// ip:port`: both proxies send a Service's traffic to an endpoint that way).
func (p proxy) dnatsTo(c *nftables.Conn, ip netip.Addr) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(p.table.Family)
	if err != nil {
		return false, err
	}
	want := ip.AsSlice()
	for _, ch := range chains {
		if ch.Table.Name != p.table.Name {
			continue
		}
		rules, err := c.GetRules(p.table, ch)
		if err != nil {
			return false, err
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if imm, ok := e.(*expr.Immediate); ok && bytes.Equal(imm.Data, want) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// readiness runs the trials: per backend pod in turn, its readiness probe fails; from the Ready
// condition turning false (watch) to each proxy's table no longer DNATing to it.
func readiness(ctx context.Context, l *lab.Lab, cs kubernetes.Interface, trials int) error {
	if err := l.StartKubeProxy(proxyNode); err != nil {
		return err
	}
	node := l.Topology.Host(proxyNode)
	h, err := netns.GetFromName(node.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
	if err != nil {
		return err
	}
	defer func() { _ = conn.CloseLasting() }() // a netlink socket: nothing to do if closing fails
	// Every commit in the node's namespace (rules, chains, elements, by either proxy) wakes a check.
	mon := nftables.NewMonitor(nftables.WithMonitorAction(nftables.MonitorActionAny), nftables.WithMonitorObject(nftables.MonitorObjectAny))
	monConn, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
	if err != nil {
		return err
	}
	events, err := monConn.AddMonitor(mon)
	if err != nil {
		_ = monConn.CloseLasting() // the error that matters is err
		return err
	}
	// The monitor's events are read at once (a reader that lags loses the netlink socket to
	// ENOBUFS) and turned into wake-ups; a trial checks the tables on each.
	wake := make(chan struct{}, 1)
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for range events {
			select {
			case wake <- struct{}{}:
			default: // a wake-up is pending: its check will see this commit too
			}
		}
	}()
	defer func() {
		// The monitor's reader ends when its (lasting) socket closes; then events closes, which
		// ends the forwarding goroutine.
		_ = mon.Close()
		_ = monConn.CloseLasting() // a netlink socket: nothing to do if closing fails
		<-forwarded
	}()

	pods := readyPods(ctx, cs)
	if len(pods) != 2 {
		return fmt.Errorf("want 2 ready backends, have %d", len(pods))
	}
	present := func(ip netip.Addr) (bool, error) {
		for _, p := range proxies {
			if ok, err := p.dnatsTo(conn, ip); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	}
	for _, p := range pods {
		if err := poll(ctx, 2*time.Minute, "both proxies DNATing to "+p.name+" on "+proxyNode, func() bool {
			ok, _ := present(p.ip)
			return ok
		}); err != nil {
			return err
		}
	}
	fromPod := make([][]time.Duration, len(proxies))   // Ready=false seen -> gone
	fromSlice := make([][]time.Duration, len(proxies)) // EndpointSlice update seen -> gone
	var sliceLag []time.Duration
	for i := range trials {
		victim := pods[i%len(pods)]
		t, err := trial(ctx, l, cs, conn, wake, victim)
		if err != nil {
			return fmt.Errorf("trial %d (%s): %w", i, victim.name, err)
		}
		for j := range proxies {
			fromPod[j] = append(fromPod[j], t.gone[j].Sub(t.notReady))
			fromSlice[j] = append(fromSlice[j], t.gone[j].Sub(t.slice))
		}
		sliceLag = append(sliceLag, t.slice.Sub(t.notReady))
		if err := setReady(ctx, l, victim.ip, true); err != nil {
			return err
		}
		if err := poll(ctx, time.Minute, victim.name+" back in both proxies", func() bool {
			ok, _ := present(victim.ip)
			return ok && slices.ContainsFunc(readyPods(ctx, cs), func(p pod) bool { return p.name == victim.name })
		}); err != nil {
			return err
		}
		time.Sleep(settle)
	}
	for j, p := range proxies {
		labprobe.Report(command, fmt.Sprintf("%s: backend Ready=false (pod watch) -> no DNAT to it in the node's table, of %d", p.name, trials), fromPod[j], "")
		labprobe.Report(command, fmt.Sprintf("%s: EndpointSlice update (watch) -> no DNAT to the backend in the node's table, of %d", p.name, trials), fromSlice[j], "")
	}
	labprobe.Report(command, fmt.Sprintf("endpointslice controller: backend Ready=false (pod watch) -> EndpointSlice update (watch), of %d", trials), sliceLag, "")
	return nil
}

type pod struct {
	name string
	ip   netip.Addr
}

// times is one trial's moments, each as this program saw it.
type times struct {
	notReady, slice time.Time
	gone            []time.Time // per proxy
}

func trial(ctx context.Context, l *lab.Lab, cs kubernetes.Interface, conn *nftables.Conn, wake <-chan struct{}, victim pod) (times, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	podW, err := cs.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + victim.name})
	if err != nil {
		return times{}, err
	}
	defer podW.Stop()
	sliceW, err := cs.DiscoveryV1().EndpointSlices(namespace).Watch(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return times{}, err
	}
	defer sliceW.Stop()
	select { // a commit before this trial (the last one's undoing) wakes nothing
	case <-wake:
	default:
	}
	if err := setReady(ctx, l, victim.ip, false); err != nil {
		return times{}, err
	}
	t := times{gone: make([]time.Time, len(proxies))}
	// A check takes the time it starts: the commit that woke it is no later, so a figure is at most
	// the wake-up's latency too long, never too short.
	check := func() error {
		at := time.Now()
		for j, p := range proxies {
			if !t.gone[j].IsZero() {
				continue
			}
			has, err := p.dnatsTo(conn, victim.ip)
			if err != nil {
				return err
			}
			if !has {
				t.gone[j] = at
			}
		}
		return nil
	}
	// A check every 50 ms besides the monitor's wake-ups: a lost netlink event must not hang a trial.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for t.notReady.IsZero() || t.slice.IsZero() || slices.ContainsFunc(t.gone, time.Time.IsZero) {
		select {
		case ev, ok := <-podW.ResultChan():
			if !ok {
				return t, errors.New("pod watch ended")
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && !podReady(p) && t.notReady.IsZero() {
				t.notReady = time.Now()
			}
		case ev, ok := <-sliceW.ResultChan():
			if !ok {
				return t, errors.New("EndpointSlice watch ended")
			}
			if es, ok := ev.Object.(*discoveryv1.EndpointSlice); ok && t.slice.IsZero() && notReadyIn(es, victim.name) {
				t.slice = time.Now()
			}
		case <-wake:
			if err := check(); err != nil {
				return t, err
			}
		case <-tick.C:
			if err := check(); err != nil {
				return t, err
			}
		case <-ctx.Done():
			return t, fmt.Errorf("within 30 s: not ready seen %v, slice %v, gone %v", !t.notReady.IsZero(), !t.slice.IsZero(), t.gone)
		}
	}
	return t, nil
}

func notReadyIn(es *discoveryv1.EndpointSlice, name string) bool {
	for _, e := range es.Endpoints {
		if e.TargetRef != nil && e.TargetRef.Name == name && e.Conditions.Ready != nil && !*e.Conditions.Ready {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readyPods(ctx context.Context, cs kubernetes.Interface) []pod {
	list, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + service})
	if err != nil {
		return nil
	}
	var out []pod
	for i := range list.Items {
		p := &list.Items[i]
		if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil && podReady(p) && p.DeletionTimestamp == nil {
			out = append(out, pod{name: p.Name, ip: ip})
		}
	}
	slices.SortFunc(out, func(a, b pod) int { return cmp.Compare(a.name, b.name) })
	return out
}

// setReady makes the backend at ip pass or fail its readiness probe (lab.ReadyPath), from the client.
func setReady(ctx context.Context, l *lab.Lab, ip netip.Addr, ready bool) error {
	c, err := l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s%s?ready=%t", netip.AddrPortFrom(ip, lab.BackendPort), lab.ReadyPath, ready)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// poll checks cond every 100 ms until it holds or limit passes.
func poll(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", limit, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
