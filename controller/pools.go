package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller/allocator"
)

var poolsGVR = v1beta1.GroupVersion.WithResource("ipaddresspools")

// poolStatusDelay batches the status writes of a pool whose usage changes many times a second.
const poolStatusDelay = time.Second

// poolHandlers reload the pools when a spec or deletion changes (not on our own status writes) and
// re-examine every Service, since any answer may change. The announced writer hears of every
// change after the allocator (the pool an address is from is the allocator's answer), and of
// label changes too: advertisements select pools by label.
func (c *Controller) poolHandlers() cache.ResourceEventHandler {
	changed := func(obj any) {
		c.loadPools()
		c.resyncAll()
		c.announced.configChanged()
		if u, ok := obj.(*unstructured.Unstructured); ok {
			c.poolQueue.Add(u.GetName())
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: changed,
		UpdateFunc: func(old, obj any) {
			switch {
			case specUpdated(old, obj):
				changed(obj)
			case !labels.Equals(old.(*unstructured.Unstructured).GetLabels(), obj.(*unstructured.Unstructured).GetLabels()):
				c.announced.configChanged()
			}
		},
		DeleteFunc: func(any) {
			c.loadPools()
			c.resyncAll()
			c.announced.configChanged()
		},
	}
}

// loadPools gives the allocator every pool. Only valid pools not being deleted give out addresses
// (addresspool.Set); Services keep what they hold from the others (PoolRemoved) until they go,
// then a deleted pool's finalizer goes.
func (c *Controller) loadPools() {
	var pools []allocator.Pool
	for _, p := range c.listPools() {
		pools = append(pools, allocator.PoolFromAPI(p))
	}
	c.alloc.SetPools(pools)
}

func (c *Controller) listPools() []*v1beta1.IPAddressPool {
	var out []*v1beta1.IPAddressPool
	for _, obj := range c.poolInf.GetStore().List() {
		if p, err := toPool(obj); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func toPool(obj any) (*v1beta1.IPAddressPool, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the pool cache", obj)
	}
	p := &v1beta1.IPAddressPool{}
	return p, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p)
}

// poolUsageChanged schedules a status write of every pool, batched by poolStatusDelay.
func (c *Controller) poolUsageChanged() {
	for _, key := range c.poolInf.GetStore().ListKeys() {
		c.poolQueue.AddAfter(key, poolStatusDelay)
	}
}

// syncPool keeps a pool's finalizer and status: counts per family, Valid and Overlap conditions.
func (c *Controller) syncPool(ctx context.Context, name string) error {
	obj, exists, err := c.poolInf.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	p, err := toPool(obj)
	if err != nil {
		return err
	}
	ap := allocator.PoolFromAPI(p)
	invalid := ap.Err
	if p.DeletionTimestamp != nil {
		held := 0
		if invalid == nil {
			held = c.alloc.HeldOutsidePools(ap.Blocks)
		}
		if held > 0 {
			c.log.Info("pool deleted but still in use; Services keep their addresses", "pool", name, "held", held)
			return nil
		}
		return c.setFinalizer(ctx, p, false)
	}
	if err := c.setFinalizer(ctx, p, true); err != nil {
		return err
	}
	status := v1beta1.IPAddressPoolStatus{Conditions: slices.Clone(p.Status.Conditions)}
	valid := metav1.Condition{Type: config.ConditionValid, Status: metav1.ConditionTrue, Reason: config.ReasonValid, Message: "addresses and selectors are well-formed"}
	overlap := metav1.Condition{Type: config.ConditionOverlap, Status: metav1.ConditionFalse, Reason: config.ReasonNoOverlap, Message: "no older pool holds these addresses"}
	if invalid != nil {
		valid.Status, valid.Reason, valid.Message = metav1.ConditionFalse, config.ReasonInvalid, invalid.Error()+"; fix the pool, it gives out nothing until then"
	}
	if rep, ok := c.alloc.Report(name); ok {
		if len(rep.Overlaps) > 0 {
			overlap.Status, overlap.Reason = metav1.ConditionTrue, config.ReasonOverlap
			overlap.Message = fmt.Sprintf("addresses also in older pool(s) %s are given out only by those", strings.Join(rep.Overlaps, ", "))
		}
		for fam, u := range rep.Usage {
			counts := &v1beta1.AddressCounts{Total: u.Total.String(), InUse: fmt.Sprint(u.InUse), Free: u.Free.String()}
			if fam == corev1.IPv4Protocol {
				status.IPv4 = counts
			} else {
				status.IPv6 = counts
			}
			total, _ := u.Total.Float64()
			c.opts.Metrics.AddressesTotal.WithLabelValues(name, string(fam)).Set(total)
			c.opts.Metrics.AddressesInUse.WithLabelValues(name, string(fam)).Set(float64(u.InUse))
		}
	}
	for _, cond := range []metav1.Condition{valid, overlap} {
		cond.ObservedGeneration = p.Generation
		meta.SetStatusCondition(&status.Conditions, cond)
	}
	if equalPoolStatus(p.Status, status) {
		return nil
	}
	data, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = c.pools.Patch(ctx, name, types.MergePatchType, data, metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func equalPoolStatus(a, b v1beta1.IPAddressPoolStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// setFinalizer adds or removes config.FinalizerPoolInUse; the resourceVersion in the patch makes a
// concurrent change of the finalizer list fail (and retry) instead of being overwritten.
func (c *Controller) setFinalizer(ctx context.Context, p *v1beta1.IPAddressPool, want bool) error {
	has := slices.Contains(p.Finalizers, config.FinalizerPoolInUse)
	if has == want {
		return nil
	}
	fins := slices.DeleteFunc(slices.Clone(p.Finalizers), func(f string) bool { return f == config.FinalizerPoolInUse })
	if want {
		fins = append(fins, config.FinalizerPoolInUse)
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": p.ResourceVersion}})
	if err != nil {
		return err
	}
	_, err = c.pools.Patch(ctx, p.Name, types.MergePatchType, data, metav1.PatchOptions{FieldManager: fieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil && !want {
		c.log.Info("pool released", "pool", p.Name)
	}
	return err
}
