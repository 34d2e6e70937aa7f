package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/moby/ipvs"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/dataplane"
)

// Options configures a Backend. Zero fields get the real kernel in the caller's network namespace.
type Options struct {
	Handle  Handle
	Links   Links
	NFT     knftables.Interface
	Sysctls Sysctls
	// StrictARP sets arp_ignore=1 and arp_announce=2 so no node answers ARP for Service IPs just
	// because they are local to it (needed with L2 announcements; harmless otherwise).
	StrictARP bool
	// SysctlStateFile records the sysctl values the backend replaced, for Cleanup.
	SysctlStateFile string
	// TerminationGrace bounds how long a removed endpoint keeps its established connections.
	TerminationGrace time.Duration
}

// DefaultSysctlStateFile is on tmpfs: the values it records die with the boot, as do the changes.
const DefaultSysctlStateFile = "/run/herald/ipvs-sysctls.json"

// DefaultTerminationGrace is how long a removed endpoint may drain its connections at weight 0.
const DefaultTerminationGrace = 60 * time.Second

// Backend commits the data plane's desired state to IPVS, the dummy link and the nftables table.
// It implements dataplane.Backend.
type Backend struct {
	// mu serializes Sync, Cleanup and the reaper of draining real servers.
	mu      sync.Mutex
	links   Links
	sysctls *sysctlKeeper
	strict  bool
	vs      *virtualServers
	fw      *firewall

	// fragments is what each Service contributed at the last successful sync.
	fragments map[types.NamespacedName]*fragment
	// ipRefs and setRefs count the Services using each Service IP and set element: a shared
	// LoadBalancer IP stays while any of its Services does.
	ipRefs  map[netip.Addr]int
	setRefs map[fwElement]int
	// nodeAddrs are the addresses NodePort virtual servers were expanded over.
	nodeAddrs []netip.Addr
	// nodePorts says which node addresses get NodePort virtual servers; see SetNodePortAddresses.
	nodePorts dataplane.NodePortAddresses
	// serviceIPs are the Service IPs this backend routed to the dummy link.
	serviceIPs map[netip.Addr]struct{}
	// initialized is set once the kernel state was adopted after a start.
	initialized bool
	// local tells pods' traffic from other traffic; see SetLocalTraffic.
	local dataplane.LocalTraffic
	// userspace is the userspace proxy (SetUserspaceListeners), nil without.
	userspace dataplane.UserspaceListeners
	// formerlyOwned are the addresses of what the backend had committed when a drift check
	// made it forget (drift.go); the next adopt takes them over too.
	formerlyOwned map[netip.Addr]struct{}
}

var _ dataplane.Backend = (*Backend)(nil)

// New returns a Backend; it touches the kernel only on the first Sync or Cleanup.
func New(opts Options) (*Backend, error) {
	var err error
	if opts.Handle == nil {
		if opts.Handle, err = ipvs.New(""); err != nil {
			return nil, fmt.Errorf("opening IPVS: %w", err)
		}
	}
	if opts.Links == nil {
		if opts.Links, err = NewNetlinkLinks(); err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
	}
	if opts.NFT == nil {
		if opts.NFT, err = knftables.New(knftables.InetFamily, TableName); err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
	}
	if opts.TerminationGrace == 0 {
		opts.TerminationGrace = DefaultTerminationGrace
	}
	return &Backend{
		links:      opts.Links,
		sysctls:    newSysctlKeeper(opts),
		strict:     opts.StrictARP,
		vs:         newVirtualServers(opts.Handle, opts.TerminationGrace),
		fw:         newFirewall(opts.NFT),
		fragments:  map[types.NamespacedName]*fragment{},
		ipRefs:     map[netip.Addr]int{},
		setRefs:    map[fwElement]int{},
		serviceIPs: map[netip.Addr]struct{}{},
	}, nil
}

// Name is the backend's name in logs, metrics and SpeakerStatus.
func (b *Backend) Name() string { return "ipvs" }

// delta is what one sync changes in the kernel.
type delta struct {
	setAdd, setDel []fwElement
	ipAdd, ipDel   []netip.Addr
	vsSet          map[vsKey]*virtualServer
	vsDel          []vsKey
}

// Sync commits req. An incremental sync renders only the changed Services and sends the
// difference between their old and new fragments; a full one (first sync, after a failure, or
// when the node's addresses changed under the NodePorts) re-renders everything and diffs it
// against what was committed.
func (b *Backend) Sync(ctx context.Context, req dataplane.SyncRequest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.init(); err != nil {
		return err
	}
	nodeAddrs, err := b.links.NodeAddrs()
	if err != nil {
		return fmt.Errorf("listing node addresses: %w", err)
	}
	nodeAddrs = b.nodePorts.Select(nodeAddrs, req.State)
	full := req.Full || !slices.Equal(nodeAddrs, b.nodeAddrs)
	b.nodeAddrs = nodeAddrs
	var d *delta
	if full {
		d = b.fullDelta(req.State)
	} else {
		d = b.incrementalDelta(req.State, req.Changed)
	}
	return b.apply(ctx, d)
}

