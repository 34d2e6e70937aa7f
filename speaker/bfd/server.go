package bfd

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ports of RFC 5881 (single hop) and RFC 5883 (multi-hop); sources come from 49152-65535.
const (
	SingleHopPort   = 3784
	MultihopPort    = 4784
	sourcePortFirst = 49152
	sourcePortLast  = 65535
)

// Change is a session's state change, handed to the Server's callback.
type Change struct {
	Peer     netip.Addr
	From, To State
	// Failure is an Up session going Down because the path or the peer failed (detection time
	// expired, or the peer's BFD said Down), as opposed to the peer stopping on purpose
	// (AdminDown), which its client must not act on (RFC 5882 section 3.2).
	Failure bool
}

// Server runs this node's BFD sessions: one goroutine per session, and one listener per port
// and address family that hands each valid packet to its session.
type Server struct {
	log      *slog.Logger
	onChange func(Change)
	// pending holds the changes not yet handed to onChange, oldest first; delivering is set while
	// a goroutine (counted by delivered) hands them over one at a time.
	changesMu  sync.Mutex
	pending    []Change
	delivering bool
	delivered  sync.WaitGroup

	mu        sync.RWMutex
	sessions  map[netip.Addr]*runner // by peer address
	listeners map[listenerKey]net.PacketConn
}

type listenerKey struct {
	v6       bool
	multihop bool
}

// NewServer returns a Server with no sessions. onChange is called for every state change, in the
// order the changes happened, one call at a time, on a goroutine other than the sessions': a slow
// onChange (one waiting for a lock held across a long BGP update) delays the changes after it,
// never a session's packets, and a Down then Up is never acted on as Up then Down.
func NewServer(log *slog.Logger, onChange func(Change)) *Server {
	return &Server{
		log:       log.With("component", "bfd"),
		onChange:  onChange,
		sessions:  map[netip.Addr]*runner{},
		listeners: map[listenerKey]net.PacketConn{},
	}
}

// Set converges the running sessions on cfgs (one per peer address): new peers get a session,
// removed ones are taken AdminDown and stopped, and changed ones are reconfigured in place, never
// reset. A listener that cannot be opened fails only the sessions that need it.
func (s *Server) Set(cfgs []Config) error {
	want := make(map[netip.Addr]Config, len(cfgs))
	for _, c := range cfgs {
		want[c.Peer] = c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for peer, r := range s.sessions {
		if _, ok := want[peer]; !ok {
			r.halt()
			delete(s.sessions, peer)
		}
	}
	var errs []error
	for peer, c := range want {
		if err := s.listenLocked(listenerKey{v6: peer.Is6(), multihop: c.Multihop}); err != nil {
			errs = append(errs, fmt.Errorf("BFD with %s: %w", peer, err))
			continue
		}
		if r, ok := s.sessions[peer]; ok {
			// Set runs on every Service change: unchanged sessions must not hear of it, or their
			// transmit timers would be re-armed over and over.
			if r.cfg != c {
				r.reconfigure(c)
			}
			continue
		}
		r := newRunner(c, s.discriminatorLocked(), s.log.With("peer", peer), s.queueChange)
		s.sessions[peer] = r
		go r.run()
	}
	return errors.Join(errs...)
}

// State returns the state of the session with peer; Down and false when there is none.
func (s *Server) State(peer netip.Addr) (State, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.sessions[peer]
	if !ok {
		return Down, false
	}
	return State(r.state.Load()), true
}

// Close stops every session and closes the listeners. Sessions for which adminDown reports true
// say AdminDown first, so peers that honour it (RFC 5882) know the stop is deliberate; the others
// stop sending: their BGP session was just closed with a Cease, which a BFD packet must not
// overtake, or the router would log the BFD failure as the reason the session ended.
func (s *Server) Close(adminDown func(peer netip.Addr) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for peer, r := range s.sessions {
		if !adminDown(peer) {
			r.quiet.Store(true)
		}
		r.halt()
		delete(s.sessions, peer)
	}
	for k, l := range s.listeners {
		_ = l.Close()
		delete(s.listeners, k)
	}
}

// queueChange queues a change for onChange and starts the goroutine handing the queue over, unless
// one is at work already.
func (s *Server) queueChange(c Change) {
	if s.onChange == nil {
		return
	}
	s.changesMu.Lock()
	defer s.changesMu.Unlock()
	s.pending = append(s.pending, c)
	if s.delivering {
		return
	}
	s.delivering = true
	s.delivered.Add(1)
	go s.deliverPending()
}

// deliverPending hands the queued changes to onChange, oldest first, until none is left.
func (s *Server) deliverPending() {
	defer s.delivered.Done()
	for {
		s.changesMu.Lock()
		if len(s.pending) == 0 {
			s.delivering = false
			s.changesMu.Unlock()
			return
		}
		c := s.pending[0]
		s.pending = s.pending[1:]
		s.changesMu.Unlock()
		s.onChange(c)
	}
}

// WaitDelivered returns once every change so far has been handed to onChange. Call it without
// holding anything onChange takes (Close may be called with such a lock held: it does not wait).
func (s *Server) WaitDelivered() { s.delivered.Wait() }

func (s *Server) discriminatorLocked() uint32 {
	for {
		d := rand.Uint32()
		if d == 0 {
			continue
		}
		taken := false
		for _, r := range s.sessions {
			taken = taken || r.discr == d
		}
		if !taken {
			return d
		}
	}
}

// listenLocked opens the listener for k unless it is open. Each reads the TTL of every packet:
// that is what the single-hop check (255) and minimumTtl are made of.
func (s *Server) listenLocked(k listenerKey) error {
	if _, ok := s.listeners[k]; ok {
		return nil
	}
	network, port := "udp4", SingleHopPort
	if k.v6 {
		network = "udp6"
	}
	if k.multihop {
		port = MultihopPort
	}
	conn, err := net.ListenPacket(network, ":"+strconv.Itoa(port))
	if err != nil {
		return fmt.Errorf("listening on UDP port %d (is another BFD daemon running on this node?): %w", port, err)
	}
	var read func([]byte) (int, int, net.Addr, error)
	if k.v6 {
		pc := ipv6.NewPacketConn(conn)
		err = pc.SetControlMessage(ipv6.FlagHopLimit, true)
		read = func(b []byte) (int, int, net.Addr, error) {
			n, cm, src, err := pc.ReadFrom(b)
			if cm == nil {
				return n, -1, src, err
			}
			return n, cm.HopLimit, src, err
		}
	} else {
		pc := ipv4.NewPacketConn(conn)
		err = pc.SetControlMessage(ipv4.FlagTTL, true)
		read = func(b []byte) (int, int, net.Addr, error) {
			n, cm, src, err := pc.ReadFrom(b)
			if cm == nil {
				return n, -1, src, err
			}
			return n, cm.TTL, src, err
		}
	}
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("asking for the TTL of received packets: %w", err)
	}
	s.listeners[k] = conn
	go s.serve(read, k.multihop)
	return nil
}

