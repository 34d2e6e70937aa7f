package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/controller"
	"github.com/heraldlb/herald/internal/realapi"
)

// herald creates a herald.io object of kind from its spec (as in YAML).
func (f *fixture) herald(resource, kind, name string, spec map[string]any) {
	f.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1beta1.GroupVersion.String(), "kind": kind, "metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := f.dyn.Resource(v1beta1.GroupVersion.WithResource(resource)).Create(f.t.Context(), u, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("%s %s: %v", kind, name, err)
	}
}

// waitCondition waits until a herald.io object's condition has this status and reason.
func (f *fixture) waitCondition(resource, name, condType string, status metav1.ConditionStatus, reason string) metav1.Condition {
	f.t.Helper()
	var last []metav1.Condition
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		u, err := f.dyn.Resource(v1beta1.GroupVersion.WithResource(resource)).Get(f.t.Context(), name, metav1.GetOptions{})
		if err == nil {
			var obj struct {
				Status struct {
					Conditions []metav1.Condition `json:"conditions"`
				} `json:"status"`
			}
			if err := fromUnstructured(u, &obj); err != nil {
				f.t.Fatal(err)
			}
			last = obj.Status.Conditions
			if c := meta.FindStatusCondition(last, condType); c != nil && c.Status == status && c.Reason == reason {
				return *c
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("%s %s: condition %s is not %s/%s after 30 s; conditions %+v", resource, name, condType, status, reason, last)
	return metav1.Condition{}
}

// warnings lists the controller's Warning events about a cluster-scoped object (they live in default).
func (f *fixture) warnings(name string) []corev1.Event {
	f.t.Helper()
	var out []corev1.Event
	for _, e := range f.events(metav1.NamespaceDefault, name) {
		if e.Type == corev1.EventTypeWarning {
			out = append(out, e)
		}
	}
	return out
}

// TestBGPObjectConditions: bad BGP configuration gets Valid False (reason and message) or
// NotSupported True plus one Warning event, on the object at fault only; fixing it turns the
// condition back; a restarted controller writes nothing and repeats no event.
func TestBGPObjectConditions(t *testing.T) {
	f := newFixture(t)
	f.namespace("herald-system", nil)
	stop := f.runController(t, controller.Options{}, false)
	f.pool("lan", map[string]any{"addresses": []any{"10.0.0.0/24"}})

	f.herald("bfdprofiles", "BFDProfile", "fast", map[string]any{"receiveInterval": int64(100)})
	f.herald("bfdprofiles", "BFDProfile", "passive", map[string]any{"passiveMode": true, "minimumTtl": int64(250)})
	f.herald("bfdprofiles", "BFDProfile", "echo", map[string]any{"echoMode": true})
	f.herald("bgppeers", "BGPPeer", "good", map[string]any{"myASN": int64(64512), "peerASN": int64(64500),
		"peerAddress": "10.0.0.1", "bfdProfile": "fast"})
	f.herald("bgppeers", "BGPPeer", "nosecret", map[string]any{"myASN": int64(64512), "peerASN": int64(64500),
		"peerAddress": "10.0.0.2", "passwordSecret": map[string]any{"name": "tor-md5"}})
	f.herald("bgppeers", "BGPPeer", "nobfd", map[string]any{"myASN": int64(64512), "peerASN": int64(64500),
		"peerAddress": "10.0.0.3", "bfdProfile": "missing"})
	f.herald("bgppeers", "BGPPeer", "vrf", map[string]any{"myASN": int64(64512), "peerASN": int64(64500),
		"peerAddress": "10.0.0.4", "vrf": "red"})
	f.herald("communities", "Community", "aliases", map[string]any{"communities": []any{
		map[string]any{"name": "edge", "value": "65000:1"}}})
	f.herald("communities", "Community", "zz-duplicate", map[string]any{"communities": []any{
		map[string]any{"name": "edge", "value": "65000:2"}}})
	f.herald("bgpadvertisements", "BGPAdvertisement", "good", map[string]any{"ipAddressPools": []any{"lan"},
		"communities": []any{"edge", "large:1:2:3"}, "peers": []any{"good"}})
	f.herald("bgpadvertisements", "BGPAdvertisement", "nopool", map[string]any{"ipAddressPools": []any{"wan"}})
	f.herald("bgpadvertisements", "BGPAdvertisement", "badcommunity", map[string]any{"communities": []any{"65536:1"}})
	f.herald("bgpadvertisements", "BGPAdvertisement", "nopeer", map[string]any{"peers": []any{"spine"}})
	f.herald("l2advertisements", "L2Advertisement", "l2-good", map[string]any{"ipAddressPools": []any{"lan"}})
	f.herald("l2advertisements", "L2Advertisement", "l2-nopool", map[string]any{"ipAddressPools": []any{"dmz"}})
	f.herald("l2advertisements", "L2Advertisement", "l2-preferred", map[string]any{"preferredNodeSelectors": []any{
		map[string]any{"weight": int64(10), "preference": map[string]any{"matchLabels": map[string]any{"rack": "a"}}}}})

	for _, name := range []string{"good"} {
		f.waitCondition("bgppeers", name, config.ConditionValid, metav1.ConditionTrue, "Valid")
		f.waitCondition("bgppeers", name, config.ConditionNotSupported, metav1.ConditionFalse, "Supported")
		f.waitCondition("bgpadvertisements", name, config.ConditionValid, metav1.ConditionTrue, "Valid")
	}
	f.waitCondition("bfdprofiles", "fast", config.ConditionValid, metav1.ConditionTrue, "Valid")
	f.waitCondition("bfdprofiles", "passive", config.ConditionNotSupported, metav1.ConditionFalse, "Supported")
	f.waitCondition("l2advertisements", "l2-good", config.ConditionValid, metav1.ConditionTrue, "Valid")
	bad := []struct {
		resource, name, condType, reason, mentions string
	}{
		{"bgppeers", "nosecret", config.ConditionValid, "SecretNotFound", "herald-system/tor-md5"},
		{"bgppeers", "nobfd", config.ConditionValid, "BFDProfileNotFound", `"missing"`},
		{"bgppeers", "vrf", config.ConditionNotSupported, "NotSupported", `vrf "red"`},
		{"bfdprofiles", "echo", config.ConditionNotSupported, "NotSupported", "echoMode"},
		{"bgpadvertisements", "nopool", config.ConditionValid, "UnknownPool", `"wan"`},
		{"bgpadvertisements", "badcommunity", config.ConditionValid, "InvalidCommunity", "65536:1"},
		{"bgpadvertisements", "nopeer", config.ConditionValid, "UnknownPeer", `"spine"`},
		{"l2advertisements", "l2-nopool", config.ConditionValid, "UnknownPool", `"dmz"`},
		{"l2advertisements", "l2-preferred", config.ConditionNotSupported, "NotSupported", "preferredNodeSelectors"},
	}
	for _, b := range bad {
		status := metav1.ConditionFalse
		if b.condType == config.ConditionNotSupported {
			status = metav1.ConditionTrue
		}
		c := f.waitCondition(b.resource, b.name, b.condType, status, b.reason)
		if !strings.Contains(c.Message, b.mentions) {
			t.Errorf("%s %s: message %q does not mention %s", b.resource, b.name, c.Message, b.mentions)
		}
	}
	// A NotSupported field does not make the object invalid.
	f.waitCondition("bfdprofiles", "echo", config.ConditionValid, metav1.ConditionTrue, "Valid")

	// One Warning event per problem, on the object at fault; none on the good ones. The duplicate
	// alias is reported on the Community defined second (by name), which has no status.
	waitEvents := func(name string, want int) []corev1.Event {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			evs := f.warnings(name)
			if len(evs) >= want || time.Now().After(deadline) {
				return evs
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, b := range bad {
		if evs := waitEvents(b.name, 1); len(evs) != 1 || evs[0].Reason != b.reason {
			t.Errorf("%s: want one Warning event %s, got %+v", b.name, b.reason, evs)
		}
	}
	if evs := waitEvents("zz-duplicate", 1); len(evs) != 1 || !strings.Contains(evs[0].Message, `"edge"`) {
		t.Errorf("Community zz-duplicate: want one Warning event about alias edge, got %+v", evs)
	}
	for _, name := range []string{"good", "fast", "passive", "aliases", "l2-good"} {
		if evs := f.warnings(name); len(evs) != 0 {
			t.Errorf("%s: no Warning expected, got %+v", name, evs)
		}
	}

	// Fixing one object: the missing Secret appears (the controller does not watch Secrets; a change
	// of the peer, or the resync, re-checks) and the BFD profile gets created.
	if _, err := f.cs.CoreV1().Secrets("herald-system").Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "tor-md5"},
		Data:       map[string][]byte{"password": []byte("s3cret")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.dyn.Resource(v1beta1.GroupVersion.WithResource("bgppeers")).Patch(context.Background(), "nosecret",
		types.MergePatchType, []byte(`{"spec":{"holdTime":"9s"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitCondition("bgppeers", "nosecret", config.ConditionValid, metav1.ConditionTrue, "Valid")
	f.herald("bfdprofiles", "BFDProfile", "missing", map[string]any{})
	f.waitCondition("bgppeers", "nobfd", config.ConditionValid, metav1.ConditionTrue, "Valid")
	f.waitCondition("bfdprofiles", "missing", config.ConditionNotSupported, metav1.ConditionFalse, "Supported")

	// A restarted controller finds every condition right: no status write, no new event.
	stop()
	writesBefore, err := bgpStatusWrites(f)
	if err != nil {
		t.Fatal(err)
	}
	eventsBefore := len(f.warnings("nopool"))
	stop = f.runController(t, controller.Options{}, false)
	defer stop()
	f.pool("later", map[string]any{"addresses": []any{"10.0.1.0/24"}}) // something to wait for
	f.quiesce(context.Background())
	if writesAfter, err := bgpStatusWrites(f); err != nil || writesAfter != writesBefore {
		t.Errorf("restart: BGP object status writes %d -> %d (%v), want none", writesBefore, writesAfter, err)
	}
	if n := len(f.warnings("nopool")); n != eventsBefore {
		t.Errorf("restart: Warning events on nopool %d -> %d, want none new", eventsBefore, n)
	}
}

// bgpStatusWrites counts the status writes of the BGP kinds, from the apiserver's own metrics.
func bgpStatusWrites(f *fixture) (int, error) {
	total := 0
	for _, r := range []string{"bgppeers", "bgpadvertisements", "l2advertisements", "bfdprofiles"} {
		n, err := realapi.Requests(f.cs, r, "status", "PATCH", "PUT")
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
