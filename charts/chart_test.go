package charts

// The chart's tests: CRDs in sync with config/crd, helm lint, helm template with several value
// sets (schema, security contexts, flags the binaries really have), and a real helm install and
// upgrade against a real kube-apiserver. Tests needing helm skip without it (hack/helm.sh builds
// it), or fail with HERALD_REQUIRE_REAL=1.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/internal/realapi"
	"github.com/heraldlb/herald/internal/testenv"
)

const chartDir = "herald"

// requireHelm skips the test when helm is not built (fails with HERALD_REQUIRE_REAL=1).
func requireHelm(t *testing.T) {
	t.Helper()
	if _, err := Helm(); err != nil {
		testenv.Missing(t, "%v", err)
	}
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	requireHelm(t)
	return RunHelm(args...)
}

func TestCRDsInSyncWithConfig(t *testing.T) {
	src, _ := filepath.Glob(filepath.Join(realapi.RepoRoot(), "config", "crd", "*.yaml"))
	dst, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		sort.Strings(out)
		return out
	}
	if len(src) == 0 || strings.Join(names(src), " ") != strings.Join(names(dst), " ") {
		t.Fatalf("charts/herald/crds has %v, config/crd has %v: run hack/chart-crds.sh", names(dst), names(src))
	}
	for _, p := range src {
		a, _ := os.ReadFile(p)
		b, _ := os.ReadFile(filepath.Join(chartDir, "crds", filepath.Base(p)))
		if !bytes.Equal(a, b) {
			t.Errorf("charts/herald/crds/%s differs from config/crd: run hack/chart-crds.sh", filepath.Base(p))
		}
	}
}

