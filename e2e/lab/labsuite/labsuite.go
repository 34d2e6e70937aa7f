// Package labsuite gives an end-to-end test package one lab of its own: built in TestMain (own
// temporary directory, own namespace prefix, never the user's demo lab), handed to each test, its
// logs printed when a test failed, and removed at the end.
//
//	func TestMain(m *testing.M) { labsuite.Main(m, "herald-bgpt-") }
//	func TestX(t *testing.T)    { l := labsuite.Lab(t); ... }
//
// Without root, BIRD, arping, ndisc6, the Kubernetes binaries (hack/k8s-bins.sh) or helm
// (hack/helm.sh) the tests skip
// with the reason, or fail when HERALD_REQUIRE_REAL=1. The Herald controller and speaker come from
// $HERALD_BIN_DIR when set, else are built from ./cmd (a build failure fails the tests).
package labsuite

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/internal/testenv"
)

var (
	theLab *lab.Lab
	// missing says which prerequisite is absent (skip, or fail under HERALD_REQUIRE_REAL=1);
	// labErr is a real failure to build the lab.
	missing string
	labErr  error
)

// Main runs the package's tests against a lab built with the given prefix (e.g. "herald-lt-")
// and options (Nodes, PodsPerNode; Dir, Prefix, BinDir and CRDDir are set here), then exits.
func Main(m *testing.M, prefix string, opts ...func(*lab.Config)) {
	lab.RunBackendIfAsked() // the lab runs this test binary as its backend pods
	os.Exit(run(m, prefix, opts))
}

func run(m *testing.M, prefix string, opts []func(*lab.Config)) int {
	if missing = prerequisites(); missing != "" {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root := repoRoot()
	dir, err := os.MkdirTemp("", prefix+"suite-")
	if err != nil {
		labErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	binDir, err := heraldBinaries(ctx, root, filepath.Join(dir, "bin"))
	if err != nil {
		labErr = err
		return m.Run()
	}
	cfg := lab.Config{Dir: filepath.Join(dir, "lab"), Prefix: prefix, BinDir: binDir, CRDDir: filepath.Join(root, "config", "crd")}
	for _, o := range opts {
		o(&cfg)
	}
	began := time.Now()
	theLab, labErr = lab.Up(ctx, cfg)
	fmt.Printf("labsuite: lab %s up in %s (err: %v)\n", prefix, time.Since(began).Round(time.Millisecond), labErr)
	code := m.Run()
	if code != 0 || labErr != nil {
		dumpLogs(cfg.Dir)
	}
	began = time.Now()
	if err := lab.Down(context.Background(), cfg.Dir, prefix); err != nil {
		fmt.Fprintln(os.Stderr, "labsuite: lab down:", err)
		code = 1
	}
	fmt.Printf("labsuite: lab %s down in %s\n", prefix, time.Since(began).Round(time.Millisecond))
	return code
}

// Lab returns the package's lab, or skips (fails under HERALD_REQUIRE_REAL=1) the test with the
// reason there is none.
func Lab(t testing.TB) *lab.Lab {
	t.Helper()
	switch {
	case missing != "":
		testenv.Missing(t, "%s", missing)
	case labErr != nil:
		t.Fatalf("lab up: %v", labErr)
	}
	return theLab
}

func prerequisites() string {
	if os.Geteuid() != 0 {
		return "the lab needs root (network namespaces)"
	}
	for _, tool := range []string{"ip", "bridge", "bird", "birdc", "arping", "ndisc6"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (apt-get install iproute2 bird2 arping ndisc6)"
		}
	}
	if _, err := controlplane.CachedBinaries(); err != nil {
		return err.Error()
	}
	if _, err := charts.Helm(); err != nil { // the lab runs Herald as the chart renders it
		return err.Error()
	}
	return ""
}

// heraldBinaries returns the directory holding controller and speaker: $HERALD_BIN_DIR, or out with
// whichever of ./cmd/controller and ./cmd/speaker exist built into it.
func heraldBinaries(ctx context.Context, root, out string) (string, error) {
	if d := os.Getenv("HERALD_BIN_DIR"); d != "" {
		return d, nil
	}
	for _, name := range []string{"controller", "speaker"} {
		if _, err := os.Stat(filepath.Join(root, "cmd", name)); err != nil {
			continue
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(out, name), "./cmd/"+name)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s: %w\n%s", name, err, b)
		}
	}
	return out, nil
}

// repoRoot is the directory holding go.mod, found upwards from the test's directory.
func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// dumpLogs prints the tail of every log of the lab, for a failed run.
func dumpLogs(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	more, _ := filepath.Glob(filepath.Join(dir, "cp", "*.log"))
	for _, f := range append(files, more...) {
		b, _ := os.ReadFile(f)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Printf("----- %s (tail)\n%s\n", f, b)
	}
}

// HeraldResource is the herald.io/v1beta1 resource of that plural name ("bgppeers").
func HeraldResource(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "herald.io", Version: "v1beta1", Resource: resource}
}

// Create makes a cluster-scoped herald.io/v1beta1 object (resource is the kind's plural) and
// deletes it when the test ends.
func Create(t testing.TB, dyn dynamic.Interface, resource, kind, name string, spec map[string]any) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "herald.io/v1beta1", "kind": kind, "metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := dyn.Resource(HeraldResource(resource)).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s %s: %v", kind, name, err)
	}
	t.Cleanup(func() {
		_ = dyn.Resource(HeraldResource(resource)).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// Clients returns a typed and a dynamic client for the lab's apiserver.
func Clients(t testing.TB, l *lab.Lab) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	rc, err := l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(rc), dynamic.NewForConfigOrDie(rc)
}

// WaitFor polls cond every 20 ms until it holds and returns how long that took, or fails the test
// after timeout with what and cond's last description.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		var ok bool
		if ok, last = cond(); ok {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
	return 0
}
