// Package lab builds a whole bare-metal cluster inside network namespaces on one machine, as root:
// a switch (a bridge in a namespace of its own), a real control plane (etcd, kube-apiserver,
// kube-controller-manager and the Herald controller), N nodes each running the real speaker, backend
// "pods" behind each node, a BIRD 2 router with an upstream segment, and two clients (one on the
// segment, one behind the router). Nothing of it lives in the machine's own namespace and nothing
// routes out. It is the test bed of the end-to-end tests and the demo (`bin/lab`).
//
// A lab is named by its directory (state.json, kubeconfig, logs) and its namespace prefix; tests use
// their own of both, never the user's demo lab.
package lab

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/proc"
)

// Defaults for the user's lab (`bin/lab up`).
const (
	DefaultDir    = "/tmp/herald-lab"
	DefaultPrefix = "herald-"
)

// Config says what lab to build.
type Config struct {
	Dir         string // default $HERALD_LAB_DIR, else DefaultDir
	Prefix      string // namespace prefix, default DefaultPrefix
	Nodes       int    // default 3
	PodsPerNode int    // backend pods per node, default 1
	// BinDir holds the Herald binaries (controller, speaker); those missing are not started.
	BinDir string
	// CRDDir holds the CustomResourceDefinitions to install (config/crd); empty: none.
	CRDDir string
	// Backend is the command line that runs RunBackendIfAsked's server (this program by default);
	// the lab appends the backend's arguments.
	Backend []string
	// Binaries are the Kubernetes binaries; zero means the cached ones (hack/k8s-bins.sh).
	Binaries controlplane.Binaries
	// ChartValues are helm --set values (KEY=VALUE) for the chart whose controller and speaker
	// containers the lab runs (chart.go); none: the chart's defaults.
	ChartValues []string
	// Kubelet makes every node a real Kubernetes node (kubelet.go): containerd, runc and CNI in
	// the node's namespace, a kubelet, and kube-scheduler plus kube-controller-manager's default
	// controllers in the control plane. The lab then runs no Herald process and no backend of
	// its own: Herald is installed with helm (InstallHerald), backends are Deployments.
	Kubelet bool
	// Images are image tarballs (docker-save or OCI layout, e.g. make images' Herald image) to
	// import into every real node's containerd, besides the lab's own (pause, backend).
	Images []string
	// NodePortRange is the API server's --service-node-port-range; empty: NodePortRange.
	// Kubernetes' e2e suite wants the default 30000-32767 (it checks every NodePort is in it).
	NodePortRange string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// State is everything a lab is made of; it is saved as state.json so `lab down`, `lab exec` and
// tests in other processes find the lab again.
type State struct {
	Dir          string                     `json:"dir"`
	Topology     *Topology                  `json:"topology"`
	ControlPlane *controlplane.ControlPlane `json:"controlPlane,omitempty"`
	Kubectl      string                     `json:"kubectl"`
	BirdSocket   string                     `json:"birdSocket"`
	SecretFile   string                     `json:"secretFile"` // the speakers' shared key
	BinDir       string                     `json:"binDir,omitempty"`
	Backend      []string                   `json:"backend"`
	// Chart holds the pod specs the chart renders for the ChartValues: the controller and the
	// speakers run as their containers say (chart.go).
	Chart       charts.Workloads `json:"chart"`
	ChartValues []string         `json:"chartValues,omitempty"`
	// TempDirs were made outside Dir (kubeconfigs for processes running as another user).
	TempDirs []string `json:"tempDirs,omitempty"`
	// Kubelet: the nodes are real Kubernetes nodes (Config.Kubelet).
	Kubelet bool `json:"kubelet,omitempty"`
	// Processes by role: "bird", "controller", "speaker/node1", "backend/node1-pod1".
	Processes map[string]proc.Process `json:"processes"`
}

// Lab is a running lab.
type Lab struct {
	State
	logf func(format string, args ...any)
}

// Process roles in State.Processes.
const (
	RoleBird       = "bird"
	RoleController = "controller"
)

// SpeakerRole and BackendRole name the per-host processes in State.Processes.
func SpeakerRole(node string) string { return "speaker/" + node }
func BackendRole(pod string) string  { return "backend/" + pod }

func (c *Config) defaults() error {
	if c.Dir == "" {
		c.Dir = os.Getenv("HERALD_LAB_DIR")
	}
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Kubelet {
		c.PodsPerNode = 0 // backends are Deployments
	} else if c.PodsPerNode == 0 {
		c.PodsPerNode = 1
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if len(c.Backend) == 0 {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		c.Backend = []string{self}
	}
	if c.Binaries.KubeDir == "" {
		b, err := controlplane.CachedBinaries()
		if err != nil {
			return err
		}
		c.Binaries = b
	}
	return nil
}

// Up builds a lab, first removing what an earlier lab with the same directory and prefix left. On
// error the partial lab is left in place for inspection; Down removes it.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces)")
	}
	began := time.Now()
	if err := Down(ctx, cfg.Dir, cfg.Prefix); err != nil {
		return nil, fmt.Errorf("clearing an earlier lab: %w", err)
	}
	topo, err := NewTopology(cfg.Prefix, cfg.Nodes, cfg.PodsPerNode)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	l := &Lab{logf: cfg.Logf, State: State{
		Dir: cfg.Dir, Topology: topo, Kubectl: cfg.Binaries.Kubectl(),
		BirdSocket: filepath.Join(cfg.Dir, "bird.ctl"), SecretFile: filepath.Join(cfg.Dir, "speaker-key", "key"),
		BinDir: cfg.BinDir, Backend: cfg.Backend, Processes: map[string]proc.Process{},
		Kubelet: cfg.Kubelet,
	}}
	var images []string
	if cfg.Kubelet {
		if err := l.nodeTools(); err != nil {
			return nil, err
		}
		labImages := filepath.Join(cfg.Dir, "images", "lab.tar")
		if err := writeLabImages(filepath.Join(cfg.BinDir, "lab"), labImages); err != nil {
			return nil, fmt.Errorf("the lab's pause and backend images: %w", err)
		}
		images = append([]string{labImages}, cfg.Images...)
	}
	if err := l.RenderChart(cfg.ChartValues...); err != nil {
		return nil, err
	}
	if err := l.save(); err != nil {
		return nil, err
	}

	l.logf("network: %d namespaces (%s after clearing an earlier lab)", len(topo.Hosts), time.Since(began).Round(time.Millisecond))
	if err := addNetns(ctx, topo.Hosts); err != nil {
		return l, err
	}

	// The apiserver takes seconds to get ready: start the control plane as soon as its namespace has
	// a loopback (etcd listens there; the apiserver binds the wildcard address), and wire the
	// network, start backends and BIRD while it boots.
	cpHost := topo.Host(HostControlPlane)
	if _, err := run(ctx, "", "ip", "-n", cpHost.Netns, "link", "set", "lo", "up"); err != nil {
		return l, err
	}
	l.logf("control plane starting: etcd, kube-apiserver, kube-controller-manager in %s", cpHost.Netns)
	type cpResult struct {
		cp  *controlplane.ControlPlane
		err error
	}
	cpCtx, cancelCP := context.WithCancel(ctx)
	defer cancelCP()
	cpDone := make(chan cpResult, 1)
	go func() {
		cp, err := controlplane.Start(cpCtx, controlplane.Config{
			Dir:           filepath.Join(cfg.Dir, "cp"),
			Binaries:      cfg.Binaries,
			Address:       cpHost.IPv4.String(),
			BindAddress:   "::", // inside herald-cp only: eth0 and lo
			ServiceCIDRs:  ServiceCIDRV4 + "," + ServiceCIDRV6,
			NodePortRange: cmp.Or(cfg.NodePortRange, NodePortRange),
			Wrap:          func(argv []string) []string { return inNetns(cpHost.Netns, argv...) },
			Dial:          DialerIn(cpHost.Netns),
			RealNodes:     cfg.Kubelet,
			// The kubelets renew their leases every 2 s (kubeletConfig): a stopped kubelet's
			// node goes NotReady within seconds instead of Kubernetes' default 50 s.
			NodeMonitorGracePeriod: nodeMonitorGracePeriod(cfg.Kubelet),
		})
		cpDone <- cpResult{cp, err}
	}()
	if err := applyPlan(ctx, topo.Plan()); err != nil {
		cancelCP()
		<-cpDone
		return l, err
	}
	l.logf("network wired (%s)", time.Since(began).Round(time.Millisecond))

	l.logf("backends and router")
	var startErr error
	for _, p := range topo.HostsOf(KindPod) {
		if startErr = l.startBackend(p); startErr != nil {
			break
		}
	}
	if startErr == nil {
		startErr = l.startBird(ctx)
	}
	res := <-cpDone
	l.ControlPlane = res.cp
	if err := errors.Join(startErr, res.err); err != nil {
		return l, err
	}
	// The contract's place for the kubeconfig: $HERALD_LAB_DIR/kubeconfig.
	kc, err := os.ReadFile(res.cp.Kubeconfig)
	if err != nil {
		return l, err
	}
	if err := os.WriteFile(l.Kubeconfig(), kc, 0o600); err != nil {
		return l, err
	}
	if err := l.save(); err != nil {
		return l, err
	}
	client, err := l.Client()
	if err != nil {
		return l, err
	}
	l.logf("apiserver ready (%s); cluster objects: Nodes, namespace %s, CRDs", time.Since(began).Round(time.Millisecond), HeraldNamespace)
	if err := l.registerNodes(ctx, client); err != nil {
		return l, err
	}
	if err := ensureNamespace(ctx, client, HeraldNamespace); err != nil {
		return l, err
	}
	if cfg.Kubelet {
		cfg.CRDDir = "" // helm install brings the chart's CRDs: the product path installs them
	}
	if err := l.installCRDs(ctx, cfg.CRDDir); err != nil {
		return l, err
	}
	if cfg.Kubelet {
		l.logf("real nodes: containerd, images, kubelets")
		if err := l.startRealNodes(ctx, client, images); err != nil {
			return l, err
		}
		l.logf("lab up with real nodes in %s", time.Since(began).Round(10*time.Millisecond))
		return l, l.save()
	}

	if err := l.writeSecret(); err != nil {
		return l, err
	}
	if l.hasBinary("controller") {
		if err := l.StartController(); err != nil {
			return l, err
		}
	}
	if l.hasBinary("speaker") {
		for _, n := range topo.HostsOf(KindNode) {
			if err := l.StartSpeaker(ctx, n.Name); err != nil {
				return l, err
			}
		}
	}
	for role, p := range l.Processes {
		if !p.Alive() {
			l.logf("WARNING: %s exited right after starting; see %s", role, p.Log)
		}
	}
	l.logf("lab up in %s", time.Since(began).Round(10*time.Millisecond))
	return l, l.save()
}