func TestLint(t *testing.T) {
	for _, set := range []string{"", "dataplane.mode=off,metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true"} {
		args := []string{"lint", "--strict", chartDir}
		if set != "" {
			args = append(args, "--set", set)
		}
		if out, err := runHelm(t, args...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// render renders the chart with the --set values.
func render(t *testing.T, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	requireHelm(t)
	objs, err := Render(sets...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func daemonSet(t *testing.T, objs []*unstructured.Unstructured, name string) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	if err := As(objs, "DaemonSet", name, &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

func deployment(t *testing.T, objs []*unstructured.Unstructured, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := As(objs, "Deployment", name, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	k := map[string]int{}
	for _, o := range objs {
		k[o.GetKind()]++
	}
	return k
}

func TestTemplateDefaults(t *testing.T) {
	objs := render(t)
	k := kinds(objs)
	for kind, n := range map[string]int{"Deployment": 1, "DaemonSet": 2, "ServiceAccount": 3, "ClusterRole": 2, "ClusterRoleBinding": 2,
		"Role": 3, "RoleBinding": 3, "Secret": 1, "PodDisruptionBudget": 1, "PriorityClass": 1, "Job": 1} {
		if k[kind] != n {
			t.Errorf("%d %s rendered, want %d (all: %v)", k[kind], kind, n, k)
		}
	}
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		if k[kind] != 0 {
			t.Errorf("%s rendered although disabled by default", kind)
		}
	}

	ctrl := deployment(t, objs, "herald-controller")
	if *ctrl.Spec.Replicas != 2 {
		t.Errorf("controller replicas = %d, want 2", *ctrl.Spec.Replicas)
	}
	c := ctrl.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"--mode=native", "--lb-class=herald.io/lb", "--take-classless=true", "--leader-elect=true", "--namespace=herald-system", "--metrics-addr=:9650"}
	if strings.Join(c.Args, " ") != strings.Join(wantArgs, " ") {
		t.Errorf("controller args %v, want %v", c.Args, wantArgs)
	}
	if c.SecurityContext.Capabilities == nil || len(c.SecurityContext.Capabilities.Add) != 0 {
		t.Errorf("controller container: security context missing: %+v", c)
	}
	checkProbes(t, "controller", c)
	if ctrl.Spec.Template.Spec.PriorityClassName != "herald" {
		t.Errorf("controller priority class %q", ctrl.Spec.Template.Spec.PriorityClassName)
	}

	spk := daemonSet(t, objs, "herald-speaker")
	ps := spk.Spec.Template.Spec
	if !ps.HostNetwork || ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("speaker: hostNetwork %v, dnsPolicy %s", ps.HostNetwork, ps.DNSPolicy)
	}
	sc := ps.Containers[0]
	checkProbes(t, "speaker", sc)
	checkPrivilegedOnlyForSysctls(t, ps, "auto")
	if len(ps.Tolerations) != 1 || ps.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("speaker tolerations %+v: want to run on every node", ps.Tolerations)
	}
	if ps.Volumes[0].Secret == nil || ps.Volumes[0].Secret.SecretName != "herald-speaker-key" {
		t.Errorf("speaker key volume %+v", ps.Volumes[0])
	}

	cleanup := daemonSet(t, objs, "herald-cleanup")
	if cleanup.Annotations["helm.sh/hook"] != "post-delete" || len(cleanup.Spec.Template.Spec.InitContainers) != 2 ||
		cleanup.Spec.Template.Spec.InitContainers[1].Command[1] != "--cleanup" {
		t.Errorf("cleanup hook: %+v", cleanup)
	}
	if fmt.Sprint(cleanup.Spec.Template.Spec.Tolerations) != fmt.Sprint(ps.Tolerations) {
		t.Errorf("cleanup runs on other nodes than the speaker: %v vs %v", cleanup.Spec.Template.Spec.Tolerations, ps.Tolerations)
	}
}

// checkProbes: liveness on /healthz, readiness on /readyz, both on the metrics port (the
// binaries' tests check what those answer).
func checkProbes(t *testing.T, name string, c corev1.Container) {
	t.Helper()
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s %s probe %+v, want GET %s on the metrics port", name, p.kind, p.probe, p.path)
		}
	}
}

// TestRenderWorkloads checks the helper the lab uses to run the binaries as the chart does.
func TestRenderWorkloads(t *testing.T) {
	requireHelm(t)
	w, err := RenderWorkloads("dataplane.mode=off")
	if err != nil {
		t.Fatal(err)
	}
	c, s := w.Controller.Containers[0], w.Speaker.Containers[0]
	if c.Command[0] != "/usr/local/bin/controller" || s.Command[0] != "/usr/local/bin/speaker" || !w.Speaker.HostNetwork {
		t.Errorf("controller %v, speaker %v", c.Command, s.Command)
	}
	if len(s.Env) < 2 || s.Env[0].Name != "NODE_NAME" || s.SecurityContext.Capabilities == nil {
		t.Errorf("speaker env %v, security context %+v", s.Env, s.SecurityContext)
	}
	if ic := w.Cleanup.InitContainers; len(ic) != 2 || ic[1].Name != "cleanup" || strings.Join(ic[1].Command, " ") != "/usr/local/bin/speaker --cleanup --dataplane=off" {
		t.Errorf("cleanup hook init containers %+v", ic)
	}
	w, err = RenderWorkloads("cleanupOnUninstall=false")
	if err != nil || len(w.Cleanup.InitContainers) != 0 || len(w.Speaker.Containers) != 1 {
		t.Errorf("without the cleanup hook: %v, %+v", err, w.Cleanup)
	}
}

// checkPrivilegedOnlyForSysctls checks a speaker pod whose data plane may be IPVS: the speaker
// runs on capabilities, and one privileged init container sets the sysctls, keeping their old
// values in /run/herald.
func checkPrivilegedOnlyForSysctls(t *testing.T, ps corev1.PodSpec, mode string) {
	t.Helper()
	if p := ps.Containers[0].SecurityContext.Privileged; p != nil && *p {
		t.Errorf("speaker container privileged with dataplane.mode=%s", mode)
	}
	if caps := ps.Containers[0].SecurityContext.Capabilities; caps == nil || len(caps.Add) == 0 {
		t.Errorf("speaker container without capabilities: %+v", ps.Containers[0].SecurityContext)
	}
	ic := ps.InitContainers
	if len(ic) != 1 || strings.Join(ic[0].Command, " ") != "/usr/local/bin/speaker --prepare-sysctls --dataplane="+mode ||
		ic[0].SecurityContext.Privileged == nil || !*ic[0].SecurityContext.Privileged {
		t.Fatalf("dataplane.mode=%s: init containers %+v, want one privileged speaker --prepare-sysctls", mode, ic)
	}
	if len(ps.Volumes) != 2 || ps.Volumes[1].HostPath == nil || ps.Volumes[1].HostPath.Path != "/run/herald" ||
		len(ic[0].VolumeMounts) != 1 || ic[0].VolumeMounts[0].MountPath != "/run/herald" {
		t.Errorf("volumes %+v, init mounts %+v: want the key and /run/herald, mounted by the init step", ps.Volumes, ic[0].VolumeMounts)
	}
}

func TestTemplateValueSets(t *testing.T) {
	// Only the IPVS backend needs sysctls (set by an init step); nftables and off have none.
	for _, tc := range []struct{ sets, wantCaps string }{
		{"dataplane.mode=off", "NET_ADMIN,NET_RAW,SYS_NICE,NET_BIND_SERVICE"},
		{"dataplane.mode=nftables", "NET_ADMIN,NET_RAW,SYS_NICE,NET_BIND_SERVICE"},
		{"dataplane.mode=nftables,bgp.enabled=false", "NET_ADMIN,NET_RAW,SYS_NICE"},
	} {
		t.Run(tc.sets+": capabilities instead of privileged", func(t *testing.T) {
			objs := render(t, tc.sets)
			sc := daemonSet(t, objs, "herald-speaker").Spec.Template.Spec.Containers[0].SecurityContext
			if sc.Privileged != nil && *sc.Privileged {
				t.Fatal("speaker privileged")
			}
			var add []string
			for _, c := range sc.Capabilities.Add {
				add = append(add, string(c))
			}
			if strings.Join(add, ",") != tc.wantCaps || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("capabilities: add %v drop %v, want add %s drop ALL", add, sc.Capabilities.Drop, tc.wantCaps)
			}
			ps := daemonSet(t, objs, "herald-speaker").Spec.Template.Spec
			for _, v := range ps.Volumes {
				if v.HostPath != nil {
					t.Errorf("host path %s mounted without the IPVS data plane", v.HostPath.Path)
				}
			}
			if len(ps.InitContainers) != 0 {
				t.Errorf("init containers %+v without the IPVS data plane", ps.InitContainers)
			}
		})
	}
	t.Run("ipvs: a privileged init step sets the sysctls, the speaker runs on capabilities", func(t *testing.T) {
		checkPrivilegedOnlyForSysctls(t, daemonSet(t, render(t, "dataplane.mode=ipvs"), "herald-speaker").Spec.Template.Spec, "ipvs")
	})
	t.Run("dataplane.clusterCIDR and masqueradeAll reach the speaker's flags", func(t *testing.T) {
		args := daemonSet(t, render(t, `dataplane.clusterCIDR=10.244.0.0/16\,fd44::/56`, "dataplane.masqueradeAll=true"),
			"herald-speaker").Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--cluster-cidr=10.244.0.0/16,fd44::/56", "--masquerade-all"} {
			if !slices.Contains(args, want) {
				t.Errorf("speaker args %v lack %s", args, want)
			}
		}
	})
	t.Run("dataplane.nodePortAddresses reaches the speaker's flags (default primary)", func(t *testing.T) {
		for set, want := range map[string]string{"": "--nodeport-addresses=primary",
			`dataplane.nodePortAddresses=10.0.0.0/8\,fd00::/8`: "--nodeport-addresses=10.0.0.0/8,fd00::/8"} {
			var sets []string
			if set != "" {
				sets = append(sets, set)
			}
			args := daemonSet(t, render(t, sets...), "herald-speaker").Spec.Template.Spec.Containers[0].Args
			if !slices.Contains(args, want) {
				t.Errorf("speaker args %v lack %s", args, want)
			}
		}
	})
	t.Run("monitoring on", func(t *testing.T) {
		objs := render(t, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "metrics.grafanaDashboard.enabled=true",
			"metrics.prometheusRule.poolUsageThreshold=0.8")
		k := kinds(objs)
		if k["ServiceMonitor"] != 1 || k["PrometheusRule"] != 1 || k["ConfigMap"] != 1 || k["Service"] != 2 {
			t.Fatalf("kinds %v", k)
		}
		rule := Find(objs, "PrometheusRule", "herald")
		rules, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		text := fmt.Sprint(rules)
		for _, want := range []string{"HeraldPoolNearlyExhausted", "> 0.8", "HeraldBGPSessionDown", "HeraldBFDSessionDown", "HeraldFailoverStorm"} {
			if !strings.Contains(text, want) {
				t.Errorf("PrometheusRule lacks %q", want)
			}
		}
		dash, _, _ := unstructured.NestedString(Find(objs, "ConfigMap", "herald-dashboard").Object, "data", "herald.json")
		if !strings.Contains(dash, `"uid": "herald-overview"`) {
			t.Errorf("dashboard ConfigMap does not hold the dashboard")
		}
	})
	t.Run("apiServer.host: Herald's pods reach the API directly (no kube-proxy)", func(t *testing.T) {
		apiEnv := func(c corev1.Container) string {
			var host, port string
			for _, e := range c.Env {
				switch e.Name {
				case "KUBERNETES_SERVICE_HOST":
					host = e.Value
				case "KUBERNETES_SERVICE_PORT":
					port = e.Value
				}
			}
			return host + ":" + port
		}
		objs := render(t)
		if got := apiEnv(daemonSet(t, objs, "herald-speaker").Spec.Template.Spec.Containers[0]); got != ":" {
			t.Errorf("default speaker env sets the API server: %s", got)
		}
		objs = render(t, "apiServer.host=192.0.2.1", "apiServer.port=8443")
		for what, c := range map[string]corev1.Container{
			"speaker":    daemonSet(t, objs, "herald-speaker").Spec.Template.Spec.Containers[0],
			"controller": deployment(t, objs, "herald-controller").Spec.Template.Spec.Containers[0],
		} {
			if got := apiEnv(c); got != "192.0.2.1:8443" {
				t.Errorf("%s: API server %q, want 192.0.2.1:8443", what, got)
			}
		}
	})
	t.Run("own secret, own priority class, no cleanup, one controller", func(t *testing.T) {
		objs := render(t, "speaker.existingSecret=my-key", "priorityClass.create=false", "speaker.priorityClassName=system-node-critical",
			"cleanupOnUninstall=false", "controller.replicas=1", "loadBalancerClass=example.com/lb", "takeClasslessServices=false")
		k := kinds(objs)
		if k["Secret"] != 0 || k["PriorityClass"] != 0 || k["Job"] != 0 || k["PodDisruptionBudget"] != 0 || k["DaemonSet"] != 1 {
			t.Errorf("kinds %v", k)
		}
		spk := daemonSet(t, objs, "herald-speaker")
		if spk.Spec.Template.Spec.Volumes[0].Secret.SecretName != "my-key" || spk.Spec.Template.Spec.PriorityClassName != "system-node-critical" {
			t.Errorf("speaker: %+v", spk.Spec.Template.Spec)
		}
		args := strings.Join(deployment(t, objs, "herald-controller").Spec.Template.Spec.Containers[0].Args, " ")
		if !strings.Contains(args, "--lb-class=example.com/lb") || !strings.Contains(args, "--take-classless=false") {
			t.Errorf("controller args %s", args)
		}
	})
}

