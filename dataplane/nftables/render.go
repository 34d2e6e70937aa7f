package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/readonly"
)

// family holds the per-address-family spellings; a dual-stack Service port renders once per family.
type family struct {
	suffix   string // "4" or "6"; object names carry it
	ipKw     string // nft address match keyword: "ip" or "ip6"
	addrType string // nft set type of an address
}

var (
	ipv4 = family{suffix: "4", ipKw: "ip", addrType: "ipv4_addr"}
	ipv6 = family{suffix: "6", ipKw: "ip6", addrType: "ipv6_addr"}
)

func (f family) of(a netip.Addr) bool { return a.Is4() == (f.suffix == "4") }

// Names of the shared objects, per family where the key holds an address.
func (f family) serviceIPs() string       { return "service-ips" + f.suffix }
func (f family) serviceNodePorts() string { return "service-nodeports" + f.suffix }
func (f family) noEndpointIPs() string    { return "no-endpoint-ips" + f.suffix }
func (f family) noEndpointNodePorts() string {
	return "no-endpoint-nodeports" + f.suffix
}
func (f family) firewallIPs() string { return "firewall-ips" + f.suffix }
func (f family) masqIPs() string     { return "masq-ips" + f.suffix }
func (f family) hairpin() string     { return "hairpin" + f.suffix }
func (f family) clusterIPs() string  { return "cluster-ips" + f.suffix }

// nodePortIPs holds the prefixes of the node's addresses NodePorts are open on, serviceCIDRs the
// Service ranges (interval sets, filled from the node's fragment).
func (f family) nodePortIPs() string  { return "nodeport-ips" + f.suffix }
func (f family) serviceCIDRs() string { return "service-cidrs" + f.suffix }

