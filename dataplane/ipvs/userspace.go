package ipvs

import "github.com/heraldlb/herald/dataplane"

// SetUserspaceListeners hands the ports annotated herald.io/proxy-mode: userspace to the
// userspace proxy (dataplane/userspace). IPVS has no redirect to a local port, but it needs
// none: the Service IPs are already the node's own (local routes to herald-ipvs0), and IPVS takes
// only the packets of its virtual servers in LOCAL_IN, leaving the rest to local sockets. So a
// proxied port simply gets no virtual server (nor NodePort ones), and the proxy, made with
// userspace.Options.Direct, listens on the Service's own addresses and port and on the NodePort.
// Everything else stays as for other ports: the Service IPs, and the nftables table's filtering
// (loadBalancerSourceRanges, the reject or drop without endpoints, unknown ports) in the input
// hook before the packets reach the proxy. Call it before the first sync.
func (b *Backend) SetUserspaceListeners(us dataplane.UserspaceListeners) { b.userspace = us }

// proxiedInUserspace says whether p's traffic goes to the userspace proxy: it is annotated and
// the proxy has its listeners (otherwise IPVS serves it, as without the annotation).
func proxiedInUserspace(p *dataplane.ServicePort, us dataplane.UserspaceListeners) bool {
	if p.Userspace == nil || us == nil {
		return false
	}
	_, _, ok := us.UserspacePorts(p.Name)
	return ok
}
