package dataplane

import (
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/config"
)

// Annotations the tracker reads.
const (
	// defaultAffinityTimeout is the API's default sessionAffinityConfig.clientIP.timeoutSeconds.
	defaultAffinityTimeout = 10800 * time.Second
)

// ChangeTracker turns informer events into changes of the desired State. Events only record
// the latest object per key (repeated updates merge: only the last one matters) and mark the
// Service dirty; Apply then rebuilds the dirty Services' ports and drops those that come out
// unchanged, so informer resyncs and irrelevant edits (labels, unrelated annotations, slices of
// an unrelated port) cost no kernel work.
type ChangeTracker struct {
	mu        sync.Mutex
	node      Node
	nodeDirty bool
	// nodeIPs are the node's primary IPs (State.NodeIPs).
	nodeIPs []netip.Addr
	// serviceCIDRs holds each ServiceCIDR object's ranges, by name.
	serviceCIDRs map[string][]netip.Prefix
	services     map[types.NamespacedName]*v1.Service
	// slices holds each Service's EndpointSlices sorted by name: a short list (one slice per
	// 100 endpoints per family), cheaper than a map per Service when there are 10,000.
	slices     map[types.NamespacedName][]*discoveryv1.EndpointSlice
	sliceOwner map[types.NamespacedName]types.NamespacedName // slice -> Service
	dirty      map[types.NamespacedName]struct{}
}

// NewChangeTracker returns a tracker for the node named nodeName.
func NewChangeTracker(nodeName string) *ChangeTracker {
	return &ChangeTracker{
		node:         Node{Name: nodeName},
		services:     map[types.NamespacedName]*v1.Service{},
		slices:       map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		sliceOwner:   map[types.NamespacedName]types.NamespacedName{},
		dirty:        map[types.NamespacedName]struct{}{},
		serviceCIDRs: map[string][]netip.Prefix{},
	}
}

// Service change events. A nil object is ignored.
func (t *ChangeTracker) OnServiceUpdate(svc *v1.Service) {
	if svc == nil {
		return
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev := t.services[key]; prev != nil && prev.ResourceVersion == svc.ResourceVersion && svc.ResourceVersion != "" {
		return // informer resync: nothing new
	}
	t.services[key] = svc
	t.dirty[key] = struct{}{}
}

func (t *ChangeTracker) OnServiceDelete(svc *v1.Service) {
	if svc == nil {
		return
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.services, key)
	t.dirty[key] = struct{}{}
}

// EndpointSlice change events. Slices without the kubernetes.io/service-name label belong to
// no Service and are ignored; FQDN slices are not proxied.
func (t *ChangeTracker) OnEndpointSliceUpdate(slice *discoveryv1.EndpointSlice) {
	if slice == nil || slice.AddressType == discoveryv1.AddressTypeFQDN {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key := types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name}
	if prevSvc, ok := t.sliceOwner[key]; ok {
		if i, found := findSlice(t.slices[prevSvc], slice.Name); found {
			if prev := t.slices[prevSvc][i]; prev.ResourceVersion == slice.ResourceVersion && slice.ResourceVersion != "" {
				return
			}
		}
	}
	t.removeSliceLocked(key)
	svc, ok := sliceService(slice)
	if !ok {
		return
	}
	i, _ := findSlice(t.slices[svc], slice.Name)
	t.slices[svc] = slices.Insert(t.slices[svc], i, slice)
	t.sliceOwner[key] = svc
	t.dirty[svc] = struct{}{}
}

func (t *ChangeTracker) OnEndpointSliceDelete(slice *discoveryv1.EndpointSlice) {
	if slice == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeSliceLocked(types.NamespacedName{Namespace: slice.Namespace, Name: slice.Name})
}

func (t *ChangeTracker) removeSliceLocked(key types.NamespacedName) {
	svc, ok := t.sliceOwner[key]
	if !ok {
		return
	}
	if i, found := findSlice(t.slices[svc], key.Name); found {
		if rest := slices.Delete(t.slices[svc], i, i+1); len(rest) > 0 {
			t.slices[svc] = rest
		} else {
			delete(t.slices, svc)
		}
	}
	delete(t.sliceOwner, key)
	t.dirty[svc] = struct{}{}
}

// findSlice returns where the slice named name is in a Service's sorted slices, or would be.
func findSlice(in []*discoveryv1.EndpointSlice, name string) (int, bool) {
	return slices.BinarySearchFunc(in, name, func(s *discoveryv1.EndpointSlice, name string) int { return strings.Compare(s.Name, name) })
}

// OnNodeUpdate records this node's zone (topology.kubernetes.io/zone; a change re-evaluates
// every Service, since zone hints depend on it) and its primary IPs.
func (t *ChangeTracker) OnNodeUpdate(node *v1.Node) {
	if node == nil || node.Name != t.node.Name {
		return
	}
	zone := node.Labels[v1.LabelTopologyZone]
	ips := primaryIPs(node.Status.Addresses)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nodeIPs = ips
	if zone != t.node.Zone {
		t.node.Zone = zone
		t.nodeDirty = true
	}
}

// primaryIPs are a node's primary addresses as kube-proxy takes them (its GetNodeHostIPs): the
// first InternalIP of each family, else the first ExternalIP of it; IPv4 first.
func primaryIPs(addrs []v1.NodeAddress) []netip.Addr {
	var out []netip.Addr
	for _, ipv6 := range []bool{false, true} {
		for _, typ := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
			i := slices.IndexFunc(addrs, func(a v1.NodeAddress) bool {
				ip, err := netip.ParseAddr(a.Address)
				return a.Type == typ && err == nil && ip.Unmap().Is6() == ipv6
			})
			if i >= 0 {
				out = append(out, netip.MustParseAddr(addrs[i].Address).Unmap())
				break
			}
		}
	}
	return out
}

