package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/moby/ipvs"
	"sigs.k8s.io/knftables"
)

// Options configures a Backend. Zero fields get the real kernel in the caller's network namespace.
type Options struct {
	Handle  Handle
	Links   Links
	NFT     knftables.Interface
	Sysctls Sysctls
	// StrictARP sets arp_ignore=1 and arp_announce=2 so no node answers ARP for Service IPs just
	// because they sit on its dummy link (needed with L2 announcements; harmless otherwise).
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
type Backend struct {
	links   Links
	sysctls *sysctlKeeper
	strict  bool
	vs      *virtualServers
	fw      *firewall
	// serviceIPs are the addresses this backend put on the dummy link.
	serviceIPs map[netip.Addr]struct{}
	// initialized is set once the kernel state was adopted after a start.
	initialized bool
}

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
	if opts.Sysctls == nil {
		opts.Sysctls = ProcSysctls{}
	}
	if opts.SysctlStateFile == "" {
		opts.SysctlStateFile = DefaultSysctlStateFile
	}
	if opts.TerminationGrace == 0 {
		opts.TerminationGrace = DefaultTerminationGrace
	}
	return &Backend{
		links:      opts.Links,
		sysctls:    &sysctlKeeper{s: opts.Sysctls, stateFile: opts.SysctlStateFile},
		strict:     opts.StrictARP,
		vs:         newVirtualServers(opts.Handle, opts.TerminationGrace),
		fw:         newFirewall(opts.NFT),
		serviceIPs: map[netip.Addr]struct{}{},
	}, nil
}

// Name is the backend's name in logs, metrics and SpeakerStatus.
func (b *Backend) Name() string { return "ipvs" }

// desiredState is one sync's target in IPVS terms, derived from the data plane's desired state.
type desiredState struct {
	// ServiceIPs go on the dummy link.
	ServiceIPs map[netip.Addr]struct{}
	// VirtualServers on Service IPs.
	VirtualServers map[vsKey]*virtualServer
	// NodePorts are virtual servers on every node address, by protocol and port.
	NodePorts map[protoPort]*virtualServer
	Firewall  firewallSets
}

type protoPort struct {
	Proto uint16
	Port  uint16
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
	if err := b.vs.Adopt(func(k vsKey) bool { _, ok := owned[k.Addr]; return ok }); err != nil {
		return err
	}
	b.initialized = true
	return nil
}

func (b *Backend) ownedAddrs() (map[netip.Addr]struct{}, error) {
	addrs, err := b.links.DummyAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing %s addresses: %w", DummyLinkName, err)
	}
	m := map[netip.Addr]struct{}{}
	for _, a := range addrs {
		m[a] = struct{}{}
	}
	return m, nil
}

// commit makes the kernel match want. The nftables table goes first so a new Service IP is never
// reachable on ports it does not serve; addresses are removed last, after their virtual servers.
func (b *Backend) commit(ctx context.Context, want *desiredState) error {
	if err := b.init(); err != nil {
		return err
	}
	if err := b.fw.Sync(ctx, want.Firewall); err != nil {
		return err
	}
	var errs []error
	for a := range want.ServiceIPs {
		if _, ok := b.serviceIPs[a]; ok {
			continue
		}
		if err := b.links.AddDummyAddr(a); err != nil {
			errs = append(errs, err)
			continue
		}
		b.serviceIPs[a] = struct{}{}
	}
	all := want.VirtualServers
	if len(want.NodePorts) > 0 {
		nodeAddrs, err := b.links.NodeAddrs()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("listing node addresses: %w", err))...)
		}
		all = make(map[vsKey]*virtualServer, len(want.VirtualServers)+len(want.NodePorts)*len(nodeAddrs))
		for k, v := range want.VirtualServers {
			all[k] = v
		}
		for pp, v := range want.NodePorts {
			for _, a := range nodeAddrs {
				all[vsKey{Addr: a, Proto: pp.Proto, Port: pp.Port}] = v
			}
		}
	}
	if err := b.vs.Sync(all, time.Now()); err != nil {
		errs = append(errs, err)
	}
	for a := range b.serviceIPs {
		if _, ok := want.ServiceIPs[a]; ok {
			continue
		}
		if err := b.links.DelDummyAddr(a); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(b.serviceIPs, a)
	}
	return errors.Join(errs...)
}

// Draining reports how many removed endpoints still drain; while it is above zero the runner should
// sync again within a few seconds so they are removed once their connections end.
func (b *Backend) Draining() int { return b.vs.Draining() }

// Cleanup removes every virtual server, the dummy link, the nftables table and the sysctl changes
// this backend made (speaker --cleanup), including those of an earlier process.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	owned, err := b.ownedAddrs()
	if err != nil {
		owned = map[netip.Addr]struct{}{} // no dummy link: no Service IPs either
	}
	nodeAddrs, err := b.links.NodeAddrs()
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range nodeAddrs {
		owned[a] = struct{}{}
	}
	if err := b.vs.Adopt(func(k vsKey) bool { _, ok := owned[k.Addr]; return ok }); err != nil {
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
	b.serviceIPs = map[netip.Addr]struct{}{}
	return errors.Join(errs...)
}
