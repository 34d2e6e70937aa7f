package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
)

// heartbeats runs membership for the speaker's lifetime. Its failure (the heartbeat socket) is
// logged, fails the readiness check and ends the speaker, whose context is cancelled with the
// error as its cause, so that the kubelet restarts the pod: a node whose heartbeats stopped is
// declared dead by its peers, which take its L2 addresses over, and it must not keep answering
// for them as if nothing had happened.
type heartbeats struct {
	done chan struct{}
	err  atomic.Pointer[error] // set once run failed
}

// runHeartbeats starts run(ctx) on a goroutine owned by the returned heartbeats (stop it by
// ending ctx, then call wait). endSpeaker is called with the error if run fails.
func runHeartbeats(ctx context.Context, run func(context.Context) error, log *slog.Logger, endSpeaker context.CancelCauseFunc) *heartbeats {
	h := &heartbeats{done: make(chan struct{})}
	go func() {
		defer close(h.done)
		err := run(ctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("stopped without an error") // Run returns nil only once ctx ends
		}
		if err == nil {
			return
		}
		err = fmt.Errorf("membership: %w", err)
		h.err.Store(&err)
		log.Error("speaker: membership failed: no heartbeats go out, so the other nodes will take this node's addresses over; stopping the speaker so that it restarts", "err", err)
		endSpeaker(err)
	}()
	return h
}

// ready is the readiness check: it fails with membership's error once membership failed.
func (h *heartbeats) ready(*http.Request) error {
	if err := h.err.Load(); err != nil {
		return *err
	}
	return nil
}

// wait returns once run has returned.
func (h *heartbeats) wait() { <-h.done }
