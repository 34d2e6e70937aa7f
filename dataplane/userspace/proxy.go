// Package userspace is Herald's userspace proxy mode: for Services annotated
// herald.io/proxy-mode: userspace, the kernel backend redirects the Service's traffic to
// listeners of this proxy on the node, which accepts the client's connection itself, picks an
// endpoint from the lists the endpoint policy chose (dataplane.SelectEndpoints, as for the
// kernel backends) and dials it with a short timeout. When that endpoint refuses, does not
// answer, or resets the connection before its first byte, the proxy marks it suspect for a
// while and tries the next one (bounded tries per Service), replaying what the client sent so
// far; only then does the client see a failure (a reset). A backend that died before its
// readiness probe noticed costs clients no failed connection, which neither nftables nor IPVS
// can offer: they DNAT a new connection to the dead endpoint until the EndpointSlice changes.
//
// Bytes flow with io.Copy between *net.TCPConn, which Go turns into splice(2); each direction
// is half-closed on its own. UDP is forwarded per client session (udp.go).
package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/ipvs"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Options configure a Proxy.
type Options struct {
	// Listen opens a TCP listener and ListenPacket a UDP socket with lc (which sets the
	// socket options the proxy needs); defaults lc.Listen and lc.ListenPacket (the speaker's own
	// network namespace: the node's).
	Listen       func(lc *net.ListenConfig, network, address string) (net.Listener, error)
	ListenPacket func(lc *net.ListenConfig, network, address string) (net.PacketConn, error)
	// Dial connects to an endpoint; default a net.Dialer. Its TCP connections must be
	// *net.TCPConn (splice and half-close need them).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// ConnectTimeout bounds each connection attempt to an endpoint; default 1 s.
	ConnectTimeout time.Duration
	// SuspectFor is how long an endpoint that failed a connection is tried only after the
	// others; default 10 s (about what a readiness probe needs to notice).
	SuspectFor time.Duration
	// UDPIdleTimeout ends a UDP client session without traffic; default 30 s.
	UDPIdleTimeout time.Duration
	// Direct makes the listeners bind the Service's own addresses and port (and the NodePort on
	// every address) instead of a port the kernel picks, where nothing redirects to them: with
	// no kernel backend (Standalone, --dataplane=userspace), and with IPVS, which holds the
	// Service IPs as the node's own and leaves the proxied ports to local sockets. The proxy then
	// also enforces loadBalancerSourceRanges itself (Standalone has no firewall in front of it).
	Direct bool
	// ServeAll serves every TCP and UDP port, those not annotated with the default settings
	// (Standalone: there is no kernel backend to leave them to).
	ServeAll bool
	// NodeAddrs lists the node's addresses, which Direct mode binds NodePorts on when
	// SetNodePortAddresses leaves some out; default dataplane.NodeAddrs in the calling thread's
	// network namespace (the speaker's: the node's).
	NodeAddrs func() ([]netip.Addr, error)
	Logger    *slog.Logger
}

// Proxy is the userspace proxy: a listener per userspace-proxied Service port and kind of
// traffic, opened and closed by Sync.
type Proxy struct {
	opts     Options
	suspects *suspects
	metrics  *metrics

	// ctx ends with Close: it stops every listener and connection.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // serve loops and connections

	mu sync.Mutex
	// ports are the open listeners of the ports in the desired state.
	ports map[dataplane.ServicePortName]*portListeners
	// retired are listeners of ports that left the desired state: closed once the kernel
	// backend no longer redirects to them.
	retired []*portListeners
	// unserved are the ports ServeAll leaves without traffic: SCTP, which the proxy does not
	// speak. Only Standalone has them (a kernel backend serves what the proxy does not).
	unserved map[dataplane.ServicePortName]bool
	// nodePorts says which node addresses Direct mode binds NodePorts on (SetNodePortAddresses),
	// nodePortHosts are those addresses as of the last sync (nil: every address, one socket).
	nodePorts     dataplane.NodePortAddresses
	nodePortHosts []netip.Addr
}

// portListeners are the listeners of one Service port.
type portListeners struct {
	// port is the current desired state of the Service port; connections read it when they
	// start (so an endpoint change applies to the next connection).
	port *portState
	// cluster serves the ClusterIPs' traffic, external the NodePort's, LoadBalancer IPs' and
	// externalIPs'; nil where binds has none (a port without external traffic; in Direct mode
	// also one without ClusterIPs).
	cluster, external listener
	// binds are the socket addresses the listeners were opened on (see Proxy.binds).
	binds [2][]string
}

