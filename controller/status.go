package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/controller/allocator"
)

// writeStatus writes the Service's ingress and herald.io/Allocated condition in one strategic-merge
// patch of the status subresource, and nothing when both already say what res says. Conditions of
// other types are left alone (the list merges by type). An event marks each change of answer.
func (c *Controller) writeStatus(ctx context.Context, svc *corev1.Service, current []netip.Addr, res allocator.Result) error {
	ingress := allocator.Ingress(res.IPs)
	cond := allocatedCondition(svc, res)
	old := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated)
	answerChanged := conditionChanged(old, &cond)
	annotations := annotationsCondition(svc)
	oldAnnotations := meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnotationsValid)
	annotationsChanged := annotations != nil && conditionChanged(oldAnnotations, annotations)
	if !answerChanged && !annotationsChanged && old.ObservedGeneration == cond.ObservedGeneration &&
		ingressEqual(svc.Status.LoadBalancer.Ingress, ingress) {
		return nil
	}
	conditions := []metav1.Condition{stamped(cond, old)}
	if annotations != nil {
		conditions = append(conditions, stamped(*annotations, oldAnnotations))
	}
	patch := map[string]any{"status": map[string]any{
		"loadBalancer": map[string]any{"ingress": ingress}, // nil deletes the list
		"conditions":   conditions,
	}}
	c.allocWrote.Store(time.Now().UnixNano())
	if err := c.patchStatus(ctx, svc, patch); err != nil {
		return err
	}
	if annotationsChanged && annotations.Status == metav1.ConditionFalse {
		c.recorder.Event(svc, corev1.EventTypeWarning, annotations.Reason, annotations.Message)
		c.log.Info("service annotations invalid or conflicting", "service", svc.Namespace+"/"+svc.Name, "reason", annotations.Reason, "message", annotations.Message)
	}
	if !answerChanged {
		return nil
	}
	if len(res.IPs) > 0 && !slices.Equal(res.IPs, current) {
		c.opts.Metrics.Allocations.WithLabelValues(res.Pool).Inc()
	}
	if res.Reason != config.ReasonAllocated {
		c.opts.Metrics.Failures.WithLabelValues(res.Reason).Inc()
		c.recorder.Event(svc, corev1.EventTypeWarning, res.Reason, res.Message)
		c.log.Info("service refused", "service", svc.Namespace+"/"+svc.Name, "reason", res.Reason, "message", res.Message)
		return nil
	}
	// A first allocation is recorded by the condition alone (an event per Service would double the
	// writes of a mass creation); a recovery or a move is worth an event.
	if old != nil && (old.Reason != config.ReasonAllocated || len(current) > 0) {
		c.recorder.Event(svc, corev1.EventTypeNormal, res.Reason, res.Message)
	}
	c.log.Debug("service allocated", "service", svc.Namespace+"/"+svc.Name, "ips", res.IPs, "pool", res.Pool)
	return nil
}

// conditionChanged tells whether cur says something else than old (a missing old included).
func conditionChanged(old, cur *metav1.Condition) bool {
	return old == nil || old.Status != cur.Status || old.Reason != cur.Reason || old.Message != cur.Message
}

// stamped returns cond with its lastTransitionTime: old's when the status stays, now otherwise.
func stamped(cond metav1.Condition, old *metav1.Condition) metav1.Condition {
	cond.LastTransitionTime = metav1.Now()
	if old != nil && old.Status == cond.Status {
		cond.LastTransitionTime = old.LastTransitionTime
	}
	return cond
}

// annotationsCondition checks the Herald annotations that do not take part in allocation (those
// that do are checked by the allocator: a malformed one refuses the Service with InvalidRequest),
// and the requests that precedence resolved (see conflictingRequests). It returns nil for a
// Service that is fine and never was otherwise, so valid Services carry no extra condition and
// cost no extra write; a Service whose mistake was fixed gets True.
func annotationsCondition(svc *corev1.Service) *metav1.Condition {
	reason := config.ReasonInvalidAnnotation
	var problems []string
	if v, key := config.Annotation(svc.Annotations, config.AnnotationIPVSScheduler); key != "" {
		if _, err := config.ParseIPVSScheduler(v); err != nil {
			problems = append(problems, "annotation "+key+": "+err.Error())
		}
	}
	if _, err := config.ParseUserspaceProxy(svc.Annotations); err != nil {
		problems = append(problems, err.Error())
	}
	if conflicts := conflictingRequests(svc); len(conflicts) > 0 {
		if len(problems) == 0 {
			reason = config.ReasonConflictingRequests
		}
		problems = append(problems, conflicts...)
	}
	if len(problems) > 0 {
		return &metav1.Condition{Type: config.ConditionAnnotationsValid, Status: metav1.ConditionFalse,
			Reason: reason, Message: strings.Join(problems, "; "), ObservedGeneration: svc.Generation}
	}
	if meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAnnotationsValid) == nil {
		return nil
	}
	return &metav1.Condition{Type: config.ConditionAnnotationsValid, Status: metav1.ConditionTrue,
		Reason: config.ReasonAnnotationsValid, Message: "every herald.io annotation has a usable value and none conflicts with another",
		ObservedGeneration: svc.Generation}
}

