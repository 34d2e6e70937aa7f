package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Port is the UDP port speakers exchange heartbeats on (docs/contracts.md).
const Port = 9652

// Config configures one member.
type Config struct {
	Name string // this node's name
	Key  []byte // from DeriveKey
	// Listen is the local UDP address, normally [::]:9652.
	Listen netip.AddrPort
	// Interval between heartbeats (default 50 ms); DeadAfter without a valid heartbeat declares a
	// peer dead (default 250 ms, five intervals, so one or two lost datagrams or a scheduling hiccup
	// on a busy node never cost an ownership change).
	Interval  time.Duration
	DeadAfter time.Duration
	// RestartGrace: for this long after a peer restarted (a heartbeat of a new epoch from a peer
	// heard before), it is declared dead only after restartDeadFactor times DeadAfter. A starting
	// speaker loads its caches and programs its data plane at once, and in a pod (no real-time
	// budget for its heartbeat thread) on a busy node its first heartbeats come late: declared
	// dead for that, it loses the IPs it has just taken back from its restart hold, and they move
	// twice. A peer's crash within the grace fails over in restartDeadFactor × DeadAfter. Default
	// 10 s; negative: none.
	RestartGrace time.Duration
	// MaxClockSkew bounds how far a message's send time may be from the receiver's clock (default
	// 5 s). Nodes are expected to run NTP.
	MaxClockSkew time.Duration
	// JoinGrace: until SetPeers was first called, and for this long after, the node has no quorum:
	// a starting speaker learns its peers from the API server, whose first list may not yet hold
	// speakers starting at the same time, and meanwhile it would believe itself alone (and the
	// majority). Zero when the peers are known from the start.
	JoinGrace time.Duration
	Logger    *slog.Logger
	// Metrics receive the counters and gauges; nil: unregistered ones (NewMetrics(nil)).
	Metrics *Metrics
	// Now replaces the clock in tests.
	Now func() time.Time
}

// Peer is one member as this node sees it.
type Peer struct {
	Name       string
	AliveSince time.Time // since when it has been continuously alive in this epoch
	Payload    []byte    // the last state it sent
	LastSeen   time.Time // its last heartbeat (set in View.Departed)
}

// View is one consistent picture of the membership.
type View struct {
	Self    string
	Members int             // configured peers + this node
	Alive   map[string]Peer // alive members, this node included (with its own payload)
	// Departed are the dead peers whose last state is known: what a peer said in its last
	// heartbeats may still bind its peers after its death (a hold over a restart), and the
	// application may not have looked at the view in the moments it was alive to say it.
	Departed map[string]Peer
	// Quorum: this node sees a strict majority of the members alive (always true with fewer than
	// three members), and knows its peers (see Config.JoinGrace). Without quorum a node must not
	// announce anything.
	Quorum bool
	// QuorumSince: when Quorum last became true, or the set of members last changed.
	QuorumSince time.Time
	// Stalls counts the times this process was found stalled (see Membership.Stalled): its view
	// was stale, and whatever it decided from it must be dropped.
	Stalls uint64
	// PayloadLimit is the largest payload every alive peer can receive: MaxChunkedPayload, or
	// MaxPayload while an alive peer does not take chunks (a speaker of an earlier release). A
	// larger payload does not reach such a peer, which would keep acting on this node's old state.
	PayloadLimit int
}

type peerState struct {
	addr       netip.AddrPort
	alive      bool
	aliveSince time.Time
	lastSeen   time.Time
	epoch, seq uint64 // last accepted; kept after death so replays stay rejected
	// restarted is when a heartbeat of a new epoch came from this peer after an earlier one
	// (see Config.RestartGrace).
	restarted time.Time
	payload   []byte
	// payloadVersion is the version of payload (0: from a version 1 peer); acked is the version
	// of this node's payload the peer holds; v1 says it last spoke wire version 1; takesChunks
	// says its last heartbeat offered to take chunked payloads.
	payloadVersion, acked uint64
	v1, takesChunks       bool
	// partial collects the chunks of the peer's payload version partial.version.
	partial reassembly
	// nextChunk is the first chunk of this node's payload (version chunkedVersion) to send the
	// peer in the next heartbeat: chunks go chunksPerHeartbeat at a time, round robin, until the
	// peer acknowledges the version.
	nextChunk      int
	chunkedVersion uint64
	// warnedVersion: the payload version this node last warned it cannot send the peer.
	warnedVersion uint64
}

