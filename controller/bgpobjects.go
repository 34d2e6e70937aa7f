package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// The kinds checked together, as bgpconfig.Problem names them.
const (
	kindBGPPeer          = "BGPPeer"
	kindBGPAdvertisement = "BGPAdvertisement"
	kindBFDProfile       = "BFDProfile"
	kindCommunity        = "Community"
	kindL2Advertisement  = "L2Advertisement"
)

// bgpObjectKinds are the watched kinds, by name.
var bgpObjectKinds = map[string]client.Object{
	kindBGPPeer:          &v1beta1.BGPPeer{},
	kindBGPAdvertisement: &v1beta1.BGPAdvertisement{},
	kindBFDProfile:       &v1beta1.BFDProfile{},
	kindCommunity:        &v1beta1.Community{},
	kindL2Advertisement:  &v1beta1.L2Advertisement{},
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
	informers map[string]crcache.Informer // by kind, from the controller's cache of Herald's kinds
	queue     workqueue.TypedRateLimitingInterface[string]
	// communityProblems were reported as events already.
	communityProblems map[bgpconfig.Problem]bool
}

// newBGPObjects asks the controller's cache for the kinds' informers; call before the cache
// starts (they start with it).
func newBGPObjects(ctx context.Context, c *Controller) (*bgpObjects, error) {
	b := &bgpObjects{
		c:         c,
		informers: map[string]crcache.Informer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "bgpobjects", MetricsProvider: c.opts.Metrics.queues}),
		communityProblems: map[bgpconfig.Problem]bool{},
	}
	for kind, obj := range bgpObjectKinds {
		inf, err := c.informer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("informer of %s: %w", kind, err)
		}
		b.informers[kind] = inf
	}
	return b, nil
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
	synced := []cache.InformerSynced{b.c.poolInf.HasSynced}
	for _, inf := range b.informers {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		if ctx.Err() == nil {
			b.c.log.Error("BGP objects: caches did not sync; their conditions are not written")
		}
		return
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
	o, ok1 := old.(client.Object)
	n, ok2 := obj.(client.Object)
	return !ok1 || !ok2 || o.GetGeneration() != n.GetGeneration() ||
		(o.GetDeletionTimestamp() == nil) != (n.GetDeletionTimestamp() == nil)
}

// checked is one object with a status, as the cache holds it, and the conditions it carries.
type checked struct {
	kind       string
	obj        client.Object
	conditions []metav1.Condition
}

// sync validates every BGP object and writes the conditions that changed.
func (b *bgpObjects) sync(ctx context.Context) error {
	in, objects, err := b.input(ctx)
	if err != nil {
		return err
	}
	byObject := map[string][]bgpconfig.Problem{}
	for _, p := range bgpconfig.Validate(in) {
		byObject[p.Kind+"/"+p.Name] = append(byObject[p.Kind+"/"+p.Name], p)
	}
	b.reportCommunities(in.Communities, byObject)
	var errs []error
	for _, o := range objects {
		if err := b.writeConditions(ctx, o, byObject[o.kind+"/"+o.obj.GetName()]); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.kind, o.obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// input reads the cached objects (copies) for bgpconfig.Validate, with those that have a status,
// and looks up the Secrets peers name.
func (b *bgpObjects) input(ctx context.Context) (bgpconfig.Input, []checked, error) {
	in := bgpconfig.Input{SecretNamespace: b.c.opts.SecretNamespace, Passwords: map[string]string{}}
	if in.SecretNamespace == "" {
		in.SecretNamespace = DefaultSecretNamespace
	}
	in.Pools = listPools(ctx, b.c.crds, b.c.log)
	var (
		peers    v1beta1.BGPPeerList
		bgpAds   v1beta1.BGPAdvertisementList
		l2Ads    v1beta1.L2AdvertisementList
		profiles v1beta1.BFDProfileList
		comms    v1beta1.CommunityList
	)
	for _, list := range []client.ObjectList{&peers, &bgpAds, &l2Ads, &profiles, &comms} {
		if err := b.c.crds.List(ctx, list); err != nil {
			return in, nil, err
		}
	}
	in.Peers, in.Advertisements, in.L2Advertisements = peers.Items, bgpAds.Items, l2Ads.Items
	in.BFDProfiles, in.Communities = profiles.Items, comms.Items
	var objects []checked
	for i := range peers.Items {
		o := &peers.Items[i]
		objects = append(objects, checked{kindBGPPeer, o, o.Status.Conditions})
	}
	for i := range bgpAds.Items {
		o := &bgpAds.Items[i]
		objects = append(objects, checked{kindBGPAdvertisement, o, o.Status.Conditions})
	}
	for i := range l2Ads.Items {
		o := &l2Ads.Items[i]
		objects = append(objects, checked{kindL2Advertisement, o, o.Status.Conditions})
	}
	for i := range profiles.Items {
		o := &profiles.Items[i]
		objects = append(objects, checked{kindBFDProfile, o, o.Status.Conditions})
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
	return in, objects, nil
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
func (b *bgpObjects) writeConditions(ctx context.Context, o checked, problems []bgpconfig.Problem) error {
	conds := slices.Clone(o.conditions)
	var events []metav1.Condition
	for _, want := range bgpConditions(problems, o.obj.GetGeneration()) {
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
	if conditionsEqual(o.conditions, conds) {
		return nil
	}
	data, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return err
	}
	// o.obj is the cache's copy: the patch's answer may overwrite it.
	err = b.c.crdClient.Status().Patch(ctx, o.obj, client.RawPatch(types.MergePatchType, data), client.FieldOwner(fieldManager))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range events {
		b.c.recorder.Event(o.obj, corev1.EventTypeWarning, e.Reason, e.Message)
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
func (b *bgpObjects) reportCommunities(communities []v1beta1.Community, byObject map[string][]bgpconfig.Problem) {
	now := map[bgpconfig.Problem]bool{}
	for i := range communities {
		c := &communities[i]
		for _, p := range byObject[kindCommunity+"/"+c.Name] {
			now[p] = true
			if !b.communityProblems[p] {
				b.c.recorder.Event(c, corev1.EventTypeWarning, p.Reason, p.Message)
			}
		}
	}
	b.communityProblems = now
}
