package dataplane

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/config"
)

// A Service and its slices as a cluster holds them: everything set that the API server and
// the EndpointSlice controller write.
func fullObjects() (*v1.Service, []*discoveryv1.EndpointSlice) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	svc := lbService("7")
	svc.UID = "svc-uid"
	svc.ManagedFields = managed
	svc.Spec.Selector = map[string]string{"app": "web"}
	svc.Annotations = map[string]string{
		v1.LastAppliedConfigAnnotation:        `{"apiVersion":"v1","kind":"Service"}`,
		config.AnnotationIPVSScheduler:        "wrr",
		v1.AnnotationTopologyMode:             "Auto",
		"metallb.universe.tf/allow-shared-ip": "k",
	}
	slices := webSlices()
	for i, s := range slices {
		s.UID = types.UID("slice-uid")
		s.GenerateName = "web-"
		s.ManagedFields = managed
		s.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web", UID: "svc-uid", Controller: ptr.To(true)}}
		s.Labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
		ep := &s.Endpoints[0]
		ep.Hostname = ptr.To("web-0")
		ep.Zone = ptr.To("z1")
		ep.DeprecatedTopology = map[string]string{"kubernetes.io/hostname": "n1"}
		ep.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}}
		ep.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(i == 0), Serving: ptr.To(true), Terminating: ptr.To(i != 0)}
		ep.TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "web-0", UID: types.UID("pod-uid-" + s.Name), ResourceVersion: "3"}
	}
	// A hand-written slice: a targetRef without UID.
	slices[1].Endpoints[0].TargetRef.UID = ""
	return svc, slices
}

func strip[T any](t *testing.T, obj T) T {
	t.Helper()
	out, err := StripForProxy(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out.(T)
}

func TestStripForProxyDropsOnlyWhatNobodyReads(t *testing.T) {
	svc, slices := fullObjects()
	s := strip(t, svc.DeepCopy())
	if s.ManagedFields != nil {
		t.Error("managed fields kept")
	}
	if _, kept := s.Annotations[v1.LastAppliedConfigAnnotation]; kept {
		t.Error("last-applied-configuration kept")
	}
	if len(s.Annotations) != 3 || s.UID != svc.UID || !reflect.DeepEqual(s.Spec, svc.Spec) || !reflect.DeepEqual(s.Status, svc.Status) {
		t.Errorf("the Service lost what is read:\n%+v\nwas\n%+v", s, svc)
	}

	es := strip(t, slices[0].DeepCopy())
	if es.UID != "" || es.Annotations != nil || es.OwnerReferences != nil || es.ManagedFields != nil || es.GenerateName != "" {
		t.Errorf("slice metadata not stripped: %+v", es.ObjectMeta)
	}
	ep := es.Endpoints[0]
	if ep.Hostname != nil || ep.DeprecatedTopology != nil || *ep.TargetRef != (v1.ObjectReference{UID: "pod-uid-web-a"}) {
		t.Errorf("endpoint not stripped: %+v", ep)
	}
	if es.Labels[discoveryv1.LabelServiceName] != "web" || !reflect.DeepEqual(es.Ports, slices[0].Ports) ||
		!reflect.DeepEqual(ep.Conditions, slices[0].Endpoints[0].Conditions) || *ep.Zone != "z1" || *ep.NodeName != "n1" ||
		!reflect.DeepEqual(ep.Hints, slices[0].Endpoints[0].Hints) || !reflect.DeepEqual(ep.Addresses, slices[0].Endpoints[0].Addresses) {
		t.Errorf("the slice lost what is read:\n%+v\nwas\n%+v", es, slices[0])
	}
	if got := strip(t, slices[1].DeepCopy()).Endpoints[0].TargetRef; got != nil {
		t.Errorf("a targetRef without UID is kept as %+v", got)
	}

	// Tombstones and other kinds pass.
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/web", Obj: svc}
	if got, err := StripForProxy(tomb); err != nil || !reflect.DeepEqual(got, tomb) {
		t.Errorf("tombstone: %v %v", got, err)
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{v1.LabelTopologyZone: "z1"}, ManagedFields: svc.ManagedFields}}
	if got := strip(t, node); got.ManagedFields != nil || got.Labels[v1.LabelTopologyZone] != "z1" {
		t.Errorf("node: %+v", got.ObjectMeta)
	}
}

// The proxy's desired state and the local-endpoint view come out the same from stripped
// objects as from whole ones.
func TestStripForProxyChangesNoReader(t *testing.T) {
	svc, slices := fullObjects()
	build := func(stripped bool) (State, []string, int) {
		tr := NewChangeTracker("n1")
		tr.OnNodeUpdate(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{v1.LabelTopologyZone: "z1"}}})
		view := NewLocalEndpoints()
		s := svc.DeepCopy()
		if stripped {
			s = strip(t, s)
		}
		tr.OnServiceUpdate(s)
		for _, sl := range slices {
			sl = sl.DeepCopy()
			if stripped {
				sl = strip(t, sl)
			}
			tr.OnEndpointSliceUpdate(sl)
			view.OnEndpointSliceUpdate(sl)
		}
		var st State
		tr.Apply(&st)
		key := types.NamespacedName{Namespace: "ns", Name: "web"}
		return st, view.NodesWithReady(key), view.LocalReadyCount(key, "n1")
	}
	wholeState, wholeNodes, wholeCount := build(false)
	st, nodes, count := build(true)
	if !reflect.DeepEqual(st, wholeState) {
		t.Errorf("desired state differs:\n%+v\nfrom whole objects:\n%+v", st, wholeState)
	}
	if !reflect.DeepEqual(nodes, wholeNodes) || count != wholeCount || count == 0 {
		t.Errorf("local view: nodes %v count %d, from whole objects %v %d", nodes, count, wholeNodes, wholeCount)
	}
}