// serve reads one listener until it is closed.
func (s *Server) serve(read func([]byte) (n, ttl int, src net.Addr, err error), multihop bool) {
	buf := make([]byte, 512)
	for {
		n, ttl, src, err := read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		udp, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		s.deliver(buf[:n], udp.AddrPort().Addr().Unmap(), ttl, multihop)
	}
}

// deliver does the checks of RFC 5880 section 6.8.6 that need no session state and hands the
// packet to the peer's session.
func (s *Server) deliver(b []byte, from netip.Addr, ttl int, multihop bool) {
	h, ok := parse(b)
	if !ok {
		return
	}
	s.mu.RLock()
	r, ok := s.sessions[from]
	s.mu.RUnlock()
	if !ok || r.multihop.Load() != multihop {
		return
	}
	if minTTL := int(r.minTTL.Load()); ttl < minTTL {
		if r.ttlRefused.CompareAndSwap(false, true) {
			r.log.Warn("refusing BFD packets whose TTL is below the minimum: for a router more than one hop away set ebgpMultiHop on the BGPPeer; for a multi-hop one, lower the BFDProfile's minimumTtl",
				"ttl", ttl, "minimum", minTTL)
		}
		return
	}
	select {
	case r.rx <- h:
	default: // the session is behind; the next packet carries the same news
	}
}

// parse decodes a control packet, refusing what no session of this implementation accepts:
// another version, a bad length, a zero multiplier or discriminator, authentication (none is
// configured) and the multipoint bit.
func parse(b []byte) (*bfd.BFDHeader, bool) {
	const authBit, multipointBit = 0x04, 0x01
	if len(b) < 24 || int(b[3]) != len(b) || b[1]&(authBit|multipointBit) != 0 {
		return nil, false
	}
	h := &bfd.BFDHeader{}
	if err := h.UnmarshalBinary(b); err != nil || h.Version != 1 || h.DetectTimeMultiplier == 0 || h.MyDiscriminator == 0 {
		return nil, false
	}
	return h, true
}

// runner drives one session: its timers, its socket and its packets.
type runner struct {
	cfg      Config // the latest configuration handed to run; guarded by Server.mu
	discr    uint32
	log      *slog.Logger
	onChange func(Change)
	session  *session

	rx       chan *bfd.BFDHeader
	cfgs     chan Config
	stop     chan struct{}
	done     chan struct{}
	haltOnce sync.Once
	quiet    atomic.Bool  // halt sends no AdminDown
	conn     *net.UDPConn // owned by run

	// Read by the listeners and State.
	multihop atomic.Bool
	minTTL   atomic.Uint32
	state    atomic.Uint32
	// ttlRefused is set once a packet was refused for its TTL (logged the first time only).
	ttlRefused atomic.Bool
}

