package dataplane

import (
	"sort"
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
	// slices holds each slice's contribution by Service and slice name, so an update or delete
	// replaces it exactly and a recompute touches only that Service's few slices.
	slices map[types.NamespacedName]map[string]sliceReady
	// sliceOwner remembers which Service a slice counted for, in case its label changes.
	sliceOwner map[types.NamespacedName]types.NamespacedName
	// ready is derived from slices: Service -> node -> distinct ready endpoints on that node.
	ready       map[types.NamespacedName]map[string]map[string]struct{}
	subscribers map[int]func(types.NamespacedName)
	nextSubID   int
	synced      []cache.InformerSynced
}

// sliceReady is what one EndpointSlice says: its Service and, per node, its ready endpoints.
type sliceReady struct {
	service types.NamespacedName
	nodes   map[string][]string // node -> endpoint keys
}

// EventHandlerRegistrar is the part of an informer LocalEndpoints needs.
type EventHandlerRegistrar interface {
	AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error)
}

// NewLocalEndpoints returns an empty view.
func NewLocalEndpoints() *LocalEndpoints {
	return &LocalEndpoints{
		slices:      map[types.NamespacedName]map[string]sliceReady{},
		sliceOwner:  map[types.NamespacedName]types.NamespacedName{},
		ready:       map[types.NamespacedName]map[string]map[string]struct{}{},
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
	return len(l.ready[svc][node])
}

// NodesWithReady lists, sorted, the nodes that have at least one ready endpoint of svc.
func (l *LocalEndpoints) NodesWithReady(svc types.NamespacedName) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	nodes := make([]string, 0, len(l.ready[svc]))
	for n := range l.ready[svc] {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
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
	contribution := sliceReady{service: svc, nodes: map[string][]string{}}
	for i := range slice.Endpoints {
		ep := &slice.Endpoints[i]
		if ep.NodeName == nil || *ep.NodeName == "" || !isReady(ep) {
			continue
		}
		contribution.nodes[*ep.NodeName] = append(contribution.nodes[*ep.NodeName], endpointKey(ep))
	}
	l.replace(types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}, &contribution)
}

// OnEndpointSliceDelete forgets a slice.
func (l *LocalEndpoints) OnEndpointSliceDelete(slice *discoveryv1.EndpointSlice) {
	if slice == nil {
		return
	}
	l.replace(types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}, nil)
}

// replace swaps one slice's contribution and notifies subscribers of every Service whose view
// changed (a slice relabelled to another Service changes two).
func (l *LocalEndpoints) replace(slice types.NamespacedName, next *sliceReady) {
	l.mu.Lock()
	affected := map[types.NamespacedName]struct{}{}
	if prev, ok := l.sliceOwner[slice]; ok {
		affected[prev] = struct{}{}
		delete(l.slices[prev], slice.Name)
		if len(l.slices[prev]) == 0 {
			delete(l.slices, prev)
		}
		delete(l.sliceOwner, slice)
	}
	if next != nil {
		affected[next.service] = struct{}{}
		if l.slices[next.service] == nil {
			l.slices[next.service] = map[string]sliceReady{}
		}
		l.slices[next.service][slice.Name] = *next
		l.sliceOwner[slice] = next.service
	}
	var changed []types.NamespacedName
	for svc := range affected {
		before := l.ready[svc]
		after := l.recompute(svc)
		if !sameCounts(before, after) {
			changed = append(changed, svc)
		}
		if len(after) == 0 {
			delete(l.ready, svc)
		} else {
			l.ready[svc] = after
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

// recompute derives one Service's per-node ready endpoints from all of its slices (a Service
// has few: one per 100 endpoints per family).
func (l *LocalEndpoints) recompute(svc types.NamespacedName) map[string]map[string]struct{} {
	out := map[string]map[string]struct{}{}
	for _, s := range l.slices[svc] {
		for node, keys := range s.nodes {
			if out[node] == nil {
				out[node] = map[string]struct{}{}
			}
			for _, k := range keys {
				out[node][k] = struct{}{}
			}
		}
	}
	return out
}

func sameCounts(a, b map[string]map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for node, eps := range a {
		if len(b[node]) != len(eps) {
			return false
		}
	}
	return true
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
