package dataplane

import (
	"slices"
	"strings"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// LocalEndpoints is the one view of "which nodes have a ready endpoint for which Service",
// built from EndpointSlices. The L2 and BGP announcers use it to announce externalTrafficPolicy:
// Local Services only from nodes that can serve them, and the healthCheckNodePort servers use it
// for their answer, so every part of a node agrees on the same facts at the same moment.
//
// An endpoint counts when its Ready condition is true or unset (the API says consumers treat an
// unset Ready as ready) and it has a nodeName. Terminating endpoints are never ready, so they do
// not count: a node whose last pod is draining stops attracting new traffic.
//
// Feed it by calling Register with an EndpointSlice informer (client-go's SharedIndexInformer and
// controller-runtime's cache informers both fit), or by calling the On* methods yourself.
// All methods are safe for concurrent use.
type LocalEndpoints struct {
	mu sync.RWMutex
	// services holds, per Service, what each of its slices says and the per-node counts derived
	// from them. Flat slices rather than nested maps: with 10,000 Services the maps (three
	// levels per Service) were ~20 MB of the speaker's heap; this is a few hundred bytes each.
	services map[types.NamespacedName]*serviceReady
	// sliceOwner remembers which Service a slice counted for, in case its label changes.
	sliceOwner  map[types.NamespacedName]types.NamespacedName
	subscribers map[int]func(types.NamespacedName)
	nextSubID   int
	synced      []cache.InformerSynced
}

// serviceReady is one Service's part of the view.
type serviceReady struct {
	// slices is what each of its EndpointSlices says (a Service has few: one per 100 endpoints
	// per family), so an update or delete replaces exactly one slice's contribution.
	slices []sliceReady
	// nodes is derived from slices: the nodes with ready endpoints, sorted, each with its number
	// of distinct ready endpoints.
	nodes []nodeCount
}

// sliceReady is what one EndpointSlice says: its ready endpoints, sorted by node and key.
type sliceReady struct {
	name      string
	endpoints []readyEndpoint
}

// readyEndpoint is one ready endpoint: its node, and its identity across slices (endpointKey).
// The strings are the informer's own, not copies.
type readyEndpoint struct{ node, key string }

type nodeCount struct {
	node  string
	count int
}

// EventHandlerRegistrar is the part of an informer LocalEndpoints needs.
type EventHandlerRegistrar interface {
	AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error)
}

// NewLocalEndpoints returns an empty view.
func NewLocalEndpoints() *LocalEndpoints {
	return &LocalEndpoints{
		services:    map[types.NamespacedName]*serviceReady{},
		sliceOwner:  map[types.NamespacedName]types.NamespacedName{},
		subscribers: map[int]func(types.NamespacedName){},
	}
}

// Register feeds the view from an EndpointSlice informer.
func (l *LocalEndpoints) Register(sliceInformer EventHandlerRegistrar) error {
	reg, err := sliceInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.OnEndpointSliceUpdate(asSlice(obj)) },
		UpdateFunc: func(_, obj any) { l.OnEndpointSliceUpdate(asSlice(obj)) },
		DeleteFunc: func(obj any) { l.OnEndpointSliceDelete(asSlice(obj)) },
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.synced = append(l.synced, reg.HasSynced)
	l.mu.Unlock()
	return nil
}

// HasSynced reports whether every registered informer has delivered its initial list, so that
// "no ready endpoint" means none rather than "not seen yet".
func (l *LocalEndpoints) HasSynced() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.synced {
		if !s() {
			return false
		}
	}
	return true
}

// HasLocalReady reports whether node has at least one ready endpoint of svc.
func (l *LocalEndpoints) HasLocalReady(svc types.NamespacedName, node string) bool {
	return l.LocalReadyCount(svc, node) > 0
}

// LocalReadyCount is the number of distinct ready endpoints of svc on node (a dual-stack pod
// appears in one slice per family and counts once). It is the healthCheckNodePort's answer.
func (l *LocalEndpoints) LocalReadyCount(svc types.NamespacedName, node string) int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if s := l.services[svc]; s != nil {
		if i, found := slices.BinarySearchFunc(s.nodes, node, func(n nodeCount, node string) int { return strings.Compare(n.node, node) }); found {
			return s.nodes[i].count
		}
	}
	return 0
}

// NodesWithReady lists, sorted, the nodes that have at least one ready endpoint of svc.
func (l *LocalEndpoints) NodesWithReady(svc types.NamespacedName) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var nodes []string
	if s := l.services[svc]; s != nil {
		nodes = make([]string, 0, len(s.nodes))
		for _, n := range s.nodes {
			nodes = append(nodes, n.node)
		}
	}
	return nodes
}

// Subscribe calls fn with a Service's name every time the set of nodes with ready endpoints of
// that Service, or the count on any node, changes. fn runs on the informer's goroutine while no
// lock is held: it must not block (hand the name to a workqueue or a buffered channel). The
// returned function ends the subscription.
func (l *LocalEndpoints) Subscribe(fn func(svc types.NamespacedName)) (unsubscribe func()) {
	l.mu.Lock()
	id := l.nextSubID
	l.nextSubID++
	l.subscribers[id] = fn
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.subscribers, id)
		l.mu.Unlock()
	}
}

