package parity_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// namespace holds every Service of the corpus.
const namespace = "parity"

// condition is one combination of an endpoint's EndpointSlice conditions (nil: unset).
type condition struct {
	name                        string
	ready, serving, terminating *bool
}

var conditions = []condition{
	{"ready", ptr.To(true), ptr.To(true), ptr.To(false)},
	{"ready-unset", nil, nil, nil},
	{"ready-serving-unset", ptr.To(true), nil, nil},
	{"terminating-serving", ptr.To(false), ptr.To(true), ptr.To(true)},
	{"terminating-serving-unset", ptr.To(false), nil, ptr.To(true)}, // issue 16 item 8
	{"terminating-not-serving", ptr.To(false), ptr.To(false), ptr.To(true)},
	{"not-ready", ptr.To(false), ptr.To(false), ptr.To(false)},
}

// usable is kube-proxy's reading of the conditions: ready (unset: true), or serving (unset: true)
// and terminating (unset: false).
func (c condition) usable() bool {
	return or(c.ready, true) || (or(c.serving, true) && or(c.terminating, false))
}

func or(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

type endpoint struct {
	pod  pod
	cond condition
}

// Topology settings of a Service and its endpoints' hints.
const (
	topoNone         = "none"
	topoHints        = "hints"            // zone hints on every endpoint, nothing on the Service
	topoHintsOptIn   = "hints-optin"      // the same with service.kubernetes.io/topology-mode: Auto
	topoPartialHints = "partial-hints"    // opted in, but only the first endpoint has hints
	topoPreferClose  = "prefer-close"     // trafficDistribution: PreferClose, zone hints
	topoPreferNode   = "prefer-same-node" // trafficDistribution: PreferSameNode, node and zone hints
)

var topologies = []string{topoNone, topoNone, topoHints, topoHintsOptIn, topoPartialHints, topoPreferClose, topoPreferNode}

// Source-range settings.
const (
	rangesNone        = "none"
	rangesClient      = "client"       // the client's own address only (clientAltIP is outside)
	rangesOtherFamily = "other-family" // a range of the other family only (issue 16 item 9)
)

// svcCase is one Service of the corpus and what the probes need to know of it once created.
type svcCase struct {
	name       string
	proto      corev1.Protocol
	v6         bool
	etpLocal   bool
	itpLocal   bool
	affinity   bool
	ranges     string
	topology   string
	externalIP bool
	endpoints  []endpoint
	// extra probes beyond the standard set (issue 16 items 5 and 6)
	probeOtherNodeIP, probeUnusedPort, probeUnallocated bool

	index                int
	clusterIP, lbIP, eIP netip.Addr
	nodePort             uint16
}

func (c *svcCase) port() uint16 {
	if c.proto == corev1.ProtocolUDP {
		return 53
	}
	return 80
}

func (c *svcCase) target() int32 {
	if c.proto == corev1.ProtocolUDP {
		return udpTarget
	}
	return tcpTarget
}

// attrs are the case's attributes the parity table's rows match on.
func (c *svcCase) attrs() map[string]string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	policy := func(local bool) string {
		if local {
			return "Local"
		}
		return "Cluster"
	}
	var local, any, unsetServing bool
	for _, e := range c.endpoints {
		if e.cond.usable() {
			any = true
			local = local || e.pod.node == nodeA
		}
		unsetServing = unsetServing || (e.cond.serving == nil && !or(e.cond.ready, true))
	}
	family := "4"
	if c.v6 {
		family = "6"
	}
	return map[string]string{
		"proto": string(c.proto), "family": family, "etp": policy(c.etpLocal), "itp": policy(c.itpLocal),
		"affinity": yes(c.affinity), "ranges": c.ranges, "topology": c.topology,
		"endpoints": yes(any), "local-endpoints": yes(local), "unset-serving": yes(unsetServing),
	}
}

