package nftables

import (
	"fmt"

	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// The proxy's listeners are sockets on the node's wildcard address: without a guard, a client
// could connect to a listener's port directly, past the Service's source-range firewall. The
// guard drops new connections to those ports that did not come through a redirect.
const (
	userspacePortsSet   = "userspace-ports"
	userspaceGuardChain = "userspace-guard"
)

// addUserspaceBase adds the guard to the fixed part of the table.
func addUserspaceBase(tx *knftables.Transaction) {
	tx.Add(&knftables.Set{Name: userspacePortsSet, Type: "inet_proto . inet_service"})
	typ, hook, prio := knftables.FilterType, knftables.InputHook, knftables.FilterPriority
	tx.Add(&knftables.Chain{Name: userspaceGuardChain, Type: &typ, Hook: &hook, Priority: &prio})
	tx.Add(&knftables.Rule{Chain: userspaceGuardChain,
		Rule: "ct state new ct status & dnat == 0 meta l4proto . th dport @" + userspacePortsSet + " drop"})
}

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

// addListenerPorts lists p's listener ports in the guard's set.
func (r *userspaceRedirect) addListenerPorts(fr *fragment, p *dataplane.ServicePort) {
	for _, port := range []uint16{r.cluster, r.external} {
		if port != 0 {
			fr.addElement(elementKey{userspacePortsSet, key(proto(p.Protocol), fmt.Sprint(port))}, "")
		}
	}
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