// listener is a TCP or UDP listener of the proxy: one socket per bind address.
type listener interface {
	// Port is the first socket's port: the one the kernel picked, which a kernel backend
	// redirects to.
	Port() uint16
	Close() error
}

// New returns a Proxy; Close stops it.
func New(opts Options) *Proxy {
	if opts.Listen == nil {
		opts.Listen = func(lc *net.ListenConfig, network, address string) (net.Listener, error) {
			return lc.Listen(context.Background(), network, address)
		}
	}
	if opts.ListenPacket == nil {
		opts.ListenPacket = func(lc *net.ListenConfig, network, address string) (net.PacketConn, error) {
			return lc.ListenPacket(context.Background(), network, address)
		}
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	if opts.NodeAddrs == nil {
		opts.NodeAddrs = func() ([]netip.Addr, error) { return dataplane.NodeAddrs(nil, ipvs.DummyLinkName) }
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = time.Second
	}
	if opts.SuspectFor == 0 {
		opts.SuspectFor = 10 * time.Second
	}
	if opts.UDPIdleTimeout == 0 {
		opts.UDPIdleTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{opts: opts, suspects: newSuspects(opts.SuspectFor), ctx: ctx, cancel: cancel,
		ports: map[dataplane.ServicePortName]*portListeners{}, unserved: map[dataplane.ServicePortName]bool{}}
	p.metrics = newMetrics(p.suspects, p.unservedCount)
	return p
}

// unservedCount is how many Service ports ServeAll leaves without traffic (a metric).
func (p *Proxy) unservedCount() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return float64(len(p.unserved))
}

// Collectors are the proxy's metrics, for the registry of whoever runs it (the speaker's).
func (p *Proxy) Collectors() []prometheus.Collector { return p.metrics.collectors() }

// UserspacePorts implements dataplane.UserspaceListeners for the kernel backend.
func (p *Proxy) UserspacePorts(name dataplane.ServicePortName) (cluster, external uint16, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.ports[name]
	if pl == nil {
		return 0, 0, false
	}
	if pl.cluster != nil {
		cluster = pl.cluster.Port()
	}
	if pl.external != nil {
		external = pl.external.Port()
	}
	return cluster, external, true
}

// Services lists the Service ports the proxy serves, sorted (heraldctl status, SpeakerStatus).
func (p *Proxy) Services() []dataplane.ServicePortName {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]dataplane.ServicePortName, 0, len(p.ports))
	for n := range p.ports {
		out = append(out, n)
	}
	sortNames(out)
	return out
}

// SetNodePortAddresses sets the node addresses Direct mode binds NodePorts on, as the kernel
// backends open them (--nodeport-addresses; the zero value: every address). Call it before the
// first sync.
func (p *Proxy) SetNodePortAddresses(np dataplane.NodePortAddresses) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodePorts = np
}

// updateNodePortHosts recomputes the addresses Direct mode binds NodePorts on (for st) and
// reports whether they changed: the NodePort listeners must then move.
func (p *Proxy) updateNodePortHosts(st *dataplane.State) (bool, error) {
	var hosts []netip.Addr
	if p.opts.Direct && p.nodePorts.Restricts(st) {
		addrs, err := p.opts.NodeAddrs()
		if err != nil {
			return false, fmt.Errorf("listing the node's addresses for NodePorts: %w", err)
		}
		hosts = p.nodePorts.Select(addrs, st)
		slices.SortFunc(hosts, netip.Addr.Compare)
		if hosts == nil {
			hosts = []netip.Addr{} // restricted to none: no NodePort socket, not every address
		}
	}
	changed := !slices.Equal(hosts, p.nodePortHosts) || (hosts == nil) != (p.nodePortHosts == nil)
	p.nodePortHosts = hosts
	return changed, nil
}