func TestSchemaRejectsTypos(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"controler.replicas=3", "controler"},
		{"dataplane.mode=ebpf", "dataplane.mode"},
		{"speaker.nodeSelecter.a=b", "nodeSelecter"},
		{"logLevel=verbose", "logLevel"},
		{"failover.detectAfter=soon", "detectAfter"},
	} {
		_, err := runHelm(t, "template", "herald", chartDir, "--set", tc.set)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: error %v, want one naming %q", tc.set, err, tc.want)
		}
	}
}

// flagsOf returns the flags a Go binary (std flag package) declares, from its -h output.
func flagsOf(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", bin, "./"+pkg)
	build.Dir = realapi.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("%s does not build yet, its flags cannot be checked: %v\n%s", pkg, err, out)
	}
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	return flags
}

// TestRenderedFlagsExist checks that every flag the chart passes is one the binary has, for the
// default values and for values that switch on the optional flags.
func TestRenderedFlagsExist(t *testing.T) {
	requireHelm(t)
	for _, component := range []struct{ kind, name, pkg string }{
		{"DaemonSet", "herald-speaker", "cmd/speaker"},
		{"Deployment", "herald-controller", "cmd/controller"},
	} {
		t.Run(component.pkg, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(realapi.RepoRoot(), component.pkg)); err != nil {
				t.Skipf("%s does not exist yet", component.pkg)
			}
			have := flagsOf(t, component.pkg)
			check := func(t *testing.T, sets []string, want ...string) {
				objs := render(t, sets...)
				u := Find(objs, component.kind, component.name)
				containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
				args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
				// Init steps run the same binary with flags in their command (speaker --prepare-sysctls).
				flags := slices.Clone(args)
				inits, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "initContainers")
				for _, c := range inits {
					if cmd, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "command"); len(cmd) > 0 &&
						filepath.Base(cmd[0]) == filepath.Base(component.pkg) {
						flags = append(flags, cmd[1:]...)
					}
				}
				var missing []string
				for _, a := range flags {
					name := strings.TrimPrefix(strings.SplitN(a, "=", 2)[0], "--")
					if !have[name] {
						missing = append(missing, "--"+name)
					}
				}
				if len(missing) > 0 {
					t.Errorf("%s lacks flags %v that the chart passes with values %v", component.pkg, missing, sets)
				}
				for _, w := range want {
					if !slices.Contains(args, w) {
						t.Errorf("values %v: args %v lack %s", sets, args, w)
					}
				}
			}
			t.Run("defaults", func(t *testing.T) { check(t, nil) })
			t.Run("data plane off, own class", func(t *testing.T) {
				check(t, []string{"dataplane.mode=off", "loadBalancerClass=x.io/y"}, "--lb-class=x.io/y")
			})
			t.Run("protocols, timing, log level", func(t *testing.T) {
				sets := []string{"l2.enabled=false", "bgp.enabled=false", "failover.detectAfter=500ms", "logLevel=debug"}
				want := []string{"--log-level=debug"}
				if component.pkg == "cmd/speaker" {
					want = append(want, "--l2=false", "--bgp=false", "--failover-detect-after=500ms")
				}
				check(t, sets, want...)
			})
		})
	}
}

