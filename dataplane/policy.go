package dataplane

import (
	"slices"

	"github.com/heraldlb/herald/dataplane/internal/readonly"
)

// TrafficPolicy is what a Service says about where its traffic may go.
type TrafficPolicy struct {
	ExternalLocal bool // externalTrafficPolicy: Local
	InternalLocal bool // internalTrafficPolicy: Local
}

// Node is what the policy needs to know about the node it runs on.
type Node struct {
	Name string
	Zone string
}

// SelectEndpoints is the endpoint policy, a pure function of a Service port's endpoints, its
// traffic policy and this node (kube-proxy's CategorizeEndpoints, same semantics):
//   - readiness: Ready endpoints; if none is Ready, the Serving+Terminating ones, so a Service
//     whose pods are all draining still finishes its work rather than failing;
//   - topology (cluster traffic only): keep the endpoints hinted for this node, if every ready
//     endpoint carries node hints and one is for this node; else those hinted for this zone,
//     likewise. Hints count whatever the Service says (trafficDistribution, the topology-mode
//     annotation): the EndpointSlice controller writes them only for Services that ask, and
//     kube-proxy v1.34 reads them wherever they are complete (issue 16 item 2). Otherwise
//     hints are ignored (a half-applied hint set would black-hole traffic);
//   - Local policies: only endpoints on this node (with the same readiness fallback).
//
// cluster serves ClusterIP traffic, external serves NodePort/LB/externalIP traffic, hasAny
// reports whether any usable endpoint exists anywhere (reject when none, drop otherwise).
// shortCircuit, with externalTrafficPolicy: Local only, are the endpoints for the node's and
// the pods' own traffic to the external addresses: every endpoint, internalTrafficPolicy not
// applied (kube-proxy's cluster-policy endpoints; issue 16 item 3).
func SelectEndpoints(all []Endpoint, policy TrafficPolicy, node Node) (cluster, external, shortCircuit []Endpoint, hasAny bool) {
	for _, e := range all {
		if e.Ready || (e.Serving && e.Terminating) {
			hasAny = true
			break
		}
	}
	if !hasAny {
		return nil, nil, nil, false
	}
	// Every combination of policies needs the cluster-wide list: for ClusterIP traffic, for
	// external traffic, or for the short circuit.
	clusterWide := byReadiness(topologyFilter(all, node))
	var local []Endpoint
	if policy.InternalLocal || policy.ExternalLocal {
		local = byReadiness(readonly.Filter(all, func(e Endpoint) bool { return e.Local }))
	}
	cluster, external = clusterWide, clusterWide
	if policy.InternalLocal {
		cluster = local
	}
	if policy.ExternalLocal {
		external, shortCircuit = local, clusterWide
	}
	return cluster, external, shortCircuit, true
}

// byReadiness keeps the Ready endpoints, or if there are none the Serving+Terminating ones.
func byReadiness(eps []Endpoint) []Endpoint {
	if ready := readonly.Filter(eps, func(e Endpoint) bool { return e.Ready }); len(ready) > 0 {
		return ready
	}
	return readonly.Filter(eps, func(e Endpoint) bool { return e.Serving && e.Terminating })
}

// topologyFilter applies node or zone hints when every ready endpoint has them and some are ours.
func topologyFilter(eps []Endpoint, node Node) []Endpoint {
	if node.Name != "" {
		if out, ok := byHint(eps, func(e Endpoint) []string { return hintsOf(e, true) }, node.Name); ok {
			return out
		}
	}
	if node.Zone != "" {
		if out, ok := byHint(eps, func(e Endpoint) []string { return hintsOf(e, false) }, node.Zone); ok {
			return out
		}
	}
	return eps
}

func byHint(eps []Endpoint, hints func(Endpoint) []string, want string) ([]Endpoint, bool) {
	var out []Endpoint
	for _, e := range eps {
		if !e.Ready {
			continue
		}
		h := hints(e)
		if len(h) == 0 {
			return nil, false
		}
		if slices.Contains(h, want) {
			out = append(out, e)
		}
	}
	return out, len(out) > 0
}
