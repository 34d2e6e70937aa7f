package controller_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/controller"
)

// onlyNamespace restricts a test's pool to its own namespace, so tests sharing the apiserver do not
// take each other's addresses.
func onlyNamespace(ns string, spec map[string]any) map[string]any {
	spec["serviceAllocation"] = map[string]any{"namespaces": []any{ns}}
	return spec
}

func addrs(a ...string) []any {
	out := make([]any, len(a))
	for i, s := range a {
		out[i] = s
	}
	return out
}

func hasAddress(svc *corev1.Service) bool { return len(svc.Status.LoadBalancer.Ingress) > 0 }

// TestNativeController drives the native controller against a real kube-apiserver and etcd: every
// rule of the allocation contract, bad input, pool status and finalizers, restart stability, classes
// and the cloud-provider mode. Subtests share the apiserver and run in order.
func TestNativeController(t *testing.T) {
	f := newFixture(t)
	stop := f.runController(t, controller.Options{LoadBalancerClass: config.DefaultLoadBalancerClass, TakeClassless: true}, false)
	metrics := f.running.metrics
	defer func() { stop() }()
	ctx := context.Background()

	t.Run("allocates with one status write per Service", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("alloc", nil)
		f.pool("alloc", onlyNamespace("alloc", map[string]any{"addresses": addrs("10.1.0.0/29")}))
		before := f.statusWrites()
		for _, n := range []string{"a", "b", "c"} {
			f.service("alloc", n)
		}
		var got []string
		for _, n := range []string{"a", "b", "c"} {
			svc := f.waitReason("alloc", n, config.ReasonAllocated)
			in := svc.Status.LoadBalancer.Ingress
			if len(in) != 1 || in[0].IPMode == nil || *in[0].IPMode != corev1.LoadBalancerIPModeVIP {
				t.Fatalf("%s: ingress %+v, want one IP with ipMode VIP", n, in)
			}
			c := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated)
			if c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "pool alloc") {
				t.Fatalf("%s: condition %+v", n, c)
			}
			got = append(got, in[0].IP)
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"10.1.0.0", "10.1.0.1", "10.1.0.2"}) {
			t.Fatalf("addresses %v", got)
		}
		f.quiesce(ctx)
		if w := f.statusWrites() - before; w != 3 {
			t.Fatalf("%d status writes for 3 Services, want 3", w)
		}
		if ev := f.events("alloc", "a"); len(ev) != 0 {
			t.Fatalf("first allocation made events: %+v", ev)
		}
		f.waitPool("alloc", "usage 3 of 8", func(p poolView) bool {
			return p.v4 == "8/3/5" && p.finalizer && p.overlap == metav1.ConditionFalse
		})
		if v := testutil.ToFloat64(metrics.Allocations.WithLabelValues("alloc")); v != 3 {
			t.Fatalf("allocations metric %v, want 3", v)
		}
		if v := testutil.ToFloat64(metrics.AddressesInUse.WithLabelValues("alloc", "IPv4")); v != 3 {
			t.Fatalf("in-use metric %v, want 3", v)
		}
	})

	t.Run("classes", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("classes", nil)
		f.pool("classes", onlyNamespace("classes", map[string]any{"addresses": addrs("10.2.0.0/29")}))
		f.service("classes", "ours", withClass(config.DefaultLoadBalancerClass))
		f.service("classes", "classless")
		f.service("classes", "theirs", withClass("example.com/other"))
		f.waitReason("classes", "ours", config.ReasonAllocated)
		f.waitReason("classes", "classless", config.ReasonAllocated)
		f.quiesce(ctx)
		if svc, _ := f.cs.CoreV1().Services("classes").Get(ctx, "theirs", metav1.GetOptions{}); hasAddress(svc) || len(svc.Status.Conditions) > 0 {
			t.Fatalf("a Service of another class was touched: %+v", svc.Status)
		}
	})

	// An address another class's Service holds is reserved; when that Service lets it go, a
	// Service of ours waiting for room gets it at once (the reservation freed it).
	t.Run("an address another class lets go reaches a waiting Service", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("foreign", nil)
		f.service("foreign", "theirs", withClass("example.com/other"))
		setIngress := func(ips ...string) {
			t.Helper()
			var ingress []any
			for _, ip := range ips {
				ingress = append(ingress, map[string]any{"ip": ip})
			}
			patch, _ := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": ingress}}})
			if _, err := f.cs.CoreV1().Services("foreign").Patch(ctx, "theirs", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
				t.Fatal(err)
			}
		}
		setIngress("10.2.1.1")
		f.pool("foreign", onlyNamespace("foreign", map[string]any{"addresses": addrs("10.2.1.1/32")}))
		f.service("foreign", "ours")
		f.waitReason("foreign", "ours", config.ReasonPoolExhausted)
		setIngress()
		if got := ingressIPs(f.waitReason("foreign", "ours", config.ReasonAllocated)); !slices.Equal(got, []string{"10.2.1.1"}) {
			t.Errorf("ours got %v, want 10.2.1.1", got)
		}
	})

	t.Run("requested addresses and MetalLB aliases", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("req", nil)
		f.pool("req", onlyNamespace("req", map[string]any{"addresses": addrs("10.3.0.0/28")}))
		f.service("req", "herald", annotate(config.AnnotationLoadBalancerIPs, "10.3.0.9"))
		f.service("req", "metallb-io", annotate("metallb.io/loadBalancerIPs", "10.3.0.10"))
		f.service("req", "metallb-universe", annotate("metallb.universe.tf/loadBalancerIPs", "10.3.0.11"))
		f.service("req", "both", annotate(config.AnnotationLoadBalancerIPs, "10.3.0.12"), annotate("metallb.io/loadBalancerIPs", "10.3.0.13"))
		f.service("req", "spec", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.3.0.14" })
		for name, want := range map[string]string{"herald": "10.3.0.9", "metallb-io": "10.3.0.10", "metallb-universe": "10.3.0.11", "both": "10.3.0.12", "spec": "10.3.0.14"} {
			if got := ingressIPs(f.waitReason("req", name, config.ReasonAllocated)); !slices.Equal(got, []string{want}) {
				t.Errorf("%s: got %v, want %s", name, got, want)
			}
		}
	})

	t.Run("bad input gets one actionable answer and one event", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("bad", nil)
		f.pool("bad", onlyNamespace("bad", map[string]any{"addresses": addrs("10.4.0.0/29")}))
		f.service("bad", "holder", annotate(config.AnnotationLoadBalancerIPs, "10.4.0.5"), withPorts(80))
		f.waitReason("bad", "holder", config.ReasonAllocated)
		before := f.statusWrites()
		cases := []struct{ name, reason, msg string }{
			{"unknown-pool", config.ReasonNoPool, `"nope" does not exist`},
			{"taken", config.ReasonRequestedIPUnavailable, "in use by Service bad/holder"},
			{"outside", config.ReasonRequestedIPOutside, "not in any IPAddressPool"},
			{"conflict", config.ReasonSharingConflict, "already uses TCP/80"},
			{"family", config.ReasonFamilyUnavailable, "IPv6"},
			{"wrong-family-request", config.ReasonInvalidRequest, "allow only IPv4"},
			{"malformed", config.ReasonInvalidRequest, "not an IP address"},
		}
		f.service("bad", "unknown-pool", annotate(config.AnnotationAddressPool, "nope"))
		f.service("bad", "taken", annotate(config.AnnotationLoadBalancerIPs, "10.4.0.5"))
		f.service("bad", "outside", annotate(config.AnnotationLoadBalancerIPs, "192.0.2.1"))
		// Sharing needs the key on both sides: give the holder one too (it keeps its address), then
		// ask for its address with the same key and a clashing port.
		f.patchAnnotation("bad", "holder", config.AnnotationAllowSharedIP, "k")
		f.service("bad", "conflict", annotate(config.AnnotationLoadBalancerIPs, "10.4.0.5"), annotate(config.AnnotationAllowSharedIP, "k"))
		f.service("bad", "family", dualStack(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol))
		f.service("bad", "wrong-family-request", annotate(config.AnnotationLoadBalancerIPs, "fd00::1"))
		f.service("bad", "malformed", annotate(config.AnnotationLoadBalancerIPs, "10.4.0.x"))
		for _, tc := range cases {
			svc := f.waitReason("bad", tc.name, tc.reason)
			c := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated)
			if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, tc.msg) || hasAddress(svc) {
				t.Errorf("%s: %+v, ingress %v; want False %s saying %q", tc.name, c, svc.Status.LoadBalancer.Ingress, tc.reason, tc.msg)
			}
		}
		f.quiesce(ctx)
		for _, tc := range cases {
			ev := f.events("bad", tc.name)
			if len(ev) != 1 || ev[0].Reason != tc.reason || ev[0].Type != corev1.EventTypeWarning || ev[0].Count > 1 {
				t.Errorf("%s: events %+v, want one Warning %s", tc.name, summarize(ev), tc.reason)
			}
		}
		if w := f.statusWrites() - before; w != len(cases) {
			t.Errorf("%d status writes for %d refusals: refusals are being rewritten", w, len(cases))
		}
		if v := testutil.ToFloat64(metrics.Failures.WithLabelValues(config.ReasonNoPool)); v < 1 {
			t.Errorf("failures metric for NoPool = %v", v)
		}
	})

	t.Run("an unusable annotation value gets a condition and one event, and the IP anyway", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("annot", nil)
		f.pool("annot", onlyNamespace("annot", map[string]any{"addresses": addrs("10.9.0.0/29")}))
		f.service("annot", "good", annotate(config.AnnotationIPVSScheduler, "mh"))
		f.service("annot", "typo", annotate(config.AnnotationIPVSScheduler, "round-robin"))
		annotationsValid := func(svc *corev1.Service) *metav1.Condition {
			return meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnotationsValid)
		}
		typo := f.wait("annot", "typo", "AnnotationsValid False", func(svc *corev1.Service) bool {
			c := annotationsValid(svc)
			return hasAddress(svc) && c != nil && c.Status == metav1.ConditionFalse
		})
		c := annotationsValid(typo)
		if c.Reason != config.ReasonInvalidAnnotation || !strings.Contains(c.Message, `herald.io/ipvs-scheduler: unknown IPVS scheduler "round-robin": use one of rr,`) {
			t.Errorf("condition %+v", c)
		}
		if good := f.waitReason("annot", "good", config.ReasonAllocated); annotationsValid(good) != nil {
			t.Errorf("a Service with valid annotations got %+v", annotationsValid(good))
		}
		ev := f.waitEvents("annot", "typo", 1)
		if len(ev) != 1 || ev[0].Reason != config.ReasonInvalidAnnotation || ev[0].Type != corev1.EventTypeWarning {
			t.Errorf("events %v, want one Warning %s", summarize(ev), config.ReasonInvalidAnnotation)
		}
		f.service("annot", "modetypo", annotate(config.AnnotationProxyMode, "userpsace"))
		modeTypo := f.wait("annot", "modetypo", "AnnotationsValid False", func(svc *corev1.Service) bool {
			c := annotationsValid(svc)
			return hasAddress(svc) && c != nil && c.Status == metav1.ConditionFalse
		})
		if c := annotationsValid(modeTypo); !strings.Contains(c.Message, `unknown herald.io/proxy-mode "userpsace": use "userspace" or "kernel"`) {
			t.Errorf("proxy-mode typo: condition %+v", c)
		}
		ip := ingressIPs(typo)
		f.patchAnnotation("annot", "typo", config.AnnotationIPVSScheduler, "sh")
		fixed := f.wait("annot", "typo", "AnnotationsValid True", func(svc *corev1.Service) bool {
			c := annotationsValid(svc)
			return c != nil && c.Status == metav1.ConditionTrue
		})
		if !slices.Equal(ingressIPs(fixed), ip) {
			t.Errorf("fixing an annotation moved the Service from %v to %v", ip, ingressIPs(fixed))
		}
		f.quiesce(ctx)
		if ev := f.events("annot", "typo"); len(ev) != 1 {
			t.Errorf("events after the fix %v, want still the one", summarize(ev))
		}
	})

	t.Run("requests resolved by precedence get a condition and one event saying which one is used", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("prec", nil)
		f.pool("prec", onlyNamespace("prec", map[string]any{"addresses": addrs("10.14.0.0/29")}))
		f.pool("prec-other", onlyNamespace("prec", map[string]any{"addresses": addrs("10.15.0.0/29")}))
		conflicting := func(svc *corev1.Service) bool {
			c := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnotationsValid)
			return hasAddress(svc) && c != nil && c.Status == metav1.ConditionFalse && c.Reason == config.ReasonConflictingRequests
		}
		// herald.io/loadBalancerIPs against spec.loadBalancerIP: the annotation's address is given.
		f.service("prec", "ips", annotate(config.AnnotationLoadBalancerIPs, "10.14.0.3"),
			func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.14.0.4" })
		ips := f.wait("prec", "ips", "AnnotationsValid False, ConflictingRequests", conflicting)
		if got := ingressIPs(ips); !slices.Equal(got, []string{"10.14.0.3"}) {
			t.Errorf("ingress %v, want the annotation's 10.14.0.3", got)
		}
		msg := meta.FindStatusCondition(ips.Status.Conditions, config.ConditionAnnotationsValid).Message
		if !strings.Contains(msg, `spec.loadBalancerIP "10.14.0.4" is ignored`) || !strings.Contains(msg, `herald.io/loadBalancerIPs="10.14.0.3" takes precedence`) {
			t.Errorf("condition message %q does not say which request is used and which ignored", msg)
		}
		if ev := f.waitEvents("prec", "ips", 1); len(ev) != 1 || ev[0].Type != corev1.EventTypeWarning || ev[0].Reason != config.ReasonConflictingRequests || ev[0].Message != msg {
			t.Errorf("events %v, want one Warning %s saying %q", summarize(ev), config.ReasonConflictingRequests, msg)
		}

		// Herald's pool annotation against MetalLB's: Herald's pool serves; agreeing fixes it.
		f.service("prec", "pool", annotate(config.AnnotationAddressPool, "prec"), annotate("metallb.io/address-pool", "prec-other"))
		pool := f.wait("prec", "pool", "AnnotationsValid False, ConflictingRequests", conflicting)
		if got := ingressIPs(pool); len(got) != 1 || !strings.HasPrefix(got[0], "10.14.0.") {
			t.Errorf("ingress %v, want an address of herald.io/address-pool's pool prec", got)
		}
		if ev := f.waitEvents("prec", "pool", 1); len(ev) != 1 || ev[0].Reason != config.ReasonConflictingRequests ||
			!strings.Contains(ev[0].Message, `metallb.io/address-pool="prec-other" is ignored`) {
			t.Errorf("events %v, want one Warning %s naming the ignored annotation", summarize(ev), config.ReasonConflictingRequests)
		}
		f.patchAnnotation("prec", "pool", "metallb.io/address-pool", "prec")
		fixed := f.wait("prec", "pool", "AnnotationsValid True", func(svc *corev1.Service) bool {
			c := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnotationsValid)
			return c != nil && c.Status == metav1.ConditionTrue
		})
		if !slices.Equal(ingressIPs(fixed), ingressIPs(pool)) {
			t.Errorf("agreeing annotations moved the Service from %v to %v", ingressIPs(pool), ingressIPs(fixed))
		}
		f.quiesce(ctx)
		if ev := f.events("prec", "pool"); len(ev) != 1 {
			t.Errorf("events after the fix %v, want still the one", summarize(ev))
		}
	})

	t.Run("pending Services get room at once when an address is freed or a pool grows", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("room", nil)
		f.pool("room", onlyNamespace("room", map[string]any{"addresses": addrs("10.5.0.0/31")}))
		f.service("room", "a")
		f.service("room", "b")
		f.waitReason("room", "a", config.ReasonAllocated)
		f.waitReason("room", "b", config.ReasonAllocated)
		f.service("room", "c")
		f.waitReason("room", "c", config.ReasonPoolExhausted)
		if err := f.cs.CoreV1().Services("room").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		f.waitReason("room", "c", config.ReasonAllocated)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("freed address reached the pending Service after %v (no back-off wait expected)", d)
		}
		f.service("room", "d")
		f.waitReason("room", "d", config.ReasonPoolExhausted)
		f.patchPool("room", `{"spec":{"addresses":["10.5.0.0/30"]}}`)
		start = time.Now()
		f.waitReason("room", "d", config.ReasonAllocated)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("grown pool reached the pending Service after %v", d)
		}
		if ev := f.waitEvents("room", "d", 2); len(ev) != 2 {
			t.Errorf("d: events %v, want PoolExhausted then Allocated", summarize(ev))
		}
	})

	t.Run("sharing and dual-stack", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("share", nil)
		f.pool("share", onlyNamespace("share", map[string]any{"addresses": addrs("10.6.0.0/30", "fd00:6::/126")}))
		f.service("share", "web", annotate(config.AnnotationAllowSharedIP, "k"), withPorts(80))
		f.service("share", "tls", annotate("metallb.universe.tf/allow-shared-ip", "k"), withPorts(443))
		f.service("share", "dual", dualStack(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol))
		a := ingressIPs(f.waitReason("share", "web", config.ReasonAllocated))
		b := ingressIPs(f.waitReason("share", "tls", config.ReasonAllocated))
		if !slices.Equal(a, b) {
			t.Errorf("sharing: web %v, tls %v", a, b)
		}
		d := ingressIPs(f.waitReason("share", "dual", config.ReasonAllocated))
		if len(d) != 2 || !strings.Contains(d[0], ":") || strings.Contains(d[1], ":") {
			t.Errorf("dual-stack: %v, want IPv6 then IPv4 (spec.ipFamilies order)", d)
		}
	})

	t.Run("namespace selectors follow namespace labels", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("nssel", nil)
		f.pool("nssel", map[string]any{"addresses": addrs("10.7.0.0/30"),
			"serviceAllocation": map[string]any{"namespaceSelectors": []any{map[string]any{"matchLabels": map[string]any{"team": "nssel"}}}}})
		f.service("nssel", "x")
		f.waitReason("nssel", "x", config.ReasonNoPool)
		if _, err := f.cs.CoreV1().Namespaces().Patch(ctx, "nssel", types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"nssel"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := ingressIPs(f.waitReason("nssel", "x", config.ReasonAllocated)); !slices.Equal(got, []string{"10.7.0.0"}) {
			t.Errorf("got %v", got)
		}
	})

	t.Run("overlap, deletion and the pool finalizer", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("ovl", nil)
		f.pool("ovl-old", onlyNamespace("ovl", map[string]any{"addresses": addrs("10.8.0.0/30")}))
		// The newer pool must be younger by the clock of creationTimestamp, which has a one-second
		// resolution: wait for the next second.
		old, err := f.dyn.Resource(poolsGVR).Get(ctx, "ovl-old", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for !time.Now().Truncate(time.Second).After(old.GetCreationTimestamp().Time) {
			time.Sleep(20 * time.Millisecond)
		}
		f.pool("ovl-new", onlyNamespace("ovl", map[string]any{"addresses": addrs("10.8.0.2-10.8.0.5"), "autoAssign": false}))
		f.waitPool("ovl-new", "overlapping", func(p poolView) bool { return p.overlap == metav1.ConditionTrue && p.v4 == "2/0/2" })
		f.service("ovl", "x", annotate(config.AnnotationAddressPool, "ovl-old"))
		f.service("ovl", "y", annotate(config.AnnotationAddressPool, "ovl-new"))
		if got := ingressIPs(f.waitReason("ovl", "y", config.ReasonAllocated)); !slices.Equal(got, []string{"10.8.0.4"}) {
			t.Errorf("later pool gave %v, want 10.8.0.4 (outside the overlap)", got)
		}
		x := ingressIPs(f.waitReason("ovl", "x", config.ReasonAllocated))
		if err := f.dyn.Resource(poolsGVR).Delete(ctx, "ovl-old", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := ingressIPs(f.waitReason("ovl", "x", config.ReasonPoolRemoved)); !slices.Equal(got, x) {
			t.Fatalf("pool deleted: Service moved from %v to %v", x, got)
		}
		f.quiesce(ctx)
		if _, err := f.getPool("ovl-old"); err != nil {
			t.Fatalf("pool in use vanished: %v", err)
		}
		if err := f.cs.CoreV1().Services("ovl").Delete(ctx, "x", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := f.getPool("ovl-old"); apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("deleted pool kept after its last Service went")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("malformed pool is reported, not used", func(t *testing.T) {
		f := f.forTest(t)
		f.pool("malformed", map[string]any{"addresses": addrs("10.9.0.0/30"),
			"serviceAllocation": map[string]any{"serviceSelectors": []any{map[string]any{
				"matchExpressions": []any{map[string]any{"key": "a", "operator": "In"}}}}}})
		p := f.waitPool("malformed", "invalid", func(p poolView) bool { return p.valid == metav1.ConditionFalse })
		if !strings.Contains(p.validMsg, "serviceSelectors") {
			t.Errorf("Valid message %q does not say what is wrong", p.validMsg)
		}
	})

	t.Run("a Service that stops being a LoadBalancer gives its address back", func(t *testing.T) {
		f := f.forTest(t)
		f.namespace("retype", nil)
		f.pool("retype", onlyNamespace("retype", map[string]any{"addresses": addrs("10.10.0.0/32")}))
		f.service("retype", "a")
		f.waitReason("retype", "a", config.ReasonAllocated)
		f.service("retype", "b")
		f.waitReason("retype", "b", config.ReasonPoolExhausted)
		if _, err := f.cs.CoreV1().Services("retype").Patch(ctx, "a", types.MergePatchType,
			[]byte(`{"spec":{"type":"ClusterIP","allocateLoadBalancerNodePorts":null}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		f.waitReason("retype", "b", config.ReasonAllocated)
		f.wait("retype", "a", "cleared", func(s *corev1.Service) bool {
			return !hasAddress(s) && meta.FindStatusCondition(s.Status.Conditions, config.ConditionAllocated) == nil
		})
	})

	t.Run("restart: nothing moves, nothing is written", func(t *testing.T) {
		f := f.forTest(t)
		before := f.snapshot()
		writes := f.statusWrites()
		events := f.eventCount()
		stop()
		stop = f.runController(t, controller.Options{LoadBalancerClass: config.DefaultLoadBalancerClass, TakeClassless: true}, false)
		f.service("alloc", "after-restart")
		got := ingressIPs(f.waitReason("alloc", "after-restart", config.ReasonAllocated))
		if slices.Contains([]string{"10.1.0.0", "10.1.0.1", "10.1.0.2"}, got[0]) {
			t.Fatalf("new Service got %v, an address held before the restart", got)
		}
		f.quiesce(ctx)
		if w := f.statusWrites() - writes; w != 1 {
			t.Errorf("%d status writes after restart, want 1 (the new Service)", w)
		}
		if e := f.eventCount(); e != events {
			t.Errorf("%d new events after a restart", e-events)
		}
		after := f.snapshot()
		for k, ips := range before {
			if !slices.Equal(after[k], ips) {
				t.Errorf("%s moved from %v to %v", k, ips, after[k])
			}
		}
		f.noSharedWithoutKey()
	})

	t.Run("take-classless=false and another class", func(t *testing.T) {
		f := f.forTest(t)
		stop()
		stop = f.runController(t, controller.Options{LoadBalancerClass: "example.com/other", TakeClassless: false}, false)
		f.namespace("noclassless", nil)
		f.pool("noclassless", onlyNamespace("noclassless", map[string]any{"addresses": addrs("10.11.0.0/30")}))
		f.service("noclassless", "mine", withClass("example.com/other"))
		f.service("noclassless", "classless")
		f.waitReason("noclassless", "mine", config.ReasonAllocated)
		f.quiesce(ctx)
		if svc, _ := f.cs.CoreV1().Services("noclassless").Get(ctx, "classless", metav1.GetOptions{}); hasAddress(svc) {
			t.Errorf("class-less Service handled with take-classless=false: %+v", svc.Status)
		}
	})

	t.Run("cloud-provider mode", func(t *testing.T) {
		f := f.forTest(t)
		before := f.snapshot()
		stop()
		stop = f.runController(t, controller.Options{}, true)
		f.namespace("cloud", nil)
		f.pool("cloud", onlyNamespace("cloud", map[string]any{"addresses": addrs("10.12.0.0/31")}))
		f.service("cloud", "a")
		f.service("cloud", "classed", withClass(config.DefaultLoadBalancerClass))
		a := f.wait("cloud", "a", "given an address", hasAddress)
		if ip := a.Status.LoadBalancer.Ingress[0]; !strings.HasPrefix(ip.IP, "10.12.0.") || ip.IPMode == nil || *ip.IPMode != corev1.LoadBalancerIPModeVIP {
			t.Errorf("ingress %+v", ip)
		}
		if !slices.Contains(a.Finalizers, "service.kubernetes.io/load-balancer-cleanup") {
			t.Errorf("upstream finalizer missing: %v", a.Finalizers)
		}
		f.quiesce(ctx)
		if svc, _ := f.cs.CoreV1().Services("cloud").Get(ctx, "classed", metav1.GetOptions{}); hasAddress(svc) {
			t.Errorf("cloud-provider mode touched a Service with a class")
		}
		after := f.snapshot()
		for k, ips := range before {
			if k != "cloud/classed" && !slices.Equal(after[k], ips) {
				t.Errorf("switching modes moved %s from %v to %v", k, ips, after[k])
			}
		}
		if err := f.cs.CoreV1().Services("cloud").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := f.cs.CoreV1().Services("cloud").Get(ctx, "a", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("Service not released by the upstream controller (finalizer kept)")
			}
			time.Sleep(100 * time.Millisecond)
		}
		f.service("cloud", "b")
		if got := ingressIPs(f.wait("cloud", "b", "given the freed address", hasAddress)); len(got) != 1 || !strings.HasPrefix(got[0], "10.12.0.") {
			t.Errorf("b got %v", got)
		}
		f.noSharedWithoutKey()
	})
}

// noSharedWithoutKey fails when two Services hold one address without a common sharing key.
func (f *fixture) noSharedWithoutKey() {
	f.t.Helper()
	list, err := f.cs.CoreV1().Services("").List(f.t.Context(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	holder := map[string]corev1.Service{}
	for _, s := range list.Items {
		for _, ip := range ingressIPs(&s) {
			if o, ok := holder[ip]; ok {
				k1, _ := config.Annotation(o.Annotations, config.AnnotationAllowSharedIP)
				k2, _ := config.Annotation(s.Annotations, config.AnnotationAllowSharedIP)
				if k1 == "" || k1 != k2 || o.Namespace != s.Namespace {
					f.t.Errorf("%s held by %s/%s and %s/%s", ip, o.Namespace, o.Name, s.Namespace, s.Name)
				}
			}
			holder[ip] = s
		}
	}
}

// snapshot maps every Service with addresses to them.
func (f *fixture) snapshot() map[string][]string {
	f.t.Helper()
	list, err := f.cs.CoreV1().Services("").List(f.t.Context(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, s := range list.Items {
		if hasAddress(&s) {
			out[s.Namespace+"/"+s.Name] = ingressIPs(&s)
		}
	}
	return out
}

func (f *fixture) eventCount() int {
	f.t.Helper()
	list, err := f.cs.CoreV1().Events("").List(f.t.Context(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		n += max(1, int(e.Count))
	}
	return n
}

// waitEvents waits (events are written asynchronously) until n of Herald's events about a Service
// exist, and returns them.
func (f *fixture) waitEvents(ns, name string, n int) []corev1.Event {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := f.events(ns, name)
		if len(ev) >= n || time.Now().After(deadline) {
			return ev
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func summarize(evs []corev1.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return out
}

func (f *fixture) patchAnnotation(ns, name, key, value string) {
	f.t.Helper()
	patch := `{"metadata":{"annotations":{"` + key + `":"` + value + `"}}}`
	if _, err := f.cs.CoreV1().Services(ns).Patch(f.t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) patchPool(name, patch string) {
	f.t.Helper()
	if _, err := f.dyn.Resource(poolsGVR).Patch(f.t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// poolView is the part of a pool's status the tests look at.
type poolView struct {
	v4, v6         string // total/inUse/free
	finalizer      bool
	overlap, valid metav1.ConditionStatus
	validMsg       string
}

func (f *fixture) waitPool(name, what string, cond func(poolView) bool) poolView {
	f.t.Helper()
	var v poolView
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		p, err := f.getPool(name)
		if err == nil {
			v = poolView{finalizer: slices.Contains(p.Finalizers, config.FinalizerPoolInUse)}
			if c := p.Status.IPv4; c != nil {
				v.v4 = c.Total + "/" + c.InUse + "/" + c.Free
			}
			if c := p.Status.IPv6; c != nil {
				v.v6 = c.Total + "/" + c.InUse + "/" + c.Free
			}
			if c := meta.FindStatusCondition(p.Status.Conditions, config.ConditionOverlap); c != nil {
				v.overlap = c.Status
			}
			if c := meta.FindStatusCondition(p.Status.Conditions, config.ConditionValid); c != nil {
				v.valid, v.validMsg = c.Status, c.Message
			}
			if cond(v) {
				return v
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("pool %s not %s: %+v", name, what, v)
	return v
}
