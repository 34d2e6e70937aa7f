package userspace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/ipvs"
)

// Standalone is the data plane of --dataplane=userspace, for nodes where neither nftables nor
// IPVS can run: every TCP and UDP Service port is served by the proxy, with no kernel backend to
// redirect to it. Without a redirect, traffic reaches the proxy the way kube-proxy's old
// userspace mode reached its portals: the proxy (Options.Direct) listens on the Service's own
// addresses and port, and on the NodePort on every address of the node. For a pod's or another
// host's packets to a ClusterIP, LoadBalancer IP or externalIP to be delivered to those sockets
// rather than forwarded, each Service IP is a local route on lo ("local 10.96.0.10 dev lo table
// local proto 72", rtnetlink, no nftables), as the IPVS backend routes them to herald-ipvs0 (lo
// rather than a dummy link: a kernel without nftables and IPVS may lack the dummy link type
// too); the sockets bind with IP_FREEBIND, which IPv6 needs for an address that is only routed.
// Strict ARP (arp_ignore=1, arp_announce=2) keeps every node from answering ARP for them, so
// only the announcing node attracts a LoadBalancer IP. The proxy enforces loadBalancerSourceRanges
// itself. What this mode cannot do: SCTP (not proxied), and the backends never see the client's
// address except through PROXY protocol v2.
type Standalone struct {
	proxy     *Proxy
	links     ipvs.Links
	sysctls   ipvs.Sysctls
	stateFile string
	// ips are the Service IPs of each Service as last synced, refs how many Services hold
	// each routed IP (Services may share one).
	ips  map[types.NamespacedName][]netip.Addr
	refs map[netip.Addr]int
}

// StandaloneOptions configure a Standalone; the zero value is the node's own network namespace.
type StandaloneOptions struct {
	// Links manages the Service IPs' routes; default ipvs.NewLoopbackLinks() in the calling
	// process's network namespace.
	Links ipvs.Links
	// Sysctls and SysctlStateFile are where strict ARP is set and the replaced values recorded
	// for Cleanup; default /proc/sys and ipvs.DefaultSysctlStateFile (shared with the IPVS
	// backend, so whichever cleans up restores the values the node had).
	Sysctls         ipvs.Sysctls
	SysctlStateFile string
}

// NewStandalone serves every Service through proxy, which must have been made with
// Options.Direct and Options.ServeAll.
func NewStandalone(proxy *Proxy, opts StandaloneOptions) (*Standalone, error) {
	if !proxy.opts.Direct || !proxy.opts.ServeAll {
		return nil, errors.New("userspace: the standalone data plane needs a proxy with Options.Direct and ServeAll")
	}
	if opts.Links == nil {
		var err error
		if opts.Links, err = ipvs.NewLoopbackLinks(); err != nil {
			return nil, err
		}
	}
	return &Standalone{proxy: proxy, links: opts.Links, sysctls: opts.Sysctls, stateFile: opts.SysctlStateFile,
		ips: map[types.NamespacedName][]netip.Addr{}, refs: map[netip.Addr]int{}}, nil
}

// Name is the backend's name in SpeakerStatus and the herald_dataplane_backend metric.
func (s *Standalone) Name() string { return "userspace" }

// Proxy is the userspace proxy serving every Service.
func (s *Standalone) Proxy() *Proxy { return s.proxy }

// Sync routes the new Service IPs to the node, opens and closes the proxy's listeners (which
// bind those IPs), then removes the routes of IPs no Service holds any more. A full sync also
// reads the routes the kernel has, so one deleted behind its back is put back and a leftover
// removed. A listener that could not open fails the sync (the proxy retries with a full one);
// the other ports are served meanwhile.
func (s *Standalone) Sync(ctx context.Context, req dataplane.SyncRequest) error {
	var inKernel []netip.Addr
	if req.Full {
		if err := ipvs.ApplyStrictARP(s.sysctls, s.stateFile); err != nil {
			return err
		}
		if err := s.links.EnsureDummy(); err != nil {
			return err
		}
		var err error
		if inKernel, err = s.links.ServiceIPs(); err != nil {
			return fmt.Errorf("listing the Service IPs' routes: %w", err)
		}
		s.ips, s.refs = map[types.NamespacedName][]netip.Addr{}, map[netip.Addr]int{}
	}
	// added are the IPs of the synced Services (a route replaced is idempotent), removed
	// those no Service holds any more.
	var added, removed []netip.Addr
	update := func(svc types.NamespacedName) {
		for _, a := range s.ips[svc] {
			if s.refs[a]--; s.refs[a] == 0 {
				delete(s.refs, a)
				removed = append(removed, a)
			}
		}
		delete(s.ips, svc)
		for _, sp := range req.State.Services[svc] {
			for _, a := range append(sp.ExternalAddrs(), sp.ClusterIPs...) {
				if !slices.Contains(s.ips[svc], a) {
					s.ips[svc] = append(s.ips[svc], a)
					s.refs[a]++
					added = append(added, a)
				}
			}
		}
	}
	if req.Full {
		for svc := range req.State.Services {
			update(svc)
		}
		for _, a := range inKernel {
			if s.refs[a] == 0 {
				removed = append(removed, a) // a leftover of an earlier run
			}
		}
	} else {
		for svc := range req.Changed {
			update(svc)
		}
	}
	var errs []error
	for _, a := range added {
		errs = append(errs, s.links.AddServiceIP(a))
	}
	// The listeners bind the routed IPs: open after the routes are in, close before they go.
	errs = append(errs, s.proxy.open(req))
	for _, a := range removed {
		if s.refs[a] == 0 {
			errs = append(errs, s.links.DelServiceIP(a))
		}
	}
	return errors.Join(errs...)
}

// CheckDrift reports Service IPs whose route someone removed (dataplane.Proxy repairs them with
// a full sync): without it, the Service's listeners would no longer receive anything.
func (s *Standalone) CheckDrift(context.Context) (string, error) {
	inKernel, err := s.links.ServiceIPs()
	if err != nil {
		return "", fmt.Errorf("listing the Service IPs' routes: %w", err)
	}
	routed := map[netip.Addr]bool{}
	for _, a := range inKernel {
		routed[a] = true
	}
	for a := range s.refs {
		if !routed[a] {
			return fmt.Sprintf("Service IP %s is not routed to the node", a), nil
		}
	}
	return "", nil
}

// Cleanup removes the Service IPs' routes and restores the sysctls strict ARP changed. The
// proxy's listeners live in the process and end with Proxy.Close.
func (s *Standalone) Cleanup(context.Context) error {
	return errors.Join(s.links.DeleteDummy(), ipvs.RestoreSysctls(s.sysctls, s.stateFile))
}

// CleanupStandalone removes what --dataplane=userspace leaves on the node (the routes, the
// strict-ARP sysctls), from a process that does not run it: speaker --cleanup.
func CleanupStandalone(ctx context.Context) error {
	links, err := ipvs.NewLoopbackLinks()
	if err != nil {
		return err
	}
	return (&Standalone{links: links}).Cleanup(ctx)
}
