package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/heraldlb/herald/speaker/bfd"
)

// Options configure an Announcer.
type Options struct {
	// ListenPort is the TCP port GoBGP accepts sessions on, so a router can connect first (which
	// makes reconnection after a restart faster than GoBGP's own 1.5–2 s first connect attempt).
	// 0 means 179; -1 means do not listen.
	ListenPort int32
	// ListenAddresses restrict the listener; empty means all of the node's addresses.
	ListenAddresses []string
	Logger          *slog.Logger
}

// Announcer runs one in-process GoBGP instance for the node and converges it on a Desired state
// by diffs: a session is only created, replaced or removed when its own Peer changed, and routes
// are added, moved and withdrawn one prefix at a time.
type Announcer struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	srv      *server.BgpServer
	cancel   context.CancelFunc // stops the peer-state watcher of srv
	routerID netip.Addr
	peers    map[string]Peer
	groups   map[string]*routeGroup
	// routes is the applied Routes: peer name -> prefix -> route group name.
	routes map[string]map[netip.Prefix]string
	// paths counts, per prefix in the RIB, the peers it is advertised to.
	paths map[netip.Prefix]int
	// refused are the prefixes the last Apply could not advertise, with why (Refused).
	refused map[netip.Prefix]error
	// bfd runs the BFD sessions of the peers with a BFD profile; bfdFailed holds the peers whose
	// BFD session failed and has not come back Up.
	bfd       *bfd.Server
	bfdFailed map[netip.Addr]bool

	events *sessionEvents
}

// routeGroup is the set of prefixes advertised to one peer with one set of attributes; see
// policy.go for how it maps onto GoBGP's export policy.
type routeGroup struct {
	peer     string
	attrs    Attributes
	prefixes map[netip.Prefix]struct{}
}

// NewAnnouncer returns an Announcer; GoBGP starts with the first Apply that has a peer.
func NewAnnouncer(opts Options) *Announcer {
	if opts.ListenPort == 0 {
		opts.ListenPort = 179
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Announcer{
		opts:      opts,
		log:       log.With("component", "bgp"),
		peers:     map[string]Peer{},
		groups:    map[string]*routeGroup{},
		routes:    map[string]map[netip.Prefix]string{},
		paths:     map[netip.Prefix]int{},
		events:    newSessionEvents(),
		bfdFailed: map[netip.Addr]bool{},
	}
	a.bfd = bfd.NewServer(a.log, a.bfdChanged)
	return a
}

// bfdChanged acts on a BFD state change: a failed session takes its BGP session down at once,
// far sooner than the hold time would (RFC 5882), and every change refreshes the node's status.
func (a *Announcer) bfdChanged(c bfd.Change) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case c.To == bfd.Up:
		delete(a.bfdFailed, c.Peer)
	case c.Failure:
		a.bfdFailed[c.Peer] = true
		a.restartSessionLocked(c.Peer)
	}
	a.events.signal()
}

// restartSessionLocked replaces the GoBGP neighbor at addr: the session closes with a Cease and
// comes back at the next connection. A hard ResetPeer would not do: GoBGP queues its notification
// when the session is not established (the router may have closed it first) and sends it on the
// next session as soon as that is established, tearing it down again.
func (a *Announcer) restartSessionLocked(addr netip.Addr) {
	if a.srv == nil {
		return
	}
	for _, p := range a.peers {
		if p.Address != addr {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			a.log.Error("closing the session after BFD failed", "peer", p.Name, "err", err)
			return
		}
		if err := a.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			// The next Apply retries: the peer is no longer configured.
			delete(a.peers, p.Name)
			a.log.Error("reopening the session after BFD failed", "peer", p.Name, "err", err)
		}
		return
	}
}

// Changes delivers a value whenever a session changes state, so the caller can refresh the
// node's SpeakerStatus without polling.
func (a *Announcer) Changes() <-chan struct{} { return a.events.changed }