// TestInstallAndUpgrade installs the chart into a real kube-apiserver, upgrades it, and checks
// that the speakers' key survived and the upgrade took effect.
func TestInstallAndUpgrade(t *testing.T) {
	requireHelm(t)
	api := realapi.Start(t)
	cs, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	common := []string{"--kubeconfig", api.Kubeconfig, "--namespace", "herald-system"}

	if out, err := runHelm(t, append([]string{"install", "herald", chartDir, "--create-namespace"}, common...)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before := speakerKey(ctx, t, cs)
	if len(before) < 16 {
		t.Fatalf("generated key is %d bytes, want at least 16", len(before))
	}
	d, err := cs.AppsV1().Deployments("herald-system").Get(ctx, "herald-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("installed controller replicas %d", *d.Spec.Replicas)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "herald-speaker", metav1.GetOptions{}); err != nil {
		t.Errorf("speaker ClusterRole: %v", err)
	}

	if out, err := runHelm(t, append([]string{"upgrade", "herald", chartDir, "--set", "controller.replicas=3", "--set", "dataplane.mode=off"}, common...)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if after := speakerKey(ctx, t, cs); !bytes.Equal(before, after) {
		t.Errorf("the speakers' key changed on upgrade")
	}
	d, err = cs.AppsV1().Deployments("herald-system").Get(ctx, "herald-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("upgrade did not apply: controller replicas %d", *d.Spec.Replicas)
	}
	ds, err := cs.AppsV1().DaemonSets("herald-system").Get(ctx, "herald-speaker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := ds.Spec.Template.Spec.Containers[0].SecurityContext.Privileged; p != nil && *p {
		t.Errorf("upgrade to dataplane.mode=off left the speaker privileged")
	}

	// The post-delete hook waits for cleanup pods, which need nodes; this apiserver has none.
	hooks, err := runHelm(t, append([]string{"get", "hooks", "herald"}, common...)...)
	if err != nil || !strings.Contains(hooks, "speaker, --cleanup") {
		t.Errorf("release hooks lack the cleanup step: %v\n%s", err, hooks)
	}
	if out, err := runHelm(t, append([]string{"uninstall", "herald", "--no-hooks"}, common...)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := cs.AppsV1().DaemonSets("herald-system").Get(ctx, "herald-speaker", metav1.GetOptions{}); err == nil {
		t.Errorf("speaker DaemonSet left after uninstall")
	}
}

func speakerKey(ctx context.Context, t *testing.T, cs kubernetes.Interface) []byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets("herald-system").Get(ctx, "herald-speaker-key", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the speakers' key Secret: %v", err)
	}
	return s.Data["key"]
}
