package bgp

import (
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/heraldlb/herald/speaker/bfd"
)

// gracefulRestartTime is how long a router keeps this node's routes after the speaker went away
// without a Cease (RFC 4724 restart time), in seconds: long enough for a pod restart.
const gracefulRestartTime = 120

// gracefulRestartDeferral is how long, in seconds, a speaker that opened its graceful-restart
// sessions as restarting waits for the End-of-RIB of every such peer before it sends its routes
// anyway: a peer that is down at the start holds the others' routes back at most this long.
const gracefulRestartDeferral = 5

// idleHoldTimeAfterReset is how long, in seconds, a session waits after a reset before it
// reconnects.
const idleHoldTimeAfterReset = 1

// sameNeighbor reports whether a and b need the same GoBGP neighbor: every field but BFD, whose
// session the BFD server reconfigures in place, so a new BFD profile resets no BGP session.
func sameNeighbor(a, b Peer) bool {
	a.BFD, b.BFD = nil, nil
	return a == b
}

// bfdSession is p's BFD session; false when p has no BFD profile. A multi-hop BGP session gets a
// multi-hop BFD session (RFC 5883), from the same source address so the router can match them.
func bfdSession(p Peer) (bfd.Config, bool) {
	if p.BFD == nil {
		return bfd.Config{}, false
	}
	return bfd.Config{
		Peer:          p.Address,
		Local:         p.SourceAddress,
		Multihop:      p.EBGPMultiHop,
		MinimumTTL:    p.BFD.MinimumTTL,
		DesiredMinTx:  p.BFD.TransmitInterval,
		RequiredMinRx: p.BFD.ReceiveInterval,
		Multiplier:    p.BFD.DetectMultiplier,
		Passive:       p.BFD.Passive,
	}, true
}

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

func seconds(d time.Duration) uint64 { return uint64(d.Round(time.Second) / time.Second) }

// apiPeer is the GoBGP neighbor for p. A session carries the address family of its peer's
// address: IPv4 Service IPs go to IPv4 peers and IPv6 ones to IPv6 peers (a dual-stack Service
// is announced over both).
func apiPeer(p Peer) *api.Peer {
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.MyASN,
			AuthPassword:    p.Password,
			Description:     p.Name,
		},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          seconds(p.HoldTime),
			KeepaliveInterval: seconds(p.KeepaliveTime),
			ConnectRetry:      seconds(p.ConnectTime),
			// GoBGP waits 30 s by default before reconnecting after a reset (a BFD failure is
			// one): reconnect as soon as the path is back instead.
			IdleHoldTimeAfterReset: idleHoldTimeAfterReset,
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family(p.Address), Enabled: true}}},
	}
	if p.SourceAddress.IsValid() {
		out.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultiHop {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if p.GracefulRestart {
		// LocalRestarting sets the Restart State and the Forwarding State bits of the session's
		// first OPEN (RFC 4724 section 3): a speaker always starts with the node's data plane
		// forwarding (it outlives the speaker), and without the F bit the router flushes the
		// routes it kept for the node as soon as the new session opens, before the speaker has
		// sent them again: every planned restart would withdraw the node's paths and add them
		// back. GoBGP then sends the routes and its End-of-RIB once the router's End-of-RIB is in,
		// and clears the bits for later sessions.
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: gracefulRestartTime,
			LocalRestarting: true, DeferralTime: gracefulRestartDeferral}
		out.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return out
}

// bfdSessions lists the BFD sessions of the peers with a BFD profile.
func bfdSessions(peers map[string]Peer) []bfd.Config {
	var out []bfd.Config
	for _, p := range peers {
		if c, ok := bfdSession(p); ok {
			out = append(out, c)
		}
	}
	return out
}
