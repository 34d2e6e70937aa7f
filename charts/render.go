// Package charts renders the Helm chart in charts/herald with the helm binary hack/helm.sh
// builds, so that tests, and the lab, run the controller and the speakers exactly as the chart
// would: same command, arguments, environment and capabilities.
package charts

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	runtimeconv "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// HelmVersion is the helm hack/helm.sh builds.
const HelmVersion = "v3.19.0"

// ErrNoHelm is returned when the helm binary has not been built.
var ErrNoHelm = errors.New("helm " + HelmVersion + " not built: run hack/helm.sh")

// Dir is the chart's directory in the source tree (for tests; programs use Render, which works
// from the chart compiled into them).
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "herald")
}

// chart is the chart as built into the program (bin/lab runs from anywhere, built with -trimpath).
//
//go:embed all:herald
var chart embed.FS

// extract writes the built-in chart into a new directory under dir and returns its path.
func extract(dir string) (string, error) {
	root := filepath.Join(dir, "herald")
	err := fs.WalkDir(chart, "herald", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out := filepath.Join(dir, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := chart.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	return root, err
}

// Helm returns the path of the cached helm binary, or ErrNoHelm.
func Helm() (string, error) {
	cache := os.Getenv("HERALD_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "herald")
	}
	path := filepath.Join(cache, "helm-"+HelmVersion, "helm")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w (%s)", ErrNoHelm, path)
	}
	return path, nil
}

// RunHelm runs helm with args, with private configuration and cache directories (no user
// repositories or plugins), and returns its standard output.
func RunHelm(args ...string) (string, error) {
	return RunHelmWrapped(nil, args...)
}

// RunHelmWrapped is RunHelm with wrap (when set) turning helm's command line into the one run
// (e.g. inside the network namespace the API server is reachable from).
func RunHelmWrapped(wrap func(argv []string) []string, args ...string) (string, error) {
	helm, err := Helm()
	if err != nil {
		return "", err
	}
	home, err := os.MkdirTemp("", "herald-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	argv := append([]string{helm}, args...)
	if wrap != nil {
		argv = wrap(argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Render runs helm template on the built-in chart for release "herald" in namespace
// herald-system with the given --set values (KEY=VALUE) and returns every object.
func Render(sets ...string) ([]*unstructured.Unstructured, error) {
	tmp, err := os.MkdirTemp("", "herald-chart-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir, err := extract(tmp)
	if err != nil {
		return nil, fmt.Errorf("writing the built-in chart: %w", err)
	}
	args := []string{"template", "herald", dir, "--namespace", "herald-system"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := RunHelm(args...)
	if err != nil {
		return nil, err
	}
	return Decode(out)
}

// Install runs `helm install` of the built-in chart as release "herald" into namespace
// herald-system (created if missing) of the cluster kubeconfig names, with the given --set values,
// and returns helm's output. wrap, when set, turns helm's command line into the one run (e.g.
// inside the network namespace the API server is reachable from).
func Install(wrap func(argv []string) []string, kubeconfig string, sets ...string) (string, error) {
	return installOrUpgrade(wrap, kubeconfig, []string{"install", "herald", "--create-namespace"}, sets)
}

// Upgrade runs `helm upgrade` of release "herald" in herald-system to the built-in chart, with
// the given --set values (and no others: helm's default, values not reused), as Install does.
func Upgrade(wrap func(argv []string) []string, kubeconfig string, sets ...string) (string, error) {
	return installOrUpgrade(wrap, kubeconfig, []string{"upgrade", "herald"}, sets)
}

// installOrUpgrade runs helm's verb (with its release name and flags) on the built-in chart.
func installOrUpgrade(wrap func(argv []string) []string, kubeconfig string, verb, sets []string) (string, error) {
	tmp, err := os.MkdirTemp("", "herald-chart-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dir, err := extract(tmp)
	if err != nil {
		return "", fmt.Errorf("writing the built-in chart: %w", err)
	}
	args := append(verb, dir, "--namespace", "herald-system", "--kubeconfig", kubeconfig)
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return RunHelmWrapped(wrap, args...)
}

// Decode splits a multi-document manifest into objects.
func Decode(manifest string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("rendered manifest does not parse: %w", err)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

// Workloads are the pod specs the chart runs the controller, the speakers and the uninstall
// hook's cleanup with.
type Workloads struct {
	Controller corev1.PodSpec
	Speaker    corev1.PodSpec
	// Cleanup is the post-delete hook's DaemonSet (init containers wait-speaker-gone, cleanup);
	// empty with cleanupOnUninstall=false.
	Cleanup corev1.PodSpec
}

// RenderWorkloads renders the chart with the given values and returns the controller's, the
// speaker's and the cleanup hook's pod specs.
func RenderWorkloads(sets ...string) (Workloads, error) {
	objs, err := Render(sets...)
	if err != nil {
		return Workloads{}, err
	}
	var w Workloads
	var d appsv1.Deployment
	if err := As(objs, "Deployment", "herald-controller", &d); err != nil {
		return w, err
	}
	var speaker, cleanup appsv1.DaemonSet
	if err := As(objs, "DaemonSet", "herald-speaker", &speaker); err != nil {
		return w, err
	}
	if Find(objs, "DaemonSet", "herald-cleanup") != nil {
		if err := As(objs, "DaemonSet", "herald-cleanup", &cleanup); err != nil {
			return w, err
		}
	}
	w.Controller, w.Speaker, w.Cleanup = d.Spec.Template.Spec, speaker.Spec.Template.Spec, cleanup.Spec.Template.Spec
	return w, nil
}

// Find returns the object of that kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// As decodes the object of that kind and name into out, strictly (an unknown field is an error).
func As(objs []*unstructured.Unstructured, kind, name string, out any) error {
	u := Find(objs, kind, name)
	if u == nil {
		return fmt.Errorf("the chart rendered no %s %s", kind, name)
	}
	if err := runtimeconv.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	return nil
}
