package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller/allocator"
)

// poolStatusDelay batches the status writes of a pool whose usage changes many times a second.
const poolStatusDelay = time.Second

// poolHandlers reload the pools when a spec or deletion changes (not on our own status writes) and
// re-examine every Service, since any answer may change. The announced writer hears of every
// change after the allocator (the pool an address is from is the allocator's answer), and of
// label changes too: advertisements select pools by label.
func (c *Controller) poolHandlers(ctx context.Context) cache.ResourceEventHandler {
	changed := func(obj any) {
		c.loadPools(ctx)
		c.resyncAll()
		c.announced.configChanged()
		if p, ok := obj.(*v1beta1.IPAddressPool); ok {
			c.poolQueue.Add(p.Name)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: changed,
		UpdateFunc: func(old, obj any) {
			switch {
			case specUpdated(old, obj):
				changed(obj)
			case !labels.Equals(old.(*v1beta1.IPAddressPool).Labels, obj.(*v1beta1.IPAddressPool).Labels):
				c.announced.configChanged()
			}
		},
		DeleteFunc: func(any) {
			c.loadPools(ctx)
			c.resyncAll()
			c.announced.configChanged()
		},
	}
}

// loadPools gives the allocator every pool. Only valid pools not being deleted give out addresses
// (addresspool.Set); Services keep what they hold from the others (PoolRemoved) until they go,
// then a deleted pool's finalizer goes.
func (c *Controller) loadPools(ctx context.Context) {
	var pools []allocator.Pool
	for _, p := range listPools(ctx, c.crds, c.log) {
		pools = append(pools, allocator.PoolFromAPI(&p))
	}
	c.alloc.SetPools(pools)
}

// listPools returns the cached pools (copies). The cache's List waits only for an informer that
// has not synced, and the callers run once it has: it fails only when ctx ended meanwhile.
func listPools(ctx context.Context, crds client.Reader, log *slog.Logger) []v1beta1.IPAddressPool {
	var list v1beta1.IPAddressPoolList
	if err := crds.List(ctx, &list); err != nil {
		log.Error("cannot list the cached IPAddressPools", "err", err)
		return nil
	}
	return list.Items
}

// poolUsageChanged schedules a status write of every pool, batched by poolStatusDelay.
func (c *Controller) poolUsageChanged(ctx context.Context) {
	for _, p := range listPools(ctx, c.crds, c.log) {
		c.poolQueue.AddAfter(p.Name, poolStatusDelay)
	}
}

// syncPool keeps a pool's finalizer and status: counts per family, Valid and Overlap conditions.
func (c *Controller) syncPool(ctx context.Context, name string) error {
	p := &v1beta1.IPAddressPool{}
	if err := c.crds.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		return client.IgnoreNotFound(err)
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
	// p is the cache's copy: the patch's answer may overwrite it.
	err = c.crdClient.Status().Patch(ctx, p, client.RawPatch(types.MergePatchType, data), client.FieldOwner(fieldManager))
	return client.IgnoreNotFound(err)
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
	err = c.crdClient.Patch(ctx, p, client.RawPatch(types.MergePatchType, data), client.FieldOwner(fieldManager))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil && !want {
		c.log.Info("pool released", "pool", p.Name)
	}
	return err
}
