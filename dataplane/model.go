package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane/internal/readonly"
)

// ServicePortName identifies one port of one Service: the unit every backend programs.
type ServicePortName struct {
	types.NamespacedName
	// Port is the Service port's name; empty for a single unnamed port.
	Port     string
	Protocol v1.Protocol
}

// String is "namespace/name/protocol/port", stable and unique; backends derive object names from it.
func (n ServicePortName) String() string {
	return fmt.Sprintf("%s/%s/%s/%s", n.Namespace, n.Name, strings.ToLower(string(n.Protocol)), n.Port)
}

// ServicePort is the desired state of one Service port on this node, with the endpoints the
// policy chose already filled in. Backends read it and never look at Service objects.
type ServicePort struct {
	Name     ServicePortName
	Protocol v1.Protocol
	Port     int32
	// ClusterIPs holds one address per family, in the Service's order.
	ClusterIPs []netip.Addr
	// NodePort is 0 when the Service has none (not NodePort/LoadBalancer, or a LoadBalancer
	// with allocateLoadBalancerNodePorts: false).
	NodePort        int32
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// SourceRanges are the loadBalancerSourceRanges: when set, other sources are dropped at the
	// LoadBalancer IPs (ClusterIP, NodePort and externalIPs stay open, as in kube-proxy).
	SourceRanges []netip.Prefix
	// AffinityTimeout is the sessionAffinity: ClientIP timeout; 0 means no affinity.
	AffinityTimeout time.Duration
	// ExternalPolicyLocal is externalTrafficPolicy: Local: external traffic (NodePort, LB IPs,
	// externalIPs) goes only to this node's endpoints and keeps its source address.
	ExternalPolicyLocal bool
	// InternalPolicyLocal is internalTrafficPolicy: Local (ClusterIP traffic to local endpoints only).
	InternalPolicyLocal bool
	// HealthCheckNodePort is the port of the Service's health-check server, 0 if none.
	HealthCheckNodePort int32
	// Scheduler is the raw herald.io/ipvs-scheduler annotation; the IPVS backend validates it.
	Scheduler string
	// Userspace is set when herald.io/proxy-mode: userspace puts this port's traffic through the
	// userspace proxy (dataplane/userspace): the kernel backend then hands the traffic to the
	// proxy's listeners instead of translating it to the endpoints itself.
	Userspace *UserspaceOptions

	// ClusterEndpoints serve traffic to the ClusterIPs (internalTrafficPolicy applied).
	ClusterEndpoints []Endpoint
	// ExternalEndpoints serve traffic to NodePort, LB IPs and externalIPs (externalTrafficPolicy
	// applied: with Local, only this node's endpoints).
	ExternalEndpoints []Endpoint
	// ShortCircuitEndpoints, with externalTrafficPolicy: Local only, serve the node's own and
	// (given the cluster CIDRs) the pods' traffic to the external addresses, which is not
	// external: every endpoint of the Service, internalTrafficPolicy not applied, as kube-proxy
	// sends it to its cluster-policy endpoints.
	ShortCircuitEndpoints []Endpoint
	// ServingUDP, for UDP ports only, lists every serving endpoint anywhere (selected or not):
	// conntrack entries to them are kept, as kube-proxy keeps them, so a UDP flow to an
	// endpoint that starts terminating carries on until the endpoint stops serving.
	ServingUDP []netip.AddrPort
	// HasEndpoints is true when the Service has any usable endpoint anywhere. When a list above
	// is empty, backends reject the traffic if HasEndpoints is false (nothing can serve it, tell
	// the client at once) and drop it otherwise (served elsewhere: e.g. a Local policy with
	// endpoints on other nodes, where the load balancer's health check steers clients away).
	HasEndpoints bool
}

// ExternalAddrs are the destination addresses of external traffic other than NodePorts. The
// result may be one of p's own slices (read-only).
func (p *ServicePort) ExternalAddrs() []netip.Addr {
	if len(p.ExternalIPs) == 0 {
		return p.LoadBalancerIPs
	}
	return append(slices.Clone(p.ExternalIPs), p.LoadBalancerIPs...)
}

