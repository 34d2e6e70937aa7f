package lab

// Real nodes (Config.Kubelet, `lab up --kubelet`): every node namespace runs a container runtime
// of its own (Debian's containerd with runc) and a kubelet built from the k8s.io/kubernetes module
// (hack/k8s-node-bins.sh); pods get their network from the CNI bridge plugin (Debian's
// containernetworking-plugins) on the node's cni0. Why each setting is what it is: README.md,
// "Real nodes".

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/charts"
)

// Where the node runtime's parts are on this machine (Debian's packages).
const (
	cniBinDir = "/usr/lib/cni"
	cgroupFS  = "/sys/fs/cgroup"
	// ClusterDNS is the ClusterIP kubelets give pods as their name server (the kube-dns Service).
	ClusterDNS = "10.96.0.10"
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain = "cluster.local"
)

// KubeletRole and ContainerdRole name a node's processes in State.Processes.
func KubeletRole(node string) string    { return "kubelet/" + node }
func ContainerdRole(node string) string { return "containerd/" + node }

// nodeDir holds everything of one real node: containerd's root, state and socket, the CNI config
// and IPAM state, the kubelet's root directory and the pods' logs.
func (l *Lab) nodeDir(node string) string { return filepath.Join(l.Dir, "nodes", node) }

// ContainerdSocket is the node's containerd socket (for `ctr -a SOCK -n k8s.io ...`).
func (l *Lab) ContainerdSocket(node string) string {
	return filepath.Join(l.nodeDir(node), "containerd.sock")
}

// cgroupRoot is the node's own cgroup (the kubelet's cgroupRoot), in every cgroup v1 hierarchy:
// the kubelets of several nodes share this machine's cgroups.
func (l *Lab) cgroupRoot(node string) string { return l.Topology.Prefix + node }

// nodeTools checks that what a real node runs is installed, and says how to get what is not.
func (l *Lab) nodeTools() error {
	var missing []string
	for tool, fix := range map[string]string{
		"containerd": "apt-get install containerd (hack/deps.sh)",
		"runc":       "apt-get install runc (hack/deps.sh)",
		"ctr":        "apt-get install containerd (hack/deps.sh)",
		"nsenter":    "apt-get install util-linux",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+": "+fix)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			missing = append(missing, "CNI plugin "+filepath.Join(cniBinDir, plugin)+": apt-get install containernetworking-plugins (hack/deps.sh)")
		}
	}
	if _, err := os.Stat(l.kubelet()); err != nil {
		missing = append(missing, l.kubelet()+": build it with hack/k8s-node-bins.sh")
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("real nodes need:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

func (l *Lab) kubelet() string { return filepath.Join(filepath.Dir(l.Kubectl), "kubelet") }

// inNodeNetns prefixes a command so it runs in the node's network namespace and nothing else:
// `ip netns exec` also makes a mount namespace and remounts /sys, which hides the cgroup mounts
// the kubelet and runc need. nsenter execs the command, so the pid we record is its own.
func inNodeNetns(ns string, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + filepath.Join(netnsDir, ns), "--"}, argv...)
}

// startRealNodes starts containerd on every node, imports the images, then starts the kubelets
// and waits until every Node is Ready because its kubelet says so.
func (l *Lab) startRealNodes(ctx context.Context, c kubernetes.Interface, images []string) error {
	for _, n := range l.Nodes() {
		if err := l.makeCgroupRoot(l.cgroupRoot(n.Name)); err != nil {
			return fmt.Errorf("node %s: cgroup root: %w", n.Name, err)
		}
		if err := l.startContainerd(ctx, n); err != nil {
			return fmt.Errorf("node %s: containerd: %w", n.Name, err)
		}
	}
	for _, n := range l.Nodes() {
		for _, img := range images {
			if out, err := run(ctx, "", "ctr", "-a", l.ContainerdSocket(n.Name), "-n", "k8s.io",
				"images", "import", "--no-unpack=false", img); err != nil {
				return fmt.Errorf("node %s: importing %s: %w\n%s", n.Name, img, err, out)
			}
		}
	}
	for _, n := range l.Nodes() {
		if err := l.startKubelet(n); err != nil {
			return fmt.Errorf("node %s: kubelet: %w", n.Name, err)
		}
	}
	return l.waitNodesReady(ctx, c, 2*time.Minute)
}