// open brings the listeners in line with the request's Services before the kernel backend
// syncs (so it finds the ports to redirect to): new userspace ports get listeners, changed
// ones their new state; ports that left are retired, to be closed by closeRetired after the
// kernel stopped redirecting to them. A port whose listener cannot open is left to the kernel
// backend (UserspacePorts reports no listener) and the error is returned with the others.
func (p *Proxy) open(req dataplane.SyncRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	moved, err := p.updateNodePortHosts(req.State)
	if err != nil {
		return err
	}
	if moved {
		// Every port's NodePort listener may bind elsewhere now: look at them all.
		req.Full = true
	}
	desired := map[dataplane.ServicePortName]*dataplane.ServicePort{}
	consider := func(svc types.NamespacedName) {
		for name := range p.unserved {
			if name.NamespacedName == svc {
				delete(p.unserved, name)
			}
		}
		for _, sp := range req.State.Services[svc] {
			if served := p.served(sp); served != nil {
				desired[sp.Name] = served
			} else if p.opts.ServeAll {
				p.unserved[sp.Name] = true
				// Said once per sync of the Service: a Service is synced again only when it changed.
				p.opts.Logger.Warn("this node's data plane is --dataplane=userspace, which serves TCP and UDP only: "+
					"this Service port gets no traffic here; run nftables or IPVS on nodes that must serve it",
					"service", sp.Name.String(), "protocol", sp.Protocol)
			}
		}
	}
	if req.Full {
		clear(p.unserved)
	}
	if req.Full {
		for svc := range req.State.Services {
			consider(svc)
		}
	} else {
		for svc := range req.Changed {
			consider(svc)
		}
	}
	for name, pl := range p.ports {
		if _, changed := req.Changed[name.NamespacedName]; !req.Full && !changed {
			continue
		}
		// A port keeps its listeners (and their ports: no rule changes) unless it left the
		// userspace mode or its listeners' addresses changed (redirect mode: it gained or lost
		// its external traffic).
		if sp, ok := desired[name]; ok && slices.Equal(p.binds(sp, false), pl.binds[0]) && slices.Equal(p.binds(sp, true), pl.binds[1]) {
			continue
		}
		delete(p.ports, name)
		p.retired = append(p.retired, pl)
	}
	if p.opts.Direct {
		// No kernel rule points at the retired listeners, and the new ones may need their
		// addresses: close them first.
		p.closeListeners(p.retired)
		p.retired = nil
	}
	var errs []error
	for name, sp := range desired {
		if pl := p.ports[name]; pl != nil {
			pl.port.store(sp)
			continue
		}
		pl, err := p.listen(sp)
		if err != nil {
			errs = append(errs, fmt.Errorf("userspace proxy for %s: %w", name, err))
			continue
		}
		p.ports[name] = pl
		p.metrics.start(name)
	}
	return errors.Join(errs...)
}

// served is sp as the proxy serves it, nil when it does not: the ports in userspace mode, and
// with ServeAll every TCP and UDP port, those without the annotation with the default settings.
func (p *Proxy) served(sp *dataplane.ServicePort) *dataplane.ServicePort {
	switch {
	case sp.Userspace != nil:
		return sp
	case !p.opts.ServeAll || (sp.Protocol != v1.ProtocolTCP && sp.Protocol != v1.ProtocolUDP):
		return nil
	}
	defaulted := *sp
	defaulted.Userspace = &dataplane.UserspaceOptions{ConnectTries: config.DefaultUserspaceConnectTries}
	return &defaulted
}

// closeRetired closes the listeners of ports that left the desired state. Their established
// connections go on until either side ends them: a Service switched back to the kernel keeps
// the connections the proxy already carries.
func (p *Proxy) closeRetired() {
	p.mu.Lock()
	retired := p.retired
	p.retired = nil
	p.mu.Unlock()
	p.closeListeners(retired)
}

func (p *Proxy) closeListeners(pls []*portListeners) {
	for _, pl := range pls {
		pl.close()
		p.metrics.forget(pl.port.name)
	}
}

