package dataplane

import (
	"net/netip"
	"testing"
)

func pe(addr string, local, ready, serving, terminating bool, zones ...string) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: 80, Local: local, Ready: ready, Serving: serving, Terminating: terminating, Hints: &EndpointHints{ForZones: zones}}
}

func nodeHinted(e Endpoint, nodes ...string) Endpoint {
	e.Hints.ForNodes = nodes
	return e
}

func addrsOf(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr.String())
	}
	return out
}

func TestSelectEndpoints(t *testing.T) {
	node := Node{Name: "n1", Zone: "a"}
	ready := func(a string, local bool, zones ...string) Endpoint { return pe(a, local, true, true, false, zones...) }
	draining := func(a string, local bool) Endpoint { return pe(a, local, false, true, true) }
	dead := func(a string, local bool) Endpoint { return pe(a, local, false, false, true) }

	for _, tc := range []struct {
		name              string
		eps               []Endpoint
		policy            TrafficPolicy
		cluster, external []string
		shortCircuit      []string
		hasAny            bool
	}{
		{name: "ready only", eps: []Endpoint{ready("10.0.0.1", true), draining("10.0.0.2", false), pe("10.0.0.3", false, false, false, false)},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "all draining: serving+terminating fallback", eps: []Endpoint{draining("10.0.0.1", false), dead("10.0.0.2", false)},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "nothing usable", eps: []Endpoint{dead("10.0.0.1", true)}, hasAny: false},
		{name: "ETP Local", eps: []Endpoint{ready("10.0.0.1", true), ready("10.0.0.2", false)}, policy: TrafficPolicy{ExternalLocal: true},
			cluster: []string{"10.0.0.1", "10.0.0.2"}, external: []string{"10.0.0.1"}, shortCircuit: []string{"10.0.0.1", "10.0.0.2"}, hasAny: true},
		{name: "ETP Local without local endpoints", eps: []Endpoint{ready("10.0.0.2", false)}, policy: TrafficPolicy{ExternalLocal: true},
			cluster: []string{"10.0.0.2"}, external: nil, shortCircuit: []string{"10.0.0.2"}, hasAny: true},
		{name: "ETP Local, local one draining", eps: []Endpoint{draining("10.0.0.1", true), ready("10.0.0.2", false)}, policy: TrafficPolicy{ExternalLocal: true},
			cluster: []string{"10.0.0.2"}, external: []string{"10.0.0.1"}, shortCircuit: []string{"10.0.0.2"}, hasAny: true},
		// Issue 16 item 3: the short circuit goes to every endpoint, ITP not applied.
		{name: "ETP and ITP Local: short circuit to every endpoint", eps: []Endpoint{ready("10.0.0.1", true), ready("10.0.0.2", false)},
			policy:  TrafficPolicy{ExternalLocal: true, InternalLocal: true},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, shortCircuit: []string{"10.0.0.1", "10.0.0.2"}, hasAny: true},
		{name: "ITP Local", eps: []Endpoint{ready("10.0.0.1", true), ready("10.0.0.2", false)}, policy: TrafficPolicy{InternalLocal: true},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1", "10.0.0.2"}, hasAny: true},
		{name: "zone hints used", eps: []Endpoint{ready("10.0.0.1", false, "a"), ready("10.0.0.2", false, "b")},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "zone hints incomplete: ignored", eps: []Endpoint{ready("10.0.0.1", false, "a"), ready("10.0.0.2", false)},
			cluster: []string{"10.0.0.1", "10.0.0.2"}, external: []string{"10.0.0.1", "10.0.0.2"}, hasAny: true},
		{name: "zone hints none for us: ignored", eps: []Endpoint{ready("10.0.0.1", false, "b"), ready("10.0.0.2", false, "c")},
			cluster: []string{"10.0.0.1", "10.0.0.2"}, external: []string{"10.0.0.1", "10.0.0.2"}, hasAny: true},
		// Issue 16 item 2: kube-proxy v1.34 reads complete hints whatever the Service says.
		{name: "zone hints used without an opt-in on the Service", eps: []Endpoint{ready("10.0.0.1", false, "a"), ready("10.0.0.2", false, "b")},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "node hints used before zone hints", eps: []Endpoint{nodeHinted(ready("10.0.0.1", false, "a"), "n1"), nodeHinted(ready("10.0.0.2", false, "a"), "n2")},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "node hints none for us: zone hints", eps: []Endpoint{nodeHinted(ready("10.0.0.1", false, "a"), "n2"), nodeHinted(ready("10.0.0.2", false, "b"), "n3")},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "node hints incomplete: zone hints", eps: []Endpoint{nodeHinted(ready("10.0.0.1", false, "b"), "n1"), ready("10.0.0.2", false, "a")},
			cluster: []string{"10.0.0.2"}, external: []string{"10.0.0.2"}, hasAny: true},
		{name: "hints of a not-ready endpoint do not count", eps: []Endpoint{ready("10.0.0.1", false, "a"), ready("10.0.0.2", false, "b"), draining("10.0.0.3", false)},
			cluster: []string{"10.0.0.1"}, external: []string{"10.0.0.1"}, hasAny: true},
		{name: "ETP Local external traffic ignores hints", eps: []Endpoint{ready("10.0.0.1", true, "b"), ready("10.0.0.2", false, "a")}, policy: TrafficPolicy{ExternalLocal: true},
			cluster: []string{"10.0.0.2"}, external: []string{"10.0.0.1"}, shortCircuit: []string{"10.0.0.2"}, hasAny: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, e, sc, any := SelectEndpoints(tc.eps, tc.policy, node)
			if got := addrsOf(c); !equalStrings(got, tc.cluster) {
				t.Errorf("cluster = %v, want %v", got, tc.cluster)
			}
			if got := addrsOf(e); !equalStrings(got, tc.external) {
				t.Errorf("external = %v, want %v", got, tc.external)
			}
			if got := addrsOf(sc); !equalStrings(got, tc.shortCircuit) {
				t.Errorf("shortCircuit = %v, want %v", got, tc.shortCircuit)
			}
			if any != tc.hasAny {
				t.Errorf("hasAny = %v, want %v", any, tc.hasAny)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
