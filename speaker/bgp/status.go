package bgp

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// PeerStatus is the state of one session, as the node's SpeakerStatus, metrics and heraldctl show it.
type PeerStatus struct {
	Name    string
	Address netip.Addr
	// State is the BGP FSM state: Idle, Connect, Active, OpenSent, OpenConfirm or Established.
	State       string
	Established bool
	// Since is when the session reached Established (zero when it is not).
	Since time.Time
	// BFD is Up, Down, Init or AdminDown; empty when the peer has no BFD profile.
	BFD                string
	PrefixesAdvertised int
	UpdatesSent        uint64
	UpdatesReceived    uint64
	// Reason says why a session that is not Established cannot establish, in words an operator
	// can act on; empty when established.
	Reason string
}

// Status returns the state of every configured session, sorted by name.
func (a *Announcer) Status(ctx context.Context) ([]PeerStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv == nil {
		return nil, nil
	}
	byAddr := map[netip.Addr]*api.Peer{}
	err := a.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			byAddr[addr] = p
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	var out []PeerStatus
	for _, name := range slices.Sorted(maps.Keys(a.peers)) {
		p := a.peers[name]
		st := PeerStatus{Name: name, Address: p.Address, State: "Idle"}
		if gp, ok := byAddr[p.Address]; ok {
			state := gp.GetState()
			st.State = sessionStateName(state.GetSessionState())
			st.Established = state.GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED
			if st.Established {
				st.Since = gp.GetTimers().GetState().GetUptime().AsTime()
				st.PrefixesAdvertised = len(a.routes[name])
			}
			st.UpdatesSent = state.GetMessages().GetSent().GetUpdate()
			st.UpdatesReceived = state.GetMessages().GetReceived().GetUpdate()
		}
		if p.BFD != nil {
			state, _ := a.bfd.State(p.Address) // Down while its session cannot start
			st.BFD = state.String()
		}
		if !st.Established {
			st.Reason = notEstablishedReason(p, a.events.last(p.Address), a.bfdFailed[p.Address])
		}
		out = append(out, st)
	}
	return out, nil
}

func sessionStateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	default:
		return "Idle"
	}
}

// sessionHistory is what the announcer saw of one session since it was configured.
type sessionHistory struct {
	// opened is true once the TCP connection came up (the FSM reached OpenSent or OpenConfirm).
	opened      bool
	established bool
	// reason and message describe the last time the session went down.
	reason  api.PeerState_DisconnectReason
	message string
}

// notEstablishedReason explains a session that is not Established; bfdFailed says its BFD session
// failed and is not Up again.
func notEstablishedReason(p Peer, h sessionHistory, bfdFailed bool) string {
	port := p.Port
	if port == 0 {
		port = 179
	}
	target := netip.AddrPortFrom(p.Address, port).String()
	msg := strings.ToLower(h.message)
	switch {
	case h.reason == api.PeerState_DISCONNECT_REASON_BAD_PEER_AS || strings.Contains(msg, "bad peer as"):
		return fmt.Sprintf("wrong ASN: the router at %s does not use peerASN %d, or does not expect this node as myASN %d (%s)",
			target, p.ASN, p.MyASN, h.message)
	case p.BFD != nil && bfdFailed:
		return fmt.Sprintf("BFD detected the path to %s down (or the router's BFD stopped); the session reconnects once BFD packets flow again", target)
	case h.reason == api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:
		return fmt.Sprintf("hold timer expired: the router at %s stopped answering", target)
	case h.reason == api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		return fmt.Sprintf("the router at %s closed the session: %s", target, h.message)
	case h.reason == api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:
		return fmt.Sprintf("this node closed the session with %s: %s", target, h.message)
	case !h.opened && p.Password != "":
		// With TCP-MD5 a key mismatch makes the kernel drop the segments silently: the only
		// symptom is that nothing ever answers.
		return fmt.Sprintf("no TCP connection to %s while a TCP-MD5 password is set: check the password matches the router's, then that the router is reachable", target)
	case !h.opened:
		return fmt.Sprintf("no TCP connection to %s: the router is unreachable, or has no session configured for this node's address", target)
	case h.message != "":
		return fmt.Sprintf("session with %s went down: %s", target, h.message)
	default:
		return fmt.Sprintf("connecting to %s", target)
	}
}

// sessionEvents records GoBGP's session state changes per peer address and signals each one.
type sessionEvents struct {
	mu      sync.Mutex
	history map[netip.Addr]sessionHistory
	changed chan struct{}
}

func newSessionEvents() *sessionEvents {
	return &sessionEvents{history: map[netip.Addr]sessionHistory{}, changed: make(chan struct{}, 1)}
}

func (e *sessionEvents) record(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	e.mu.Lock()
	h := e.history[st.NeighborAddress]
	switch st.SessionState {
	case gobgp.BGP_FSM_OPENSENT, gobgp.BGP_FSM_OPENCONFIRM, gobgp.BGP_FSM_ESTABLISHED:
		h.opened = true
	}
	// An idle timer expiring says nothing about why the session went down: keep the cause.
	if st.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED &&
		st.DisconnectReason != api.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED {
		h.reason, h.message = st.DisconnectReason, st.DisconnectMessage
	}
	h.established = st.SessionState == gobgp.BGP_FSM_ESTABLISHED
	e.history[st.NeighborAddress] = h
	e.mu.Unlock()
	e.signal()
}

// signal tells the Changes reader that some session's state changed.
func (e *sessionEvents) signal() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *sessionEvents) last(a netip.Addr) sessionHistory {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.history[a]
}

func (e *sessionEvents) forget(a netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.history, a)
}

func (e *sessionEvents) reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.history = map[netip.Addr]sessionHistory{}
}