// reassembly holds the chunks of one payload version received so far.
type reassembly struct {
	version uint64
	chunks  [][]byte // nil: not received yet
	missing int
}

// add stores chunk i of n of version v and returns the whole payload once every chunk is in.
func (r *reassembly) add(v uint64, i, n uint16, b []byte) ([]byte, bool) {
	if r.version != v || len(r.chunks) != int(n) {
		*r = reassembly{version: v, chunks: make([][]byte, n), missing: int(n)}
	}
	if r.chunks[i] == nil {
		r.chunks[i] = b
		r.missing--
	}
	if r.missing > 0 {
		return nil, false
	}
	whole := bytes.Join(r.chunks, nil)
	*r = reassembly{}
	return whole, true
}

// chunksPerHeartbeat bounds the chunks sent to one peer per heartbeat (8 × 60 KiB), so a large
// change does not overrun the peer's socket buffer (see listenHeartbeat) and the ones lost are
// sent again in the next round; a payload of 10,000 IPv6 addresses is 3 chunks, one round.
const chunksPerHeartbeat = 8

// Membership sends this node's heartbeats and tracks its peers'.
type Membership struct {
	cfg   Config
	sock  *heartbeatSocket
	epoch uint64
	notes chan struct{}

	mu        sync.Mutex
	joined    time.Time // first SetPeers + JoinGrace; zero before SetPeers
	lastCheck time.Time // last run of the expiry check
	stalls    uint64
	peers     map[string]*peerState
	payload   []byte
	// payloadVersion starts at the epoch and grows with every change of payload, so it is unique
	// across this node's restarts.
	payloadVersion uint64
	seq            uint64
	quorum         bool
	quorumSince    time.Time
}

// Metrics are membership's Prometheus metrics. The speaker registers them in its registry;
// NewMetrics(nil) makes them unregistered (tests, tools).
type Metrics struct {
	messagesAccepted prometheus.Counter
	messagesRejected *prometheus.CounterVec
	bytesSent        prometheus.Counter
	peersAlive       prometheus.Gauge
	quorum           prometheus.Gauge
}

// NewMetrics makes membership's metrics and registers them with reg unless it is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messagesAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_membership_messages_accepted_total",
			Help: "Valid heartbeats accepted from peers.",
		}),
		messagesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_membership_messages_rejected_total",
			Help: "Heartbeats dropped, by reason (bad_mac, replay, clock_skew, unknown_peer, malformed).",
		}, []string{"reason"}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_membership_bytes_sent_total",
			Help: "Bytes of heartbeats sent to peers (UDP payload): at steady state independent of the IPs this node owns.",
		}),
		peersAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_membership_peers_alive",
			Help: "Peers this node currently sees alive (itself excluded).",
		}),
		quorum: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_membership_quorum",
			Help: "1 when this node sees a majority of the members alive.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.messagesAccepted, m.messagesRejected, m.bytesSent, m.peersAlive, m.quorum)
	}
	return m
}

// New binds the heartbeat socket.
func New(cfg Config) (*Membership, error) {
	if cfg.Name == "" || len(cfg.Key) == 0 {
		return nil, errors.New("membership needs a node name and a key")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 5 * cfg.Interval
	}
	if cfg.RestartGrace == 0 {
		cfg.RestartGrace = 10 * time.Second
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "membership")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	sock, err := listenHeartbeat(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("membership: listen on %s: %w", cfg.Listen, err)
	}
	now := cfg.Now()
	return &Membership{
		cfg:            cfg,
		sock:           sock,
		epoch:          uint64(now.UnixNano()),
		payloadVersion: uint64(now.UnixNano()),
		notes:          make(chan struct{}, 1),
		peers:          map[string]*peerState{},
		lastCheck:      now,
		// Alone, or with one peer, a node has quorum from the start (see View.Quorum).
		quorum:      true,
		quorumSince: now,
	}, nil
}

// LocalAddr is the bound address (useful when Listen had port 0).
func (m *Membership) LocalAddr() netip.AddrPort {
	return m.sock.localAddr()
}