// makeCgroupRoot creates name in every cgroup v1 hierarchy (the kubelet's cgroupfs driver wants
// its cgroupRoot to exist in each); cpuset's needs the parent's cpus and mems before any task
// can join it.
func (l *Lab) makeCgroupRoot(name string) error {
	hierarchies, err := cgroupHierarchies(false)
	if err != nil {
		return err
	}
	if len(hierarchies) == 0 {
		return fmt.Errorf("no cgroup v1 hierarchy under %s: the lab's kubelets use the cgroupfs driver on cgroup v1", cgroupFS)
	}
	for _, h := range hierarchies {
		dir := filepath.Join(h, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies lists the cgroup v1 hierarchies mounted under /sys/fs/cgroup and, withV2, the
// v2 one of a hybrid machine ("unified", where the kubelet's cgroup driver makes its cgroups too).
func cgroupHierarchies(withV2 bool) ([]string, error) {
	entries, err := os.ReadDir(cgroupFS)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		dir := filepath.Join(cgroupFS, e.Name())
		if !e.IsDir() {
			continue
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			continue
		}
		// CGROUP_SUPER_MAGIC (v1), CGROUP2_SUPER_MAGIC (v2)
		if st.Type == 0x27e0eb || (withV2 && st.Type == 0x63677270) {
			out = append(out, dir)
		}
	}
	return out, nil
}

// startContainerd writes the node's containerd configuration and CNI network, starts containerd
// inside the node's namespace (so the CNI plugins it runs wire pods there) and waits for its
// socket to answer.
func (l *Lab) startContainerd(ctx context.Context, n *Host) error {
	dir := l.nodeDir(n.Name)
	cniConf := filepath.Join(dir, "cni")
	for _, d := range []string{cniConf, filepath.Join(dir, "containerd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	conflist, err := cniConflist(n, filepath.Join(dir, "cni-ipam"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-herald-lab.conflist"), conflist, 0o644); err != nil {
		return err
	}
	confPath := filepath.Join(dir, "containerd", "config.toml")
	if err := os.WriteFile(confPath, []byte(containerdConfig(dir, l.ContainerdSocket(n.Name), cniConf)), 0o644); err != nil {
		return err
	}
	// A UTS namespace of its own named after the node: host-network pods share containerd's, and
	// Kubernetes' e2e suite expects their hostname to be the node's name (not this machine's).
	argv := append([]string{"unshare", "--uts", "--", "sh", "-c", `hostname "$0" && exec "$@"`, n.Name},
		inNodeNetns(n.Netns, "containerd", "--config", confPath)...)
	if err := l.startRaw(ContainerdRole(n.Name), nil, argv...); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := run(ctx, "", "ctr", "-a", l.ContainerdSocket(n.Name), "version")
		if err == nil {
			return nil
		}
		p := l.Processes[ContainerdRole(n.Name)]
		if !p.Alive() || time.Now().After(deadline) {
			return fmt.Errorf("containerd did not start (%w); its log %s ends:\n%s", err, p.Log, p.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// containerdConfig is containerd 1.6's configuration for one node: its own root, state and
// sockets (several containerds share this machine), the CRI plugin with the lab's pause image and
// CNI network, and pod network namespaces kept under its own state directory (so `lab down` finds
// and removes them).
func containerdConfig(dir, socket, cniConf string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, filepath.Join(dir, "containerd", "root"), filepath.Join(dir, "containerd", "state"), socket, socket+".ttrpc",
		filepath.Join(dir, "containerd", "opt"), PauseImage, cniBinDir, cniConf)
}

// cniConflist is the node's pod network: the bridge plugin on cni0 (which the lab made with the
// gateway addresses), addresses from the node's pod CIDRs by host-local (its state in ipamDir,
// not the machine-wide /var/lib/cni), no masquerade (pods are routed in the lab, so backends see
// real client addresses), hairpin on (a pod reaching itself through a Service).
func cniConflist(n *Host, ipamDir string) ([]byte, error) {
	gw4, gw6 := podGateways(n)
	type rng struct {
		Subnet     string `json:"subnet"`
		RangeStart string `json:"rangeStart"`
		Gateway    string `json:"gateway"`
	}
	// Pods from .100 up: the lab's own backend namespaces (PodsPerNode) take .11 and on.
	start4 := strings.TrimSuffix(n.PodCIDRs[0], "0/24") + "100"
	start6 := strings.TrimSuffix(n.PodCIDRs[1], "/64") + "100"
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "herald-lab",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": podBridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{
				"type": "host-local", "dataDir": ipamDir,
				"ranges": [][]rng{
					{{Subnet: n.PodCIDRs[0], RangeStart: start4, Gateway: gw4.String()}},
					{{Subnet: n.PodCIDRs[1], RangeStart: start6, Gateway: gw6.String()}},
				},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}},
			},
		}},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// startKubelet writes the node's kubelet configuration and starts the kubelet inside the node's