// Load finds the lab whose state is in dir.
func Load(dir string) (*Lab, error) {
	if dir == "" {
		dir = os.Getenv("HERALD_LAB_DIR")
	}
	if dir == "" {
		dir = DefaultDir
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no lab in %s (run `lab up`)", dir)
		}
		return nil, err
	}
	l := &Lab{logf: func(string, ...any) {}}
	if err := json.Unmarshal(b, &l.State); err != nil {
		return nil, fmt.Errorf("%s/state.json: %w", dir, err)
	}
	return l, nil
}

// Down removes a lab: its processes (Herald's first, so speakers withdraw while the router still
// listens, then the rest), every namespace matching the prefix (killing whatever still runs in them),
// and the files it wrote in dir. It works from the namespace names alone when state.json is gone.
func Down(ctx context.Context, dir, prefix string) error {
	var errs []error
	if l, err := Load(dir); err == nil {
		if l.Topology != nil && l.Topology.Prefix != prefix {
			return fmt.Errorf("%s holds a lab with prefix %q, not %q", dir, l.Topology.Prefix, prefix)
		}
		var roles []string
		for role := range l.Processes {
			roles = append(roles, role)
		}
		sort.Slice(roles, func(i, j int) bool { return stopOrder(roles[i]) < stopOrder(roles[j]) })
		for _, role := range roles {
			if err := l.Processes[role].Stop(3 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if l.ControlPlane != nil {
			l.ControlPlane.Stop()
		}
		for _, d := range l.TempDirs {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names, err := listNetns(prefix)
	if err != nil {
		return err
	}
	var dels []string
	for _, ns := range names {
		out, err := run(ctx, "", "ip", "netns", "pids", ns)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		dels = append(dels, "netns del "+ns)
	}
	if len(dels) > 0 {
		if _, err := run(ctx, strings.Join(dels, "\n")+"\n", "ip", "-force", "-batch", "-"); err != nil {
			errs = append(errs, err)
		}
	}
	// Real nodes' pods, mounts and cgroups (after their kubelets, containerds and shims are gone).
	if err := downRealNodes(dir, prefix); err != nil {
		errs = append(errs, err)
	}
	// Only what the lab writes: dir may be a directory the user chose for other things too.
	for _, f := range []string{"state.json", "kubeconfig", "bird.conf", "bird.ctl", "bird.pid", "bird.log",
		"speaker-key", "logs", "cp", prometheusDir, "images"} {
		if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(dir) // only if empty
	return errors.Join(errs...)
}

// stopOrder: kubelets first (so they restart nothing), Herald's processes, backends, then the
// router and the container runtimes.
func stopOrder(role string) int {
	switch {
	case strings.HasPrefix(role, "kubelet/"):
		return -1
	case strings.HasPrefix(role, "speaker/"):
		return 0
	case role == RoleController:
		return 1
	case strings.HasPrefix(role, "backend/"):
		return 2
	default:
		return 3
	}
}

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l.State, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.Dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.Dir, "state.json"))
}

// Host returns a host by name ("node1", "client", "router", ...).
func (l *Lab) Host(name string) (*Host, error) {
	if h := l.Topology.Host(name); h != nil {
		return h, nil
	}
	var names []string
	for _, h := range l.Topology.Hosts {
		names = append(names, h.Name)
	}
	return nil, fmt.Errorf("no host %q in the lab (hosts: %s)", name, strings.Join(names, ", "))
}

// Nodes returns the node hosts in order.
func (l *Lab) Nodes() []*Host { return l.Topology.HostsOf(KindNode) }

// Pods returns the backend pod hosts in order.
func (l *Lab) Pods() []*Host { return l.Topology.HostsOf(KindPod) }

// Kubeconfig is the path of the admin kubeconfig (its server is reachable only from lab hosts).
func (l *Lab) Kubeconfig() string { return filepath.Join(l.Dir, "kubeconfig") }

// RESTConfig returns an admin client configuration whose connections are opened inside the control
// plane's namespace, for Go programs in the machine's own namespace.
func (l *Lab) RESTConfig() (*rest.Config, error) {
	if l.ControlPlane == nil {
		return nil, errors.New("the lab has no control plane")
	}
	return l.ControlPlane.RESTConfig(DialerIn(l.Topology.Host(HostControlPlane).Netns))
}

// Client returns an admin clientset (see RESTConfig).
func (l *Lab) Client() (kubernetes.Interface, error) {
	rc, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

func (l *Lab) writeSecret() error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.SecretFile), 0o700); err != nil {
		return err
	}
	return os.WriteFile(l.SecretFile, []byte(hex.EncodeToString(raw)+"\n"), 0o400)
}

func (l *Lab) hasBinary(name string) bool {
	if l.BinDir == "" {
		return false
	}
	st, err := os.Stat(filepath.Join(l.BinDir, name))
	return err == nil && st.Mode().IsRegular()
}

// nodeMonitorGracePeriod is how long a real node may miss its kubelet's heartbeats before it
// goes NotReady; zero (Kubernetes' default) without real nodes.
func nodeMonitorGracePeriod(kubelet bool) time.Duration {
	if kubelet {
		return 16 * time.Second
	}
	return 0
}