// SetPeers replaces the set of other members and their heartbeat addresses. Peers that stay keep
// their liveness and replay state.
func (m *Membership) SetPeers(peers map[string]netip.AddrPort) {
	now := m.cfg.Now()
	m.mu.Lock()
	changed := false
	for name := range m.peers {
		if _, ok := peers[name]; !ok {
			delete(m.peers, name)
			changed = true
		}
	}
	for name, addr := range peers {
		if name == m.cfg.Name {
			continue
		}
		if p, ok := m.peers[name]; ok {
			p.addr = addr
		} else {
			m.peers[name] = &peerState{addr: addr}
			changed = true
		}
	}
	if m.joined.IsZero() {
		m.joined = now.Add(m.cfg.JoinGrace)
	}
	m.updateQuorumLocked(now)
	if changed {
		// A new member may hold claims this node has not heard yet: settle again.
		m.quorumSince = now
	}
	m.mu.Unlock()
	m.notify()
}

// SetPayload sets the state carried by this node's heartbeats; a change is sent at once rather than
// at the next interval, so peers learn of a new owner within one round trip.
func (m *Membership) SetPayload(p []byte) {
	m.mu.Lock()
	changed := !bytes.Equal(m.payload, p)
	m.payload = append([]byte(nil), p...)
	if changed {
		m.payloadVersion++
	}
	m.mu.Unlock()
	if changed {
		m.sock.wakeUp()
	}
}

// Changes signals (coalesced) that the view may have changed: a peer came or went, a payload or
// quorum changed.
func (m *Membership) Changes() <-chan struct{} { return m.notes }

// View returns the current membership.
func (m *Membership) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.detectStallLocked(m.cfg.Now())
	v := View{
		Self:         m.cfg.Name,
		Members:      len(m.peers) + 1,
		Alive:        map[string]Peer{m.cfg.Name: {Name: m.cfg.Name, AliveSince: time.Unix(0, int64(m.epoch)), Payload: m.payload}},
		Quorum:       m.quorum && !m.joined.IsZero() && !m.cfg.Now().Before(m.joined),
		QuorumSince:  m.quorumSince,
		Stalls:       m.stalls,
		PayloadLimit: MaxChunkedPayload,
	}
	if v.QuorumSince.Before(m.joined) {
		v.QuorumSince = m.joined
	}
	for name, p := range m.peers {
		switch {
		case p.alive:
			v.Alive[name] = Peer{Name: name, AliveSince: p.aliveSince, Payload: p.payload}
			if p.v1 || !p.takesChunks {
				v.PayloadLimit = MaxPayload
			}
		case len(p.payload) > 0:
			if v.Departed == nil {
				v.Departed = map[string]Peer{}
			}
			v.Departed[name] = Peer{Name: name, AliveSince: p.aliveSince, Payload: p.payload, LastSeen: p.lastSeen}
		}
	}
	return v
}

// Run sends heartbeats, receives peers' and expires dead peers until ctx ends, then closes the
// socket (a Membership runs once). It returns an error only if the socket fails.
func (m *Membership) Run(ctx context.Context) error {
	// A goroutine of its own: it ends with its thread locked (see runHeartbeats), which must not
	// be the caller's.
	done := make(chan error, 1)
	go func() { done <- m.runHeartbeats(ctx) }()
	return <-done
}

