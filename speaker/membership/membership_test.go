package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

func newMember(t *testing.T, name string, key []byte) *Membership {
	t.Helper()
	m, err := New(Config{Name: name, Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Interval: 20 * time.Millisecond, DeadAfter: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.sock.close) // Run closes it too; the tests that Run a member wait for it first
	return m
}

// run runs m until the returned function is called, which waits for Run to return.
func run(m *Membership) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

func connect(ms ...*Membership) {
	peers := map[string]netip.AddrPort{}
	for _, m := range ms {
		peers[m.cfg.Name] = m.LocalAddr()
	}
	for _, m := range ms {
		m.SetPeers(peers)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
	return 0
}

func TestMessageRoundTripAndTamper(t *testing.T) {
	key := DeriveKey([]byte("s3cret"))
	for _, in := range []message{
		{Version: wireV1, Name: "node-a", Epoch: 7, Seq: 9, SentNS: 123, Payload: []byte("claims"), Carries: true},
		{Version: wireV2, Name: "node-a", Epoch: 7, Seq: 9, SentNS: 123, PayloadVersion: 41, Acked: 40, Payload: []byte("claims"), Carries: true},
		{Version: wireV2, Name: "node-a", Epoch: 7, Seq: 9, SentNS: 123, PayloadVersion: 41, Acked: 40},
		{Version: wireV2, Name: "node-a", Epoch: 7, Seq: 9, SentNS: 123, PayloadVersion: 41, Acked: 40, TakesChunks: true,
			Carries: true, Chunk: 2, Chunks: 3, Payload: []byte("third")},
	} {
		b, err := in.marshal(key)
		if err != nil {
			t.Fatal(err)
		}
		out, err := unmarshal(b, key)
		if err != nil {
			t.Fatal(err)
		}
		if in.Payload == nil {
			in.Payload = []byte{}
		}
		if fmt.Sprint(*out) != fmt.Sprint(in) {
			t.Fatalf("round trip changed the message: %+v, want %+v", *out, in)
		}
	}
	in := message{Name: "node-a", Epoch: 7, Seq: 9, SentNS: 123, Payload: []byte("claims"), Carries: true}
	b, err := in.marshal(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unmarshal(b, DeriveKey([]byte("other"))); !errors.Is(err, errBadMAC) {
		t.Fatalf("wrong key: got %v, want errBadMAC", err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := unmarshal(c, key); err == nil {
			t.Fatalf("flipping byte %d was not detected", i)
		}
	}
	if _, err := unmarshal(b[:10], key); err == nil {
		t.Fatal("truncated message accepted")
	}
}

func TestLivenessQuorumAndPayload(t *testing.T) {
	key := DeriveKey([]byte("k"))
	a, b, c := newMember(t, "a", key), newMember(t, "b", key), newMember(t, "c", key)
	connect(a, b, c)
	stopA, stopB, killC := run(a), run(b), run(c)
	defer stopA()

	waitFor(t, "a sees b and c", time.Second, func() bool { return len(a.View().Alive) == 3 })
	c.SetPayload([]byte("owned: 10.0.0.1"))
	waitFor(t, "a receives c's payload", time.Second, func() bool {
		return string(a.View().Alive["c"].Payload) == "owned: 10.0.0.1"
	})

	killC()
	took := waitFor(t, "a declares c dead", time.Second, func() bool { _, ok := a.View().Alive["c"]; return !ok })
	if took > 300*time.Millisecond {
		t.Errorf("death detected after %v, want about DeadAfter (100ms)", took)
	}
	// Its last state stays known, with the time of its last heartbeat (what it said may bind
	// after its death: a hold over a restart).
	if d, ok := a.View().Departed["c"]; !ok || string(d.Payload) != "owned: 10.0.0.1" ||
		d.LastSeen.IsZero() || time.Since(d.LastSeen) < 100*time.Millisecond {
		t.Errorf("a's view of the dead c: %+v (departed: %v), want its last payload and its last heartbeat over DeadAfter ago", d, ok)
	}
	// With 2 of 3 alive, a has quorum. Waited for rather than read at once: on a saturated machine
	// (the whole test suite at once) b's heartbeats can be late by more than this test's short
	// DeadAfter, and b is then dead for a moment too.
	waitFor(t, "a with 2 of 3 alive has quorum", time.Second, func() bool {
		v := a.View()
		_, bAlive := v.Alive["b"]
		return bAlive && v.Quorum && v.Members == 3
	})

	// b also goes: a alone of three has no quorum.
	stopB()
	waitFor(t, "a loses quorum", time.Second, func() bool { return !a.View().Quorum })
}

func TestReplayAndWrongKeyChangeNothing(t *testing.T) {
	key := DeriveKey([]byte("k"))
	now := time.Unix(1000, 0)
	a := newMember(t, "a", key)
	a.cfg.Now = func() time.Time { return now }
	a.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1")})

	valid := func(epoch, seq uint64, payload string) []byte {
		b, err := (&message{Name: "b", Epoch: epoch, Seq: seq, SentNS: now.UnixNano(), Payload: []byte(payload), Carries: true}).marshal(key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := valid(5, 1, "x")
	if !a.accept(first) {
		t.Fatal("first valid message did not change the view")
	}
	replays := testutil.ToFloat64(a.cfg.Metrics.messagesRejected.WithLabelValues("replay"))
	if a.accept(first) {
		t.Fatal("replayed message accepted")
	}
	if got := testutil.ToFloat64(a.cfg.Metrics.messagesRejected.WithLabelValues("replay")) - replays; got != 1 {
		t.Fatalf("replay counter rose by %v, want 1", got)
	}
	// An old epoch (before the peer restarted) is a replay too, even with a higher sequence.
	a.accept(valid(6, 1, "y"))
	if a.accept(valid(5, 99, "stale")) || string(a.View().Alive["b"].Payload) != "y" {
		t.Fatal("message from an older epoch changed the view")
	}
	// A stranger with a well-formed message under another key changes nothing.
	forged, _ := (&message{Name: "b", Epoch: 7, Seq: 1, SentNS: now.UnixNano(), Payload: []byte("evil"), Carries: true}).marshal(DeriveKey([]byte("guess")))
	if a.accept(forged) || string(a.View().Alive["b"].Payload) != "y" {
		t.Fatal("message under a wrong key changed the view")
	}
	// A capture replayed to a receiver that lost its counters is refused by its timestamp.
	b2 := newMember(t, "a2", key)
	b2.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1")})
	b2.cfg.Now = func() time.Time { return now.Add(time.Minute) }
	if b2.accept(first) {
		t.Fatal("minute-old capture accepted by a fresh receiver")
	}
	// A message from a name not in the peer list is ignored.
	u, _ := (&message{Name: "zed", Epoch: 1, Seq: 1, SentNS: now.UnixNano()}).marshal(key)
	if a.accept(u) {
		t.Fatal("unknown peer accepted")
	}
}

func TestTwoMembersAlwaysHaveQuorum(t *testing.T) {
	a := newMember(t, "a", DeriveKey([]byte("k")))
	a.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1")})
	if !a.View().Quorum {
		t.Fatal("a member of a two-node cluster must keep quorum alone")
	}
	a.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1"), "c": netip.MustParseAddrPort("127.0.0.1:2")})
	if a.View().Quorum {
		t.Fatal("one of three alive must not have quorum")
	}
}

func TestNoQuorumBeforePeersAreKnown(t *testing.T) {
	now := time.Unix(1000, 0)
	m, err := New(Config{Name: "a", Key: DeriveKey([]byte("k")), Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		JoinGrace: 2 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.sock.close()
	if m.View().Quorum {
		t.Fatal("quorum before the peers were set")
	}
	now = now.Add(10 * time.Second) // the API server took its time
	m.SetPeers(map[string]netip.AddrPort{})
	if m.View().Quorum {
		t.Fatal("quorum within JoinGrace of the first peer list: it may not hold peers starting alongside")
	}
	now = now.Add(2 * time.Second)
	if v := m.View(); !v.Quorum || v.QuorumSince.Before(time.Unix(1012, 0)) {
		t.Fatalf("after JoinGrace alone: quorum %v since %v, want true since the end of the grace", v.Quorum, v.QuorumSince)
	}
	now = now.Add(time.Second)
	m.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1")})
	if v := m.View(); !v.Quorum || !v.QuorumSince.Equal(now) {
		t.Fatalf("a member joined: quorum since %v, want a new settle from %v", v.QuorumSince, now)
	}
}

func TestStallDefersAndGivesPeersTheBenefitOfTheDoubt(t *testing.T) {
	key := DeriveKey([]byte("k"))
	now := time.Unix(1000, 0)
	m, err := New(Config{Name: "a", Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Interval: 50 * time.Millisecond, DeadAfter: 250 * time.Millisecond, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.sock.close()
	m.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1"), "c": netip.MustParseAddrPort("127.0.0.1:2")})
	m.SetPayload([]byte("owns 10.0.0.1"))
	seq := uint64(0)
	from := func(name string) []byte {
		seq++
		b, _ := (&message{Name: name, Epoch: 1, Seq: seq, SentNS: now.UnixNano()}).marshal(key)
		return b
	}
	m.accept(from("b"))
	m.accept(from("c"))
	m.expire()
	if v := m.View(); !v.Quorum || v.Stalls != 0 {
		t.Fatalf("healthy: quorum %v stalls %d", v.Quorum, v.Stalls)
	}
	// Frozen for a second: nothing ran. The first thing that runs after it sees the stall.
	now = now.Add(time.Second)
	if stalls, stalled := m.Stalled(); !stalled || stalls != 0 {
		t.Fatalf("Stalled() = %d, %v right after a freeze, want 0, true", stalls, stalled)
	}
	m.accept(from("b")) // a heartbeat queued during the freeze
	v := m.View()
	if v.Stalls != 1 || !v.Quorum {
		t.Fatalf("after the freeze: stalls %d, quorum %v; want 1, true", v.Stalls, v.Quorum)
	}
	// This node's own stall says nothing about c: c gets DeadAfter from now to be heard.
	if _, ok := v.Alive["c"]; !ok {
		t.Fatal("c declared dead for this node's own stall")
	}
	for range 30 { // the check keeps running, every 10 ms
		now = now.Add(10 * time.Millisecond)
		m.expire()
	}
	if _, ok := m.View().Alive["c"]; ok {
		t.Fatal("c still alive DeadAfter after the stall without a heartbeat")
	}
	if len(v.Alive["a"].Payload) != 0 {
		t.Fatalf("the pre-freeze payload %q would still be sent", v.Alive["a"].Payload)
	}
	if _, stalled := m.Stalled(); stalled {
		t.Fatal("still stalled after the stall was handled")
	}
}

// TestStartIsNoStall: a member whose Run starts well after New (a busy process starting) counts
// no stall for that time: nobody has heard it yet.
func TestStartIsNoStall(t *testing.T) {
	m := newMember(t, "a", DeriveKey([]byte("k")))
	time.Sleep(4 * m.cfg.DeadAfter)
	stop := run(m)
	defer stop()
	time.Sleep(2 * m.cfg.Interval)
	if v := m.View(); v.Stalls != 0 {
		t.Fatalf("%d stalls counted for the time before Run", v.Stalls)
	}
}

// TestRestartedPeerGetsAGrace: a peer heard in a new epoch (it restarted) is declared dead only
// after four times DeadAfter for its first RestartGrace, as a starting speaker's first heartbeats
// come late on a busy node; a peer heard for the first time, or past its grace, gets DeadAfter.
func TestRestartedPeerGetsAGrace(t *testing.T) {
	key := DeriveKey([]byte("k"))
	now := time.Unix(1000, 0)
	m, err := New(Config{Name: "a", Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Interval: 50 * time.Millisecond, DeadAfter: 250 * time.Millisecond, RestartGrace: 10 * time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.sock.close()
	m.SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("127.0.0.1:1"), "c": netip.MustParseAddrPort("127.0.0.1:2")})
	seq := uint64(0)
	from := func(name string, epoch uint64) {
		seq++
		b, _ := (&message{Name: name, Epoch: epoch, Seq: seq, SentNS: now.UnixNano()}).marshal(key)
		if m.accept(b); m.View().Alive[name].Name != name {
			t.Fatalf("%s not alive after its heartbeat", name)
		}
	}
	// silentFor advances the clock by d in steps, running the expiry check as Run does, and
	// reports whether name is still alive.
	silentFor := func(name string, d time.Duration) bool {
		for end := now.Add(d); now.Before(end); {
			now = now.Add(10 * time.Millisecond)
			m.expire()
		}
		_, ok := m.View().Alive[name]
		return ok
	}
	from("b", 1)
	from("c", 1)
	if silentFor("c", 300*time.Millisecond) {
		t.Fatal("c, heard for the first time, still alive 300 ms after its last heartbeat (DeadAfter 250 ms)")
	}
	from("b", 2) // b restarted
	if !silentFor("b", 600*time.Millisecond) {
		t.Fatal("b, restarted, declared dead 600 ms after its last heartbeat, within its grace")
	}
	if silentFor("b", 500*time.Millisecond) {
		t.Fatal("b, restarted, still alive 1.1 s after its last heartbeat (4 x DeadAfter)")
	}
	from("b", 2)
	now = now.Add(10 * time.Second) // past the grace; nothing ran meanwhile, so b is given DeadAfter from now
	m.expire()
	if silentFor("b", 300*time.Millisecond) {
		t.Fatal("b still alive 300 ms after its last heartbeat once its grace is over")
	}
}

// threadStat returns, per thread of this process, the value of field n (1-based, as in proc(5))
// of /proc/self/task/TID/stat.
func threadStat(n int) map[string]string {
	out := map[string]string{}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		// Fields from 3 on follow the command, which is in parentheses and may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		out[task.Name()] = f[n-3]
	}
	return out
}

// threadsInClass lists this process's threads whose scheduling policy (field 41) is policy.
func threadsInClass(policy int) []string {
	var out []string
	for tid, p := range threadStat(41) {
		if p == strconv.Itoa(policy) {
			out = append(out, tid)
		}
	}
	return out
}

func TestHeartbeatThreadIsRealtimeAndAlone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_NICE) for the real-time class")
	}
	key := DeriveKey([]byte("k"))
	a, b := newMember(t, "a", key), newMember(t, "b", key)
	connect(a, b)
	stopA, stopB := run(a), run(b)
	waitFor(t, "a sees b", time.Second, func() bool { return len(a.View().Alive) == 2 })
	// Exactly the two heartbeat threads are real-time: nothing the runtime started from them
	// (SCHED_FLAG_RESET_ON_FORK, the runtime's template thread) inherited the class.
	if rt := threadsInClass(unix.SCHED_FIFO); len(rt) != 2 {
		t.Errorf("threads in SCHED_FIFO while two members run: %v, want 2", rt)
	}
	stopA()
	stopB()
	waitFor(t, "the heartbeat threads end with their members", time.Second, func() bool {
		return len(threadsInClass(unix.SCHED_FIFO)) == 0
	})
}

func TestRaisePriority(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_NICE) to lower the nice value")
	}
	if err := RaisePriority(-5); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := RaisePriority(0); err != nil {
			t.Errorf("restoring the priority: %v", err)
		}
	}()
	for tid, nice := range threadStat(19) {
		if nice != "-5" {
			t.Errorf("thread %s has nice %s, want -5", tid, nice)
		}
	}
}

// TestRunReportsAFailedSocket: a heartbeat socket that fails under Run (here closed behind its
// back) ends Run with an error saying so, rather than leaving it running with no heartbeats.
func TestRunReportsAFailedSocket(t *testing.T) {
	m := newMember(t, "a", DeriveKey([]byte("k")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	m.sock.close() // the next wait finds the descriptor gone (POLLNVAL)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "the socket was closed") {
			t.Errorf("Run returned %v, want the socket's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run goes on with a failed socket")
	}
}

// TestMetricsGoToTheGivenRegistry: each member counts into the registry it was given, and only
// there (two members in one process, as in the tests and the lab tools, keep apart).
func TestMetricsGoToTheGivenRegistry(t *testing.T) {
	key := DeriveKey([]byte("k"))
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a, err := New(Config{Name: "a", Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Metrics: NewMetrics(regA)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.sock.close)
	b, err := New(Config{Name: "b", Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Metrics: NewMetrics(regB)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.sock.close)
	a.SetPeers(map[string]netip.AddrPort{"b": b.LocalAddr()})
	if a.accept([]byte("not a heartbeat")) {
		t.Fatal("garbage accepted")
	}
	want := `
# HELP herald_membership_messages_rejected_total Heartbeats dropped, by reason (bad_mac, replay, clock_skew, unknown_peer, malformed).
# TYPE herald_membership_messages_rejected_total counter
herald_membership_messages_rejected_total{reason="malformed"} 1
# HELP herald_membership_quorum 1 when this node sees a majority of the members alive.
# TYPE herald_membership_quorum gauge
herald_membership_quorum 1
`
	if err := testutil.GatherAndCompare(regA, strings.NewReader(want),
		"herald_membership_messages_rejected_total", "herald_membership_quorum"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(regB, "herald_membership_messages_rejected_total"); err != nil || n != 0 {
		t.Errorf("b's registry holds %d rejection series (%v), want none: a counted into it", n, err)
	}
}

// The payload travels only while a peer does not hold its current version: at steady state a
// heartbeat is the same size whatever the payload, a change reaches the peer at once, and a
// change whose heartbeat is lost reaches it with the next one (its ack asks again).
func TestPayloadTravelsUntilAcked(t *testing.T) {
	key := DeriveKey([]byte("k"))
	a, b := newMember(t, "a", key), newMember(t, "b", key)
	connect(a, b)
	big := bytes.Repeat([]byte("claims "), 4000) // 28 KB, about a thousand IPv6 claims
	a.SetPayload(big)
	stopA, stopB := run(a), run(b)
	defer stopB()
	defer stopA()
	payloadOf := func(m *Membership, peer string) []byte { return m.View().Alive[peer].Payload }
	waitFor(t, "b holds a's payload", 2*time.Second, func() bool { return bytes.Equal(payloadOf(b, "a"), big) })
	sent := func() float64 { return testutil.ToFloat64(a.cfg.Metrics.bytesSent) }
	time.Sleep(100 * time.Millisecond) // b's ack reaches a with its next heartbeat
	before := sent()
	time.Sleep(500 * time.Millisecond) // 25 heartbeats
	perBeat := (sent() - before) / 25
	t.Logf("steady state: about %.0f bytes per heartbeat with a %d-byte payload", perBeat, len(big))
	if perBeat > 200 {
		t.Errorf("steady-state heartbeats carry %.0f bytes each: the payload is still sent", perBeat)
	}
	changed := append(bytes.Repeat([]byte("other "), 3000), 'x')
	a.SetPayload(changed)
	waitFor(t, "b holds a's new payload", 2*time.Second, func() bool { return bytes.Equal(payloadOf(b, "a"), changed) })
}

// A peer that speaks wire version 1 (a speaker of an earlier release, during a rolling upgrade)
// gets version 1 heartbeats, with the payload in each, once it has been heard.
func TestVersion1PeerGetsVersion1(t *testing.T) {
	key := DeriveKey([]byte("k"))
	a := newMember(t, "a", key)
	old := listenOldPeer(t, a)
	a.SetPayload([]byte("claims"))
	stop := run(a)
	defer stop()
	for seq := uint64(1); ; seq++ {
		m := old.exchange(t, message{Version: wireV1, Name: "old", Epoch: 1, Seq: seq, SentNS: time.Now().UnixNano(), Payload: []byte("mine"), Carries: true})
		if m.Version == wireV1 {
			if string(m.Payload) != "claims" {
				t.Fatalf("version 1 heartbeat carries %q", m.Payload)
			}
			break
		}
		if seq > 50 {
			t.Fatal("a never spoke version 1 to its version 1 peer")
		}
	}
	if got := string(a.View().Alive["old"].Payload); got != "mine" {
		t.Errorf("a holds %q from its version 1 peer, want mine", got)
	}
}

// oldPeer is a peer of an earlier release, played by the test on a socket of its own: a's only
// peer, named "old".
type oldPeer struct {
	conn *net.UDPConn
	a    *Membership
	buf  []byte
}

func listenOldPeer(t *testing.T, a *Membership) *oldPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a.SetPeers(map[string]netip.AddrPort{"old": conn.LocalAddr().(*net.UDPAddr).AddrPort()})
	return &oldPeer{conn: conn, a: a, buf: make([]byte, 64<<10)}
}

// exchange sends hello to a and returns the next heartbeat a sends back.
func (o *oldPeer) exchange(t *testing.T, hello message) *message {
	t.Helper()
	b, err := hello.marshal(o.a.cfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.conn.WriteToUDPAddrPort(b, o.a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = o.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := o.conn.ReadFromUDPAddrPort(o.buf)
	if err != nil {
		t.Fatalf("no heartbeat from a: %v", err)
	}
	m, err := unmarshal(o.buf[:n], o.a.cfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRealtimeDeniedNamesTheCause: EPERM from sched_setattr means a missing CAP_SYS_NICE only
// when the process's cpu cgroup has a real-time budget; in one without (every container on a
// cgroup v1 kernel with real-time group scheduling), the log must say so instead.
func TestRealtimeDeniedNamesTheCause(t *testing.T) {
	if got := realtimeDenied(unix.EINVAL); got != "sched_setattr failed" {
		t.Errorf("EINVAL: %q", got)
	}
	budget, err := os.ReadFile(cgroupV1CPUFile("cpu.rt_runtime_us"))
	if err != nil {
		t.Skipf("no cgroup v1 real-time group scheduling here: %v", err)
	}
	want := "needs CAP_SYS_NICE"
	if strings.TrimSpace(string(budget)) == "0" {
		want = "no real-time budget"
	}
	if got := realtimeDenied(unix.EPERM); !strings.Contains(got, want) {
		t.Errorf("EPERM with cpu.rt_runtime_us %s: %q, want it to say %q", strings.TrimSpace(string(budget)), got, want)
	}
}

// TestLargePayloadTravelsInChunks: a state larger than one datagram (a node owning 10,000 IPv6
// addresses: 170 KB) reaches the peer whole, in chunks, and is not sent again once acknowledged;
// a change of it travels too.
func TestLargePayloadTravelsInChunks(t *testing.T) {
	key := DeriveKey([]byte("k"))
	a, b := newMember(t, "a", key), newMember(t, "b", key)
	connect(a, b)
	big := make([]byte, 170_000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	a.SetPayload(big)
	stopA, stopB := run(a), run(b)
	defer stopB()
	defer stopA()
	payloadOf := func(m *Membership, peer string) []byte { return m.View().Alive[peer].Payload }
	waitFor(t, "b holds a's 170 KB payload", 2*time.Second, func() bool { return bytes.Equal(payloadOf(b, "a"), big) })
	if got := a.View().PayloadLimit; got != MaxChunkedPayload {
		t.Errorf("a's peers take %d bytes of state, want %d (b takes chunks)", got, MaxChunkedPayload)
	}
	sent := func() float64 { return testutil.ToFloat64(a.cfg.Metrics.bytesSent) }
	time.Sleep(100 * time.Millisecond) // b's ack reaches a with its next heartbeat
	before := sent()
	time.Sleep(time.Second) // 50 heartbeats
	// Still sending would be the 3 chunks, 170 KB, per heartbeat; a late ack on a loaded machine
	// may cost one more round (3.4 KB per heartbeat over the 50).
	if perBeat := (sent() - before) / 50; perBeat > 5000 {
		t.Errorf("steady-state heartbeats carry %.0f bytes each: the chunks are still sent", perBeat)
	}
	changed := append(bytes.Clone(big[:100_000]), big...)
	a.SetPayload(changed)
	waitFor(t, "b holds a's changed 270 KB payload", 2*time.Second, func() bool { return bytes.Equal(payloadOf(b, "a"), changed) })
}

// TestChunksAreReassembledWhateverTheirOrder: chunks may be lost and sent again, so they arrive
// in any order and more than once; a chunk of a newer version starts over.
func TestChunksAreReassembledWhateverTheirOrder(t *testing.T) {
	var r reassembly
	if _, ok := r.add(5, 2, 3, []byte("c")); ok {
		t.Fatal("whole after one chunk of three")
	}
	if _, ok := r.add(5, 2, 3, []byte("c")); ok {
		t.Fatal("whole after a duplicate")
	}
	if _, ok := r.add(6, 0, 3, []byte("A")); ok { // a new version: version 5's chunk is dropped
		t.Fatal("whole after the first chunk of a new version")
	}
	r.add(6, 2, 3, []byte("C"))
	got, ok := r.add(6, 1, 3, []byte("B"))
	if !ok || string(got) != "ABC" {
		t.Fatalf("got %q (whole %v), want ABC", got, ok)
	}
}

// TestPeerWithoutChunksGetsNoChunks: a version 2 speaker of an earlier release cannot read
// chunks. It never gets any: while it is alive View.PayloadLimit is one heartbeat's worth (so the
// L2 election shrinks this node's state to fit), and a larger state is not sent to it at all,
// though its heartbeats still are.
func TestPeerWithoutChunksGetsNoChunks(t *testing.T) {
	key := DeriveKey([]byte("k"))
	a := newMember(t, "a", key)
	old := listenOldPeer(t, a)
	a.SetPayload(make([]byte, 2*MaxPayload))
	stop := run(a)
	defer stop()
	heard := 0
	for seq := uint64(1); seq <= 20; seq++ {
		m := old.exchange(t, message{Version: wireV2, Name: "old", Epoch: 1, Seq: seq, SentNS: time.Now().UnixNano(), PayloadVersion: 1, Payload: []byte("mine"), Carries: true})
		if m.Chunks > 0 || m.Carries {
			t.Fatalf("a sent its peer of an earlier release state it cannot read: chunk %d of %d, %d bytes", m.Chunk, m.Chunks, len(m.Payload))
		}
		if !m.TakesChunks {
			t.Fatal("a's heartbeats do not offer to take chunks")
		}
		heard++
	}
	if v := a.View(); v.PayloadLimit != MaxPayload || string(v.Alive["old"].Payload) != "mine" {
		t.Errorf("with a peer of an earlier release alive: limit %d (want %d), its state %q", v.PayloadLimit, MaxPayload, v.Alive["old"].Payload)
	}
	t.Logf("%d heartbeats, none with state", heard)
}
