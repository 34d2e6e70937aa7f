package controller_test

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller"
	"github.com/heraldlb/herald/internal/realapi"
)

var poolsGVR = v1beta1.GroupVersion.WithResource("ipaddresspools")

// fixture is a real apiserver plus helpers to drive it, reporting to one test. Subtests take a
// fixture of their own with forTest: the same apiserver and controller, their own *testing.T.
type fixture struct {
	t       *testing.T
	api     realapi.API
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	running *runningController // shared by every fixture of one apiserver
}

// runningController is what the tests know of the controller running now.
type runningController struct {
	metrics  *controller.Metrics
	registry *prometheus.Registry // the metrics'
}

func newFixture(t *testing.T) *fixture {
	api := realapi.Start(t)
	cfg := *api.Config
	cfg.QPS, cfg.Burst = 1000, 2000
	return &fixture{t: t, api: api, cs: kubernetes.NewForConfigOrDie(&cfg), dyn: dynamic.NewForConfigOrDie(&cfg),
		running: &runningController{}}
}

// forTest is this fixture reporting to t (a subtest).
func (f *fixture) forTest(t *testing.T) *fixture {
	g := *f
	g.t = t
	return &g
}

// quiesce waits until nothing more happens: the controller's work queues have finished every item
// they were given, and the apiserver has seen no write from anyone, for a while. Tests call it
// before checking what the controller must not have done (extra status writes, events), so they
// check an idle controller rather than wait a guessed delay. The quiet period covers the echo of
// the controller's own writes: its informers see them and may queue the Services again.
func (f *fixture) quiesce(ctx context.Context) {
	f.t.Helper()
	const quiet, poll = 500 * time.Millisecond, 25 * time.Millisecond
	last := [2]int{-1, -1}
	since := time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(poll) {
		writes, err := realapi.Writes(ctx, f.cs)
		if err != nil {
			f.t.Fatal(err)
		}
		added, done := f.queueWork()
		now := [2]int{writes, added}
		switch {
		case added != done || now != last:
			last, since = now, time.Now()
		case time.Since(since) >= quiet:
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the controller is still busy after 30 s (%d of %d queued items done, %d writes)", done, added, writes)
		}
	}
}

// queueWork counts the items added to the running controller's work queues and those finished.
func (f *fixture) queueWork() (added, done int) {
	f.t.Helper()
	if f.running.registry == nil {
		return 0, 0
	}
	families, err := f.running.registry.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range families {
		for _, s := range mf.GetMetric() {
			switch mf.GetName() {
			case "herald_controller_workqueue_adds_total":
				added += int(s.GetCounter().GetValue())
			case "herald_controller_workqueue_work_duration_seconds":
				done += int(s.GetHistogram().GetSampleCount())
			}
		}
	}
	return added, done
}

// runController runs a native (or cloud-provider) controller in this process until stop is called.
func (f *fixture) runController(t *testing.T, opts controller.Options, cloud bool) (stop func()) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Metrics != nil {
		t.Fatal("runController makes the controller's metrics itself (f.running.metrics), to read its queues")
	}
	f.running.registry = prometheus.NewRegistry()
	f.running.metrics = controller.NewMetrics(f.running.registry)
	opts.Metrics = f.running.metrics
	ctx, cancel := context.WithCancel(context.Background())
	c, err := controller.New(f.cs, f.api.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if cloud {
			done <- c.RunCloudProvider(ctx)
		} else {
			done <- c.Run(ctx)
		}
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
}

func (f *fixture) namespace(name string, labels map[string]string) {
	f.t.Helper()
	_, err := f.cs.CoreV1().Namespaces().Create(f.t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		f.t.Fatal(err)
	}
}

// pool creates an IPAddressPool from its spec (as in YAML) and waits until the controller has it.
func (f *fixture) pool(name string, spec map[string]any) {
	f.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1beta1.GroupVersion.String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := f.dyn.Resource(poolsGVR).Create(f.t.Context(), u, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("pool %s: %v", name, err)
	}
	// Wait until the controller has seen the pool (it writes Valid after loading it), so Services
	// created next are answered once, not NoPool first.
	f.waitPool(name, "seen by the controller", func(p poolView) bool { return p.valid != "" })
}

func (f *fixture) getPool(name string) (*v1beta1.IPAddressPool, error) {
	u, err := f.dyn.Resource(poolsGVR).Get(f.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	p := &v1beta1.IPAddressPool{}
	return p, fromUnstructured(u, p)
}

// service creates a LoadBalancer Service (TCP 80, no node ports) changed by mods.
func (f *fixture) service(ns, name string, mods ...func(*corev1.Service)) *corev1.Service {
	f.t.Helper()
	no := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &no,
			Ports:                         []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			Selector:                      map[string]string{"app": name},
		},
	}
	for _, m := range mods {
		m(svc)
	}
	out, err := f.cs.CoreV1().Services(ns).Create(f.t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("service %s/%s: %v", ns, name, err)
	}
	return out
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func withClass(c string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &c }
}

func withPorts(ports ...int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprint("p", p), Port: p, Protocol: corev1.ProtocolTCP})
		}
	}
}

func dualStack(policy corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &policy, fams }
}

// wait polls a Service until cond holds (30 s at most).
func (f *fixture) wait(ns, name string, what string, cond func(*corev1.Service) bool) *corev1.Service {
	f.t.Helper()
	var last *corev1.Service
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		svc, err := f.cs.CoreV1().Services(ns).Get(f.t.Context(), name, metav1.GetOptions{})
		if err == nil {
			last = svc
			if cond(svc) {
				return svc
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("%s/%s: not %s after 30 s; status %+v", ns, name, what, statusOf(last))
	return nil
}

func statusOf(svc *corev1.Service) any {
	if svc == nil {
		return nil
	}
	return svc.Status
}

// waitReason waits for the herald.io/Allocated condition to have this reason and returns the Service.
func (f *fixture) waitReason(ns, name, reason string) *corev1.Service {
	f.t.Helper()
	return f.wait(ns, name, "answered "+reason, func(s *corev1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, config.ConditionAllocated)
		return c != nil && c.Reason == reason
	})
}

func ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

// events returns Herald's events about one Service.
func (f *fixture) events(ns, name string) []corev1.Event {
	f.t.Helper()
	list, err := f.cs.CoreV1().Events(ns).List(f.t.Context(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
	if err != nil {
		f.t.Fatal(err)
	}
	var ours []corev1.Event
	for _, e := range list.Items {
		if e.Source.Component == "herald-controller" {
			ours = append(ours, e)
		}
	}
	return ours
}

// statusWrites counts the apiserver's status writes (PATCH, PUT) of Services, from its own /metrics.
func (f *fixture) statusWrites() int {
	f.t.Helper()
	n, err := realapi.Requests(f.cs, "services", "status", "PATCH", "PUT")
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}
