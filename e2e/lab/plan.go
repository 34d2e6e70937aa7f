package lab

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
)

// The lab's address plan. Every address exists only inside the lab's namespaces (nothing routes
// out, and the machine's own namespace has no link to them), so two labs with different prefixes
// can use the same plan side by side. IPv6 addresses mirror the IPv4 ones digit for digit
// (10.77.0.11 <-> fd00:77::11) so a reader can pair them at a glance.
const (
	SegmentV4  = "10.77.0.0/24" // the shared L2 segment: router, control plane, nodes, L2 client
	SegmentV6  = "fd00:77::/64"
	UpstreamV4 = "10.78.0.0/24" // between the router and the client behind it
	UpstreamV6 = "fd00:78::/64"
	// The cluster's pod network: node N has 10.244.N.0/24 and fd00:244:N::/64.
	PodCIDRV4 = "10.244.0.0/16"
	PodCIDRV6 = "fd00:244::/32"
	// Service ClusterIP ranges: wide enough for 10,000 Services and more.
	ServiceCIDRV4 = "10.96.0.0/12"
	ServiceCIDRV6 = "fd00:96::/108"
	// NodePortRange holds 20,000 ports: enough for 10,000 Services with a NodePort each (and their
	// health-check node ports with externalTrafficPolicy Local).
	NodePortRange = "20000-39999"
	// L2 pool on the segment (answered with ARP/NDP), and a routed pool that exists only through BGP.
	L2PoolV4  = "10.77.0.200-10.77.0.250"
	L2PoolV6  = "fd00:77::200-fd00:77::250"
	BGPPoolV4 = "10.79.0.0/24"
	BGPPoolV6 = "fd00:79::/112"

	RouterASN = 64500
	NodeASN   = 64512

	// BackendPort is where every backend's HTTP (TCP) and echo (UDP) server listens.
	BackendPort = 8080
	// APIServerPort is the apiserver's port on the control plane's segment address.
	APIServerPort = 6443

	segmentIf  = "eth0" // every host's link to the segment (or, for pods and ext, to their gateway)
	bridgeName = "br0"  // the switch, inside the switch namespace
	podBridge  = "cni0" // each node's bridge for its pods
	upstreamIf = "up0"  // the router's link to the upstream segment
)

// Kinds of host.
const (
	KindSwitch       = "switch"
	KindControlPlane = "controlplane"
	KindRouter       = "router"
	KindNode         = "node"
	KindPod          = "pod"
	KindClient       = "client"
)

// Names of the fixed hosts.
const (
	HostSwitch       = "sw"
	HostControlPlane = "cp"
	HostRouter       = "router"
	HostClient       = "client" // on the segment, next to the nodes
	HostExternal     = "ext"    // on the upstream segment, behind the router
)

// Host is one network namespace of the lab.
type Host struct {
	Name  string `json:"name"`  // e.g. "node1", "node1-pod1", "router"
	Netns string `json:"netns"` // prefix + name
	Kind  string `json:"kind"`
	// Addresses on eth0: on the segment for segment hosts, in the pod CIDR for pods, on the upstream
	// segment for ext. The router also has UpstreamIPv4/6 on up0.
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
	MAC  string     `json:"mac,omitempty"`
	// Node is a pod's node; PodCIDRs are a node's.
	Node     string   `json:"node,omitempty"`
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	// Port is the host's port on the switch's bridge (segment hosts only).
	Port string `json:"port,omitempty"`
}

// Topology is the whole set of hosts and how they are wired.
type Topology struct {
	Prefix string  `json:"prefix"`
	Hosts  []*Host `json:"hosts"`
}

// NewTopology lays out a lab with the given number of nodes and backend pods per node.
func NewTopology(prefix string, nodes, podsPerNode int) (*Topology, error) {
	if nodes < 1 || nodes > 89 {
		return nil, fmt.Errorf("nodes must be 1..89, not %d", nodes)
	}
	if podsPerNode < 0 || podsPerNode > 200 {
		return nil, fmt.Errorf("pods per node must be 0..200, not %d", podsPerNode)
	}
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("prefix %q must start with herald- and hold only [a-z0-9-]", prefix)
	}
	t := &Topology{Prefix: prefix}
	seg := func(name, kind string, octet int) {
		t.add(&Host{Name: name, Kind: kind, IPv4: segmentV4(octet), IPv6: segmentV6(octet), MAC: segmentMAC(octet), Port: name})
	}
	t.add(&Host{Name: HostSwitch, Kind: KindSwitch})
	seg(HostRouter, KindRouter, 1)
	seg(HostControlPlane, KindControlPlane, 2)
	seg(HostClient, KindClient, 100)
	t.add(&Host{Name: HostExternal, Kind: KindClient, IPv4: netip.MustParseAddr("10.78.0.100"), IPv6: netip.MustParseAddr("fd00:78::100")})
	for i := 1; i <= nodes; i++ {
		node := "node" + strconv.Itoa(i)
		seg(node, KindNode, 10+i)
		t.Host(node).PodCIDRs = []string{fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("fd00:244:%d::/64", i)}
		for j := 1; j <= podsPerNode; j++ {
			t.add(&Host{Name: fmt.Sprintf("%s-pod%d", node, j), Kind: KindPod, Node: node,
				IPv4: netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", i, 10+j)),
				IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:244:%d::%d", i, 10+j))})
		}
	}
	return t, nil
}

// validPrefix keeps lab names inside the project's herald- namespace and short enough to read.
var validPrefix = regexp.MustCompile(`^herald-[a-z0-9-]{0,20}$`)

// The router's addresses on the upstream segment (the client behind it routes through them).
var (
	UpstreamRouterV4 = netip.MustParseAddr("10.78.0.1")
	UpstreamRouterV6 = netip.MustParseAddr("fd00:78::1")
)

func segmentV4(octet int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(octet)}) }
func segmentV6(octet int) netip.Addr {
	return netip.MustParseAddr("fd00:77::" + strconv.Itoa(octet))
}

