package dataplane

import (
	"slices"

	"github.com/heraldlb/herald/dataplane/internal/readonly"
)

// TrafficPolicy is what a Service says about where its traffic may go.
type TrafficPolicy struct {
	ExternalLocal bool // externalTrafficPolicy: Local
	InternalLocal bool // internalTrafficPolicy: Local
	// PreferZone is trafficDistribution PreferClose/PreferSameZone or the topology-mode
	// annotation: use the EndpointSlice controller's zone hints when they are usable.
	PreferZone bool
	// PreferNode is trafficDistribution PreferSameNode: use node hints when usable.
	PreferNode bool
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
//   - topology (cluster traffic only): with PreferZone/PreferNode, keep endpoints hinted for
//     this zone/node, but only if every ready endpoint carries hints and at least one is for
//     us; otherwise hints are ignored (a half-applied hint set would black-hole traffic);
//   - Local policies: only endpoints on this node (with the same readiness fallback).
//
// cluster serves ClusterIP traffic, external serves NodePort/LB/externalIP traffic, hasAny
// reports whether any usable endpoint exists anywhere (reject when none, drop otherwise).
func SelectEndpoints(all []Endpoint, policy TrafficPolicy, node Node) (cluster, external []Endpoint, hasAny bool) {
	for _, e := range all {
		if e.Ready || (e.Serving && e.Terminating) {
			hasAny = true
			break
		}
	}
	if !hasAny {
		return nil, nil, false
	}
	var clusterWide, local []Endpoint
	if !policy.InternalLocal || !policy.ExternalLocal {
		clusterWide = byReadiness(topologyFilter(all, policy, node))
	}
	if policy.InternalLocal || policy.ExternalLocal {
		local = byReadiness(readonly.Filter(all, func(e Endpoint) bool { return e.Local }))
	}
	cluster, external = clusterWide, clusterWide
	if policy.InternalLocal {
		cluster = local
	}
	if policy.ExternalLocal {
		external = local
	}
	return cluster, external, true
}

// byReadiness keeps the Ready endpoints, or if there are none the Serving+Terminating ones.
func byReadiness(eps []Endpoint) []Endpoint {
	if ready := readonly.Filter(eps, func(e Endpoint) bool { return e.Ready }); len(ready) > 0 {
		return ready
	}
	return readonly.Filter(eps, func(e Endpoint) bool { return e.Serving && e.Terminating })
}

// topologyFilter applies node or zone hints when every ready endpoint has them and some are ours.
func topologyFilter(eps []Endpoint, policy TrafficPolicy, node Node) []Endpoint {
	if policy.PreferNode && node.Name != "" {
		if out, ok := byHint(eps, func(e Endpoint) []string { return hintsOf(e, true) }, node.Name); ok {
			return out
		}
	}
	if (policy.PreferZone || policy.PreferNode) && node.Zone != "" {
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
