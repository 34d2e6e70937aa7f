package bfd

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// State is a BFD session state (RFC 5880 section 4.1), numbered as on the wire.
type State uint8

const (
	AdminDown State = State(bfd.StateAdminDown)
	Down      State = State(bfd.StateDown)
	Init      State = State(bfd.StateInit)
	Up        State = State(bfd.StateUp)
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Init:
		return "Init"
	case Up:
		return "Up"
	default:
		return "Down"
	}
}

// Config is one BFD session: the peer, how packets travel, and the timers.
type Config struct {
	Peer netip.Addr
	// Local is the source address of this node's packets; invalid means the kernel's choice. A
	// multi-hop peer identifies the session by both addresses, so set it to the BGP session's
	// source address when there is one.
	Local netip.Addr
	// Multihop sessions (RFC 5883) use port 4784 and accept packets whose TTL is at least
	// MinimumTTL; single-hop sessions (RFC 5881) use port 3784 and accept only TTL 255, which
	// proves the packet was not routed.
	Multihop   bool
	MinimumTTL uint8 // 0 means DefaultMinimumTTL
	// DesiredMinTx and RequiredMinRx are this node's timers while the session is Up; the
	// intervals in use are negotiated with the peer's (the slower of the two wins).
	DesiredMinTx  time.Duration
	RequiredMinRx time.Duration
	Multiplier    uint8
	// Passive sessions send nothing until the peer has sent a packet (RFC 5880 section 6.1).
	Passive bool
}

// DefaultMinimumTTL is the lowest TTL a multi-hop session accepts unless configured: one routed
// hop (FRR's and MetalLB's default).
const DefaultMinimumTTL = 254

func (c Config) minimumTTL() uint8 {
	switch {
	case !c.Multihop:
		return 255
	case c.MinimumTTL == 0:
		return DefaultMinimumTTL
	default:
		return c.MinimumTTL
	}
}

// slowTxInterval is the fastest a session that is not Up transmits (RFC 5880 section 6.8.3
// requires at least one second), so a peer that is away costs next to nothing.
const slowTxInterval = time.Second

// session is the state machine of RFC 5880 section 6.8 for one peer, in asynchronous mode
// without authentication, demand mode or echo. It does no I/O and reads no clock: the caller
// feeds it packets and timer expiries and sends what it returns, which keeps every rule testable.
type session struct {
	cfg Config

	state       State
	diag        bfd.DiagnosticType
	localDiscr  uint32
	remoteDiscr uint32
	// remoteAdminDown is set when the session went down because the peer said AdminDown: the
	// peer stopped on purpose, which its BGP client must not take as a failure (RFC 5882 3.2).
	remoteAdminDown bool

	remoteMinRx time.Duration // the peer's Required Min RX Interval; 0: it wants no packets
	remoteMinTx time.Duration // the peer's Desired Min TX Interval
	remoteMult  uint8

	// txInUse and rxInUse are this node's intervals as the peer knows them: a change that would
	// make the peer's detection time too short only takes effect once the peer acknowledged it
	// (the Final answer to our Poll, RFC 5880 section 6.8.3).
	txInUse, rxInUse time.Duration
	polling          bool
}

func newSession(cfg Config, localDiscr uint32) *session {
	return &session{
		cfg:         cfg,
		state:       Down,
		localDiscr:  localDiscr,
		remoteMinRx: time.Microsecond, // RFC 5880 6.8.1: initialised to 1
		txInUse:     cfg.DesiredMinTx,
		rxInUse:     cfg.RequiredMinRx,
	}
}

// advertisedTx is the Desired Min TX Interval this node sends: slow while the session is not Up.
func (s *session) advertisedTx() time.Duration {
	if s.state != Up {
		return max(s.cfg.DesiredMinTx, slowTxInterval)
	}
	return s.cfg.DesiredMinTx
}

// txInterval is the mean interval between periodic packets; 0 means send none (a passive session
// that has not heard from its peer, or a peer asking for no packets).
func (s *session) txInterval() time.Duration {
	if s.remoteMinRx == 0 || (s.cfg.Passive && s.remoteDiscr == 0) || s.state == AdminDown {
		return 0
	}
	own := s.txInUse
	if s.state != Up {
		own = max(own, slowTxInterval)
	}
	return max(own, s.remoteMinRx)
}

// jittered applies RFC 5880 section 6.8.7's jitter: 75-100% of the interval, at most 90% with a
// multiplier of 1.
func (s *session) jittered(d time.Duration) time.Duration {
	hi := 1.0
	if s.cfg.Multiplier == 1 {
		hi = 0.9
	}
	return time.Duration(float64(d) * (0.75 + rand.Float64()*(hi-0.75)))
}

// detectionTime is how long the session stays Init or Up without a packet from the peer.
func (s *session) detectionTime() time.Duration {
	return time.Duration(s.remoteMult) * max(s.rxInUse, s.remoteMinTx)
}