// fullDelta re-renders every Service and diffs the result against the committed kernel state.
func (b *Backend) fullDelta(state *dataplane.State) *delta {
	b.fragments = make(map[types.NamespacedName]*fragment, len(state.Services))
	b.ipRefs, b.setRefs = map[netip.Addr]int{}, map[fwElement]int{}
	d := &delta{vsSet: map[vsKey]*virtualServer{}}
	for svc, ports := range state.Services {
		fr := render(ports, b.userspace, b.local)
		b.fragments[svc] = fr
		for a := range fr.serviceIPs {
			b.ipRefs[a]++
		}
		for set, elems := range fr.sets {
			for k := range elems {
				b.setRefs[fwElement{set, k}]++
			}
		}
		b.expand(fr, d.vsSet)
	}
	for a := range b.ipRefs {
		if _, ok := b.serviceIPs[a]; !ok {
			d.ipAdd = append(d.ipAdd, a)
		}
	}
	for a := range b.serviceIPs {
		if _, ok := b.ipRefs[a]; !ok {
			d.ipDel = append(d.ipDel, a)
		}
	}
	desiredSets := firewallSets{}
	for e := range b.setRefs {
		desiredSets.add(e.set, e.key)
	}
	// The node addresses change only with a full sync.
	for _, a := range b.nodeAddrs {
		f := familyIPv4
		if a.Is6() {
			f = familyIPv6
		}
		desiredSets.add(f.set(setNodePortAddrs), a.String())
	}
	d.setAdd, d.setDel = b.fw.diff(desiredSets)
	for k := range b.vs.committed {
		if _, ok := d.vsSet[k]; !ok {
			d.vsDel = append(d.vsDel, k)
		}
	}
	return d
}

// incrementalDelta re-renders the changed Services only.
func (b *Backend) incrementalDelta(state *dataplane.State, changed map[types.NamespacedName]struct{}) *delta {
	d := &delta{vsSet: map[vsKey]*virtualServer{}}
	for svc := range changed {
		old := b.fragments[svc]
		if old == nil {
			old = newFragment()
		}
		next := newFragment()
		if ports, ok := state.Services[svc]; ok {
			next = render(ports, b.userspace, b.local)
			b.fragments[svc] = next
		} else {
			delete(b.fragments, svc)
		}
		for a := range next.serviceIPs {
			if b.ipRefs[a]++; b.ipRefs[a] == 1 {
				d.ipAdd = append(d.ipAdd, a)
			}
		}
		for a := range old.serviceIPs {
			if b.ipRefs[a]--; b.ipRefs[a] == 0 {
				delete(b.ipRefs, a)
				d.ipDel = append(d.ipDel, a)
			}
		}
		for set, elems := range next.sets {
			for k := range elems {
				e := fwElement{set, k}
				if b.setRefs[e]++; b.setRefs[e] == 1 {
					d.setAdd = append(d.setAdd, e)
				}
			}
		}
		for set, elems := range old.sets {
			for k := range elems {
				e := fwElement{set, k}
				if b.setRefs[e]--; b.setRefs[e] == 0 {
					delete(b.setRefs, e)
					d.setDel = append(d.setDel, e)
				}
			}
		}
		newKeys := map[vsKey]*virtualServer{}
		b.expand(next, newKeys)
		oldKeys := map[vsKey]*virtualServer{}
		b.expand(old, oldKeys)
		for k, v := range newKeys {
			d.vsSet[k] = v
		}
		for k := range oldKeys {
			if _, ok := newKeys[k]; !ok {
				d.vsDel = append(d.vsDel, k)
			}
		}
	}
	// An address or element that moved from one changed Service to another was counted up and
	// down in the same sync: it must not be both added and deleted.
	d.ipAdd, d.ipDel = cancelOut(d.ipAdd, d.ipDel)
	d.setAdd, d.setDel = cancelOut(d.setAdd, d.setDel)
	return d
}

// cancelOut drops the items present in both lists.
func cancelOut[T comparable](add, del []T) ([]T, []T) {
	if len(add) == 0 || len(del) == 0 {
		return add, del
	}
	in := map[T]int{}
	for _, a := range add {
		in[a]++
	}
	for _, x := range del {
		in[x]--
	}
	keep := func(list []T, sign int) []T {
		var out []T
		for _, x := range list {
			if in[x]*sign > 0 {
				out = append(out, x)
			}
		}
		return out
	}
	return keep(add, 1), keep(del, -1)
}

// SetNodePortAddresses sets the node addresses NodePorts get virtual servers on (the zero
// value: all of them). Call it before the first sync.
func (b *Backend) SetNodePortAddresses(np dataplane.NodePortAddresses) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nodePorts = np
}

// SetLocalTraffic sets how pods' traffic is told from other traffic (the cluster CIDRs and
// masquerade-all, shared with the nftables backend). Call it before the first sync.
func (b *Backend) SetLocalTraffic(lt dataplane.LocalTraffic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.local = lt
	b.fw.local = lt
}