// UserspaceOptions are a userspace-proxied port's settings (herald.io/userspace-* annotations).
type UserspaceOptions struct {
	// ConnectTries bounds the endpoints tried per new connection.
	ConnectTries int
	// ProxyProtocol sends a PROXY protocol v2 header with the client's address to the backend.
	ProxyProtocol bool
}

// UserspaceListeners tells a kernel backend where the userspace proxy listens for a port: the
// node-local port its cluster traffic (to the ClusterIPs) and its external traffic (NodePort,
// LoadBalancer IPs, externalIPs) are redirected to. ok is false when the proxy has no listener
// for it (then the kernel backend forwards the port itself, as without the annotation).
type UserspaceListeners interface {
	UserspacePorts(name ServicePortName) (cluster, external uint16, ok bool)
}

// Endpoint is one backend of a ServicePort, its target port resolved for that port.
type Endpoint struct {
	Addr netip.Addr
	Port int32
	// NodeName and Zone say where it runs; Local is NodeName == this node.
	NodeName string
	Zone     string
	Local    bool
	// Ready, Serving and Terminating are the EndpointSlice conditions (unset Ready/Serving read
	// as true, unset Terminating as false).
	Ready, Serving, Terminating bool
	// Hints are the topology hints; nil when there are none (most endpoints: a pointer keeps
	// the Endpoint at 80 bytes instead of 120, and there is one per endpoint per port).
	Hints *EndpointHints
}

// EndpointHints are an endpoint's topology hints: the zones and nodes it should serve.
type EndpointHints struct {
	ForZones []string
	ForNodes []string
}

// hintsOf returns the zone (or with nodes, node) hints of e.
func hintsOf(e Endpoint, nodes bool) []string {
	switch {
	case e.Hints == nil:
		return nil
	case nodes:
		return e.Hints.ForNodes
	}
	return e.Hints.ForZones
}

// AddrPort is the endpoint's address and port.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Addr, uint16(e.Port)) }

// EndpointsOfFamily keeps the IPv6 (or IPv4) endpoints; a dual-stack Service's IPv4 address
// must only be translated to IPv4 endpoints. The result may be eps itself (read-only).
func EndpointsOfFamily(eps []Endpoint, ipv6 bool) []Endpoint {
	return readonly.Filter(eps, func(e Endpoint) bool { return e.Addr.Is6() == ipv6 })
}

// State is the whole desired state of the data plane on this node.
type State struct {
	NodeName string
	// NodeIPs are this node's primary addresses, at most one per family: its Node object's
	// first InternalIP of each family, else its first ExternalIP (kube-proxy's node IPs).
	NodeIPs []netip.Addr
	// ServiceCIDRs are the cluster's Service ranges (the ServiceCIDR objects, networking.k8s.io/v1),
	// sorted, without a prefix another one contains: traffic to an address of them that no
	// Service holds is dropped, as kube-proxy's cluster-ips-check does.
	ServiceCIDRs []netip.Prefix
	// Services maps each proxied Service to its ports, sorted by name.
	Services map[types.NamespacedName][]*ServicePort
}

// NodePortAddresses are the speaker's --nodeport-addresses: on which of the node's addresses
// NodePorts are open, as kube-proxy's flag of that name.
type NodePortAddresses struct {
	// Primary opens them on the node's primary IPs (State.NodeIPs): "primary", the default.
	Primary bool
	// CIDRs (Primary false): on the node's addresses within them.
	CIDRs []netip.Prefix
}

// ParseNodePortAddresses parses --nodeport-addresses: "primary", or CIDRs separated by commas.
func ParseNodePortAddresses(s string) (NodePortAddresses, error) {
	if strings.TrimSpace(s) == "primary" {
		return NodePortAddresses{Primary: true}, nil
	}
	var n NodePortAddresses
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return NodePortAddresses{}, fmt.Errorf("want \"primary\" or a comma-separated list of CIDRs: %w", err)
		}
		n.CIDRs = append(n.CIDRs, p.Masked())
	}
	return n, nil
}