// runHeartbeats is the whole failure detector: sending, receiving and expiry, on one OS thread of
// its own in the real-time class (see makeThreadRealtime), so that neither this node's heartbeats
// nor its judgement of its peers wait for CPU behind the node's other work. One thread for all
// three keeps them in step: whatever delays the expiry check delays the receiving just as much, so
// peers' silence is only counted while this node was listening (see detectStallLocked). Without
// CAP_SYS_NICE, or in a cgroup without a real-time budget (realtimeDenied), it still runs, at the
// process's priority.
func (m *Membership) runHeartbeats(ctx context.Context) error {
	// Never unlocked: when this goroutine ends, the runtime ends the thread, real-time class and all.
	runtime.LockOSThread()
	if err := makeThreadRealtime(); err != nil {
		m.cfg.Logger.Warn("heartbeats run without real-time priority; a saturated node may be declared dead", "why", realtimeDenied(err), "err", err)
	} else {
		defer func() { _ = makeThreadNormal() }()
	}
	defer m.sock.close()
	// The time between New and now is this process starting, not a stall: no peer has heard this
	// epoch yet, so none can have acted on its silence (a busy node's starting speaker took half a
	// second to get here, and counted that as a stall: it dropped the IPs it was resuming).
	m.mu.Lock()
	m.lastCheck = m.cfg.Now()
	m.mu.Unlock()
	stop := context.AfterFunc(ctx, m.sock.wakeUp)
	defer stop()
	buf := make([]byte, 64<<10)
	// Expiry is checked with every heartbeat sent and at the moment the first alive peer's silence
	// reaches DeadAfter, so detection is not late by a polling period, and the thread wakes only to
	// send, to receive and for that deadline (polling five times per interval had cost each speaker
	// 40 ms of CPU per second, idle, on a 2-core VM).
	nextSend := time.Now()
	nextCheck := nextSend
	for ctx.Err() == nil {
		next := nextSend
		if nextCheck.Before(next) {
			next = nextCheck
		}
		woken, err := m.sock.wait(time.Until(next))
		if err != nil {
			return fmt.Errorf("membership: waiting for heartbeats: %w", err)
		}
		m.receiveWaiting(buf)
		now := time.Now()
		// A wake-up is a new payload (or the end): send it now rather than at the next interval.
		if woken || !now.Before(nextSend) {
			m.send()
			if !now.Before(nextSend) {
				nextSend = nextSend.Add(m.cfg.Interval)
				if nextSend.Before(now) { // late by a whole interval: do not send a burst to catch up
					nextSend = now.Add(m.cfg.Interval)
				}
			}
		}
		if !now.Before(nextCheck) || !now.Before(nextSend) {
			m.expire()
			// A peer's deadline only moves later when it is heard; a peer first heard after this
			// gets DeadAfter (more than an Interval) from then.
			nextCheck = now.Add(min(m.cfg.Interval, m.untilFirstExpiry()))
		}
	}
	return nil
}

// untilFirstExpiry is how long until the first alive peer has been silent for longer than
// DeadAfter (expire's test is strict: a millisecond is added).
func (m *Membership) untilFirstExpiry() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	first := time.Duration(math.MaxInt64)
	for _, p := range m.peers {
		if p.alive {
			first = min(first, p.lastSeen.Add(m.deadAfterLocked(p, now)).Sub(now)+time.Millisecond)
		}
	}
	return max(first, 0)
}

// restartDeadFactor multiplies DeadAfter for a peer within its RestartGrace.
const restartDeadFactor = 4

// deadAfterLocked is how long p may stay silent before it is declared dead.
func (m *Membership) deadAfterLocked(p *peerState, now time.Time) time.Duration {
	if !p.restarted.IsZero() && now.Sub(p.restarted) < m.cfg.RestartGrace {
		return restartDeadFactor * m.cfg.DeadAfter
	}
	return m.cfg.DeadAfter
}

