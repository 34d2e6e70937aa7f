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
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
	"github.com/heraldlb/herald/internal/testenv"
)

const prefix = "herald-kl-"

var (
	theLab  *lab.Lab
	missing string
	labErr  error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binDir := os.Getenv("HERALD_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(repoRoot(), "bin")
	}
	var images []string
	if missing = prerequisites(); missing == "" {
		images, missing = imageTarballs(binDir)
	}
	if missing != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", prefix+"suite-")
	if err != nil {
		labErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	cfg := lab.Config{Dir: filepath.Join(dir, "lab"), Prefix: prefix, BinDir: binDir, Kubelet: true, Images: images,
		Logf: func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	theLab, labErr = lab.Up(ctx, cfg)
	fmt.Printf("kubelet suite: lab up in %s (err: %v)\n", time.Since(began).Round(time.Millisecond), labErr)
	code := m.Run()
	if code != 0 || labErr != nil {
		dumpLogs(cfg.Dir)
	}
	began = time.Now()
	if err := lab.Down(context.Background(), cfg.Dir, prefix); err != nil {
		fmt.Fprintln(os.Stderr, "kubelet suite: lab down:", err)
		code = 1
	}
	fmt.Printf("kubelet suite: lab down in %s\n", time.Since(began).Round(time.Millisecond))
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "kubelet suite: lab down left %s\n", strings.Join(left, ", "))
		code = 1
	}
	return code
}

func prerequisites() string {
	if os.Geteuid() != 0 {
		return "real nodes need root (network namespaces, cgroups, containerd)"
	}
	for _, tool := range []string{"ip", "bridge", "bird", "birdc", "containerd", "runc", "ctr", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (hack/deps.sh: bird2 containerd runc containernetworking-plugins)"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return "CNI plugins not installed (apt-get install containernetworking-plugins)"
	}
	bins, err := controlplane.CachedBinaries()
	if err != nil {
		return err.Error()
	}
	for _, b := range []string{"kubelet", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(bins.KubeDir, b)); err != nil {
			return filepath.Join(bins.KubeDir, b) + " missing: build it with hack/k8s-node-bins.sh"
		}
	}
	if _, err := charts.Helm(); err != nil {
		return err.Error()
	}
	return ""
}

// imageTarballs returns Herald's image tarball(s) from make images, or why there are none.
func imageTarballs(binDir string) ([]string, string) {
	if _, err := os.Stat(filepath.Join(binDir, "lab")); err != nil {
		return nil, filepath.Join(binDir, "lab") + " missing: run make build (the lab's pause and backend images are made of it)"
	}
	tars, _ := filepath.Glob(filepath.Join(binDir, "images", "herald-*.tar"))
	if len(tars) == 0 {
		return nil, "no Herald image in " + filepath.Join(binDir, "images") + ": run make images"
	}
	return tars, ""
}

func theRealLab(t *testing.T) *lab.Lab {
	t.Helper()
	switch {
	case missing != "":
		testenv.Missing(t, "%s", missing)
	case labErr != nil:
		t.Fatalf("lab up --kubelet: %v", labErr)
	}
	return theLab
}

func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// dumpLogs prints the tail of the lab's process logs (kubelets, containerds, control plane) and
// of every pod's container logs, for a failed run.
func dumpLogs(dir string) {
	var files []string
	for _, pat := range []string{"logs/*.log", "cp/*.log", "nodes/*/pod-logs/*/*/*.log"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Printf("----- %s (tail)\n%s\n", f, b)
	}
}

// TestHelmInstallServesLoadBalancer is the user's first path: helm install, a Deployment exposed as
// a LoadBalancer Service, reached from the segment's client and from behind the router; a pod
// reaches its ClusterIP and a NodePort (no kube-proxy: Herald's data plane serves them all).
func TestHelmInstallServesLoadBalancer(t *testing.T) {
	l := theRealLab(t)
	cs, dyn := labsuite.Clients(t, l)
	ctx := context.Background()

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

	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "kl-l2", map[string]any{"addresses": []any{lab.L2PoolV4}})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "kl-l2", map[string]any{"ipAddressPools": []any{"kl-l2"}})

	const ns = "default"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, lab.BackendDeployment(ns, "web", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := lab.LoadBalancerService(ns, "web")
	svc.Spec.Selector = map[string]string{"app": "web"}
	if _, err = cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var lbIP netip.Addr
	labsuite.WaitFor(t, 2*time.Minute, "an IPv4 LoadBalancer IP and two ready endpoints", func() (bool, string) {
		s, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is4() {
				lbIP = a
			}
		}
		ready := readyEndpoints(ctx, cs, ns, "web")
		return lbIP.IsValid() && ready == 2, fmt.Sprintf("ingress %v, ready endpoints %d; %s", s.Status.LoadBalancer.Ingress, ready, podSummary(ctx, cs, ns))
	})

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

// leftovers lists what of the real nodes is still on the machine: namespaces, cgroups and mounts
// named with the suite's prefix.
func leftovers() []string {
	var left []string
	for _, pat := range []string{"/run/netns/" + prefix + "*", "/sys/fs/cgroup/*/" + prefix + "*"} {
		m, _ := filepath.Glob(pat)
		left = append(left, m...)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, prefix) {
				left = append(left, "mount "+line)
			}
		}
	}
	return left
}
