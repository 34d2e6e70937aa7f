// Package health serves the kubelet's probes on a binary's metrics port: /healthz (liveness)
// answers 200 for as long as the process serves HTTP, /readyz (readiness) answers 200 only when
// every readiness check passes and 500 naming the failing checks otherwise. Single checks answer
// on /readyz/<name>, and ?verbose lists every check. The handlers are controller-runtime's
// (the format of the Kubernetes components' own /healthz and /readyz).
package health

import (
	"errors"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// Checks are readiness checks by name; a check returns nil when ready, else what it waits for.
type Checks map[string]healthz.Checker

// Handle adds /healthz and /readyz (and their per-check subpaths) to mux.
func Handle(mux *http.ServeMux, ready Checks) {
	// Liveness has no checks: a process that answers HTTP is alive. A stuck informer or a
	// backend that fails to sync is a readiness matter; restarting would not fix it.
	live := http.StripPrefix("/healthz", &healthz.Handler{})
	readyz := http.StripPrefix("/readyz", &healthz.Handler{Checks: ready})
	mux.Handle("/healthz", live)
	mux.Handle("/healthz/", live)
	mux.Handle("/readyz", readyz)
	mux.Handle("/readyz/", readyz)
}

// Condition returns a check that fails, saying waiting, while ok reports false.
func Condition(ok func() bool, waiting string) healthz.Checker {
	err := errors.New(waiting)
	return func(*http.Request) error {
		if ok() {
			return nil
		}
		return err
	}
}