// OnServiceCIDRUpdate records a ServiceCIDR object's ranges (spec.cidrs; an unparsable one is
// skipped, the API server validates them).
func (t *ChangeTracker) OnServiceCIDRUpdate(sc *networkingv1.ServiceCIDR) {
	if sc == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.serviceCIDRs[sc.Name] = parsePrefixes(sc.Spec.CIDRs)
}

// OnServiceCIDRDelete forgets a ServiceCIDR object.
func (t *ChangeTracker) OnServiceCIDRDelete(sc *networkingv1.ServiceCIDR) {
	if sc == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.serviceCIDRs, sc.Name)
}

// PortChange is one Service whose desired ports changed in Apply.
type PortChange struct {
	Service  types.NamespacedName
	Old, New []*ServicePort
}

// Apply folds every event since the last Apply into state and returns the Services whose ports
// really changed, sorted by name.
func (t *ChangeTracker) Apply(state *State) []PortChange {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = map[types.NamespacedName]struct{}{}
	if t.nodeDirty {
		for k := range t.services {
			dirty[k] = struct{}{}
		}
		t.nodeDirty = false
	}
	node := t.node
	state.NodeIPs = t.nodeIPs
	var cidrs []netip.Prefix
	for _, c := range t.serviceCIDRs {
		cidrs = append(cidrs, c...)
	}
	state.ServiceCIDRs = DisjointPrefixes(cidrs)
	built := make(map[types.NamespacedName][]*ServicePort, len(dirty))
	for k := range dirty {
		built[k] = buildServicePorts(t.services[k], t.slices[k], node)
	}
	t.mu.Unlock()

	state.NodeName = node.Name
	if state.Services == nil {
		state.Services = make(map[types.NamespacedName][]*ServicePort, len(built))
	}
	changes := make([]PortChange, 0, len(built))
	for k, ports := range built {
		old := state.Services[k]
		if reflect.DeepEqual(old, ports) {
			continue // a no-op change: dropped here
		}
		if len(ports) == 0 {
			delete(state.Services, k)
		} else {
			state.Services[k] = ports
		}
		changes = append(changes, PortChange{Service: k, Old: old, New: ports})
	}
	sort.Slice(changes, func(i, j int) bool {
		a, b := changes[i].Service, changes[j].Service
		return a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name)
	})
	return changes
}

