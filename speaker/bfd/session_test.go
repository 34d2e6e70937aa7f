package bfd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

func testConfig() Config {
	return Config{
		Peer:          netip.MustParseAddr("192.0.2.1"),
		DesiredMinTx:  100 * time.Millisecond,
		RequiredMinRx: 100 * time.Millisecond,
		Multiplier:    3,
	}
}

// pass hands from's next packet (a Final when final) to to, through the wire format.
func pass(t *testing.T, from, to *session, final bool) reception {
	t.Helper()
	b, err := from.packet(final).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := parse(b)
	if !ok {
		t.Fatalf("own packet refused: %x", b)
	}
	return to.receive(h)
}

// handshake brings two fresh sessions Up the way two systems do: a speaks first.
func handshake(t *testing.T, a, b *session) {
	t.Helper()
	if got := pass(t, a, b, false); !got.changed || b.state != Init || !got.reply {
		t.Fatalf("b after a's Down: %+v, state %v", got, b.state)
	}
	if got := pass(t, b, a, false); !got.changed || a.state != Up {
		t.Fatalf("a after b's Init: %+v, state %v", got, a.state)
	}
	if got := pass(t, a, b, false); !got.changed || b.state != Up {
		t.Fatalf("b after a's Up: %+v, state %v", got, b.state)
	}
}

func TestHandshakeThenFastTimersAfterPoll(t *testing.T) {
	a, b := newSession(testConfig(), 11), newSession(testConfig(), 22)
	if a.txInterval() != time.Second {
		t.Errorf("a Down session sends every %v, want the slow 1s", a.txInterval())
	}
	handshake(t, a, b)
	// Up, both advertise 100 ms with a Poll; the peer's Final lets the fast rate count.
	if !a.polling || !b.polling {
		t.Fatalf("no Poll after going Up: a %v b %v", a.polling, b.polling)
	}
	if got := pass(t, a, b, false); !got.reply || !got.final {
		t.Fatalf("a Poll must be answered with a Final at once: %+v", got)
	}
	pass(t, b, a, true)
	if a.polling {
		t.Error("a still polling after the Final")
	}
	if a.txInterval() != 100*time.Millisecond || a.detectionTime() != 300*time.Millisecond {
		t.Errorf("a: tx %v, detection %v; want 100ms, 300ms", a.txInterval(), a.detectionTime())
	}
	if h := a.packet(false); h.Poll || h.State != bfd.StateUp || h.YourDiscriminator != 22 || h.DesiredMinTxInterval != 100000 {
		t.Errorf("a's Up packet: %+v", h)
	}
}

func TestDetectionTimeExpiry(t *testing.T) {
	a, b := newSession(testConfig(), 11), newSession(testConfig(), 22)
	handshake(t, a, b)
	if !a.expire() {
		t.Fatal("an Up session did not go down when its detection time passed")
	}
	if a.state != Down || a.diag != bfd.DiagnosticControlDetectionTimeExpired || a.remoteDiscr != 0 {
		t.Errorf("after expiry: state %v diag %v remote discriminator %d", a.state, a.diag, a.remoteDiscr)
	}
	if a.txInterval() != time.Second {
		t.Errorf("a Down session sends every %v, want 1s", a.txInterval())
	}
	// The peer's next Up packet does not bring a back: a answers Down, which takes the peer down too.
	if got := pass(t, b, a, false); got.changed {
		t.Errorf("a Down session took the peer's Up packet: %+v, state %v", got, a.state)
	}
	if got := pass(t, a, b, false); !got.changed || b.state != Down || b.diag != bfd.DiagnosticNeighborSignaledSessionDown || b.remoteAdminDown {
		t.Errorf("b after a's Down: %+v state %v diag %v", got, b.state, b.diag)
	}
}

func TestPeerAdminDownIsNoFailure(t *testing.T) {
	a, b := newSession(testConfig(), 11), newSession(testConfig(), 22)
	handshake(t, a, b)
	b.adminDown()
	if got := pass(t, b, a, false); !got.changed || a.state != Down || !a.remoteAdminDown {
		t.Errorf("a after b's AdminDown: %+v state %v remoteAdminDown %v", got, a.state, a.remoteAdminDown)
	}
	// An AdminDown session ignores its peer.
	if got := pass(t, a, b, false); got.changed || b.state != AdminDown {
		t.Errorf("b AdminDown took a packet: %+v state %v", got, b.state)
	}
	if b.txInterval() != 0 {
		t.Error("an AdminDown session keeps transmitting periodically")
	}
}