func newRunner(c Config, discr uint32, log *slog.Logger, onChange func(Change)) *runner {
	r := &runner{
		cfg:      c,
		discr:    discr,
		log:      log,
		onChange: onChange,
		session:  newSession(c, discr),
		rx:       make(chan *bfd.BFDHeader, 8),
		cfgs:     make(chan Config, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.setFilters(c)
	r.state.Store(uint32(Down))
	return r
}

func (r *runner) setFilters(c Config) {
	r.multihop.Store(c.Multihop)
	r.minTTL.Store(uint32(c.minimumTTL()))
}

func (r *runner) reconfigure(c Config) {
	r.cfg = c
	r.setFilters(c)
	// Only the latest configuration matters: replace a pending one.
	select {
	case <-r.cfgs:
	default:
	}
	r.cfgs <- c
}

// halt takes the session AdminDown (unless quiet) and waits until its goroutine has stopped.
func (r *runner) halt() {
	r.haltOnce.Do(func() { close(r.stop) })
	<-r.done
}

func (r *runner) run() {
	defer close(r.done)
	s := r.session
	tx := time.NewTimer(0) // the first packet goes at once (unless passive)
	defer tx.Stop()
	detect := time.NewTimer(time.Hour)
	detect.Stop()
	defer detect.Stop()
	txArmed := true
	// armTx schedules the next periodic packet, or none when the session must stay quiet.
	armTx := func() {
		if iv := s.txInterval(); iv > 0 {
			tx.Reset(s.jittered(iv))
			txArmed = true
		} else {
			tx.Stop()
			txArmed = false
		}
	}
	for {
		select {
		case h := <-r.rx:
			from := s.state
			got := s.receive(h)
			if !got.accepted {
				continue
			}
			detect.Reset(s.detectionTime())
			if got.changed {
				r.publish(from, false)
			}
			if got.reply {
				r.send(s.packet(got.final))
			}
			if got.changed || !txArmed {
				armTx()
			}
		case <-tx.C:
			if s.txInterval() > 0 {
				r.send(s.packet(false))
			}
			armTx()
		case <-detect.C:
			from := s.state
			if s.expire() {
				r.publish(from, true)
				r.send(s.packet(false))
			}
			armTx()
		case c := <-r.cfgs:
			if c.Local != s.cfg.Local || c.Multihop != s.cfg.Multihop {
				r.closeConn() // the next packet goes from the new address or to the new port
			}
			interval := s.txInterval()
			s.reconfigure(c)
			if s.txInterval() != interval {
				armTx()
			}
		case <-r.stop:
			s.adminDown()
			r.state.Store(uint32(AdminDown))
			if !r.quiet.Load() {
				// Twice: losing the only one would make the peer see a failure after its detection time.
				for range 2 {
					r.send(s.packet(false))
				}
			}
			r.closeConn()
			return
		}
	}
}

func (r *runner) publish(from State, expired bool) {
	s := r.session
	r.state.Store(uint32(s.state))
	c := Change{Peer: s.cfg.Peer, From: from, To: s.state, Failure: from == Up && s.state == Down && (expired || !s.remoteAdminDown)}
	r.log.Info("BFD session changed", "from", from, "to", s.state, "failure", c.Failure)
	r.onChange(c)
}

// send writes one packet from the session's own socket. Errors are not reported: a packet that
// does not arrive shows as the session going or staying down, which its state already tells.
func (r *runner) send(h *bfd.BFDHeader) {
	if r.conn == nil {
		conn, err := dial(r.session.cfg)
		if err != nil {
			r.log.Debug("no BFD socket yet", "err", err)
			return
		}
		r.conn = conn
	}
	b, err := h.MarshalBinary()
	if err != nil {
		return
	}
	_, _ = r.conn.Write(b)
}

func (r *runner) closeConn() {
	if r.conn != nil {
		_ = r.conn.Close()
		r.conn = nil
	}
}

// dial opens a session's socket: from a source port in 49152-65535 that stays the same for the
// session (RFC 5881 section 4), with TTL 255 so the peer's single-hop check passes.
func dial(c Config) (*net.UDPConn, error) {
	port := SingleHopPort
	if c.Multihop {
		port = MultihopPort
	}
	remote := net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.Peer, uint16(port)))
	var lastErr error
	for range 16 {
		local := &net.UDPAddr{Port: sourcePortFirst + rand.IntN(sourcePortLast-sourcePortFirst+1)}
		if c.Local.IsValid() {
			local.IP = c.Local.AsSlice()
		}
		d := net.Dialer{LocalAddr: local}
		conn, err := d.Dial("udp", remote.String()) // an address, no name: nothing that waits
		if errors.Is(err, syscall.EADDRINUSE) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, err
		}
		udp := conn.(*net.UDPConn)
		if c.Peer.Is4() {
			err = ipv4.NewConn(udp).SetTTL(255)
		} else {
			err = ipv6.NewConn(udp).SetHopLimit(255)
		}
		if err != nil {
			_ = udp.Close()
			return nil, err
		}
		return udp, nil
	}
	return nil, lastErr
}
