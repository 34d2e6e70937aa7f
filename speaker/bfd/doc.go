// Package bfd is the speaker's own Bidirectional Forwarding Detection (RFC 5880): single-hop
// (RFC 5881, UDP 3784, only TTL 255 accepted) and multi-hop (RFC 5883, UDP 4784, TTL at least
// Config.MinimumTTL) sessions, active or passive, with the timers of a BFDProfile. The BGP
// announcer (speaker/bgp) runs one Server and restarts a BGP session when its peer's BFD session
// fails; GoBGP's own BFD is not used (see speaker/bgp's package doc for why).
//
// Layout: session.go is the state machine of one session, pure and driven by its caller (packets
// in, timers, the packet to send); server.go holds the sockets and goroutines: a Server owns one
// listener per port and address family, which hands each valid packet to its session's runner,
// and one runner goroutine per session, which owns the session, its timers and its sending
// socket. Server.Set converges the sessions on the wanted configurations without resetting the
// unchanged ones; Server.Close stops the sessions (waiting for their goroutines) and closes the
// listeners, which ends theirs. State changes go to
// the Server's callback, each on a goroutine of its own; Change.Failure tells a real failure from
// a peer that went AdminDown on purpose, which its client must not act on (RFC 5882 section 3.2).
package bfd
