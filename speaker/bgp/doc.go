// Package bgp is the speaker's BGP mode: an in-process GoBGP instance that advertises this node's
// Service IPs to the routers named by BGPPeer objects, with BFD, and reports each session's state.
//
// Why GoBGP v4 (github.com/osrg/gobgp/v4) and not v3: v4 implements BFD (RFC 5880/5881, single
// hop, asynchronous mode), which v3 lacks, and it interoperates with BIRD 2's `protocol bfd`: with
// 100 ms x 3 timers, BIRD 2.0.12 dropped a frozen (SIGSTOP) v4 speaker's routes after about 300 ms,
// far inside any hold time (see bgptest and bench/bgp). One defect needs a workaround: after a
// BFD failure, GoBGP's BFD peer stays bound to BIRD's old session and keeps resetting the BGP
// session (Announcer.renewBFDSession replaces the neighbor when a BFD session drops; tested by
// freezing, thawing and cutting off a node). Its BFD has no echo, demand mode, authentication or
// passive mode; BFDProfile fields needing those are answered with NotSupported.
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