// Apply converges GoBGP on d. Errors of one peer do not stop the others; the joined error names
// every peer that failed, and the next Apply retries them.
func (a *Announcer) Apply(ctx context.Context, d Desired) error {
	a.mu.Lock()
	defer a.mu.Unlock()

	if len(d.Peers) == 0 {
		// No session on this node: no GoBGP, and nothing listening on the BGP port.
		a.stopLocked(ctx, false)
		return nil
	}
	if a.srv != nil && d.RouterID != a.routerID {
		// GoBGP's router ID is global: changing it restarts the instance, and so every session.
		a.log.Info("router ID changed, restarting BGP", "from", a.routerID, "to", d.RouterID)
		a.stopLocked(ctx, false)
	}
	if a.srv == nil {
		if err := a.startLocked(ctx, d.RouterID); err != nil {
			return err
		}
	}

	var errs []error
	// Sessions that went away or changed are closed first (with a Cease), so their routes are
	// dropped before anything else moves.
	var added []Peer
	var removed []string
	for name, old := range a.peers {
		if p, ok := d.Peers[name]; !ok || !sameNeighbor(old, p) {
			if err := a.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: old.Address.String()}); err != nil {
				errs = append(errs, fmt.Errorf("peer %s: closing session: %w", name, err))
				continue
			}
			delete(a.peers, name)
			a.events.forget(old.Address)
			if _, ok := d.Peers[name]; !ok {
				removed = append(removed, name)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.Peers)) {
		p := d.Peers[name]
		if _, ok := a.peers[name]; ok {
			a.peers[name] = p // the same neighbor; its BFD profile may have changed
			continue
		}
		// The neighbor set must exist before the peer's route-group policies refer to it.
		if err := a.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: neighborSet(name, p.Address), Replace: true}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", name, err))
			continue
		}
		added = append(added, p)
	}

	if err := a.applyRoutes(ctx, d); err != nil {
		errs = append(errs, err)
	}

	// New sessions start last: their first UPDATEs already follow the new export policy.
	for _, p := range added {
		if err := a.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: starting session: %w", p.Name, err))
			continue
		}
		a.peers[p.Name] = p
	}
	if err := a.bfd.Set(bfdSessions(d.Peers)); err != nil {
		errs = append(errs, err)
	}
	// A removed peer's neighbor set goes once its route groups are gone (applyRoutes removed them;
	// a group whose removal failed keeps the set in use, and the deletion fails harmlessly).
	for _, name := range removed {
		if len(a.routes[name]) == 0 {
			delete(a.routes, name)
		}
		_ = a.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{
			DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighborSetName(name)},
			All:        true,
		})
	}
	return errors.Join(errs...)
}

// applyRoutes moves the applied route groups and RIB paths to d.Routes (restricted to d.Peers):
// the plan says what changes, and its steps apply it in the order routers must see it.
func (a *Announcer) applyRoutes(ctx context.Context, d Desired) error {
	p := planRoutes(d, a.routes, a.paths)
	a.refused = nil
	errs := a.addToGroups(ctx, p)
	errs = append(errs, a.applyPaths(p)...)
	errs = append(errs, a.removeFromGroups(ctx, p)...)
	errs = append(errs, a.resetPeers(ctx, p.resetPeers)...)
	return errors.Join(errs...)
}

// routePlan is how the applied routes move to the desired ones.
type routePlan struct {
	// groups are the route groups the desired routes fall into.
	groups map[string]plannedGroup
	// adds and removes are the prefixes joining and leaving each group.
	adds, removes map[string][]netip.Prefix
	// paths is the RIB wanted: per prefix, the number of peers it is advertised to; newPaths and
	// oldPaths are the prefixes to put into and take out of the RIB.
	paths              map[netip.Prefix]int
	newPaths, oldPaths []netip.Prefix
	// resetPeers (sorted) lose a prefix or see its attributes change while its path stays in the
	// RIB: GoBGP re-sends their routes only after a soft reset out.
	resetPeers []string
}

// plannedGroup is a route group's peer and attributes.
type plannedGroup struct {
	peer  string
	attrs Attributes
}