// fixedCases are the rows of issue 16, one Service each, ahead of the generated corpus.
func fixedCases() []*svcCase {
	ready := conditions[0]
	ep := func(p int, cond condition) endpoint { return endpoint{endpointPods[p], cond} }
	return []*svcCase{
		{name: "item2-hints-without-opt-in", topology: topoHints, endpoints: []endpoint{ep(0, ready), ep(2, ready), ep(3, ready)}},
		{name: "item2-prefer-same-node", topology: topoPreferNode, endpoints: []endpoint{ep(0, ready), ep(1, ready), ep(2, ready)}},
		{name: "item3-etp-local-no-local-endpoint", etpLocal: true, endpoints: []endpoint{ep(2, ready), ep(3, ready)}},
		{name: "item3-etp-itp-local", etpLocal: true, itpLocal: true, endpoints: []endpoint{ep(2, ready)}},
		{name: "item4-off-cluster-to-clusterip", endpoints: []endpoint{ep(0, ready), ep(2, ready)}},
		{name: "item5-nodeport-other-address", endpoints: []endpoint{ep(0, ready)}, probeOtherNodeIP: true},
		{name: "item6-unknown-port-and-ip", endpoints: []endpoint{ep(0, ready)}, probeUnusedPort: true, probeUnallocated: true},
		{name: "item8-serving-unset", endpoints: []endpoint{ep(0, conditions[4]), ep(2, conditions[5])}},
		{name: "item8-serving-unset-udp", proto: corev1.ProtocolUDP, endpoints: []endpoint{ep(1, conditions[4]), ep(3, conditions[6])}},
		{name: "item9-other-family-ranges", ranges: rangesOtherFamily, endpoints: []endpoint{ep(0, ready), ep(2, ready)}},
		{name: "item9-other-family-ranges-v6", v6: true, ranges: rangesOtherFamily, endpoints: []endpoint{ep(1, ready)}},
	}
}

// corpus returns the fixed cases and then generated ones, n in all, from seed.
func corpus(seed uint64, n int) []*svcCase {
	r := rand.New(rand.NewPCG(seed, 16))
	out := fixedCases()
	for i := range out {
		if out[i].proto == "" {
			out[i].proto = corev1.ProtocolTCP
		}
		if out[i].ranges == "" {
			out[i].ranges = rangesNone
		}
		if out[i].topology == "" {
			out[i].topology = topoNone
		}
	}
	pick := func(p float64) bool { return r.Float64() < p }
	for len(out) < n {
		c := &svcCase{name: fmt.Sprintf("gen-%d", len(out)), proto: corev1.ProtocolTCP,
			v6: pick(0.25), etpLocal: pick(0.35), itpLocal: pick(0.2), affinity: pick(0.2), externalIP: pick(0.4),
			ranges:   []string{rangesNone, rangesNone, rangesClient, rangesOtherFamily}[r.IntN(4)],
			topology: topologies[r.IntN(len(topologies))], probeOtherNodeIP: pick(0.05), probeUnusedPort: pick(0.05)}
		if pick(0.35) {
			c.proto = corev1.ProtocolUDP
		}
		for _, p := range r.Perm(len(endpointPods))[:r.IntN(len(endpointPods)+1)] {
			// Mostly ready endpoints, so the other conditions meet a realistic mix.
			cond := conditions[0]
			if pick(0.45) {
				cond = conditions[r.IntN(len(conditions))]
			}
			c.endpoints = append(c.endpoints, endpoint{endpointPods[p], cond})
		}
		out = append(out, c)
	}
	return out[:n]
}

// objects makes the case's Service (without the status) and EndpointSlice.
func (c *svcCase) objects() (*corev1.Service, *discoveryv1.EndpointSlice) {
	family, addrType := corev1.IPv4Protocol, discoveryv1.AddressTypeIPv4
	if c.v6 {
		family, addrType = corev1.IPv6Protocol, discoveryv1.AddressTypeIPv6
	}
	name := fmt.Sprintf("s%d", c.index)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"parity-case": c.name}},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilies:     []corev1.IPFamily{family},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports: []corev1.ServicePort{{Name: "p", Protocol: c.proto, Port: int32(c.port()),
				TargetPort: intstr.FromInt32(c.target())}},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
		},
	}
	if c.etpLocal {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if c.itpLocal {
		svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	}
	if c.affinity {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}
	if c.externalIP {
		svc.Spec.ExternalIPs = []string{c.eIP.String()}
	}
	client, other := "10.0.1.2/32", "fd00:1::2/128"
	if c.v6 {
		client, other = other, client
	}
	switch c.ranges {
	case rangesClient:
		svc.Spec.LoadBalancerSourceRanges = []string{client}
	case rangesOtherFamily:
		svc.Spec.LoadBalancerSourceRanges = []string{other}
	}
	switch c.topology {
	case topoHintsOptIn, topoPartialHints:
		svc.Annotations = map[string]string{corev1.AnnotationTopologyMode: "Auto"}
	case topoPreferClose:
		svc.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
	case topoPreferNode:
		svc.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameNode)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "herald-parity-test"}},
		AddressType: addrType,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p"), Protocol: ptr.To(c.proto), Port: ptr.To(c.target())}},
	}
	for i, e := range c.endpoints {
		zone := zoneA
		if e.pod.node == nodeB {
			zone = zoneB
		}
		ep := discoveryv1.Endpoint{
			Addresses:  []string{e.pod.addr(c.v6).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: e.cond.ready, Serving: e.cond.serving, Terminating: e.cond.terminating},
			NodeName:   ptr.To(e.pod.node),
			Zone:       ptr.To(zone),
		}
		hinted := c.topology != topoNone && (c.topology != topoPartialHints || i == 0)
		if hinted {
			ep.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}
			if c.topology == topoPreferNode {
				ep.Hints.ForNodes = []discoveryv1.ForNode{{Name: e.pod.node}}
			}
		}
		slice.Endpoints = append(slice.Endpoints, ep)
	}
	return svc, slice
}

