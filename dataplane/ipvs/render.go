package ipvs

import (
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/readonly"
)

// fragment is everything one Service contributes: addresses on the dummy link, virtual servers,
// NodePort virtual servers (expanded over the node's addresses at commit time) and elements of the
// nftables sets. It is a pure function of the Service's ports, so an incremental sync diffs a
// Service's old fragment against its new one and sends only the difference.
type fragment struct {
	serviceIPs     map[netip.Addr]struct{}
	virtualServers map[vsKey]*virtualServer
	nodePorts      map[nodePortKey]*virtualServer
	sets           firewallSets
}

// nodePortKey is a NodePort of one family: it becomes a virtual server on each node address of
// that family, with that family's endpoints.
type nodePortKey struct {
	IPv6  bool
	Proto uint16
	Port  uint16
}

func newFragment() *fragment {
	return &fragment{serviceIPs: map[netip.Addr]struct{}{}, virtualServers: map[vsKey]*virtualServer{},
		nodePorts: map[nodePortKey]*virtualServer{}, sets: firewallSets{}}
}

func protoNumber(p v1.Protocol) (uint16, bool) {
	switch p {
	case v1.ProtocolTCP:
		return unix.IPPROTO_TCP, true
	case v1.ProtocolUDP:
		return unix.IPPROTO_UDP, true
	case v1.ProtocolSCTP:
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

// render computes a Service's fragment. A port with an invalid scheduler annotation uses the default
// one: the controller reports the mistake on the Service (condition and event), once, rather than
// every node on every sync. A port the userspace proxy serves (us, nil without) gets no virtual
// server: see userspace.go. lt says whether ClusterIPs are masqueraded.
func render(ports []*dataplane.ServicePort, us dataplane.UserspaceListeners, lt dataplane.LocalTraffic) *fragment {
	fr := newFragment()
	for _, p := range ports {
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			continue
		}
		sched, _ := config.ParseIPVSScheduler(p.Scheduler)
		proxied := proxiedInUserspace(p, us)
		for _, f := range families {
			renderFamily(fr, p, f, proto, sched, proxied, lt.MasqueradesClusterIPs(f.ipv6))
		}
	}
	return fr
}

// renderFamily renders one Service port for one address family; proxied: without virtual servers;
// masqueradeClusterIPs: the ClusterIPs go to the set the masquerade rules of the table match.
func renderFamily(fr *fragment, p *dataplane.ServicePort, f ipFamily, proto uint16, sched string, proxied, masqueradeClusterIPs bool) {
	clusterIPs := addrsOf(p.ClusterIPs, f)
	externalIPs := addrsOf(p.ExternalAddrs(), f)
	if len(clusterIPs) == 0 && len(externalIPs) == 0 {
		return // the Service does not have this family
	}
	affinity := uint32(p.AffinityTimeout.Seconds())
	port := uint16(p.Port)
	pr, portText := protoName(proto), strconv.Itoa(int(p.Port))
	clusterEps := endpointsOf(p.ClusterEndpoints, f)
	externalEps := endpointsOf(p.ExternalEndpoints, f)
	// Without endpoints here: reject when nothing anywhere can serve (tell the client at once),
	// drop when endpoints exist elsewhere (Local policy; the load balancer steers clients away).
	emptySet, emptyNodePortSet := setNoEndpoints, setNodePortNoEP
	if p.HasEndpoints {
		emptySet, emptyNodePortSet = setNoLocal, setNodePortNoLoc
	}
	serve := func(addr netip.Addr, eps []dataplane.Endpoint, masquerade bool) {
		fr.serviceIPs[addr] = struct{}{}
		fr.sets.add(f.set(setServiceIPs), addr.String())
		if !proxied {
			fr.virtualServers[vsKey{Addr: addr, Proto: proto, Port: port}] = newVirtualServer(sched, affinity, eps)
		}
		fr.sets.add(f.set(setServicePorts), addr.String(), pr, portText)
		if len(eps) == 0 {
			fr.sets.add(f.set(emptySet), addr.String(), pr, portText)
		}
		if masquerade {
			fr.sets.add(f.set(setMasquerade), addr.String(), pr, portText)
		}
	}
	for _, ip := range clusterIPs {
		serve(ip, clusterEps, false)
		if masqueradeClusterIPs {
			fr.sets.add(f.set(setClusterIPMasq), ip.String(), pr, portText)
		}
	}
	for _, ip := range externalIPs {
		serve(ip, externalEps, !p.ExternalPolicyLocal)
	}
	nodePort := strconv.Itoa(int(p.NodePort))
	// The short circuit (see the table's rules): with externalTrafficPolicy: Local, the pods'
	// and the node's own traffic to the external addresses goes to every endpoint, through a
	// firewall-mark virtual server. Its mark is derived from the NodePort: a Service without one
	// (allocateLoadBalancerNodePorts: false, or a ClusterIP Service with externalIPs) has none,
	// and that traffic is served as external traffic.
	shortCircuitEps := endpointsOf(p.ShortCircuitEndpoints, f)
	if p.ExternalPolicyLocal && len(shortCircuitEps) > 0 && p.NodePort != 0 && !proxied {
		mark := shortCircuitMark(proto, uint16(p.NodePort))
		fr.virtualServers[fwmarkKey(f.ipv6, mark)] = newVirtualServer(sched, affinity, shortCircuitEps)
		markText := "0x" + strconv.FormatUint(uint64(mark), 16)
		for _, ip := range externalIPs {
			fr.sets.addMapping(f.set(mapShortCircuit), markText, ip.String(), pr, portText)
		}
		fr.sets.addMapping(f.set(mapNodePortShortCircuit), markText, pr, nodePort)
	}
	if p.NodePort != 0 {
		if !proxied {
			fr.nodePorts[nodePortKey{IPv6: f.ipv6, Proto: proto, Port: uint16(p.NodePort)}] = newVirtualServer(sched, affinity, externalEps)
		}
		if len(externalEps) == 0 {
			fr.sets.add(f.set(emptyNodePortSet), pr, nodePort)
		}
		if !p.ExternalPolicyLocal {
			fr.sets.add(f.set(setNodePortMasq), pr, nodePort)
		}
	}
	// loadBalancerSourceRanges: at the LoadBalancer IPs, sources outside the ranges are dropped.
	// A family without a range of its own stays open, as in kube-proxy.
	ranges := readonly.Filter(p.SourceRanges, func(r netip.Prefix) bool { return f.of(r.Addr()) })
	if len(ranges) > 0 {
		for _, ip := range addrsOf(p.LoadBalancerIPs, f) {
			fr.sets.add(f.set(setFirewall), ip.String(), pr, portText)
			for _, r := range ranges {
				fr.sets.add(f.set(setFirewallAllow), ip.String(), pr, portText, r.Masked().String())
			}
		}
	}
	// Hairpin traffic leaves a pod through its own node, so only this node's endpoints need it.
	for _, eps := range [][]dataplane.Endpoint{clusterEps, externalEps, shortCircuitEps} {
		for _, ep := range eps {
			if ep.Local {
				fr.sets.add(f.set(setHairpin), ep.Addr.String(), ep.Addr.String())
			}
		}
	}
}

func newVirtualServer(sched string, affinity uint32, eps []dataplane.Endpoint) *virtualServer {
	vs := &virtualServer{Scheduler: sched, AffinitySeconds: affinity, Reals: make(map[realKey]int, len(eps))}
	for _, ep := range eps {
		vs.Reals[realKey{Addr: ep.Addr, Port: uint16(ep.Port)}] = 1
	}
	return vs
}

func addrsOf(in []netip.Addr, f ipFamily) []netip.Addr { return readonly.Filter(in, f.of) }

// endpointsOf keeps the endpoints of family f: an IPv4 virtual server only gets IPv4 real servers.
func endpointsOf(eps []dataplane.Endpoint, f ipFamily) []dataplane.Endpoint {
	return readonly.Filter(eps, func(e dataplane.Endpoint) bool { return f.of(e.Addr) })
}