// binds are the socket addresses of a port's cluster or external listener; nil: no listener.
// With a kernel backend redirecting to the proxy, each listener is one dual-stack socket on a
// port the kernel picks (external only when the port has external traffic). In Direct mode they
// are the Service's own addresses and port, and the NodePort on the node addresses
// --nodeport-addresses selects (one socket on every address when it selects them all).
func (p *Proxy) binds(sp *dataplane.ServicePort, external bool) []string {
	if !p.opts.Direct {
		if external && !hasExternal(sp) {
			return nil
		}
		return []string{":0"}
	}
	var out []string
	addrs := sp.ClusterIPs
	if external {
		addrs = sp.ExternalAddrs()
	}
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a, uint16(sp.Port)).String())
	}
	if external && sp.NodePort != 0 {
		if p.nodePortHosts == nil {
			out = append(out, fmt.Sprintf(":%d", sp.NodePort))
		}
		for _, a := range p.nodePortHosts {
			out = append(out, netip.AddrPortFrom(a, uint16(sp.NodePort)).String())
		}
	}
	return out
}

func (p *Proxy) listen(sp *dataplane.ServicePort) (*portListeners, error) {
	pl := &portListeners{port: newPortState(sp), binds: [2][]string{p.binds(sp, false), p.binds(sp, true)}}
	open := func(external bool) (listener, error) {
		binds := pl.binds[0]
		if external {
			binds = pl.binds[1]
		}
		if len(binds) == 0 {
			return nil, nil
		}
		var g group
		for _, b := range binds {
			var l listener
			var err error
			if sp.Protocol == v1.ProtocolUDP {
				l, err = p.listenUDP(pl.port, external, b)
			} else {
				l, err = p.listenTCP(pl.port, external, b)
			}
			if err != nil {
				g.Close()
				return nil, fmt.Errorf("listening on %s: %w", b, err)
			}
			g = append(g, l)
		}
		return g, nil
	}
	var err error
	if pl.cluster, err = open(false); err != nil {
		return nil, err
	}
	if pl.external, err = open(true); err != nil {
		pl.close()
		return nil, err
	}
	return pl, nil
}

// group is a listener of several sockets (Direct mode: one per address).
type group []listener

func (g group) Port() uint16 { return g[0].Port() }

func (g group) Close() error {
	var errs []error
	for _, l := range g {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

func (pl *portListeners) close() {
	for _, l := range []listener{pl.cluster, pl.external} {
		if l != nil {
			l.Close()
		}
	}
}

// Close stops every listener and ends every connection, then waits for them.
func (p *Proxy) Close() {
	p.cancel()
	p.mu.Lock()
	for _, pl := range p.ports {
		pl.close()
	}
	for _, pl := range p.retired {
		pl.close()
	}
	p.ports, p.retired = map[dataplane.ServicePortName]*portListeners{}, nil
	p.mu.Unlock()
	p.wg.Wait()
}

// spawn runs fn as a goroutine the proxy owns (Close waits for it).
func (p *Proxy) spawn(fn func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// listenConfig is the configuration of the proxy's sockets. In Direct mode they bind Service
// IPs that are local routes, not addresses of an interface: IPv6 refuses such a bind without
// IP_FREEBIND (IPv4 accepts it, and freebind changes nothing there).
func (p *Proxy) listenConfig() *net.ListenConfig {
	if !p.opts.Direct {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// hasExternal says whether sp has external traffic (a NodePort, LoadBalancer IPs or
// externalIPs), which gets a listener of its own.
func hasExternal(sp *dataplane.ServicePort) bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// endpointsFor returns the endpoints of the family of the address the client reached.
func endpointsFor(sp *dataplane.ServicePort, external bool, local netip.Addr) []dataplane.Endpoint {
	eps := sp.ClusterEndpoints
	if external {
		eps = sp.ExternalEndpoints
	}
	return dataplane.EndpointsOfFamily(eps, local.Unmap().Is6())
}

// addrPortOf converts a net.Addr of a TCP or UDP socket; v4-mapped addresses are unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// sourceAllowed applies loadBalancerSourceRanges in Direct mode, where no kernel firewall runs
// in front of the proxy: at a LoadBalancer IP, a client outside the ranges of the address's
// family is turned away. As in the kernel backends, a family without a range of its own stays
// open, and so do the ClusterIPs, NodePorts and externalIPs.
func sourceAllowed(sp *dataplane.ServicePort, local, client netip.Addr) bool {
	if len(sp.SourceRanges) == 0 || !slices.Contains(sp.LoadBalancerIPs, local) {
		return true
	}
	restricted := false
	for _, r := range sp.SourceRanges {
		if r.Addr().Is4() != local.Is4() {
			continue
		}
		if r.Contains(client) {
			return true
		}
		restricted = true
	}
	return !restricted
}
