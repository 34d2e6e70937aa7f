// Package controller gives LoadBalancer Services their addresses and writes their status. It
// watches Services, Namespaces and IPAddressPools, rebuilds the allocator from every Service's
// status before it allocates anything (so addresses never move on restart or leader change), and
// writes each change as one patch of the status subresource. Beside that, and never in its way, it
// tells from the nodes' SpeakerStatus objects whether each Service is announced (announced.go,
// announcedwriter.go). Mode cloud-provider runs the upstream service controller with the allocator
// as its LoadBalancer instead (cloud.go).
package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller/allocator"
)

// Options configure a Controller.
type Options struct {
	// LoadBalancerClass is the spec.loadBalancerClass handled besides (with TakeClassless) none.
	LoadBalancerClass string
	TakeClassless     bool
	// Workers process Services in parallel; the allocator itself is serialised, the status writes are not.
	Workers int
	Logger  *slog.Logger
	Metrics *Metrics
	// SecretNamespace is Herald's own namespace (DefaultSecretNamespace when empty): where a
	// BGPPeer's passwordSecret without a namespace lives, for the BGP objects' Valid condition,
	// and where the speakers renew their Leases (config.SpeakerLeaseName).
	SecretNamespace string
}

// fieldManager names Herald in managedFields and events.
const fieldManager = "herald-controller"

// Controller is the native controller.
type Controller struct {
	opts   Options
	log    *slog.Logger
	client kubernetes.Interface
	// crds reads Herald's kinds, typed (config/scheme), from one informer cache, as the speaker
	// does; crdClient writes their status and finalizers. Each part waits only for the informers
	// it reads (the allocation path for the pools), so a slow list of one kind delays no other.
	crds      crcache.Cache
	crdClient client.Client
	// factory runs the built-in kinds' informers (protobuf; the upstream service controller of
	// cloud-provider mode shares them).
	factory informers.SharedInformerFactory
	// leaseFactory runs the informer of the speakers' Leases (Herald's namespace, their label).
	leaseFactory informers.SharedInformerFactory
	// nodeFactory runs the metadata-only informer of the Nodes: the announced writer reads their
	// labels (which nodes a BGPAdvertisement selects), and nothing else of them.
	nodeFactory metadatainformer.SharedInformerFactory
	svcInf      cache.SharedIndexInformer
	// services is the informer's store overlaid with our own patch results, so a reconcile that runs
	// before the watch delivers our write does not see the old status and write again.
	services   cache.MutationCache
	namespaces corelisters.NamespaceLister
	// poolInf is set by start; poolsSynced says (to readiness) that it has synced.
	poolInf     crcache.Informer
	poolsSynced atomic.Bool
	queue       workqueue.TypedRateLimitingInterface[string]
	poolQueue   workqueue.TypedRateLimitingInterface[string]
	recorder    record.EventRecorder
	alloc       *allocator.Allocator
	// bgp writes the Valid and NotSupported conditions of the BGP objects (bgpobjects.go).
	bgp *bgpObjects
	// announced writes the Services' herald.io/Announced condition (announcedwriter.go); nil in
	// cloud-provider mode, where Herald writes no Service status.
	announced *announcedWriter
	// allocWrote is when the allocation path last wrote a Service's status (Unix ns): the
	// announced writer holds its writes back while allocations are being written.
	allocWrote atomic.Int64

	// cloud: the upstream service controller handles class-less Services (RunCloudProvider).
	cloud bool

	// running counts the goroutines Run or RunCloudProvider started (see spawn); they wait for
	// all of them before returning.
	running sync.WaitGroup
}