// Prefixes returns the prefixes of one family (ipv6 or not) NodePorts are open within, given
// st's node IPs; nil means on every address of the node of that family. As in kube-proxy, a
// family the list (or, with Primary, the Node object) has no address of is open on every address:
// a single-stack node IP does not close the other family's NodePorts.
func (n NodePortAddresses) Prefixes(st *State, ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	if n.Primary {
		for _, a := range st.NodeIPs {
			if a.Is6() == ipv6 && !a.IsLoopback() {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		return out
	}
	for _, p := range n.CIDRs {
		if p.Addr().Is6() == ipv6 {
			out = append(out, p)
		}
	}
	return DisjointPrefixes(out)
}

// All reports whether NodePorts are open on every address of one family (ipv6 or not), given
// st's node IPs: n names no address of it, or its whole range (kube-proxy's matchAll).
func (n NodePortAddresses) All(st *State, ipv6 bool) bool {
	ps := n.Prefixes(st, ipv6)
	return len(ps) == 0 || slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Bits() == 0 })
}

// Restricts reports whether n leaves out any address of the node (given st's node IPs): false
// when NodePorts are open on every address of both families.
func (n NodePortAddresses) Restricts(st *State) bool { return !n.All(st, false) || !n.All(st, true) }

// Select keeps the addresses of addrs NodePorts are open on (given st's node IPs): the one rule
// for which node addresses a NodePort listens on, shared by the IPVS backend, the userspace proxy
// and the healthCheckNodePort listeners (nftables matches the same prefixes in the kernel).
func (n NodePortAddresses) Select(addrs []netip.Addr, st *State) []netip.Addr {
	prefixes := [2][]netip.Prefix{n.Prefixes(st, false), n.Prefixes(st, true)}
	return slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool {
		ps := prefixes[0]
		if a.Is6() {
			ps = prefixes[1]
		}
		return len(ps) > 0 && !slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
	})
}

// DisjointPrefixes sorts ps and drops every prefix another one contains (an nftables interval
// set refuses overlapping elements).
func DisjointPrefixes(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range ps {
		if len(out) > 0 && out[len(out)-1].Overlaps(p) {
			continue // sorted by address, then shorter first: the earlier one contains p
		}
		out = append(out, p)
	}
	return out
}

// SyncRequest is what a Backend commits.
type SyncRequest struct {
	State *State
	// Changed lists the Services whose ports differ from the last successful sync (added,
	// changed, or removed: a removed one is absent from State.Services).
	Changed map[types.NamespacedName]struct{}
	// Full asks the backend to reconcile everything, not just Changed: on the first sync and
	// after a failed one (the backend's memory of what the kernel holds may then be wrong).
	// Only a full sync may read the kernel's whole state.
	Full bool
}

// Backend programs the kernel. The nftables backend (dataplane/nftables) and the IPVS backend
// (dataplane/ipvs) implement it; neither knows about Services, EndpointSlices or the endpoint
// policy: they receive ServicePorts with endpoints already chosen.
//
// Contract:
//   - Sync is called from one goroutine at a time. It commits the request in one transaction
//     where the kernel allows (nftables does; IPVS cannot, so apply changes in an order that
//     never sends traffic to a removed endpoint).
//   - An incremental sync (Full false) touches only what belongs to Changed Services and must
//     cost O(changes), not O(Services): keep what was committed in memory and send deltas.
//   - On error the proxy retries with Full set.
//   - Stale UDP conntrack entries are cleared by the proxy after Sync; backends need not.
//   - Cleanup removes everything the backend made (also leftovers of an earlier process) and
//     is safe to call when nothing exists.
type Backend interface {
	Name() string
	Sync(ctx context.Context, req SyncRequest) error
	Cleanup(ctx context.Context) error
}

// DriftChecker is a backend that can tell whether the kernel still holds what it committed
// (someone else may change it: a host firewall reloading with `nft flush ruleset`, an admin).
// The proxy calls it between syncs, every ProxyOptions.DriftCheckInterval, from the sync
// goroutine, so it must be cheap when nothing changed; when it reports a difference, the
// proxy repairs it with a full sync.
type DriftChecker interface {
	// CheckDrift returns a description of what differs ("" when nothing does).
	CheckDrift(ctx context.Context) (string, error)
}
