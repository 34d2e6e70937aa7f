package dataplane

import (
	"context"
	"time"
)

// boundedRunner runs fn when triggered, but never more often than every minInterval (events
// arriving meanwhile fold into one run: one kernel transaction per burst), and at least every
// maxInterval even when nothing triggers it (a periodic full check). A failed run is retried
// with exponential backoff from minInterval up to maxInterval.
type boundedRunner struct {
	fn          func(ctx context.Context) error
	minInterval time.Duration
	maxInterval time.Duration
	kick        chan struct{}
}

func newBoundedRunner(fn func(ctx context.Context) error, minInterval, maxInterval time.Duration) *boundedRunner {
	return &boundedRunner{fn: fn, minInterval: minInterval, maxInterval: maxInterval, kick: make(chan struct{}, 1)}
}

// Trigger asks for a run soon; it never blocks, and triggers before the run merge.
func (r *boundedRunner) Trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Loop runs until ctx ends, starting with one run.
func (r *boundedRunner) Loop(ctx context.Context) {
	var last time.Time
	retry := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-timer.C:
		}
		if wait := r.minInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// Drain a trigger that arrived while waiting: this run covers it.
		select {
		case <-r.kick:
		default:
		}
		last = time.Now()
		next := r.maxInterval
		if err := r.fn(ctx); err != nil {
			retry = min(max(2*retry, r.minInterval, 100*time.Millisecond), r.maxInterval)
			next = retry
		} else {
			retry = 0
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}