// namespace, registering the Node the lab created (with its pod CIDRs).
func (l *Lab) startKubelet(n *Host) error {
	dir := l.nodeDir(n.Name)
	root := filepath.Join(dir, "kubelet")
	for _, d := range []string{root, filepath.Join(dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	resolv := filepath.Join(dir, "resolv.conf")
	// Pods with dnsPolicy Default get this; nothing resolves outside the lab.
	if err := os.WriteFile(resolv, []byte("options ndots:1\n"), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(conf, []byte(kubeletConfig(dir, l.ContainerdSocket(n.Name), "/"+l.cgroupRoot(n.Name), resolv)), 0o644); err != nil {
		return err
	}
	return l.startRaw(KubeletRole(n.Name), nil, inNodeNetns(n.Netns, l.kubelet(),
		"--config="+conf,
		"--kubeconfig="+l.Kubeconfig(),
		"--root-dir="+root,
		"--hostname-override="+n.Name,
		"--node-ip="+n.IPv4.String()+","+n.IPv6.String(),
		"--v=1")...)
}

// kubeletConfig is one node's KubeletConfiguration. See README.md, "Real nodes", for why each
// setting is needed on this kind of machine.
func kubeletConfig(dir, socket, cgroupRoot, resolv string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%[1]s
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%%"
  imagefs.available: "0%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDNS: [%[3]s]
clusterDomain: %[4]s
resolvConf: %[5]s
podLogsDir: %[6]s
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
nodeLeaseDurationSeconds: 8
serializeImagePulls: false
shutdownGracePeriod: 0s
`, socket, cgroupRoot, ClusterDNS, ClusterDomain, resolv, filepath.Join(dir, "pod-logs"))
}

// waitNodesReady waits until every lab Node reports Ready, or says which did not and why.
func (l *Lab) waitNodesReady(ctx context.Context, c kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var notReady []string
		for _, n := range l.Nodes() {
			node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil || !nodeReady(node) {
				notReady = append(notReady, n.Name)
			}
			if p := l.Processes[KubeletRole(n.Name)]; !p.Alive() {
				return fmt.Errorf("the kubelet of %s exited; its log %s ends:\n%s", n.Name, p.Log, p.Tail(3000))
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, name := range notReady {
				p := l.Processes[KubeletRole(name)]
				fmt.Fprintf(&b, "\n--- kubelet of %s (%s):\n%s", name, p.Log, p.Tail(2000))
			}
			return fmt.Errorf("nodes %s not Ready after %s%s", strings.Join(notReady, ", "), timeout, b.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// downRealNodes removes what real nodes leave outside their namespaces, from the names alone (it
// works without state.json): the pods' processes (in the nodes' cgroups, in network namespaces
// of containerd's), every mount under the nodes' directory (kubelet volumes, container root
// filesystems, the pods' network namespaces), the cgroups, and the kubelets' links in
// /var/log/containers. Kubelets and containerds are stopped before (they are lab processes).
func downRealNodes(dir, prefix string) error {
	var errs []error
	hierarchies, err := cgroupHierarchies(true)
	if err != nil {
		return err
	}
	pattern := NetnsPattern(prefix)
	var cgroups []string // every lab node's cgroup directory, in every hierarchy, deepest first
	for _, h := range hierarchies {
		entries, err := os.ReadDir(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if e.IsDir() && pattern.MatchString(e.Name()) && strings.HasPrefix(strings.TrimPrefix(e.Name(), prefix), "node") {
				_ = filepath.WalkDir(filepath.Join(h, e.Name()), func(p string, d os.DirEntry, err error) error {
					if err == nil && d.IsDir() {
						cgroups = append(cgroups, p)
					}
					return nil
				})
			}
		}
	}
	sort.Slice(cgroups, func(i, j int) bool { return len(cgroups[i]) > len(cgroups[j]) })
	// Kill what runs in them until they are empty (a container's init may fork while we look).
	deadline := time.Now().Add(10 * time.Second)
	for {
		alive := 0
		for _, cg := range cgroups {
			b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					alive++
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if alive == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	nodesDir := filepath.Join(dir, "nodes")
	if err := unmountUnder(nodesDir); err != nil {
		errs = append(errs, err)
	}
	for _, cg := range cgroups {
		if err := os.Remove(cg); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("cgroup %s: %w", cg, err))
		}
	}
	// The kubelet links every container's log into /var/log/containers (a fixed path).
	if links, err := filepath.Glob("/var/log/containers/*.log"); err == nil {
		for _, link := range links {
			if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, nodesDir+"/") {
				_ = os.Remove(link)
			}
		}
	}
	if err := os.RemoveAll(nodesDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			errs = append(errs, fmt.Errorf("umount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// InstallHerald installs Herald into the lab's real nodes as a user does: `helm install` of the
// chart (its templates, values, RBAC, probes, init step) with the given --set values, from the
// image imported into every node (Config.Images). Herald's pods reach the API server directly
// (chart value apiServer.host): no kube-proxy runs, and the ClusterIP of the `kubernetes` Service
// works only once the speakers program it.
func (l *Lab) InstallHerald(values ...string) (string, error) {
	return l.helmHerald("install", charts.Install, values)
}

// UpgradeHerald runs `helm upgrade` of the release InstallHerald made to the built-in chart, with
// the same API server values and the given --set values (the release's others are not reused).
func (l *Lab) UpgradeHerald(values ...string) (string, error) {
	return l.helmHerald("upgrade", charts.Upgrade, values)
}

func (l *Lab) helmHerald(verb string, helm func(wrap func([]string) []string, kubeconfig string, sets ...string) (string, error), values []string) (string, error) {
	if !l.Kubelet {
		return "", errors.New("the lab has no real nodes (lab up --kubelet): the chart's pods cannot run")
	}
	out, err := helm(l.inControlPlane, l.Kubeconfig(), append(l.HeraldAPIServerValues(), values...)...)
	if err != nil {
		return out, fmt.Errorf("helm %s: %w", verb, err)
	}
	return out, nil
}

// HeraldAPIServerValues are the --set values that point Herald's pods at the lab's API server
// (no kube-proxy: the kubernetes Service's ClusterIP works only once the speakers run).
func (l *Lab) HeraldAPIServerValues() []string {
	return []string{"apiServer.host=" + l.Topology.Host(HostControlPlane).IPv4.String(), fmt.Sprintf("apiServer.port=%d", APIServerPort)}
}

// Helm runs helm with args against the lab's cluster from the control plane's namespace, in
// Herald's release namespace (herald-system): `helm rollback herald 1`, or an install of another
// chart directory (an older release of Herald's).
func (l *Lab) Helm(args ...string) (string, error) {
	return charts.RunHelmWrapped(l.inControlPlane, append(args, "--namespace", HeraldNamespace, "--kubeconfig", l.Kubeconfig())...)
}

func (l *Lab) inControlPlane(argv []string) []string {
	return inNetns(l.Topology.Host(HostControlPlane).Netns, argv...)
}

// BackendDeployment is a Deployment of the lab's backend on real nodes: replicas pods from
// BackendImage (no pull), each answering as its pod name on BackendPort, Ready while it answers
// ReadyPath there (its readiness probe, every second; PUT ReadyPath?ready=false fails it), labelled
// app=name.
func BackendDeployment(namespace, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	env := func(name, field string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: field}}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name: "backend", Image: BackendImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{LabBinaryInImage, BackendCommand, "--name", "$(POD_NAME)", "--node", "$(NODE_NAME)"},
						Env:     []corev1.EnvVar{env("POD_NAME", "metadata.name"), env("NODE_NAME", "spec.nodeName")},
						Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: BackendPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ReadyPath, Port: intstr.FromInt32(BackendPort)}},
							PeriodSeconds: 1, FailureThreshold: 1,
						},
					}},
				},
			},
		},
	}
}

// GetterPod is a pod that fetches url from inside the pod network (GetCommand) and succeeds
// once it got an answer, on the named node.
func GetterPod(namespace, name, node, url string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "get", Image: BackendImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{LabBinaryInImage, GetCommand, url},
			}},
		},
	}
}

// SpeakerPodProcess returns the PID of the speaker container's process on a real node: the chart's
// /usr/local/bin/speaker running in that node's network namespace (the DaemonSet's pod is
// host-network). Demos and tests stop it (SIGSTOP) to fail a node's speaker without the graceful
// restart a pod delete is.
func (l *Lab) SpeakerPodProcess(node string) (int, error) {
	n, err := l.node(node)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(filepath.Join(netnsDir, n.Netns))
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no inode", n.Netns)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		if ns, err := os.Readlink(filepath.Join(p, "ns", "net")); err != nil || ns != want {
			continue // gone meanwhile, or another namespace
		}
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if argv[0] == "/usr/local/bin/speaker" && !slices.Contains(argv, "--prepare-sysctls") {
			return strconv.Atoi(filepath.Base(p))
		}
	}
	return 0, fmt.Errorf("no speaker container process in %s's namespace %s", node, n.Netns)
}