// send sends one heartbeat to every peer: to a peer that holds this node's current payload
// version, without the payload; to one that does not, with it, or with the next chunks of it.
func (m *Membership) send() {
	type datagram struct {
		to  netip.AddrPort
		msg message
	}
	m.mu.Lock()
	now := m.cfg.Now()
	if m.detectStallLocked(now) {
		m.notify()
	}
	head := message{Name: m.cfg.Name, Epoch: m.epoch, SentNS: now.UnixNano(),
		PayloadVersion: m.payloadVersion, TakesChunks: true, Payload: m.payload}
	chunks := (len(m.payload) + MaxPayload - 1) / MaxPayload
	out := make([]datagram, 0, len(m.peers))
	// Every datagram gets a sequence number of its own (a peer gets several when chunks go).
	add := func(to netip.AddrPort, msg message) {
		m.seq++
		msg.Seq = m.seq
		out = append(out, datagram{to, msg})
	}
	for name, p := range m.peers {
		if !p.addr.IsValid() {
			continue
		}
		msg := head
		current := p.acked == m.payloadVersion
		switch {
		case len(m.payload) <= MaxPayload && p.v1:
			msg.Version = wireV1
		case len(m.payload) <= MaxPayload:
			msg.Version, msg.Acked, msg.Carries = wireV2, p.payloadVersion, !current
		case p.v1 || !p.takesChunks:
			// Cannot reach it: a heartbeat without state keeps the peer alive and acting on this
			// node's last state it holds, until this node's election sees View.PayloadLimit and
			// shrinks its state to fit (a version 1 heartbeat always carries state: none goes).
			if !p.v1 {
				msg.Version, msg.Acked = wireV2, p.payloadVersion
				add(p.addr, msg)
			}
			if p.warnedVersion != m.payloadVersion {
				p.warnedVersion = m.payloadVersion
				m.cfg.Logger.Warn("this node's state is too large for a peer of an earlier release; it gets none", "peer", name, "bytes", len(m.payload), "max", MaxPayload)
			}
			continue
		case current:
			msg.Version, msg.Acked = wireV2, p.payloadVersion
		default:
			if p.chunkedVersion != m.payloadVersion {
				p.chunkedVersion, p.nextChunk = m.payloadVersion, 0
			}
			msg.Version, msg.Acked, msg.Carries, msg.Chunks = wireV2, p.payloadVersion, true, uint16(chunks)
			for range min(chunks, chunksPerHeartbeat) {
				i := p.nextChunk
				msg.Chunk, msg.Payload = uint16(i), m.payload[i*MaxPayload:min(len(m.payload), (i+1)*MaxPayload)]
				add(p.addr, msg)
				p.nextChunk = (i + 1) % chunks
			}
			continue
		}
		add(p.addr, msg)
	}
	m.mu.Unlock()
	// Each peer's heartbeat is marshalled and MAC'd on its own: a version 2 heartbeat names the
	// version of that peer's payload this node holds. At steady state that is about 90 bytes per
	// peer; a version 1 peer (an earlier release) costs a MAC over the whole payload each time.
	for _, d := range out {
		b, err := d.msg.marshal(m.cfg.Key)
		if err != nil {
			m.cfg.Logger.Error("cannot encode heartbeat", "to", d.to, "err", err)
			continue
		}
		// Errors (no route while a link is down, ICMP refusals) are expected while peers are away.
		if m.sock.sendTo(b, d.to) == nil {
			m.cfg.Metrics.bytesSent.Add(float64(len(b)))
		}
	}
}

// receiveWaiting applies the datagrams waiting on the socket, at most a batch per wake-up so a
// flood (of forgeries, say) cannot hold off this node's own heartbeats.
func (m *Membership) receiveWaiting(buf []byte) {
	for range 1000 {
		n, err := m.sock.recv(buf)
		if err != nil {
			return // EAGAIN: none left
		}
		if m.accept(buf[:n]) {
			m.notify()
		}
	}
}

