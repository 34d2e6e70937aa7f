package dataplane

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// runLog records when a boundedRunner's fn ran, and fails the first failures runs.
type runLog struct {
	mu       sync.Mutex
	at       []time.Time
	failures int
}

func (l *runLog) fn(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, time.Now())
	if len(l.at) <= l.failures {
		return errors.New("backend down")
	}
	return nil
}

func (l *runLog) runs() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.at...)
}

// loop runs r until the test ends, and waits for it to return.
func loop(t *testing.T, r *boundedRunner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Loop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Loop did not return after its context ended")
		}
	})
}

// waitRuns polls until fn has run at least n times.
func waitRuns(t *testing.T, l *runLog, n int, within time.Duration) []time.Time {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(time.Millisecond) {
		if runs := l.runs(); len(runs) >= n {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runs after %v, want %d", len(l.runs()), within, n)
		}
	}
}

func TestRunnerRunsAtStartAndOnTrigger(t *testing.T) {
	l := &runLog{}
	r := newBoundedRunner(l.fn, time.Millisecond, time.Hour)
	loop(t, r)
	waitRuns(t, l, 1, 10*time.Second)
	r.Trigger()
	waitRuns(t, l, 2, 10*time.Second)
}

// A burst of triggers never runs fn more often than every minInterval.
func TestRunnerBoundsTheRate(t *testing.T) {
	const minInterval = 40 * time.Millisecond
	l := &runLog{}
	r := newBoundedRunner(l.fn, minInterval, time.Hour)
	loop(t, r)
	for end := time.Now().Add(10 * minInterval); time.Now().Before(end); {
		r.Trigger()
		time.Sleep(100 * time.Microsecond)
	}
	runs := waitRuns(t, l, 3, 10*time.Second)
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].Sub(runs[i-1]); gap < minInterval {
			t.Errorf("runs %d and %d only %v apart, want at least %v", i-1, i, gap, minInterval)
		}
	}
	// About 2,000 triggers folded into at most one run per interval (and the first).
	if len(runs) > 12 {
		t.Errorf("%d runs for a burst of 10 intervals", len(runs))
	}
}

// Untriggered, fn runs every maxInterval (the periodic full check).
func TestRunnerRunsEveryMaxInterval(t *testing.T) {
	const maxInterval = 30 * time.Millisecond
	l := &runLog{}
	loop(t, newBoundedRunner(l.fn, time.Millisecond, maxInterval))
	runs := waitRuns(t, l, 4, 10*time.Second)
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].Sub(runs[i-1]); gap < maxInterval {
			t.Errorf("untriggered runs %d and %d %v apart, want at least %v", i-1, i, gap, maxInterval)
		}
	}
}

// A failing fn is retried without a trigger, with a backoff that doubles from 100 ms (at least
// minInterval) and stops at maxInterval; a success goes back to the periodic maxInterval.
func TestRunnerRetriesWithBackoff(t *testing.T) {
	l := &runLog{failures: 3}
	loop(t, newBoundedRunner(l.fn, time.Millisecond, 300*time.Millisecond))
	runs := waitRuns(t, l, 5, 20*time.Second)
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond} {
		if gap := runs[i+1].Sub(runs[i]); gap < want {
			t.Errorf("run %d came %v after run %d, want at least %v", i+1, gap, i, want)
		}
	}
	// The backoff doubles: the third retry waits longer than the first.
	if first, third := runs[1].Sub(runs[0]), runs[3].Sub(runs[2]); third < first+first/2 {
		t.Errorf("retries %v then %v apart: no backoff", first, third)
	}
}

// A trigger during a retry's backoff runs fn at once (a new change may fix the failure).
func TestRunnerTriggerCutsTheBackoffShort(t *testing.T) {
	l := &runLog{failures: 3}
	r := newBoundedRunner(l.fn, time.Millisecond, time.Hour)
	loop(t, r)
	// After the third failure the retry waits 400 ms.
	waitRuns(t, l, 3, 10*time.Second)
	r.Trigger()
	runs := waitRuns(t, l, 4, 10*time.Second)
	if gap := runs[3].Sub(runs[2]); gap >= 300*time.Millisecond {
		t.Errorf("the triggered run came %v after the failure: it waited out the 400 ms backoff", gap)
	}
}

// Trigger never blocks, with or without a running loop.
func TestRunnerTriggerNeverBlocks(t *testing.T) {
	r := newBoundedRunner(func(context.Context) error { return nil }, time.Millisecond, time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			r.Trigger()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Trigger blocked without a running loop")
	}
}
