package bfd

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// TestChangesAreDeliveredInOrder: a session flapping Down and Up while the callback is slow (the
// BGP announcer waits for its lock during a long update) hands the callback every change in the
// order they happened, one at a time: a Down then Up is never acted on as Up then Down, which
// would leave a healthy BGP session marked failed and reset.
func TestChangesAreDeliveredInOrder(t *testing.T) {
	gate := make(chan struct{})
	var (
		mu      sync.Mutex
		got     []State
		running int
		overlap bool
	)
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), func(c Change) {
		mu.Lock()
		running++
		overlap = overlap || running > 1
		mu.Unlock()
		<-gate
		mu.Lock()
		got = append(got, c.To)
		running--
		mu.Unlock()
	})
	r := newRunner(testConfig(), 1, s.log, s.queueChange)
	var want []State
	for i := range 100 {
		from := r.session.state
		r.session.state = []State{Up, Down}[i%2]
		r.publish(from, true)
		want = append(want, r.session.state)
	}
	close(gate)
	s.WaitDelivered()
	if overlap {
		t.Error("two changes were handed over at once")
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes delivered, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("change %d delivered as %v, want %v (delivered out of order: %v)", i, got[i], want[i], got)
		}
	}
}