// addresses gives the case its LoadBalancer IP and externalIP from its index.
func (c *svcCase) addresses() {
	hi, lo := byte(c.index>>8), byte(c.index)
	if c.v6 {
		c.lbIP = netip.MustParseAddr(fmt.Sprintf("fd00:255::%x", c.index+1))
		c.eIP = netip.MustParseAddr(fmt.Sprintf("fd00:254::%x", c.index+1))
		return
	}
	c.lbIP = netip.AddrFrom4([4]byte{10, 255, hi, lo + 1})
	c.eIP = netip.AddrFrom4([4]byte{10, 254, hi, lo + 1})
}

// probe is one kind of traffic sent to a case on both sides.
type probe struct {
	src, dst string // the parity table's src= and dst= values
	host     string // the namespace's host name on each side ("cl", "ac", "a")
	from     netip.Addr
	to       netip.AddrPort
}

func (p probe) String() string { return fmt.Sprintf("%s->%s %s", p.src, p.dst, p.to) }

// probes are the requests sent for c: from the client (inside and, with ranges, outside them),
// the client pod on node A and node A itself, to each of the Service's addresses.
func (c *svcCase) probes() []probe {
	pick := func(v4, v6 netip.Addr) netip.Addr {
		if c.v6 {
			return v6
		}
		return v4
	}
	client, alt := pick(clientIP, clientIP6), pick(clientAltIP, clientAltIP6)
	cluster := netip.AddrPortFrom(c.clusterIP, c.port())
	lb := netip.AddrPortFrom(c.lbIP, c.port())
	nodePort := netip.AddrPortFrom(pick(nodeIP, nodeIP6), c.nodePort)
	out := []probe{
		{"client", "lb", "cl", client, lb},
		{"client", "nodeport", "cl", client, nodePort},
		{"client", "clusterip", "cl", client, cluster},
		{"pod", "clusterip", "ac", netip.Addr{}, cluster},
		{"pod", "lb", "ac", netip.Addr{}, lb},
		{"node", "clusterip", "a", netip.Addr{}, cluster},
		{"node", "nodeport", "a", netip.Addr{}, nodePort},
	}
	if c.ranges != rangesNone {
		out = append(out, probe{"client-outside", "lb", "cl", alt, lb})
	}
	if c.externalIP {
		out = append(out, probe{"client", "externalip", "cl", client, netip.AddrPortFrom(c.eIP, c.port())},
			probe{"pod", "externalip", "ac", netip.Addr{}, netip.AddrPortFrom(c.eIP, c.port())})
	}
	if c.probeOtherNodeIP {
		out = append(out, probe{"client", "nodeport-other-address", "cl", client,
			netip.AddrPortFrom(pick(nodeOtherIP, nodeOtherIP6), c.nodePort)})
	}
	if c.probeUnusedPort {
		out = append(out, probe{"pod", "clusterip-unused-port", "ac", netip.Addr{}, netip.AddrPortFrom(c.clusterIP, c.port()+1)})
	}
	if c.probeUnallocated && !c.v6 {
		out = append(out, probe{"pod", "unallocated-clusterip", "ac", netip.Addr{}, netip.AddrPortFrom(unallocatedIP, c.port())})
	}
	return out
}

// describe is the case for a failure message.
func (c *svcCase) describe() string {
	var eps []string
	for _, e := range c.endpoints {
		eps = append(eps, e.pod.name+":"+e.cond.name)
	}
	return fmt.Sprintf("%s (s%d) %v endpoints [%s]", c.name, c.index, c.attrs(), strings.Join(eps, " "))
}