// New builds a controller that reaches the API server through cs (built-in kinds) and rc
// (Herald's kinds); Run starts it. Nothing is asked of the API server before Run.
func New(cs kubernetes.Interface, rc *rest.Config, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 32
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	// Services are the bulk of the memory: drop managedFields, which the controller never reads.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(stripManagedFields))
	ns := cmp.Or(opts.SecretNamespace, DefaultSecretNamespace)
	leaseFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = config.LabelSpeakerLease }))
	sch := scheme.New()
	// One transform for every kind (ByObject would ask the API server about the kinds already here).
	crds, err := crcache.New(rc, crcache.Options{Scheme: sch, DefaultTransform: transformHeraldKinds})
	if err != nil {
		return nil, fmt.Errorf("cache of Herald's kinds: %w", err)
	}
	crdClient, err := client.New(rc, client.Options{Scheme: sch})
	if err != nil {
		return nil, fmt.Errorf("client of Herald's kinds: %w", err)
	}
	mc, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	c := &Controller{
		opts:         opts,
		log:          opts.Logger,
		client:       cs,
		crds:         crds,
		crdClient:    crdClient,
		factory:      factory,
		leaseFactory: leaseFactory,
		nodeFactory:  metadatainformer.NewFilteredSharedInformerFactory(mc, 0, "", nil),
		svcInf:       factory.Core().V1().Services().Informer(),
		namespaces:   factory.Core().V1().Namespaces().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "services", MetricsProvider: opts.Metrics.queues}),
		poolQueue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pools", MetricsProvider: opts.Metrics.queues}),
		alloc: allocator.New(),
	}
	c.services = cache.NewIntegerResourceVersionMutationCache(klogFor(opts.Logger), c.svcInf.GetStore(), c.svcInf.GetIndexer(), time.Minute, false)
	return c, nil
}

// transformHeraldKinds is what the cache of Herald's kinds keeps of an object: a SpeakerStatus
// (up to 10,000 announcements per node) as compactSpeakerStatus keeps it, every kind without its
// managedFields.
func transformHeraldKinds(obj any) (any, error) {
	if st, ok := obj.(*v1beta1.SpeakerStatus); ok {
		return compactSpeakerStatus(st)
	}
	return stripManagedFields(obj)
}

// informer returns the cache's informer of obj's kind (created now, started with the cache),
// waiting while the API server cannot say what the kind is (unreachable, or the CRDs not applied
// yet): the controller stays alive, and not ready, meanwhile.
func (c *Controller) informer(ctx context.Context, obj client.Object) (crcache.Informer, error) {
	for logged := false; ; {
		inf, err := c.crds.GetInformer(ctx, obj, crcache.BlockUntilSynced(false))
		if err == nil {
			return inf, nil
		}
		if !logged {
			c.log.Warn("waiting for the API server to serve Herald's kinds (are the CRDs of config/crd applied?)",
				"kind", fmt.Sprintf("%T", obj), "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run starts the informers, rebuilds the allocator from the Services' status, then processes
// Services until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	ctx, cancel := context.WithCancel(ctx)
	defer c.stop(cancel)

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	// Events name Services and Herald's objects: the scheme knows both.
	c.recorder = broadcaster.NewRecorder(scheme.New(), corev1.EventSource{Component: fieldManager})

	bgp, err := newBGPObjects(ctx, c)
	if err != nil {
		return err
	}
	c.bgp = bgp
	announced, err := newAnnouncedWriter(ctx, c.announcedDeps())
	if err != nil {
		return err
	}
	c.announced = announced
	if err := c.start(ctx, c.serviceHandlers()); err != nil {
		return err
	}
	c.spawn(func() { c.bgp.run(ctx) })
	c.leaseFactory.Start(ctx.Done()) // after newAnnouncedWriter registered on it
	c.nodeFactory.Start(ctx.Done())
	c.spawn(func() { c.announced.run(ctx) })
	for range c.opts.Workers {
		c.spawn(func() {
			wait.UntilWithContext(ctx, func(ctx context.Context) { work(ctx, c.log, c.queue, c.syncService) }, time.Second)
		})
	}
	c.log.Info("controller running", "workers", c.opts.Workers, "class", c.opts.LoadBalancerClass, "takeClassless", c.opts.TakeClassless)
	<-ctx.Done()
	return nil
}

// start registers the handlers, syncs the informers, loads the pools and restores every Service's
// addresses; only then may anything be allocated.
func (c *Controller) start(ctx context.Context, svcHandlers cache.ResourceEventHandler) error {
	poolInf, err := c.informer(ctx, &v1beta1.IPAddressPool{})
	if err != nil {
		return err
	}
	c.poolInf = poolInf
	if _, err := c.svcInf.AddEventHandler(svcHandlers); err != nil {
		return err
	}
	if _, err := c.factory.Core().V1().Namespaces().Informer().AddEventHandler(c.namespaceHandlers()); err != nil {
		return err
	}
	if _, err := c.poolInf.AddEventHandler(c.poolHandlers(ctx)); err != nil {
		return err
	}
	c.factory.Start(ctx.Done())
	c.spawn(func() {
		if err := c.crds.Start(ctx); err != nil {
			c.log.Error("the cache of Herald's kinds stopped", "err", err)
		}
	})
	begin := time.Now()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.poolInf.HasSynced) {
		return errors.New("cache of IPAddressPools did not sync (are the CRDs of config/crd applied?)")
	}
	c.poolsSynced.Store(true)
	c.loadPools(ctx)
	n := c.restore()
	c.log.Info("state rebuilt from Service status", "servicesWithAddresses", n, "took", time.Since(begin))
	c.spawn(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) { work(ctx, c.log, c.poolQueue, c.syncPool) }, time.Second)
	})
	return nil
}

