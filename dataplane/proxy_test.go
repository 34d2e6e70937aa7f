package dataplane

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// handlerOnly is an informer that only hands its handler to the test.
type handlerOnly struct{ h cache.ResourceEventHandler }

func (i *handlerOnly) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	i.h = h
	return i, nil
}
func (i *handlerOnly) HasSynced() bool { return true }

// With informers shared with the speaker the proxy sees every Service: one labelled for another
// proxy must leave (or never enter) its state, as if deleted.
func TestProxySkipsServicesOfAnotherProxy(t *testing.T) {
	services, slices := &handlerOnly{}, &handlerOnly{}
	p := NewProxy(ProxyOptions{NodeName: "n1", Backend: nil})
	if err := p.Register(services, slices, nil); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	svc := lbService("1")
	services.h.OnAdd(svc, true)
	for _, s := range webSlices() {
		slices.h.OnAdd(s, true)
	}
	var st State
	p.tracker.Apply(&st)
	if len(st.Services[key]) == 0 {
		t.Fatal("the Service is not proxied")
	}

	claimed := lbService("2")
	claimed.Labels = map[string]string{LabelServiceProxyName: ""}
	services.h.OnUpdate(svc, claimed)
	p.tracker.Apply(&st)
	if _, ok := st.Services[key]; ok {
		t.Fatal("a Service labelled service.kubernetes.io/service-proxy-name is still proxied")
	}

	services.h.OnUpdate(claimed, lbService("3"))
	p.tracker.Apply(&st)
	if len(st.Services[key]) == 0 {
		t.Fatal("the Service is not proxied again once the label is gone")
	}
}