// conflictingRequests describes each request of the Service that Herald ignores because another
// one, asking for something else, takes precedence: a MetalLB annotation under a Herald one (or
// metallb.universe.tf under metallb.io), and spec.loadBalancerIP under herald.io/loadBalancerIPs.
// The allocator serves the one used; the user learns here which one that is.
func conflictingRequests(svc *corev1.Service) []string {
	var out []string
	for _, name := range config.AliasedAnnotations {
		value, used := config.Annotation(svc.Annotations, name)
		for _, ignored := range config.Overridden(svc.Annotations, name) {
			out = append(out, fmt.Sprintf("annotation %s=%q is ignored: %s=%q takes precedence (Herald's annotations over MetalLB's, metallb.io over metallb.universe.tf); remove one or make them agree",
				ignored, svc.Annotations[ignored], used, value))
		}
	}
	requested, used := config.Annotation(svc.Annotations, config.AnnotationLoadBalancerIPs)
	if spec := svc.Spec.LoadBalancerIP; used != "" && spec != "" && !requestsIP(requested, spec) {
		out = append(out, fmt.Sprintf("spec.loadBalancerIP %q is ignored: annotation %s=%q takes precedence; remove spec.loadBalancerIP (deprecated) or make them agree",
			spec, used, requested))
	}
	return out
}

// requestsIP reports whether the comma list of addresses holds ip (compared as addresses where
// both parse, so 2001:db8::1 and 2001:DB8:0::1 agree).
func requestsIP(list, ip string) bool {
	want, wantErr := netip.ParseAddr(strings.TrimSpace(ip))
	for _, field := range strings.Split(list, ",") {
		field = strings.TrimSpace(field)
		if got, err := netip.ParseAddr(field); err == nil && wantErr == nil {
			if got == want {
				return true
			}
		} else if field == strings.TrimSpace(ip) {
			return true
		}
	}
	return false
}

// clearStatus removes Herald's ingress and conditions from a Service that is no longer ours (type
// changed away from LoadBalancer); nothing when it carries none.
func (c *Controller) clearStatus(ctx context.Context, svc *corev1.Service) error {
	if meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated) == nil {
		return nil
	}
	patch := map[string]any{"status": map[string]any{
		"loadBalancer": map[string]any{"ingress": nil},
		"conditions": []map[string]any{
			{"type": config.ConditionAllocated, "$patch": "delete"},
			{"type": config.ConditionAnnotationsValid, "$patch": "delete"},
			{"type": config.ConditionAnnounced, "$patch": "delete"},
		},
	}}
	return c.patchStatus(ctx, svc, patch)
}

func (c *Controller) patchStatus(ctx context.Context, svc *corev1.Service, patch map[string]any) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	updated, err := c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.StrategicMergePatchType,
		data, metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) { // deleted meanwhile: nothing to write, nothing to retry
		return nil
	}
	if err != nil {
		return err
	}
	obj, _ := stripManagedFields(updated)
	c.services.Mutation(obj)
	return nil
}

func ingressEqual(a, b []corev1.LoadBalancerIngress) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.LoadBalancerIngress) bool {
		return x.IP == y.IP && x.Hostname == y.Hostname && len(x.Ports) == 0 && len(y.Ports) == 0 &&
			(x.IPMode == nil) == (y.IPMode == nil) && (x.IPMode == nil || *x.IPMode == *y.IPMode)
	})
}

// klogFor lets client-go parts that take a klog.Logger log through slog.
func klogFor(l *slog.Logger) klog.Logger { return logr.FromSlogHandler(l.Handler()) }