// spawn runs f on a goroutine that Run or RunCloudProvider waits for (see stop); f must return
// once their context ends or the queues shut down.
func (c *Controller) spawn(f func()) {
	c.running.Add(1)
	go func() {
		defer c.running.Done()
		f()
	}()
}

// stop ends what Run or RunCloudProvider started and waits for it: cancel ends the loops and the
// informers (the cache of Herald's kinds returns from Start, which a spawned goroutine runs),
// shutting the queues down releases the workers waiting in Get.
func (c *Controller) stop(cancel context.CancelFunc) {
	cancel()
	c.queue.ShutDown()
	c.poolQueue.ShutDown()
	c.running.Wait()
	c.factory.Shutdown()
	c.leaseFactory.Shutdown()
	c.nodeFactory.Shutdown()
}

// removeSpeaker deletes a gone speaker's SpeakerStatus and Lease (either may be gone already).
func (c *Controller) removeSpeaker(ctx context.Context, node string) error {
	ns := cmp.Or(c.opts.SecretNamespace, DefaultSecretNamespace)
	err := c.crdClient.Delete(ctx, &v1beta1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: node}})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = c.client.CoordinationV1().Leases(ns).Delete(ctx, config.SpeakerLeaseName(node), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// restore records the current addresses of every LoadBalancer Service, ours or not, oldest first
// (if two claim one address without sharing it, the older keeps it).
func (c *Controller) restore() int {
	svcs := c.svcInf.GetStore().List()
	sort.Slice(svcs, func(i, j int) bool {
		a, b := svcs[i].(*corev1.Service), svcs[j].(*corev1.Service)
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	n := 0
	for _, obj := range svcs {
		svc := obj.(*corev1.Service)
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		req, _ := allocator.ServiceFromAPI(svc, c.namespaceLabels(svc.Namespace)) // Current is read even if the rest is malformed
		c.alloc.Restore(req)
		n++
	}
	return n
}

// handles reports whether the Service is ours: type LoadBalancer, and our class or (if we take
// them) no class.
func (c *Controller) handles(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return c.opts.TakeClassless
	}
	return *svc.Spec.LoadBalancerClass == c.opts.LoadBalancerClass
}

func (c *Controller) namespaceLabels(ns string) map[string]string {
	if n, err := c.namespaces.Get(ns); err == nil {
		return n.Labels
	}
	return nil
}

func (c *Controller) serviceHandlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueue(obj) },
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: func(obj any) { c.enqueue(obj) },
	}
}

func (c *Controller) enqueue(obj any) { enqueueKey(c.queue, obj) }