// all is the family's whole address space.
func (f family) all() netip.Prefix {
	if f == ipv6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// masqNodePorts is shared by both families: the policy that decides masquerading is per Service.
const masqNodePorts = "masq-nodeports"

const (
	rejectChain             = "reject-chain"
	markForMasqueradeChain  = "mark-for-masquerade"
	masqueradeMark          = "0x4000"
	verdictReject           = "goto " + rejectChain
	verdictDrop             = "drop"
	chainPrefixService      = "svc"
	chainPrefixExternal     = "ext"
	chainPrefixFirewall     = "fw"
	chainPrefixShortCircuit = "sc"
	setPrefixAffinity       = "aff"
	protocolOfUnknownForNFT = ""
)

func proto(p v1.Protocol) string {
	switch p {
	case v1.ProtocolTCP:
		return "tcp"
	case v1.ProtocolUDP:
		return "udp"
	case v1.ProtocolSCTP:
		return "sctp"
	}
	return protocolOfUnknownForNFT
}

// chainName is "<kind><family>-<namespace>/<name>/<proto>/<port>": unique, readable in
// `nft list table`, and within nft's 256-byte limit (namespaces and Service names are DNS labels).
func chainName(kind string, f family, p *dataplane.ServicePort) string {
	return kind + f.suffix + "-" + p.Name.String()
}

// affinitySetName names an endpoint's affinity set; nft does not accept ':' in names, so an
// address's colons (IPv6) and the port separator become '_'.
func affinitySetName(f family, p *dataplane.ServicePort, ep dataplane.Endpoint) string {
	addr := strings.ReplaceAll(ep.Addr.String(), ":", "_")
	return setPrefixAffinity + f.suffix + "-" + p.Name.String() + "__" + addr + "_" + port(ep.Port)
}

func key(parts ...string) string { return strings.Join(parts, " . ") }

func port(n int32) string { return strconv.Itoa(int(n)) }

// nodeFragment is the key the node's own fragment (renderNode) is committed under: no Service
// has an empty name.
var nodeFragment = types.NamespacedName{}

// renderNode computes the node's own fragment: the addresses NodePorts are open on (np; every
// address of a family np names none of) and the Service CIDRs. It is diffed and committed like a
// Service's, so a changed node IP or ServiceCIDR costs a few elements, not a full sync.
func renderNode(st *dataplane.State, np dataplane.NodePortAddresses) *fragment {
	fr := &fragment{}
	for _, f := range []family{ipv4, ipv6} {
		prefixes := np.Prefixes(st, f == ipv6)
		if len(prefixes) == 0 {
			prefixes = []netip.Prefix{f.all()}
		}
		for _, p := range prefixes {
			fr.addElement(elementKey{f.nodePortIPs(), p.String()}, "")
		}
		for _, p := range st.ServiceCIDRs {
			if f.of(p.Addr()) {
				fr.addElement(elementKey{f.serviceCIDRs(), p.String()}, "")
			}
		}
	}
	return fr.sort()
}

// render computes a Service's fragment from its ports (nil when it contributes nothing). us
// says where the userspace proxy listens for the ports in that mode (nil: no proxy runs); lt
// tells pods' traffic from other traffic.
func render(ports []*dataplane.ServicePort, us dataplane.UserspaceListeners, lt dataplane.LocalTraffic) *fragment {
	fr := &fragment{}
	for _, p := range ports {
		if proto(p.Protocol) == protocolOfUnknownForNFT {
			continue
		}
		redirect := userspaceRedirectOf(p, us)
		if redirect != nil {
			redirect.addListenerPorts(fr, p)
		}
		for _, f := range []family{ipv4, ipv6} {
			renderFamily(fr, p, f, redirect, lt)
		}
	}
	return fr.sort()
}

// renderFamily renders one Service port for one address family. With redirect, the port's
// traffic goes to the userspace proxy instead of being translated to an endpoint here.
func renderFamily(fr *fragment, p *dataplane.ServicePort, f family, redirect *userspaceRedirect, lt dataplane.LocalTraffic) {
	clusterIPs := filterAddrs(p.ClusterIPs, f)
	externalIPs := filterAddrs(p.ExternalAddrs(), f)
	lbIPs := filterAddrs(p.LoadBalancerIPs, f)
	if len(clusterIPs) == 0 && len(externalIPs) == 0 {
		return // the Service does not have this family
	}
	pr := proto(p.Protocol)
	clusterEps := dataplane.EndpointsOfFamily(p.ClusterEndpoints, f == ipv6)
	externalEps := dataplane.EndpointsOfFamily(p.ExternalEndpoints, f == ipv6)
	noEndpoints := verdictReject
	if p.HasEndpoints {
		noEndpoints = verdictDrop
	}
	forward := func(eps []dataplane.Endpoint, external bool) []string {
		if redirect != nil {
			return redirect.rules(p, external)
		}
		return endpointRules(fr, p, f, eps)
	}

	// Traffic to the ClusterIPs. Every ClusterIP is listed, so that traffic to one of its
	// ports no Service uses is rejected (after DNAT, only that traffic still goes to it).
	for _, ip := range clusterIPs {
		fr.addElement(elementKey{f.clusterIPs(), ip.String()}, "")
	}
	svcChain := chainName(chainPrefixService, f, p)
	if len(clusterEps) > 0 {
		var rules []string
		for _, ip := range clusterIPs {
			if r := clusterIPMasquerade(lt, f, ip, pr, port(p.Port)); r != "" {
				rules = append(rules, r)
			}
		}
		fr.addChain(svcChain, append(rules, forward(clusterEps, false)...))
		for _, ip := range clusterIPs {
			fr.addElement(elementKey{f.serviceIPs(), key(ip.String(), pr, port(p.Port))}, "goto "+svcChain)
		}
	} else {
		for _, ip := range clusterIPs {
			fr.addElement(elementKey{f.noEndpointIPs(), key(ip.String(), pr, port(p.Port))}, noEndpoints)
		}
	}

	// External traffic: externalIPs, LoadBalancer IPs and the NodePort.
	if len(externalIPs) == 0 && p.NodePort == 0 {
		return
	}
	// With a Local policy, traffic the node itself sends to its external addresses is not
	// external: like kube-proxy, send it to any endpoint (internalTrafficPolicy not applied),
	// masqueraded, even when this node has none of its own (rather than dropping the node's own
	// connections). Pods' traffic (by the cluster CIDRs, when known) likewise, keeping its source.
	shortCircuitEps := dataplane.EndpointsOfFamily(p.ShortCircuitEndpoints, f == ipv6)
	shortCircuit := p.ExternalPolicyLocal && len(shortCircuitEps) > 0
	if len(externalEps) == 0 && !shortCircuit {
		for _, ip := range externalIPs {
			fr.addElement(elementKey{f.noEndpointIPs(), key(ip.String(), pr, port(p.Port))}, noEndpoints)
		}
		if p.NodePort != 0 {
			fr.addElement(elementKey{f.noEndpointNodePorts(), key(pr, port(p.NodePort))}, noEndpoints)
		}
	} else {
		target := svcChain
		if p.ExternalPolicyLocal || !slices.EqualFunc(externalEps, clusterEps, sameEndpoint) {
			// Local policies make the two lists differ, and a Local policy treats the node's
			// own traffic apart: external traffic gets its own chain.
			target = chainName(chainPrefixExternal, f, p)
			var rules []string
			if shortCircuit {
				to := svcChain
				if !slices.EqualFunc(shortCircuitEps, clusterEps, sameEndpoint) {
					// internalTrafficPolicy: Local narrowed the Service chain's endpoints.
					to = chainName(chainPrefixShortCircuit, f, p)
					fr.addChain(to, forward(shortCircuitEps, false))
				}
				// Pods' traffic is not external either (kube-proxy's "short-circuit pod traffic").
				if pods := lt.NFTSources(f == ipv6, false); pods != "" {
					rules = append(rules, pods+" goto "+to)
				}
				rules = append(rules, "fib saddr type local jump "+markForMasqueradeChain, "fib saddr type local goto "+to)
			}
			if len(externalEps) > 0 {
				rules = append(rules, forward(externalEps, true)...)
			} else {
				// Endpoints only elsewhere: drop, so the client's load balancer, told by the
				// health check, retries another node.
				rules = append(rules, verdictDrop)
			}
			fr.addChain(target, rules)
		}
		for _, ip := range externalIPs {
			fr.addElement(elementKey{f.serviceIPs(), key(ip.String(), pr, port(p.Port))}, "goto "+target)
			if !p.ExternalPolicyLocal {
				fr.addElement(elementKey{f.masqIPs(), key(ip.String(), pr, port(p.Port))}, "")
			}
		}
		if p.NodePort != 0 {
			fr.addElement(elementKey{f.serviceNodePorts(), key(pr, port(p.NodePort))}, "goto "+target)
			if !p.ExternalPolicyLocal {
				fr.addElement(elementKey{masqNodePorts, key(pr, port(p.NodePort))}, "")
			}
		}
	}

	// loadBalancerSourceRanges: other sources are dropped at the LoadBalancer IPs, before DNAT.
	// A family without any range of its own stays open, as in kube-proxy (each of its
	// per-family proxiers sees only its family's ranges): a cluster moving from kube-proxy
	// must not lose the clients of the family it never restricted.
	var ranges []string
	for _, r := range p.SourceRanges {
		if f.of(r.Addr()) {
			ranges = append(ranges, fmt.Sprintf("%s saddr %s return", f.ipKw, r))
		}
	}
	if len(ranges) > 0 && len(lbIPs) > 0 {
		fw := chainName(chainPrefixFirewall, f, p)
		fr.addChain(fw, append(ranges, "drop"))
		for _, ip := range lbIPs {
			fr.addElement(elementKey{f.firewallIPs(), key(ip.String(), pr, port(p.Port))}, "goto "+fw)
		}
	}
}

// endpointRules picks one endpoint per new connection. There are no per-endpoint chains and no
// anonymous maps: each rule is "with probability 1/(remaining endpoints) DNAT to this one", the
// last one unconditional, which is uniform. The kernel creates anonymous sets slowly at scale
// (measured: 10,000 `numgen ... vmap { ... }` rules cost ~7 s of kernel time against ~0.5 s for
// these), and this is what keeps a full sync of 10,000 Services within seconds.
// With sessionAffinity, a client seen recently (its address in the endpoint's set) goes back to
// the same endpoint first, and every choice records the client. A return refreshes the
// client's entry, as kube-proxy does: the timeout counts from the last connection, not the
// first, so a client that keeps connecting is never moved.
func endpointRules(fr *fragment, p *dataplane.ServicePort, f family, eps []dataplane.Endpoint) []string {
	pr := proto(p.Protocol)
	var rules []string
	dnat := func(ep dataplane.Endpoint) string {
		return fmt.Sprintf("meta l4proto %s dnat %s to %s", pr, f.ipKw, ep.AddrPort())
	}
	if p.AffinityTimeout > 0 {
		for _, ep := range eps {
			set := affinitySetName(f, p, ep)
			fr.addSet(set, setSpec{keyType: f.addrType, timeout: p.AffinityTimeout})
			rules = append(rules, fmt.Sprintf("%s saddr @%s update @%s { %s saddr } %s", f.ipKw, set, set, f.ipKw, dnat(ep)))
		}
	}
	for i, ep := range eps {
		var r []string
		if remaining := len(eps) - i; remaining > 1 {
			r = append(r, fmt.Sprintf("numgen random mod %d 0", remaining))
		}
		if p.AffinityTimeout > 0 {
			r = append(r, fmt.Sprintf("update @%s { %s saddr }", affinitySetName(f, p, ep), f.ipKw))
		}
		rules = append(rules, strings.Join(append(r, dnat(ep)), " "))
	}
	// Hairpin: an endpoint reaching its own Service and picked itself must see the node as the
	// source, or its reply would bypass the DNAT. One shared set, checked in postrouting. Only
	// this node's endpoints can hairpin here (a remote pod's traffic goes through its own node),
	// so only they are listed: in a cluster of N nodes that is about 1/N of the endpoints.
	for _, ep := range eps {
		if ep.Local {
			fr.addElement(elementKey{f.hairpin(), key(ep.Addr.String(), ep.Addr.String())}, "")
		}
	}
	return rules
}

func sameEndpoint(a, b dataplane.Endpoint) bool { return a.AddrPort() == b.AddrPort() }

func filterAddrs(in []netip.Addr, f family) []netip.Addr { return readonly.Filter(in, f.of) }
