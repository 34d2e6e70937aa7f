// Package controllere2e runs the real bin/controller against a real kube-apiserver: helpers shared
// by the end-to-end tests here and the benchmark in bench/controller.
package controllere2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/internal/realapi"
)

// BuildController returns $HERALD_BIN_DIR/controller when that is set (make test builds it), else
// builds bin/controller from the working tree (once per test binary).
func BuildController(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("HERALD_BIN_DIR"); d != "" {
		return filepath.Join(d, "controller")
	}
	buildOnce.Do(func() {
		bin := filepath.Join(realapi.RepoRoot(), "bin", "controller")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/heraldlb/herald/cmd/controller").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/controller: %w\n%s", err, out)
		}
		built = bin
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return built
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// Process is a running bin/controller.
type Process struct {
	Cmd         *exec.Cmd
	LogPath     string
	MetricsAddr string
}

// StartController runs bin/controller with the kubeconfig, a free loopback metrics port and the
// extra flags; it is killed when the test ends.
func StartController(tb testing.TB, bin, kubeconfig string, flags ...string) *Process {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logf, err := os.CreateTemp(tb.TempDir(), "controller-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	args := append([]string{"--kubeconfig", kubeconfig, "--metrics-addr", addr}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Process{Cmd: cmd, LogPath: logf.Name(), MetricsAddr: addr}
	tb.Cleanup(func() {
		p.Kill()
		logf.Close()
		if tb.Failed() {
			log, _ := os.ReadFile(p.LogPath)
			tb.Logf("controller %v log (last 4 KiB):\n%s", args, tail(log, 4096))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Kill sends SIGKILL (no clean shutdown, no Lease release) and reaps the process.
func (p *Process) Kill() {
	if p.Cmd.ProcessState != nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	_ = p.Cmd.Wait()
}

// PeakRSS is the process's peak resident memory (VmHWM) in bytes; read it while the process runs.
func (p *Process) PeakRSS() (int64, error) { return p.memory("VmHWM") }

// RSS is the process's resident memory now (VmRSS) in bytes.
func (p *Process) RSS() (int64, error) { return p.memory("VmRSS") }

// memory reads one kB field of the process's /proc status, in bytes.
func (p *Process) memory(field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.Cmd.Process.Pid)
}

// CPUSeconds is the user+system CPU time the process has used so far.
func (p *Process) CPUSeconds() (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at state, field 3; utime and
	// stime are fields 14 and 15, in clock ticks of 1/100 s on Linux.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", p.Cmd.Process.Pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", p.Cmd.Process.Pid, errors.Join(err1, err2))
	}
	return (utime + stime) / 100, nil
}

// Namespace creates a namespace if it is missing.
func Namespace(tb testing.TB, cs kubernetes.Interface, name string) {
	tb.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
}

// Pool creates an auto-assigning IPAddressPool.
func Pool(tb testing.TB, dyn dynamic.Interface, name string, addresses ...string) {
	tb.Helper()
	as := make([]any, len(addresses))
	for i, a := range addresses {
		as[i] = a
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1beta1.GroupVersion.String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": name}, "spec": map[string]any{"addresses": as},
	}}
	if _, err := dyn.Resource(v1beta1.GroupVersion.WithResource("ipaddresspools")).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// CreateServices creates n class-less LoadBalancer Services svc-0 … svc-(n-1) (no node ports) in
// parallel.
func CreateServices(tb testing.TB, cs kubernetes.Interface, ns string, n int) {
	tb.Helper()
	CreateServicesFrom(tb, cs, ns, 0, n)
}

// CreateServicesFrom creates the Services svc-from … svc-(to-1).
func CreateServicesFrom(tb testing.TB, cs kubernetes.Interface, ns string, from, to int) {
	tb.Helper()
	n := to - from
	no := false
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				svc := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%d", i)},
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: &no,
						Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}, Selector: map[string]string{"app": "x"}},
				}
				if _, err := cs.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- err
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("creating Services: %v", err)
	}
}

// Addresses maps each Service of the namespace that has addresses to them.
func Addresses(tb testing.TB, cs kubernetes.Interface, ns string) map[string]string {
	tb.Helper()
	list, err := cs.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range list.Items {
		var ips []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		if len(ips) > 0 {
			out[s.Name] = strings.Join(ips, ",")
		}
	}
	return out
}

// Duplicates lists addresses held by more than one Service (none of these Services share).
func Duplicates(addrs map[string]string) []string {
	seen := map[string]string{}
	var dup []string
	for svc, ip := range addrs {
		if other, ok := seen[ip]; ok {
			dup = append(dup, fmt.Sprintf("%s: %s and %s", ip, other, svc))
		}
		seen[ip] = svc
	}
	return dup
}

// WaitAllocated watches the namespace until want Services have addresses, and returns when that
// happened. It starts from the listed state, so it may be called before or after the controller
// starts, and lists again whenever the apiserver ends the watch.
func WaitAllocated(ctx context.Context, cs kubernetes.Interface, ns string, want int) (time.Time, error) {
	for {
		done, n, err := watchAllocated(ctx, cs, ns, want)
		if err != nil || !done.IsZero() {
			return done, err
		}
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("%d of %d Services allocated: %w", n, want, ctx.Err())
		}
	}
}

// watchAllocated lists, then watches until want Services have addresses (done set) or the watch
// ends (done zero, n the count so far).
func watchAllocated(ctx context.Context, cs kubernetes.Interface, ns string, want int) (done time.Time, n int, err error) {
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return time.Time{}, 0, err
	}
	has := map[string]bool{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			has[s.Name] = true
			n++
		}
	}
	if n >= want {
		return time.Now(), n, nil
	}
	w, err := cs.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return time.Time{}, n, err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		s, ok := ev.Object.(*corev1.Service)
		if !ok {
			return time.Time{}, n, nil // an error event (e.g. expired resourceVersion): list again
		}
		now := ev.Type != watch.Deleted && len(s.Status.LoadBalancer.Ingress) > 0
		if now != has[s.Name] {
			if now {
				n++
			} else {
				n--
			}
			has[s.Name] = now
		}
		if n >= want {
			return time.Now(), n, nil
		}
	}
	return time.Time{}, n, nil
}