// expand adds fr's virtual servers, NodePorts expanded over the node's addresses, to into.
func (b *Backend) expand(fr *fragment, into map[vsKey]*virtualServer) {
	for k, v := range fr.virtualServers {
		into[k] = v
	}
	for np, v := range fr.nodePorts {
		for _, a := range b.nodeAddrs {
			if a.Is6() == np.IPv6 {
				into[vsKey{Addr: a, Proto: np.Proto, Port: np.Port}] = v
			}
		}
	}
}

// init adopts what an earlier run left in the kernel, so a restart updates rather than rebuilds.
func (b *Backend) init() error {
	if b.initialized {
		return nil
	}
	if err := b.sysctls.apply(b.strict); err != nil {
		return err
	}
	if err := b.links.EnsureDummy(); err != nil {
		return err
	}
	if err := b.adopt(); err != nil {
		return err
	}
	b.initialized = true
	return nil
}

// adopt takes over the Service IPs routed to the dummy link and the virtual servers on them or on the
// node's addresses (Herald owns IPVS on those addresses when it runs the IPVS data plane).
func (b *Backend) adopt() error {
	owned, err := b.ownedAddrs()
	if err != nil {
		return err
	}
	for a := range owned {
		b.serviceIPs[a] = struct{}{}
	}
	nodeAddrs, err := b.links.NodeAddrs()
	if err != nil {
		return fmt.Errorf("listing node addresses: %w", err)
	}
	for _, a := range nodeAddrs {
		owned[a] = struct{}{}
	}
	for a := range b.formerlyOwned {
		owned[a] = struct{}{}
	}
	if err := b.vs.Adopt(func(k vsKey) bool {
		if k.FWMark != 0 {
			return isShortCircuitMark(k.FWMark)
		}
		_, ok := owned[k.Addr]
		return ok
	}); err != nil {
		return err
	}
	b.formerlyOwned = nil
	return nil
}

// HasEarlierRules reports whether an earlier run left Service IPs on the dummy link: its virtual
// servers forward (to the endpoints of when it stopped) until the first sync adopts and updates them.
func (b *Backend) HasEarlierRules(context.Context) (bool, error) {
	addrs, err := b.links.ServiceIPs()
	return len(addrs) > 0, err
}

func (b *Backend) ownedAddrs() (map[netip.Addr]struct{}, error) {
	addrs, err := b.links.ServiceIPs()
	if err != nil {
		return nil, fmt.Errorf("listing %s addresses: %w", DummyLinkName, err)
	}
	m := map[netip.Addr]struct{}{}
	for _, a := range addrs {
		m[a] = struct{}{}
	}
	return m, nil
}

// apply sends a delta. The nftables table goes first so a new Service IP is never reachable on
// ports it does not serve. New Service IPs are routed while the virtual servers are written: the
// two are independent kernel tables behind separate sockets, and at 10,000 Services each takes
// seconds. Service IPs are removed last, after their virtual servers.
func (b *Backend) apply(ctx context.Context, d *delta) error {
	if err := b.fw.Apply(ctx, d.setAdd, d.setDel); err != nil {
		return err
	}
	routeErrs := make(chan error, 1)
	go func() {
		var errs []error
		for _, a := range d.ipAdd {
			if err := b.links.AddServiceIP(a); err != nil {
				errs = append(errs, err)
				continue
			}
			b.serviceIPs[a] = struct{}{}
		}
		routeErrs <- errors.Join(errs...)
	}()
	vsErr := b.vs.Apply(d.vsSet, d.vsDel, time.Now())
	errs := []error{<-routeErrs, vsErr}
	for _, a := range d.ipDel {
		if err := b.links.DelServiceIP(a); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(b.serviceIPs, a)
	}
	return errors.Join(errs...)
}

// Draining reports how many removed endpoints still drain their connections at weight 0.
func (b *Backend) Draining() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.vs.Draining()
}

// RunReaper removes drained real servers (no connections left, or past TerminationGrace) every
// interval until ctx ends. Syncs reap too, but they only run on changes; without the reaper a
// quiet cluster would keep weight-0 real servers until the next change.
func (b *Backend) RunReaper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.mu.Lock()
			if b.vs.Draining() > 0 {
				// A failure is retried at the next tick; the next sync reports persistent ones.
				_ = b.vs.ReapTerminating(now)
			}
			b.mu.Unlock()
		}
	}
}

// Cleanup removes every virtual server, the dummy link, the nftables table and the sysctl changes
// this backend made (speaker --cleanup), including those of an earlier process.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	if err := b.adopt(); err != nil {
		errs = append(errs, err)
	}
	if err := b.vs.DeleteAll(); err != nil {
		errs = append(errs, err)
	}
	if err := b.fw.Delete(ctx); err != nil && !knftables.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := b.links.DeleteDummy(); err != nil {
		errs = append(errs, err)
	}
	if err := b.sysctls.restore(); err != nil {
		errs = append(errs, err)
	}
	b.initialized = false
	b.fragments = map[types.NamespacedName]*fragment{}
	b.ipRefs, b.setRefs = map[netip.Addr]int{}, map[fwElement]int{}
	b.serviceIPs = map[netip.Addr]struct{}{}
	return errors.Join(errs...)
}