// OnEndpointSliceUpdate records an added or updated slice.
func (l *LocalEndpoints) OnEndpointSliceUpdate(slice *discoveryv1.EndpointSlice) {
	if slice == nil {
		return
	}
	svc, ok := sliceService(slice)
	if !ok {
		return
	}
	var eps []readyEndpoint
	for i := range slice.Endpoints {
		ep := &slice.Endpoints[i]
		if ep.NodeName == nil || *ep.NodeName == "" || !isReady(ep) {
			continue
		}
		eps = append(eps, readyEndpoint{node: *ep.NodeName, key: endpointKey(ep)})
	}
	slices.SortFunc(eps, compareReadyEndpoints)
	l.replace(types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}, svc, &sliceReady{name: slice.Name, endpoints: eps})
}

// OnEndpointSliceDelete forgets a slice.
func (l *LocalEndpoints) OnEndpointSliceDelete(slice *discoveryv1.EndpointSlice) {
	if slice == nil {
		return
	}
	l.replace(types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}, types.NamespacedName{}, nil)
}

// replace swaps one slice's contribution (next nil: removes it; else it counts for svc) and
// notifies subscribers of every Service whose view changed (a slice relabelled to another
// Service changes two).
func (l *LocalEndpoints) replace(slice, svc types.NamespacedName, next *sliceReady) {
	l.mu.Lock()
	var changed []types.NamespacedName
	if prev, ok := l.sliceOwner[slice]; ok && (next == nil || prev != svc) {
		delete(l.sliceOwner, slice)
		if l.update(prev, slice.Name, nil) {
			changed = append(changed, prev)
		}
	}
	if next != nil {
		l.sliceOwner[slice] = svc
		if l.update(svc, slice.Name, next) {
			changed = append(changed, svc)
		}
	}
	subs := make([]func(types.NamespacedName), 0, len(l.subscribers))
	for _, fn := range l.subscribers {
		subs = append(subs, fn)
	}
	l.mu.Unlock()
	for _, svc := range changed {
		for _, fn := range subs {
			fn(svc)
		}
	}
}

// update puts (or with next nil removes) the slice named name in svc's part of the view and
// recounts it; it reports whether the nodes or their counts changed. The caller holds l.mu.
func (l *LocalEndpoints) update(svc types.NamespacedName, name string, next *sliceReady) bool {
	s := l.services[svc]
	if s == nil {
		s = &serviceReady{}
	}
	i := slices.IndexFunc(s.slices, func(r sliceReady) bool { return r.name == name })
	switch {
	case next == nil && i >= 0:
		s.slices = slices.Delete(s.slices, i, i+1)
	case next != nil && i >= 0:
		s.slices[i] = *next
	case next != nil:
		s.slices = append(s.slices, *next)
	}
	before := s.nodes
	s.nodes = countByNode(s.slices)
	if len(s.slices) == 0 {
		delete(l.services, svc)
	} else {
		l.services[svc] = s
	}
	return !slices.Equal(before, s.nodes)
}

// countByNode counts one Service's distinct ready endpoints per node, sorted by node.
func countByNode(from []sliceReady) []nodeCount {
	var all []readyEndpoint
	switch len(from) {
	case 0:
		return nil
	case 1:
		all = from[0].endpoints // sorted already
	default:
		for _, s := range from {
			all = append(all, s.endpoints...)
		}
		slices.SortFunc(all, compareReadyEndpoints)
	}
	var out []nodeCount
	for i, e := range all {
		if i > 0 && all[i-1] == e {
			continue // the same endpoint in two slices
		}
		if n := len(out); n > 0 && out[n-1].node == e.node {
			out[n-1].count++
		} else {
			out = append(out, nodeCount{node: e.node, count: 1})
		}
	}
	return slices.Clip(out)
}

func compareReadyEndpoints(a, b readyEndpoint) int {
	if c := strings.Compare(a.node, b.node); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}

// sliceService names the Service a slice belongs to, from the kubernetes.io/service-name label
// (the only link the API defines; hand-written slices for selector-less Services use it too).
func sliceService(slice *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name := slice.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: slice.Namespace, Name: name}, true
}

// isReady applies the API's rule that an unset Ready condition means ready.
func isReady(ep *discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// endpointKey identifies an endpoint across slices: the pod when known, else its first address.
func endpointKey(ep *discoveryv1.Endpoint) string {
	if ep.TargetRef != nil && ep.TargetRef.UID != "" {
		return string(ep.TargetRef.UID)
	}
	if len(ep.Addresses) > 0 {
		return ep.Addresses[0]
	}
	return ""
}

// asSlice unwraps informer objects, including the tombstones delivered for missed deletes.
func asSlice(obj any) *discoveryv1.EndpointSlice {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, _ := obj.(*discoveryv1.EndpointSlice)
	return s
}