// segmentMAC gives segment hosts fixed, locally administered MACs ending in the host's IPv4 octet,
// so `arping` output names the node that answered: 02:4c:00:77:00:0b is 10.77.0.11, node1.
func segmentMAC(octet int) string { return fmt.Sprintf("02:4c:00:77:00:%02x", octet) }

// podBridgeMAC is the fixed MAC of a node's pod bridge: locally administered, ending in the node's
// segment octet, and apart from every segment MAC.
func podBridgeMAC(n *Host) string { return fmt.Sprintf("02:4c:01:77:00:%02x", n.IPv4.As4()[3]) }

func (t *Topology) add(h *Host) {
	h.Netns = t.Prefix + h.Name
	t.Hosts = append(t.Hosts, h)
}

// Host returns the named host, or nil.
func (t *Topology) Host(name string) *Host {
	for _, h := range t.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// HostsOf returns the hosts of one kind, in order.
func (t *Topology) HostsOf(kind string) []*Host {
	var out []*Host
	for _, h := range t.Hosts {
		if h.Kind == kind {
			out = append(out, h)
		}
	}
	return out
}

// NetnsPattern matches the names of every namespace a lab with this prefix can create, whatever its
// size, and nothing of another lab (a test lab "herald-lt-" is not matched by "herald-").
func NetnsPattern(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) +
		`(` + HostSwitch + `|` + HostControlPlane + `|` + HostRouter + `|` + HostClient + `|` + HostExternal +
		`|node[0-9]+|node[0-9]+-pod[0-9]+)$`)
}

// Step is a batch of `ip` commands run inside one namespace (`ip -n NETNS -batch -`), and the
// sysctls set there first.
type Step struct {
	Netns   string
	Sysctls []string
	IP      []string
}

