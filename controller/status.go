package controller

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"

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
	answerChanged := old == nil || old.Status != cond.Status || old.Reason != cond.Reason || old.Message != cond.Message
	if !answerChanged && old.ObservedGeneration == cond.ObservedGeneration && ingressEqual(svc.Status.LoadBalancer.Ingress, ingress) {
		return nil
	}
	cond.LastTransitionTime = metav1.Now()
	if old != nil && old.Status == cond.Status {
		cond.LastTransitionTime = old.LastTransitionTime
	}
	patch := map[string]any{"status": map[string]any{
		"loadBalancer": map[string]any{"ingress": ingress}, // nil deletes the list
		"conditions":   []metav1.Condition{cond},
	}}
	if err := c.patchStatus(ctx, svc, patch); err != nil {
		return err
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

// clearStatus removes Herald's ingress and condition from a Service that is no longer ours (type
// changed away from LoadBalancer); nothing when it carries none.
func (c *Controller) clearStatus(ctx context.Context, svc *corev1.Service) error {
	if meta.FindStatusCondition(svc.Status.Conditions, config.ConditionAllocated) == nil {
		return nil
	}
	patch := map[string]any{"status": map[string]any{
		"loadBalancer": map[string]any{"ingress": nil},
		"conditions":   []map[string]any{{"type": config.ConditionAllocated, "$patch": "delete"}},
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