// planRoutes computes, without GoBGP, how routes (peer -> prefix -> group) and paths (prefix ->
// peers), as applied, move to d.Routes restricted to d.Peers.
func planRoutes(d Desired, routes map[string]map[netip.Prefix]string, paths map[netip.Prefix]int) routePlan {
	p := routePlan{
		groups:  map[string]plannedGroup{},
		adds:    map[string][]netip.Prefix{},
		removes: map[string][]netip.Prefix{},
		paths:   make(map[netip.Prefix]int, len(paths)),
	}
	want := map[string]map[netip.Prefix]string{} // peer -> prefix -> group
	for peer, peerRoutes := range d.Routes {
		if _, ok := d.Peers[peer]; !ok {
			continue
		}
		want[peer] = make(map[netip.Prefix]string, len(peerRoutes))
		groupOf := map[string]string{} // attribute key -> group name: one hash per group, not per route
		// Routes mostly share their attributes: comparing with the previous route's is cheaper
		// than building the key of every route.
		var last *Attributes
		var g string
		for prefix, attrs := range peerRoutes {
			prefix = prefix.Masked()
			if last == nil || !attrs.Equal(*last) {
				key := attrs.Key()
				var ok bool
				if g, ok = groupOf[key]; !ok {
					g = groupName(peer, attrs)
					groupOf[key] = g
					p.groups[g] = plannedGroup{peer: peer, attrs: attrs}
				}
				last = &attrs
			}
			want[peer][prefix] = g
			p.paths[prefix]++
		}
	}
	for peer, peerRoutes := range want {
		for prefix, g := range peerRoutes {
			if old, ok := routes[peer][prefix]; !ok || old != g {
				p.adds[g] = append(p.adds[g], prefix)
			}
		}
	}
	reset := map[string]bool{}
	for peer, peerRoutes := range routes {
		for prefix, g := range peerRoutes {
			if want[peer][prefix] != g {
				p.removes[g] = append(p.removes[g], prefix)
				if p.paths[prefix] > 0 {
					reset[peer] = true
				}
			}
		}
	}
	p.resetPeers = slices.Sorted(maps.Keys(reset))
	for prefix := range p.paths {
		if paths[prefix] == 0 {
			p.newPaths = append(p.newPaths, prefix)
		}
	}
	for prefix := range paths {
		if p.paths[prefix] == 0 {
			p.oldPaths = append(p.oldPaths, prefix)
		}
	}
	return p
}

// addToGroups adds the plan's prefixes to their route groups, creating the groups (prefix set and
// export policy) that do not exist yet, and records them as applied.
func (a *Announcer) addToGroups(ctx context.Context, p routePlan) []error {
	var errs []error
	groupsChanged := false
	for _, g := range slices.Sorted(maps.Keys(p.adds)) {
		prefixes := p.adds[g]
		grp, exists := a.groups[g]
		if !exists {
			grp = &routeGroup{peer: p.groups[g].peer, attrs: p.groups[g].attrs, prefixes: map[netip.Prefix]struct{}{}}
		}
		if err := a.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(g, prefixes)}); err != nil {
			err = fmt.Errorf("peer %s: adding prefixes: %w", grp.peer, err)
			errs = append(errs, err)
			a.refuse(prefixes, err)
			continue
		}
		if !exists {
			if err := a.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: groupPolicy(grp.peer, g, grp.attrs)}); err != nil {
				err = fmt.Errorf("peer %s: adding export policy: %w", grp.peer, err)
				errs = append(errs, err)
				a.refuse(prefixes, err)
				continue
			}
			a.groups[g] = grp
			groupsChanged = true
		}
		for _, prefix := range prefixes {
			grp.prefixes[prefix] = struct{}{}
			if a.routes[grp.peer] == nil {
				a.routes[grp.peer] = map[netip.Prefix]string{}
			}
			a.routes[grp.peer][prefix] = g
		}
	}
	if groupsChanged {
		if err := a.setExportPolicy(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// applyPaths adds the plan's new paths to the RIB in one batch (GoBGP evaluates the export policy
// as they go in) and withdraws its old ones.
func (a *Announcer) applyPaths(p routePlan) []error {
	var errs []error
	var failed []netip.Prefix
	if len(p.newPaths) > 0 {
		newPaths := make([]*apiutil.Path, len(p.newPaths))
		for i, prefix := range p.newPaths {
			newPaths[i] = localPath(prefix)
		}
		rsp, err := a.srv.AddPath(apiutil.AddPathRequest{Paths: newPaths})
		if err != nil {
			err = fmt.Errorf("adding %d routes: %w", len(newPaths), err)
			errs = append(errs, err)
			if len(rsp) == 0 {
				failed = p.newPaths
				a.refuse(failed, err)
			}
		}
		for i, r := range rsp {
			if r.Error != nil {
				err := fmt.Errorf("adding route %s: %w", newPaths[i].Nlri, r.Error)
				errs = append(errs, err)
				failed = append(failed, p.newPaths[i])
				a.refuse(p.newPaths[i:i+1], err)
			}
		}
	}
	if len(p.oldPaths) > 0 {
		oldPaths := make([]*apiutil.Path, len(p.oldPaths))
		for i, prefix := range p.oldPaths {
			oldPaths[i] = localPath(prefix)
		}
		if err := a.srv.DeletePath(apiutil.DeletePathRequest{Paths: oldPaths}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %d routes: %w", len(oldPaths), err))
		}
	}
	a.paths = p.paths
	for _, prefix := range failed {
		delete(a.paths, prefix) // added again by the next Apply
	}
	return errs
}

// refuse records prefixes the current Apply could not advertise.
func (a *Announcer) refuse(prefixes []netip.Prefix, err error) {
	if a.refused == nil {
		a.refused = map[netip.Prefix]error{}
	}
	for _, prefix := range prefixes {
		a.refused[prefix] = err
	}
}

// Refused returns the prefixes the last Apply wanted to advertise and could not (GoBGP refused
// the path, the prefix set or the export policy), with the error: the node's SpeakerStatus lists
// them as deviations. The next Apply tries them again.
func (a *Announcer) Refused() map[netip.Prefix]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[netip.Prefix]string, len(a.refused))
	for prefix, err := range a.refused {
		out[prefix] = err.Error()
	}
	return out
}

