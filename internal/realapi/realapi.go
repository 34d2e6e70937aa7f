// Package realapi starts a real kube-apiserver and etcd for tests (controller-runtime's envtest,
// driving the binaries hack/k8s-bins.sh builds), with Herald's CRDs installed. When the binaries
// are missing the test is skipped with a message saying how to build them, or failed when
// HERALD_REQUIRE_REAL=1.
package realapi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/internal/testenv"
)

// K8sVersion is the version of the binaries hack/k8s-bins.sh builds.
const K8sVersion = "v1.34.4"

// ServiceCIDRs are the apiserver's ClusterIP ranges (room for 10,000s of Services, both families).
const ServiceCIDRs = "10.96.0.0/12,fd00:10:96::/108"

// API is a running apiserver.
type API struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Kubeconfig is a file holding the same credentials, for tools run as commands.
	Kubeconfig string
}

// Start runs an apiserver for the duration of the test and installs config/crd into it.
func Start(t testing.TB) API {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		cache := os.Getenv("HERALD_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "herald")
		}
		assets = filepath.Join(cache, "assets-"+K8sVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			testenv.Missing(t, "real kube-apiserver/etcd not found in %s (KUBEBUILDER_ASSETS): run hack/k8s-bins.sh (make k8s-bins) first", assets)
		}
	}
	reapOrphans.Do(func() { reap(assets) })
	// controller-runtime logs through a global logger that complains (with a stack) until set.
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// The machine running the tests may be busy: the default 20 s is not always enough.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
		CRDDirectoryPaths:        []string{filepath.Join(RepoRoot(), "config", "crd")},
		ErrorIfCRDPathMissing:    true,
	}
	// Wide, dual-stack Service ranges: envtest's default /24 runs out at 256 Services, and dual-stack
	// Services (ipFamilyPolicy RequireDualStack) need an IPv6 range.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDRs)
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the apiserver: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "herald-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return API{Config: cfg, Kubeconfig: path}
}

// Client is a controller-runtime client of the apiserver (with watches) for the kinds Herald's
// binaries read and write: the built-in ones and herald.io/v1beta1.
func (a API) Client(t testing.TB) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(a.Config, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		t.Fatalf("client of the test apiserver: %v", err)
	}
	return c
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Requests sums the apiserver's own apiserver_request_total (from its /metrics) for one resource and
// subresource ("" for none) over the given verbs: how many writes a component really made.
func Requests(cs kubernetes.Interface, resource, subresource string, verbs ...string) (int, error) {
	return sumRequests(context.Background(), cs, func(line string) bool {
		return strings.Contains(line, `resource="`+resource+`"`) && strings.Contains(line, `subresource="`+subresource+`"`) &&
			slices.ContainsFunc(verbs, func(v string) bool { return strings.Contains(line, `verb="`+v+`"`) })
	})
}

// Writes sums the apiserver's mutating requests of every resource (creates, updates, patches,
// deletes): a count that stops moving once every client is idle.
func Writes(ctx context.Context, cs kubernetes.Interface) (int, error) {
	return sumRequests(ctx, cs, func(line string) bool {
		return slices.ContainsFunc([]string{"POST", "PUT", "PATCH", "DELETE", "APPLY"},
			func(v string) bool { return strings.Contains(line, `verb="`+v+`"`) })
	})
}

// sumRequests adds up the apiserver_request_total series that match.
func sumRequests(ctx context.Context, cs kubernetes.Interface, match func(line string) bool) (int, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !match(line) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("apiserver metrics: %q: %w", line, err)
		}
		total += int(v)
	}
	return total, sc.Err()
}

var reapOrphans sync.Once

// reap kills the kube-apiservers and etcds of the assets directory that an earlier test process
// left behind: envtest stops them in a test's clean-up, which never runs when `go test` kills a
// test binary that ran past its -timeout. Orphans are recognised by their parent (init: the test
// process that started them is gone) and by envtest's working directory on their command line,
// so the control planes of test packages running at the same time (whose parents are alive) and
// a lab's (its etcd is the same binary, and outlives `bin/lab up` too) are left alone.
func reap(assets string) {
	ours := map[string]bool{}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if path, err := filepath.EvalSymlinks(filepath.Join(assets, bin)); err == nil {
			ours[path] = true // the assets are links into the cache
		}
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err != nil || !ours[exe] {
			continue
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err != nil ||
			!bytes.Contains(cmdline, []byte("k8s_test_framework_")) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": the name may hold spaces, so read after its ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == "1" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