func TestPassiveWaitsForThePeer(t *testing.T) {
	cfg := testConfig()
	cfg.Passive = true
	p, a := newSession(cfg, 11), newSession(testConfig(), 22)
	if p.txInterval() != 0 {
		t.Fatalf("a passive session sends before hearing from its peer (every %v)", p.txInterval())
	}
	if got := pass(t, a, p, false); !got.reply || p.state != Init {
		t.Fatalf("passive after the peer's Down: %+v state %v", got, p.state)
	}
	if p.txInterval() == 0 {
		t.Fatal("a passive session that heard its peer stays silent")
	}
	pass(t, p, a, false)
	pass(t, a, p, false)
	if p.state != Up {
		t.Fatalf("passive session: %v, want Up", p.state)
	}
	p.expire()
	if p.txInterval() != 0 {
		t.Error("a passive session keeps sending after losing its peer")
	}
}

func TestForeignPacketsAreIgnored(t *testing.T) {
	a, b := newSession(testConfig(), 11), newSession(testConfig(), 22)
	handshake(t, a, b)
	h := b.packet(false)
	h.YourDiscriminator = 99
	if got := a.receive(h); got.accepted {
		t.Error("a packet for another discriminator was accepted")
	}
	h = b.packet(false)
	h.YourDiscriminator = 0 // Up without naming the session: not a valid packet
	if got := a.receive(h); got.accepted {
		t.Error("an Up packet without Your Discriminator was accepted")
	}
	if a.state != Up {
		t.Errorf("a: %v", a.state)
	}
}

func TestReconfigureWhileUpWaitsForTheFinal(t *testing.T) {
	a, b := newSession(testConfig(), 11), newSession(testConfig(), 22)
	handshake(t, a, b)
	pass(t, a, b, false)
	pass(t, b, a, true)
	slower := testConfig()
	slower.DesiredMinTx, slower.RequiredMinRx = 300*time.Millisecond, 50*time.Millisecond
	a.reconfigure(slower)
	if !a.polling || a.txInUse != 100*time.Millisecond || a.rxInUse != 100*time.Millisecond {
		t.Fatalf("before the Final: polling %v tx %v rx %v; the old intervals must stay", a.polling, a.txInUse, a.rxInUse)
	}
	if h := a.packet(false); !h.Poll || h.DesiredMinTxInterval != 300000 || h.RequiredMinRxInterval != 50000 {
		t.Errorf("a's Poll: %+v", h)
	}
	pass(t, a, b, false)
	pass(t, b, a, true)
	if a.polling || a.txInUse != 300*time.Millisecond || a.rxInUse != 50*time.Millisecond {
		t.Errorf("after the Final: polling %v tx %v rx %v", a.polling, a.txInUse, a.rxInUse)
	}
	if a.state != Up || b.state != Up {
		t.Errorf("reconfiguring reset the session: a %v b %v", a.state, b.state)
	}
}

func TestMinimumTTL(t *testing.T) {
	c := testConfig()
	c.MinimumTTL = 10
	if c.minimumTTL() != 255 {
		t.Errorf("single hop: %d, want 255 whatever minimumTtl says", c.minimumTTL())
	}
	c.Multihop = true
	if c.minimumTTL() != 10 {
		t.Errorf("multi-hop with minimumTtl 10: %d", c.minimumTTL())
	}
	c.MinimumTTL = 0
	if c.minimumTTL() != DefaultMinimumTTL {
		t.Errorf("multi-hop default: %d", c.minimumTTL())
	}
}

func TestJitter(t *testing.T) {
	s := newSession(testConfig(), 1)
	for range 1000 {
		if d := s.jittered(100 * time.Millisecond); d < 75*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("jittered 100ms = %v", d)
		}
	}
	s.cfg.Multiplier = 1
	for range 1000 {
		if d := s.jittered(100 * time.Millisecond); d > 90*time.Millisecond {
			t.Fatalf("multiplier 1: jittered 100ms = %v, want at most 90ms", d)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := newSession(testConfig(), 7).packet(false).MarshalBinary()
	if _, ok := parse(good); !ok {
		t.Fatal("a valid packet was refused")
	}
	for name, mutate := range map[string]func(b []byte) []byte{
		"short":          func(b []byte) []byte { return b[:20] },
		"length field":   func(b []byte) []byte { b[3] = 30; return b },
		"version 0":      func(b []byte) []byte { b[0] &= 0x1f; return b },
		"authentication": func(b []byte) []byte { b[1] |= 0x04; return b },
		"multipoint":     func(b []byte) []byte { b[1] |= 0x01; return b },
		"multiplier 0":   func(b []byte) []byte { b[2] = 0; return b },
		"discriminator0": func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b },
	} {
		b := mutate(append([]byte(nil), good...))
		if _, ok := parse(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