// packet is this node's next control packet; final answers a Poll.
func (s *session) packet(final bool) *bfd.BFDHeader {
	return &bfd.BFDHeader{
		Version:               1,
		Diagnostic:            s.diag,
		State:                 bfd.StateType(s.state),
		Poll:                  s.polling && !final,
		Final:                 final,
		DetectTimeMultiplier:  s.cfg.Multiplier,
		MyDiscriminator:       s.localDiscr,
		YourDiscriminator:     s.remoteDiscr,
		DesiredMinTxInterval:  uint32(s.advertisedTx() / time.Microsecond),
		RequiredMinRxInterval: uint32(s.cfg.RequiredMinRx / time.Microsecond),
	}
}

// reception is what a received packet did to a session.
type reception struct {
	// accepted: the packet belongs to this session (it refreshes the detection time).
	accepted bool
	changed  bool
	// reply: a packet must go out now, a Final answering the peer's Poll when final is set, or
	// news of our own state change.
	reply, final bool
}

// receive applies a control packet that passed the checks common to all sessions (version,
// length, multiplier, discriminator, TTL).
func (s *session) receive(h *bfd.BFDHeader) reception {
	if h.YourDiscriminator == 0 && h.State != bfd.StateDown && h.State != bfd.StateAdminDown {
		return reception{}
	}
	if h.YourDiscriminator != 0 && h.YourDiscriminator != s.localDiscr {
		return reception{}
	}
	s.remoteDiscr = h.MyDiscriminator
	s.remoteMinRx = time.Duration(h.RequiredMinRxInterval) * time.Microsecond
	s.remoteMinTx = time.Duration(h.DesiredMinTxInterval) * time.Microsecond
	s.remoteMult = h.DetectTimeMultiplier
	if h.Final && s.polling {
		s.polling = false
		s.txInUse, s.rxInUse = s.cfg.DesiredMinTx, s.cfg.RequiredMinRx
	}
	if s.state == AdminDown {
		return reception{accepted: true}
	}
	old := s.state
	switch remote := State(h.State); {
	case remote == AdminDown:
		if s.state != Down {
			s.down(bfd.DiagnosticNeighborSignaledSessionDown)
			s.remoteAdminDown = true
		}
	case s.state == Down && remote == Down:
		s.state = Init
	case s.state == Down && remote == Init, s.state == Init && (remote == Init || remote == Up):
		s.up()
	case s.state == Up && remote == Down:
		s.down(bfd.DiagnosticNeighborSignaledSessionDown)
	}
	changed := s.state != old
	return reception{accepted: true, changed: changed, reply: changed || h.Poll, final: h.Poll}
}

func (s *session) up() {
	s.state = Up
	s.diag = bfd.DiagnosticNoDiagnostic
	s.remoteAdminDown = false
	// The advertised interval drops from the slow one to the configured one: tell the peer with
	// a Poll so it may speed up.
	s.polling = s.cfg.DesiredMinTx < slowTxInterval
}

func (s *session) down(diag bfd.DiagnosticType) {
	s.state = Down
	s.diag = diag
	s.remoteAdminDown = false
	s.polling = false
	s.txInUse, s.rxInUse = s.cfg.DesiredMinTx, s.cfg.RequiredMinRx
}

// expire is called when the detection time passed without a packet. It reports whether the
// session went down.
func (s *session) expire() bool {
	// RFC 5880 6.8.1: the peer's discriminator is forgotten, so a passive session goes quiet
	// again and a new peer session can bind.
	s.remoteDiscr = 0
	s.remoteMinRx = time.Microsecond
	if s.state != Init && s.state != Up {
		return false
	}
	s.down(bfd.DiagnosticControlDetectionTimeExpired)
	return true
}

// reconfigure applies new timers or mode to a running session without resetting it. While Up, a
// change the peer must agree to starts a Poll sequence, and the old intervals stay in use until
// the Final arrives.
func (s *session) reconfigure(cfg Config) {
	old := s.cfg
	s.cfg = cfg
	if s.state != Up {
		s.txInUse, s.rxInUse = cfg.DesiredMinTx, cfg.RequiredMinRx
		return
	}
	if cfg.DesiredMinTx == old.DesiredMinTx && cfg.RequiredMinRx == old.RequiredMinRx && cfg.Multiplier == old.Multiplier {
		return
	}
	// Sending faster or accepting slower is safe at once; the opposite waits for the peer.
	if cfg.DesiredMinTx < s.txInUse {
		s.txInUse = cfg.DesiredMinTx
	}
	if cfg.RequiredMinRx > s.rxInUse {
		s.rxInUse = cfg.RequiredMinRx
	}
	s.polling = true
}

// adminDown takes the session down on purpose (the speaker stopping, the peer removed): the
// peer's BGP must not treat the AdminDown packets that follow as a failure.
func (s *session) adminDown() {
	s.state = AdminDown
	s.diag = bfd.DiagnosticAdministrativelyDown
	s.polling = false
}