// removeFromGroups takes the plan's prefixes out of their groups, after the withdrawals, so no
// peer sees a route lose its attributes before it is withdrawn; groups left empty go.
func (a *Announcer) removeFromGroups(ctx context.Context, p routePlan) []error {
	var errs []error
	for _, g := range slices.Sorted(maps.Keys(p.removes)) {
		grp := a.groups[g]
		prefixes := p.removes[g]
		if err := a.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: prefixSet(g, prefixes)}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: removing prefixes: %w", grp.peer, err))
			continue
		}
		for _, prefix := range prefixes {
			delete(grp.prefixes, prefix)
			if a.routes[grp.peer][prefix] == g {
				delete(a.routes[grp.peer], prefix)
			}
		}
	}
	var emptied []string
	for g, grp := range a.groups {
		if len(grp.prefixes) == 0 {
			emptied = append(emptied, g)
		}
	}
	if len(emptied) == 0 {
		return errs
	}
	for _, g := range emptied {
		delete(a.groups, g)
	}
	if err := a.setExportPolicy(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, g := range emptied {
		_ = a.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: g}, All: true})
		_ = a.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{
			DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: g}, All: true,
		})
	}
	return errs
}

// resetPeers soft-resets the sessions of the named peers outwards, so GoBGP re-sends their routes.
func (a *Announcer) resetPeers(ctx context.Context, peers []string) []error {
	var errs []error
	for _, peer := range peers {
		p, ok := a.peers[peer]
		if !ok {
			continue
		}
		if err := a.srv.ResetPeer(ctx, &api.ResetPeerRequest{
			Address: p.Address.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT,
		}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: re-sending routes: %w", peer, err))
		}
	}
	return errs
}

func (a *Announcer) setExportPolicy(ctx context.Context) error {
	err := a.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{
		Assignment: exportAssignment(slices.Sorted(maps.Keys(a.groups))),
	})
	if err != nil {
		return fmt.Errorf("setting export policy: %w", err)
	}
	return nil
}

// localPath is a locally originated route for prefix with an unspecified next hop, which GoBGP
// replaces with the session's local address for every peer.
func localPath(prefix netip.Prefix) *apiutil.Path {
	nlri, _ := gobgp.NewIPAddrPrefix(prefix)
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	family := gobgp.RF_IPv4_UC
	if prefix.Addr().Is4() {
		nh, _ := gobgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		family = gobgp.RF_IPv6_UC
		mp, _ := gobgp.NewPathAttributeMpReachNLRI(family, []gobgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}
}

func (a *Announcer) startLocked(ctx context.Context, routerID netip.Addr) error {
	if !routerID.Is4() {
		return fmt.Errorf("router ID %v is not an IPv4 address", routerID)
	}
	srv := server.NewBgpServer(server.LoggerOption(a.log, nil))
	go srv.Serve()
	global := &api.Global{
		// Every session sets its own local ASN; the global one only has to be valid.
		Asn:             64512,
		RouterId:        routerID.String(),
		ListenPort:      a.opts.ListenPort,
		ListenAddresses: a.opts.ListenAddresses,
		// Only the families Herald advertises: with GoBGP's default (every family it knows)
		// StartBgp alone takes 200-300 ms, which a restarting speaker cannot spare.
		Families: []uint32{
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]),
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST]),
		},
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		srv.Stop()
		return fmt.Errorf("starting BGP: %w", err)
	}
	// The watch lasts as long as this GoBGP instance (stopLocked ends it), not ctx.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: a.events.record}, server.WatchPeer()); err != nil {
		cancel()
		srv.Stop()
		return fmt.Errorf("watching sessions: %w", err)
	}
	a.srv, a.cancel, a.routerID = srv, cancel, routerID
	if err := a.setExportPolicy(ctx); err != nil {
		a.stopLocked(ctx, false)
		return err
	}
	return nil
}