// enqueueKey adds an object's namespace/name to q (deleted objects' too).
func enqueueKey(q workqueue.TypedInterface[string], obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		q.Add(key)
	}
}

// namespaceHandlers re-examine a namespace's Services when its labels change (pools may select
// namespaces by label).
func (c *Controller) namespaceHandlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			o, n := old.(*corev1.Namespace), obj.(*corev1.Namespace)
			if labels.Equals(o.Labels, n.Labels) {
				return
			}
			for _, svc := range c.svcInf.GetStore().List() {
				if s := svc.(*corev1.Service); s.Namespace == n.Name {
					c.enqueue(s)
				}
			}
		},
	}
}

// work processes a queue's items one at a time until the queue shuts down.
func work(ctx context.Context, log *slog.Logger, q workqueue.TypedRateLimitingInterface[string], sync func(context.Context, string) error) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		if err := sync(ctx, key); err != nil {
			log.Warn("sync failed, will retry", "key", key, "err", err)
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

// syncService brings one Service's addresses and status to what its spec asks for.
func (c *Controller) syncService(ctx context.Context, key string) error {
	obj, exists, err := c.services.GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		c.release(ctx, key)
		return nil
	}
	svc := obj.(*corev1.Service)
	switch {
	case c.cloud && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass == nil:
		return nil // the upstream service controller's
	case svc.Spec.Type == corev1.ServiceTypeLoadBalancer && (c.cloud || !c.handles(svc)):
		c.reserve(ctx, svc)
		return nil
	case svc.Spec.Type != corev1.ServiceTypeLoadBalancer:
		c.release(ctx, key)
		if c.cloud {
			return nil
		}
		return c.clearStatus(ctx, svc)
	}
	req, parseErr := allocator.ServiceFromAPI(svc, c.namespaceLabels(svc.Namespace))
	var res allocator.Result
	if parseErr != nil {
		// Nothing to wait for: only a change of the Service makes it valid.
		res = allocator.Result{Reason: config.ReasonInvalidRequest, Message: parseErr.Error(), Freed: c.alloc.Release(key)}
	} else {
		res = c.alloc.Assign(req)
	}
	if res.Freed {
		c.retryPending()
	}
	if res.Freed || !slices.Equal(res.IPs, req.Current) {
		c.poolUsageChanged(ctx)
	}
	return c.writeStatus(ctx, svc, req.Current, res)
}

// reserve records the addresses in the status of a LoadBalancer Service that is not ours (another
// class, or another Herald configuration gave them): they are never given to a second Service.
func (c *Controller) reserve(ctx context.Context, svc *corev1.Service) {
	req, _ := allocator.ServiceFromAPI(svc, nil)
	if c.alloc.Reserve(req) {
		c.retryPending()
		c.poolUsageChanged(ctx)
	}
}

// release forgets a Service that is gone or no longer ours, and lets waiting Services use what it had.
func (c *Controller) release(ctx context.Context, key string) {
	if c.alloc.Release(key) {
		c.retryPending()
		c.poolUsageChanged(ctx)
	}
}

// retryPending queues every Service waiting for an address: room may have appeared.
func (c *Controller) retryPending() {
	for _, k := range c.alloc.Waiting() {
		c.queue.Add(k)
	}
}

// resyncAll queues every Service: after a pool change any Service's answer may differ (pending
// ones may fit, PoolRemoved ones may be back in a pool).
func (c *Controller) resyncAll() {
	for _, key := range c.svcInf.GetStore().ListKeys() {
		c.queue.Add(key)
	}
}

// allocatedCondition is the herald.io/Allocated condition for an allocation result.
func allocatedCondition(svc *corev1.Service, res allocator.Result) metav1.Condition {
	status := metav1.ConditionFalse
	if res.Reason == config.ReasonAllocated {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: config.ConditionAllocated, Status: status, Reason: res.Reason,
		Message: res.Message, ObservedGeneration: svc.Generation}
}
