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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/bgpconfig"
	"github.com/heraldlb/herald/config/v1beta1"
)

// The BGP objects and L2Advertisements are checked as one configuration (an advertisement names
// pools, peers and community aliases; a peer names a BFD profile and a Secret), with
// bgpconfig.Validate, the same reading the speakers translate them with. Each BGPPeer,
// BGPAdvertisement, L2Advertisement and BFDProfile gets a Valid and a NotSupported condition; a
// Community has no status, so its problems are events only.
// Problems that exist only on some node (two peers of one node disagreeing on the router ID) are
// the speakers' to report.

var bgpObjectGVRs = map[string]schema.GroupVersionResource{
	"BGPPeer":          v1beta1.GroupVersion.WithResource("bgppeers"),
	"BGPAdvertisement": v1beta1.GroupVersion.WithResource("bgpadvertisements"),
	"BFDProfile":       v1beta1.GroupVersion.WithResource("bfdprofiles"),
	"Community":        v1beta1.GroupVersion.WithResource("communities"),
	"L2Advertisement":  v1beta1.GroupVersion.WithResource("l2advertisements"),
}

// bgpObjectsResync re-reads the Secrets BGPPeers name: the controller does not watch Secrets (it
// may only get the ones named), so a Secret created later is noticed within this time.
const bgpObjectsResync = 30 * time.Second

// bgpObjectsKey is the one key of the validation queue: any change re-checks everything.
const bgpObjectsKey = "bgp"

// DefaultSecretNamespace is where a passwordSecret without a namespace is looked up when
// Options.SecretNamespace is empty (the speaker's default namespace too).
const DefaultSecretNamespace = "herald-system"

// bgpObjects validates the BGP configuration and writes its conditions.
type bgpObjects struct {
	c         *Controller
	dyn       dynamic.Interface
	factory   dynamicinformer.DynamicSharedInformerFactory
	informers map[string]cache.SharedIndexInformer // by kind
	queue     workqueue.TypedRateLimitingInterface[string]
	// communityProblems were reported as events already.
	communityProblems map[bgpconfig.Problem]bool
}

func newBGPObjects(c *Controller, dyn dynamic.Interface) *bgpObjects {
	b := &bgpObjects{
		c: c, dyn: dyn,
		factory:   dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		informers: map[string]cache.SharedIndexInformer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "bgpobjects", MetricsProvider: c.opts.Metrics.queues}),
		communityProblems: map[bgpconfig.Problem]bool{},
	}
	for kind, gvr := range bgpObjectGVRs {
		b.informers[kind] = b.factory.ForResource(gvr).Informer()
	}
	return b
}

// run checks the BGP objects until ctx ends. It runs beside the Service allocation and never
// delays it: its informers sync on their own.
func (b *bgpObjects) run(ctx context.Context) {
	defer b.queue.ShutDown()
	enqueue := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { b.queue.Add(bgpObjectsKey) },
		UpdateFunc: func(old, obj any) {
			if specUpdated(old, obj) {
				b.queue.Add(bgpObjectsKey)
			}
		},
		DeleteFunc: func(any) { b.queue.Add(bgpObjectsKey) },
	}
	for _, inf := range b.informers {
		if _, err := inf.AddEventHandler(enqueue); err != nil {
			b.c.log.Error("BGP objects: cannot watch", "err", err)
			return
		}
	}
	// Pools: an advertisement may name one that does not exist yet.
	if _, err := b.c.poolInf.AddEventHandler(enqueue); err != nil {
		b.c.log.Error("BGP objects: cannot watch pools", "err", err)
		return
	}
	b.factory.Start(ctx.Done())
	defer b.factory.Shutdown() // its informers end with ctx
	for gvr, ok := range b.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			b.c.log.Error("BGP objects: cache did not sync; their conditions are not written", "resource", gvr)
			return
		}
	}
	b.c.spawn(func() {
		for {
			key, quit := b.queue.Get()
			if quit {
				return
			}
			if err := b.sync(ctx); err != nil {
				b.c.log.Warn("BGP objects: sync failed, will retry", "err", err)
				b.queue.AddRateLimited(key)
			} else {
				b.queue.Forget(key)
				b.queue.AddAfter(key, bgpObjectsResync)
			}
			b.queue.Done(key)
		}
	})
	b.queue.Add(bgpObjectsKey)
	<-ctx.Done()
}

// specUpdated reports whether an update of a Herald object changed more than its status (our own
// writes): its spec (generation) or whether it is being deleted.
func specUpdated(old, obj any) bool {
	o, ok1 := old.(*unstructured.Unstructured)
	n, ok2 := obj.(*unstructured.Unstructured)
	return !ok1 || !ok2 || o.GetGeneration() != n.GetGeneration() ||
		(o.GetDeletionTimestamp() == nil) != (n.GetDeletionTimestamp() == nil)
}

