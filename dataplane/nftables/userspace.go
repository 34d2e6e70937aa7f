package nftables

import (
	"fmt"

	"github.com/heraldlb/herald/dataplane"
)

// SetUserspaceListeners hands the ports annotated herald.io/proxy-mode: userspace to the
// userspace proxy (dataplane/userspace): their Service chains redirect new connections to the
// proxy's listeners on the node instead of DNATing them to an endpoint. Everything around that
// stays as for other ports (source-range firewall, no-endpoint reject or drop, Local-policy
// short circuit, NodePorts on local addresses), so the Service behaves the same in both modes.
// Call it before the first sync.
func (b *Backend) SetUserspaceListeners(us dataplane.UserspaceListeners) { b.userspace = us }

// userspaceRedirect holds the proxy's listener ports for one Service port.
type userspaceRedirect struct{ cluster, external uint16 }

// userspaceRedirectOf is p's redirect, nil when p is not in userspace mode or the proxy has no
// listener for it (then the port is forwarded here, as without the annotation).
func userspaceRedirectOf(p *dataplane.ServicePort, us dataplane.UserspaceListeners) *userspaceRedirect {
	if p.Userspace == nil || us == nil {
		return nil
	}
	cluster, external, ok := us.UserspacePorts(p.Name)
	if !ok {
		return nil
	}
	return &userspaceRedirect{cluster: cluster, external: external}
}

// rules replace the endpoint rules of a Service or external chain. redirect rewrites the
// destination to the address the packet arrived on (the loopback address for the node's own
// traffic) and the proxy's port; conntrack undoes it on the replies, so the client sees the
// Service address answer.
func (r *userspaceRedirect) rules(p *dataplane.ServicePort, external bool) []string {
	port := r.cluster
	if external && r.external != 0 {
		port = r.external
	}
	return []string{fmt.Sprintf("meta l4proto %s redirect to :%d", proto(p.Protocol), port)}
}