// Plan returns the steps that wire the topology, in the order they must run: a step may move a
// link into a namespace that a later step configures. Every step names a lab namespace: nothing is
// ever created in the machine's own namespace (veth pairs are created inside the switch or node
// namespace with their peer placed directly into the other lab namespace).
func (t *Topology) Plan() []Step {
	quiet := []string{
		// nodad everywhere: addresses are usable at once, and link-locals too (no 1 s DAD wait).
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
	}
	forwarding := append([]string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"}, quiet...)
	router := t.Host(HostRouter)

	var steps []Step
	// The switch: one bridge with multicast snooping and its own querier, so NDP's solicited-node
	// multicast reaches only the ports that joined the group, as on a real switch (an NDP
	// responder that relies on flooding is not asked). Measured on this kernel (6.18):
	//   - Once a querier is known, the bridge sends multicast that no port joined only to router
	//     ports; before, it floods it. Its own querier counts for IPv6 only once a query went out,
	//     which needs br0's link-local address (hence no DAD, and the querier enabled after `up`),
	//     and only after the query response interval (10 s by default, 1 s here). A failed first
	//     query is retried after the startup query interval (31 s by default, 1 s here).
	//   - Unregistered-multicast flooding stays on (mcast_flood): turned off on a port, it also
	//     stops ff02::1 (all nodes), which switches must flood (RFC 4541 2.1.2) and unsolicited
	//     neighbour advertisements are sent to. With the querier on it floods only ff02::1.
	sw := Step{Netns: t.Host(HostSwitch).Netns, Sysctls: quiet, IP: []string{
		"link set lo up",
		"link add " + bridgeName + " type bridge mcast_snooping 1 mcast_query_response_interval 100 mcast_startup_query_interval 100",
		"link set " + bridgeName + " up",
		"link set " + bridgeName + " type bridge mcast_querier 1",
	}}
	for _, h := range t.Hosts {
		if h.Port == "" {
			continue
		}
		sw.IP = append(sw.IP,
			fmt.Sprintf("link add %s type veth peer name %s netns %s", h.Port, segmentIf, h.Netns),
			fmt.Sprintf("link set %s master %s", h.Port, bridgeName),
			fmt.Sprintf("link set %s up", h.Port))
	}
	steps = append(steps, sw)

	// The router, with its upstream link to ext, routes to every pod CIDR.
	ext := t.Host(HostExternal)
	r := Step{Netns: router.Netns, Sysctls: forwarding, IP: segmentHostIP(router)}
	r.IP = append(r.IP,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", upstreamIf, segmentIf, ext.Netns),
		fmt.Sprintf("addr add %s/24 dev %s", UpstreamRouterV4, upstreamIf),
		fmt.Sprintf("addr add %s/64 dev %s nodad", UpstreamRouterV6, upstreamIf),
		"link set "+upstreamIf+" up")
	for _, n := range t.HostsOf(KindNode) {
		r.IP = append(r.IP, podRoutes(n)...)
	}
	steps = append(steps, r)
	steps = append(steps, Step{Netns: ext.Netns, Sysctls: quiet, IP: []string{
		"link set lo up",
		fmt.Sprintf("addr add %s/24 dev %s", ext.IPv4, segmentIf),
		fmt.Sprintf("addr add %s/64 dev %s nodad", ext.IPv6, segmentIf),
		"link set " + segmentIf + " up",
		"route add default via " + UpstreamRouterV4.String(),
		"route add ::/0 via " + UpstreamRouterV6.String(),
	}})

	// Hosts on the segment whose way out is the router: control plane and the L2 client.
	for _, name := range []string{HostControlPlane, HostClient} {
		h := t.Host(name)
		steps = append(steps, Step{Netns: h.Netns, Sysctls: quiet, IP: append(segmentHostIP(h), defaultVia(router)...)})
	}

	// Nodes: a bridge for their pods (as a bridge CNI plugin makes), routes to the other nodes' pod
	// CIDRs, default route via the router. The bridge's MAC is set: a bridge without one takes
	// the lowest of its ports' MACs, so a pod's veth coming or going would change the pods'
	// gateway MAC under them and blackhole their replies until their neighbour entries expire
	// (seen on real nodes: a controller pod deleted broke the IPv6 streams of a backend next to it).
	for _, n := range t.HostsOf(KindNode) {
		s := Step{Netns: n.Netns, Sysctls: forwarding, IP: segmentHostIP(n)}
		gw4, gw6 := podGateways(n)
		s.IP = append(s.IP,
			"link add "+podBridge+" address "+podBridgeMAC(n)+" type bridge",
			fmt.Sprintf("addr add %s/24 dev %s", gw4, podBridge),
			fmt.Sprintf("addr add %s/64 dev %s nodad", gw6, podBridge),
			"link set "+podBridge+" up")
		for _, p := range t.HostsOf(KindPod) {
			if p.Node != n.Name {
				continue
			}
			veth := podVeth(p)
			s.IP = append(s.IP,
				fmt.Sprintf("link add %s type veth peer name %s netns %s", veth, segmentIf, p.Netns),
				fmt.Sprintf("link set %s master %s", veth, podBridge),
				fmt.Sprintf("link set %s up", veth))
		}
		for _, other := range t.HostsOf(KindNode) {
			if other != n {
				s.IP = append(s.IP, podRoutes(other)...)
			}
		}
		s.IP = append(s.IP, defaultVia(router)...)
		steps = append(steps, s)
	}
	for _, p := range t.HostsOf(KindPod) {
		gw4, gw6 := podGateways(t.Host(p.Node))
		steps = append(steps, Step{Netns: p.Netns, Sysctls: quiet, IP: []string{
			"link set lo up",
			fmt.Sprintf("addr add %s/24 dev %s", p.IPv4, segmentIf),
			fmt.Sprintf("addr add %s/64 dev %s nodad", p.IPv6, segmentIf),
			"link set " + segmentIf + " up",
			"route add default via " + gw4.String(),
			"route add ::/0 via " + gw6.String(),
		}})
	}
	return steps
}

func segmentHostIP(h *Host) []string {
	return []string{
		"link set lo up",
		fmt.Sprintf("link set %s address %s", segmentIf, h.MAC),
		fmt.Sprintf("addr add %s/24 dev %s", h.IPv4, segmentIf),
		fmt.Sprintf("addr add %s/64 dev %s nodad", h.IPv6, segmentIf),
		"link set " + segmentIf + " up",
	}
}

func defaultVia(router *Host) []string {
	return []string{"route add default via " + router.IPv4.String(), "route add ::/0 via " + router.IPv6.String()}
}

// podRoutes routes node n's pod CIDRs via n's segment addresses.
func podRoutes(n *Host) []string {
	return []string{
		fmt.Sprintf("route add %s via %s", n.PodCIDRs[0], n.IPv4),
		fmt.Sprintf("route add %s via %s", n.PodCIDRs[1], n.IPv6),
	}
}

// podGateways are the node's addresses on its pod bridge: the first of each pod CIDR.
func podGateways(n *Host) (netip.Addr, netip.Addr) {
	p4, p6 := netip.MustParsePrefix(n.PodCIDRs[0]), netip.MustParsePrefix(n.PodCIDRs[1])
	return p4.Addr().Next(), p6.Addr().Next()
}

// podVeth is the node-side name of a pod's veth: "pod3" for node1-pod3.
func podVeth(p *Host) string { return p.Name[len(p.Node)+1:] }
