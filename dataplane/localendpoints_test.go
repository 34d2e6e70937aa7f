package dataplane

import (
	"reflect"
	"sync"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

type testEP struct {
	ip, node           string
	ready, terminating *bool
}

func slice(ns, name, svc string, eps ...testEP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Terminating: e.terminating}}
		if e.node != "" {
			ep.NodeName = ptr.To(e.node)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func TestLocalEndpointsReadyNodes(t *testing.T) {
	l := NewLocalEndpoints()
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	var mu sync.Mutex
	var notified []types.NamespacedName
	unsub := l.Subscribe(func(s types.NamespacedName) { mu.Lock(); notified = append(notified, s); mu.Unlock() })

	l.OnEndpointSliceUpdate(slice("ns", "web-a", "web",
		testEP{ip: "10.0.0.1", node: "n1"},                                                  // unset Ready means ready
		testEP{ip: "10.0.0.2", node: "n2", ready: ptr.To(true)},                             // ready
		testEP{ip: "10.0.0.3", node: "n3", ready: ptr.To(false), terminating: ptr.To(true)}, // draining: not counted
		testEP{ip: "10.0.0.4", ready: ptr.To(true)},                                         // no node: not counted
	))
	l.OnEndpointSliceUpdate(slice("ns", "web-b", "web", testEP{ip: "10.0.0.5", node: "n1", ready: ptr.To(true)}))

	if got, want := l.NodesWithReady(svc), []string{"n1", "n2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("NodesWithReady = %v, want %v", got, want)
	}
	if !l.HasLocalReady(svc, "n1") || l.HasLocalReady(svc, "n3") {
		t.Fatalf("HasLocalReady n1=%v n3=%v, want true false", l.HasLocalReady(svc, "n1"), l.HasLocalReady(svc, "n3"))
	}
	if got := l.LocalReadyCount(svc, "n1"); got != 2 {
		t.Fatalf("LocalReadyCount n1 = %d, want 2 (one per slice)", got)
	}
	if len(notified) != 2 {
		t.Fatalf("notifications = %v, want 2 (one per changing slice)", notified)
	}

	// A no-op update (same ready nodes and counts) does not notify.
	l.OnEndpointSliceUpdate(slice("ns", "web-b", "web", testEP{ip: "10.0.0.5", node: "n1", ready: ptr.To(true)}))
	if len(notified) != 2 {
		t.Fatalf("no-op update notified: %v", notified)
	}

	// n2's only endpoint starts terminating: n2 drops out.
	l.OnEndpointSliceUpdate(slice("ns", "web-a", "web",
		testEP{ip: "10.0.0.1", node: "n1"},
		testEP{ip: "10.0.0.2", node: "n2", ready: ptr.To(false), terminating: ptr.To(true)},
	))
	if got, want := l.NodesWithReady(svc), []string{"n1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after terminating: NodesWithReady = %v, want %v", got, want)
	}

	// Deleting every slice empties the view; other Services are untouched.
	l.OnEndpointSliceUpdate(slice("ns", "db-a", "db", testEP{ip: "10.0.1.1", node: "n3"}))
	l.OnEndpointSliceDelete(slice("ns", "web-a", "web"))
	l.OnEndpointSliceDelete(slice("ns", "web-b", "web"))
	if got := l.NodesWithReady(svc); len(got) != 0 {
		t.Fatalf("after delete: NodesWithReady = %v, want none", got)
	}
	if !l.HasLocalReady(types.NamespacedName{Namespace: "ns", Name: "db"}, "n3") {
		t.Fatalf("db lost its endpoint when web's slices were deleted")
	}

	unsub()
	before := len(notified)
	l.OnEndpointSliceDelete(slice("ns", "db-a", "db"))
	if len(notified) != before {
		t.Fatalf("notified after unsubscribe")
	}
}

func TestLocalEndpointsSliceRelabelled(t *testing.T) {
	l := NewLocalEndpoints()
	l.OnEndpointSliceUpdate(slice("ns", "s1", "old", testEP{ip: "10.0.0.1", node: "n1"}))
	l.OnEndpointSliceUpdate(slice("ns", "s1", "new", testEP{ip: "10.0.0.1", node: "n1"}))
	if l.HasLocalReady(types.NamespacedName{Namespace: "ns", Name: "old"}, "n1") {
		t.Fatal("relabelled slice still counts for its old Service")
	}
	if !l.HasLocalReady(types.NamespacedName{Namespace: "ns", Name: "new"}, "n1") {
		t.Fatal("relabelled slice does not count for its new Service")
	}
}

func TestLocalEndpointsFromInformer(t *testing.T) {
	client := fake.NewSimpleClientset(slice("ns", "web-a", "web", testEP{ip: "10.0.0.1", node: "n1"}))
	factory := informers.NewSharedInformerFactory(client, 0)
	l := NewLocalEndpoints()
	if err := l.Register(factory.Discovery().V1().EndpointSlices().Informer()); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, l.HasSynced) {
		t.Fatal("never synced")
	}
	if !l.HasLocalReady(types.NamespacedName{Namespace: "ns", Name: "web"}, "n1") {
		t.Fatal("informer's initial list not reflected")
	}
}
