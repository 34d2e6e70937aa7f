// Package bgp is the speaker's BGP mode: an in-process GoBGP instance that advertises this node's
// Service IPs to the routers named by BGPPeer objects, with BFD, and reports each session's state.
//
// Why GoBGP v4 (github.com/osrg/gobgp/v4) and not v3: v4 is the maintained major, with IPv4 and
// IPv6 over multiprotocol BGP, TCP-MD5 and graceful restart. Its BFD is not used: it lacks passive
// mode, multi-hop sessions and the TTL checks of RFC 5881/5883 (BFDProfile's passiveMode and
// minimumTtl), and after a failure it stayed bound to BIRD's old BFD session and kept resetting
// the BGP session. The sessions are speaker/bfd's instead, and a BFD failure restarts the BGP
// session here (Announcer.bfdChanged).
//
// Stopping: by default the speaker closes every session with a Cease (NOTIFICATION 6/3) before it
// exits, so each router drops this node's routes at once (about 10 ms against BIRD) and ECMP moves
// the traffic to the other nodes. A BGPPeer with enableGracefulRestart instead gets no Cease: the
// router keeps this node's routes as stale (RFC 4724, restart time 120 s) and keeps forwarding to
// it until the restarted speaker has sent its routes again. Choose graceful restart for peers when
// speaker restarts are planned (upgrades) and the node's data plane keeps forwarding meanwhile;
// keep the default when a stopping speaker usually means a node going away (drain, reboot), where
// stale routes would blackhole traffic for the restart time.
//
// The package has two parts: the Announcer that converges GoBGP on a Desired state by diffs
// (announcer.go, policy.go, peer.go), and session status and metrics (status.go, metrics.go). The
// Desired state comes from the pure translation of the API objects in config/bgpconfig.
package bgp