// sync validates every BGP object and writes the conditions that changed.
func (b *bgpObjects) sync(ctx context.Context) error {
	objects := map[string][]*unstructured.Unstructured{}
	for kind, inf := range b.informers {
		for _, obj := range inf.GetStore().List() {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				objects[kind] = append(objects[kind], u)
			}
		}
	}
	in, err := b.input(ctx, objects)
	if err != nil {
		return err
	}
	byObject := map[string][]bgpconfig.Problem{}
	for _, p := range bgpconfig.Validate(in) {
		byObject[p.Kind+"/"+p.Name] = append(byObject[p.Kind+"/"+p.Name], p)
	}
	b.reportCommunities(objects["Community"], byObject)
	var errs []error
	for kind, list := range objects {
		if kind == "Community" {
			continue
		}
		for _, u := range list {
			if err := b.writeConditions(ctx, kind, u, byObject[kind+"/"+u.GetName()]); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", kind, u.GetName(), err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// input converts the cached objects for bgpconfig.Validate and looks up the Secrets peers name.
func (b *bgpObjects) input(ctx context.Context, objects map[string][]*unstructured.Unstructured) (bgpconfig.Input, error) {
	in := bgpconfig.Input{SecretNamespace: b.c.opts.SecretNamespace, Passwords: map[string]string{}}
	if in.SecretNamespace == "" {
		in.SecretNamespace = DefaultSecretNamespace
	}
	for _, p := range b.c.listPools() {
		in.Pools = append(in.Pools, *p)
	}
	for kind, list := range objects {
		for _, u := range list {
			var err error
			switch kind {
			case "BGPPeer":
				in.Peers, err = appendConverted(in.Peers, u)
			case "BGPAdvertisement":
				in.Advertisements, err = appendConverted(in.Advertisements, u)
			case "L2Advertisement":
				in.L2Advertisements, err = appendConverted(in.L2Advertisements, u)
			case "BFDProfile":
				in.BFDProfiles, err = appendConverted(in.BFDProfiles, u)
			case "Community":
				in.Communities, err = appendConverted(in.Communities, u)
			}
			if err != nil {
				return in, fmt.Errorf("%s %s: %w", kind, u.GetName(), err)
			}
		}
	}
	for i := range in.Peers {
		key := bgpconfig.PasswordSecret(&in.Peers[i], in.SecretNamespace)
		if key == nil {
			continue
		}
		secret, err := b.c.client.CoreV1().Secrets(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			// Absent from Passwords: Validate reports it.
		case err != nil:
			// Cannot tell (no permission, API trouble): say nothing rather than something wrong;
			// the speakers, which read the Secret themselves, report it if it is really missing.
			b.c.log.Warn("BGP objects: cannot read a peer's passwordSecret; not checked", "peer", in.Peers[i].Name, "secret", key, "err", err)
			in.Passwords[key.String()] = "unchecked"
		case len(secret.Data["password"]) > 0:
			// Only whether there is a password matters here; the value stays out of the controller.
			in.Passwords[key.String()] = "present"
		}
	}
	return in, nil
}

func appendConverted[T any](list []T, u *unstructured.Unstructured) ([]T, error) {
	var obj T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		return list, err
	}
	return append(list, obj), nil
}

// bgpConditions are the Valid and NotSupported conditions for an object's problems.
func bgpConditions(problems []bgpconfig.Problem, generation int64) []metav1.Condition {
	valid := metav1.Condition{Type: config.ConditionValid, Status: metav1.ConditionTrue, Reason: config.ReasonValid,
		Message: "well-formed, and everything it names exists"}
	supported := metav1.Condition{Type: config.ConditionNotSupported, Status: metav1.ConditionFalse, Reason: config.ReasonSupported,
		Message: "every field it sets is implemented"}
	var invalid, unsupported []bgpconfig.Problem
	for _, p := range problems {
		if p.Condition == config.ConditionNotSupported {
			unsupported = append(unsupported, p)
		} else {
			invalid = append(invalid, p)
		}
	}
	if len(invalid) > 0 {
		valid.Status, valid.Reason, valid.Message = metav1.ConditionFalse, invalid[0].Reason, problemMessages(invalid)
	}
	if len(unsupported) > 0 {
		supported.Status, supported.Reason, supported.Message = metav1.ConditionTrue, unsupported[0].Reason, problemMessages(unsupported)
	}
	valid.ObservedGeneration, supported.ObservedGeneration = generation, generation
	return []metav1.Condition{valid, supported}
}

func problemMessages(problems []bgpconfig.Problem) string {
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Message
	}
	return strings.Join(msgs, "; ")
}

// writeConditions patches an object's status when its conditions change, with a Warning event
// for each condition that newly reports a problem (or reports a different one).
func (b *bgpObjects) writeConditions(ctx context.Context, kind string, u *unstructured.Unstructured, problems []bgpconfig.Problem) error {
	var current struct {
		Status struct {
			Conditions []metav1.Condition `json:"conditions"`
		} `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &current); err != nil {
		return err
	}
	conds := slices.Clone(current.Status.Conditions)
	var events []metav1.Condition
	for _, want := range bgpConditions(problems, u.GetGeneration()) {
		old := meta.FindStatusCondition(conds, want.Type)
		reportsProblem := want.Status == metav1.ConditionFalse
		if want.Type == config.ConditionNotSupported {
			reportsProblem = want.Status == metav1.ConditionTrue
		}
		if reportsProblem && (old == nil || old.Status != want.Status || old.Reason != want.Reason || old.Message != want.Message) {
			events = append(events, want)
		}
		meta.SetStatusCondition(&conds, want)
	}
	if conditionsEqual(current.Status.Conditions, conds) {
		return nil
	}
	data, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return err
	}
	_, err = b.dyn.Resource(bgpObjectGVRs[kind]).Patch(ctx, u.GetName(), types.MergePatchType, data,
		metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range events {
		b.c.recorder.Event(u, corev1.EventTypeWarning, e.Reason, e.Message)
	}
	return nil
}

func conditionsEqual(a, b []metav1.Condition) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// reportCommunities records one Warning event per new problem of a Community (remembered in
// memory, since a Community has no status: a restarted controller reports a standing problem once
// more).
func (b *bgpObjects) reportCommunities(communities []*unstructured.Unstructured, byObject map[string][]bgpconfig.Problem) {
	now := map[bgpconfig.Problem]bool{}
	for _, u := range communities {
		for _, p := range byObject["Community/"+u.GetName()] {
			now[p] = true
			if !b.communityProblems[p] {
				b.c.recorder.Event(u, corev1.EventTypeWarning, p.Reason, p.Message)
			}
		}
	}
	b.communityProblems = now
}
