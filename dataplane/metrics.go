package dataplane

import "github.com/prometheus/client_golang/prometheus"

// Reasons for a full sync (the reason label of herald_dataplane_full_syncs_total).
const (
	fullSyncStart    = "start"    // the first sync
	fullSyncFailure  = "failure"  // after a failed sync
	fullSyncPeriodic = "periodic" // MaxSyncInterval elapsed
	fullSyncDrift    = "drift"    // the drift check found the kernel changed
)

// proxyMetrics are the proxy's metrics, registered on ProxyOptions.Registerer (unregistered,
// and so never exported, when it is nil).
type proxyMetrics struct {
	fullSyncs        *prometheus.CounterVec
	repairs          prometheus.Counter
	driftCheckErrors prometheus.Counter
}

func newProxyMetrics(r prometheus.Registerer) proxyMetrics {
	m := proxyMetrics{
		fullSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dataplane_full_syncs_total",
			Help: "Full syncs of the data plane (every rule rewritten), by reason: start, failure, periodic, drift.",
		}, []string{"reason"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dataplane_repairs_total",
			Help: "Times the drift check found the data plane's kernel state changed behind its back (and a full sync repaired it).",
		}),
		driftCheckErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dataplane_drift_check_errors_total",
			Help: "Drift checks that could not read the kernel's state.",
		}),
	}
	if r != nil {
		r.MustRegister(m.fullSyncs, m.repairs, m.driftCheckErrors)
	}
	return m
}