// accept authenticates one datagram and applies it; it reports whether the view changed.
func (m *Membership) accept(b []byte) bool {
	msg, err := unmarshal(b, m.cfg.Key)
	if err != nil {
		reason := "malformed"
		if errors.Is(err, errBadMAC) {
			reason = "bad_mac"
		}
		m.cfg.Metrics.messagesRejected.WithLabelValues(reason).Inc()
		return false
	}
	now := m.cfg.Now()
	if d := now.Sub(time.Unix(0, msg.SentNS)); d > m.cfg.MaxClockSkew || d < -m.cfg.MaxClockSkew {
		m.cfg.Metrics.messagesRejected.WithLabelValues("clock_skew").Inc()
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	stalled := m.detectStallLocked(now)
	p, ok := m.peers[msg.Name]
	if !ok {
		m.cfg.Metrics.messagesRejected.WithLabelValues("unknown_peer").Inc()
		return false
	}
	if msg.Epoch < p.epoch || (msg.Epoch == p.epoch && msg.Seq <= p.seq) {
		m.cfg.Metrics.messagesRejected.WithLabelValues("replay").Inc()
		return false
	}
	m.cfg.Metrics.messagesAccepted.Inc()
	payload, payloadVersion := msg.Payload, msg.PayloadVersion
	whole := msg.Carries
	if msg.Chunks > 0 {
		whole = false
		if msg.PayloadVersion != p.payloadVersion { // else a chunk of what this node holds
			payload, whole = p.partial.add(msg.PayloadVersion, msg.Chunk, msg.Chunks, msg.Payload)
		}
	}
	if !whole {
		// Unchanged since the version it last sent in full, changed in a heartbeat that was
		// lost, or chunks of it still missing: this node keeps what it holds, and its next
		// heartbeat's ack asks for the new version.
		payload, payloadVersion = p.payload, p.payloadVersion
	}
	p.v1, p.takesChunks, p.acked = msg.Version == wireV1, msg.TakesChunks, msg.Acked
	changed := stalled || !p.alive || msg.Epoch != p.epoch || !bytes.Equal(p.payload, payload)
	if gap := now.Sub(p.lastSeen); p.alive && gap > m.cfg.DeadAfter/2 {
		// A near miss: half the dead time without a word from a live peer (this node's own
		// scheduling gaps are already forgiven, see detectStallLocked). Worth knowing before
		// one turns into a false failover.
		m.cfg.Logger.Info("late heartbeat", "peer", msg.Name, "silentFor", gap)
	}
	if p.epoch != 0 && msg.Epoch != p.epoch {
		p.restarted = now
	}
	if !p.alive || msg.Epoch != p.epoch {
		// A restarted peer (new epoch) starts a new life even if it came back within DeadAfter.
		p.aliveSince = now
		if !p.alive {
			m.cfg.Logger.Info("peer alive", "peer", msg.Name)
		}
	}
	p.alive, p.lastSeen, p.epoch, p.seq, p.payload, p.payloadVersion = true, now, msg.Epoch, msg.Seq, payload, payloadVersion
	if changed {
		m.updateQuorumLocked(now)
	}
	return changed
}

func (m *Membership) expire() {
	now := m.cfg.Now()
	m.mu.Lock()
	changed := m.detectStallLocked(now)
	m.lastCheck = now
	for name, p := range m.peers {
		if p.alive && now.Sub(p.lastSeen) > m.deadAfterLocked(p, now) {
			p.alive = false
			changed = true
			m.cfg.Logger.Info("peer dead", "peer", name, "silentFor", now.Sub(p.lastSeen))
		}
	}
	if changed {
		m.updateQuorumLocked(now)
	}
	m.mu.Unlock()
	if changed {
		m.notify()
	}
}

// Stalled reports whether this process looks stalled right now: the expiry check, which runs with
// every heartbeat sent (each Interval), has not run for DeadAfter. A process frozen (SIGSTOP, a paused VM) or starved
// that long has been declared dead by its peers, who took its IPs; it must not answer from its old
// state, not even for the requests that queued up meanwhile.
func (m *Membership) Stalled() (stalls uint64, now bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stalls, m.cfg.Now().Sub(m.lastCheck) > m.cfg.DeadAfter
}

// detectStallLocked notices, the first time anything runs after it, that this process was not
// running for a while (the expiry check runs at least once per Interval):
//   - a gap over DeadAfter/2: this node could not hear its peers meanwhile, so their silence proves
//     nothing; every alive peer gets DeadAfter from now to be heard again, rather than being
//     declared dead for this node's own hiccup (on a saturated machine, every node hiccups at once);
//   - a gap over DeadAfter (a stall, see Stalled): the peers have declared this node dead and may
//     have taken its IPs. It is counted (View.Stalls) so the application can defer to them, and the
//     old payload is dropped: sending it would re-assert claims the peers have since taken over.
func (m *Membership) detectStallLocked(now time.Time) bool {
	gap := now.Sub(m.lastCheck)
	if gap <= m.cfg.DeadAfter/2 {
		return false
	}
	m.lastCheck = now
	for _, p := range m.peers {
		if p.alive {
			p.lastSeen = now
		}
	}
	if gap <= m.cfg.DeadAfter {
		return false
	}
	m.cfg.Logger.Warn("this node was stalled; deferring to its peers' claims", "stalledFor", gap)
	m.stalls++
	m.payload = nil
	m.payloadVersion++
	return true
}

func (m *Membership) updateQuorumLocked(now time.Time) {
	alive := 1
	for _, p := range m.peers {
		if p.alive {
			alive++
		}
	}
	members := len(m.peers) + 1
	q := members < 3 || alive*2 > members
	if q && !m.quorum {
		m.quorumSince = now
		m.cfg.Logger.Info("quorum regained", "alive", alive, "members", members)
	} else if !q && m.quorum {
		m.cfg.Logger.Warn("quorum lost; announcing nothing until it returns", "alive", alive, "members", members)
	}
	m.quorum = q
	m.cfg.Metrics.peersAlive.Set(float64(alive - 1))
	if q {
		m.cfg.Metrics.quorum.Set(1)
	} else {
		m.cfg.Metrics.quorum.Set(0)
	}
}

func (m *Membership) notify() {
	select {
	case m.notes <- struct{}{}:
	default:
	}
}