// buildServicePorts computes a Service's desired ports. Headless and ExternalName Services, and
// deleted ones, have none.
func buildServicePorts(svc *v1.Service, svcSlices []*discoveryv1.EndpointSlice, node Node) []*ServicePort {
	if svc == nil || svc.Spec.Type == v1.ServiceTypeExternalName || svc.Spec.ClusterIP == v1.ClusterIPNone || svc.Spec.ClusterIP == "" {
		return nil
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	policy := TrafficPolicy{
		ExternalLocal: svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
	}

	base := ServicePort{
		ClusterIPs:          parseAddrs(svc.Spec.ClusterIPs),
		ExternalIPs:         parseAddrs(svc.Spec.ExternalIPs),
		SourceRanges:        parsePrefixes(svc.Spec.LoadBalancerSourceRanges),
		ExternalPolicyLocal: policy.ExternalLocal,
		InternalPolicyLocal: policy.InternalLocal,
		Scheduler:           svc.Annotations[config.AnnotationIPVSScheduler],
	}
	// An invalid proxy-mode annotation falls back to the kernel; the controller reports it.
	if us, _ := config.ParseUserspaceProxy(svc.Annotations); us.Enabled {
		base.Userspace = &UserspaceOptions{ConnectTries: us.ConnectTries, ProxyProtocol: us.ProxyProtocol}
	}
	if len(base.ClusterIPs) == 0 {
		base.ClusterIPs = parseAddrs([]string{svc.Spec.ClusterIP})
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means a proxy in front terminates the traffic: not ours to capture.
			if ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy {
				continue
			}
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				base.LoadBalancerIPs = append(base.LoadBalancerIPs, a.Unmap())
			}
		}
		if policy.ExternalLocal {
			base.HealthCheckNodePort = svc.Spec.HealthCheckNodePort
		}
	}
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		base.AffinityTimeout = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			base.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}

	ports := make([]*ServicePort, 0, len(svc.Spec.Ports))
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		p := base
		p.Name = ServicePortName{NamespacedName: key, Port: sp.Name, Protocol: sp.Protocol}
		p.Protocol = sp.Protocol
		p.Port = sp.Port
		if p.Protocol != v1.ProtocolTCP && p.Protocol != v1.ProtocolUDP {
			p.Userspace = nil // the userspace proxy speaks TCP and UDP only
		}
		if svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer {
			// With allocateLoadBalancerNodePorts: false the apiserver leaves nodePort 0 and
			// there is nothing to open; a port the user set by hand is still honoured.
			p.NodePort = sp.NodePort
		}
		all := endpointsForPort(svcSlices, sp, node)
		p.ClusterEndpoints, p.ExternalEndpoints, p.ShortCircuitEndpoints, p.HasEndpoints = SelectEndpoints(all, policy, node)
		if p.Protocol == v1.ProtocolUDP {
			for _, e := range all {
				if e.Serving {
					p.ServingUDP = append(p.ServingUDP, e.AddrPort())
				}
			}
		}
		ports = append(ports, &p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Name.String() < ports[j].Name.String() })
	return ports
}

// endpointsForPort lists the endpoints of one Service port. The target port is resolved per
// slice: the EndpointSlice controller puts endpoints whose named targetPort resolves to the
// same number in the same slice, and the slice port carries the Service port's name.
func endpointsForPort(svcSlices []*discoveryv1.EndpointSlice, sp *v1.ServicePort, node Node) []Endpoint {
	var out []Endpoint
	for _, s := range svcSlices {
		var port int32
		for _, p := range s.Ports {
			proto := v1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if p.Port != nil && proto == sp.Protocol && (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name) {
				port = *p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if len(e.Addresses) == 0 {
				continue
			}
			addr, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			ep := Endpoint{Addr: addr.Unmap(), Port: port, Ready: isReady(e)}
			// The API (and kube-proxy) read an unset serving as true, not as ready's value: a
			// terminating endpoint with ready=false and serving unset still serves.
			ep.Serving = e.Conditions.Serving == nil || *e.Conditions.Serving
			ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
			if e.NodeName != nil {
				ep.NodeName = *e.NodeName
				ep.Local = ep.NodeName == node.Name
			}
			if e.Zone != nil {
				ep.Zone = *e.Zone
			}
			if e.Hints != nil {
				ep.Hints = &EndpointHints{}
				for _, z := range e.Hints.ForZones {
					ep.Hints.ForZones = append(ep.Hints.ForZones, z.Name)
				}
				for _, nh := range e.Hints.ForNodes {
					ep.Hints.ForNodes = append(ep.Hints.ForNodes, nh.Name)
				}
			}
			out = append(out, ep)
		}
	}
	// The same endpoint can sit in two slices while the controller moves it: the first one, in
	// the order of the slices' names, counts (the sort is stable).
	slices.SortStableFunc(out, func(a, b Endpoint) int { return a.AddrPort().Compare(b.AddrPort()) })
	return slices.CompactFunc(out, func(a, b Endpoint) bool { return a.AddrPort() == b.AddrPort() })
}

func parseAddrs(in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// parsePrefixes reads loadBalancerSourceRanges; the apiserver validates them, so an
// unparsable entry is skipped rather than failing the Service.
func parsePrefixes(in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}