// Stop closes every session and stops GoBGP. By default each router gets a Cease and drops this
// node's routes at once, so traffic moves to the other nodes. With keepGracefulRestart, peers that
// negotiated graceful restart get no notification: the router keeps forwarding to this node on
// the stale routes until the speaker is back (or the restart time passes); use that for planned
// restarts of the speaker while the node's data plane keeps forwarding.
//
// Only ctx's values are used: stopping is not cut short when ctx ends (callers stop because it
// ended), it has a time limit of its own.
func (a *Announcer) Stop(ctx context.Context, keepGracefulRestart bool) {
	a.mu.Lock()
	a.stopLocked(ctx, keepGracefulRestart)
	a.mu.Unlock()
	// The BFD changes queued before the sessions stopped find no GoBGP left to act on; waiting
	// for them (outside mu, which they take) leaves no goroutine behind.
	a.bfd.WaitDelivered()
}

// ceaseSessions sends every session that is to end with a notification (all of them, or with
// keepGracefulRestart those without graceful restart) an Administrative Shutdown Cease (RFC 8203)
// and waits until none of them is established.
//
// GoBGP's StopBgp alone is not enough: it closes its listeners, and with them every session a
// router opened towards this node, while the sessions' own goroutines are still about to write
// their Cease. Such a router then sees the connection close without a notification (about one
// stop in ten under load, in speaker/bgp's BIRD test). Shut down one by one, each session writes
// its Cease before it goes idle, and StopBgp finds nothing left to close.
func (a *Announcer) ceaseSessions(ctx context.Context, keepGracefulRestart bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pending := map[netip.Addr]bool{}
	for _, p := range a.peers {
		if keepGracefulRestart && p.GracefulRestart {
			continue
		}
		req := &api.DisablePeerRequest{Address: p.Address.String(), Communication: "Herald speaker stopping"}
		if err := a.srv.DisablePeer(ctx, req); err != nil {
			a.log.Warn("shutting a session down before stopping", "peer", p.Name, "err", err)
			continue
		}
		pending[p.Address] = true
	}
	for len(pending) > 0 {
		err := a.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
			if err == nil && p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
				delete(pending, addr)
			}
		})
		if err != nil || len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			a.log.Warn("sessions still established when stopping", "peers", len(pending))
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (a *Announcer) stopLocked(ctx context.Context, keepGracefulRestart bool) {
	if a.srv == nil {
		return
	}
	// Not cut short by ctx's end: Stop runs when the caller's context is already done.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a.ceaseSessions(ctx, keepGracefulRestart)
	// Sessions kept for graceful restart say BFD AdminDown before their TCP connections drop, so
	// routers that honour it (RFC 5882) do not take the stop for a failure; the others' BFD just
	// stops, after their Cease.
	graceful := map[netip.Addr]bool{}
	for _, p := range a.peers {
		graceful[p.Address] = keepGracefulRestart && p.GracefulRestart
	}
	a.bfd.Close(func(peer netip.Addr) bool { return graceful[peer] })
	clear(a.bfdFailed)
	if keepGracefulRestart {
		// Sessions go; graceful-restart peers get no Cease. srv.Stop would only fail to stop BGP
		// a second time.
		if err := a.srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
			a.log.Error("stopping BGP", "err", err)
		}
	} else {
		a.srv.Stop()
	}
	a.cancel()
	a.srv, a.cancel = nil, nil
	a.peers = map[string]Peer{}
	a.groups = map[string]*routeGroup{}
	a.routes = map[string]map[netip.Prefix]string{}
	a.paths = map[netip.Prefix]int{}
	a.events.reset()
}
