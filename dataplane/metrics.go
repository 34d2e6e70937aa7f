package dataplane

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the data plane's Prometheus metrics. The speaker makes them once with its registry
// and hands them to the proxy and the health servers; a nil *Metrics records nothing (tests and
// benchmarks that do not look at them).
type Metrics struct {
	syncs        *prometheus.CounterVec
	syncDuration prometheus.Histogram
	syncFailing  prometheus.Gauge
	services     prometheus.Gauge
	servicePorts prometheus.Gauge
	healthChecks *prometheus.CounterVec
	// Self-repair (drift checks and the full syncs that repair).
	fullSyncs        *prometheus.CounterVec
	repairs          prometheus.Counter
	driftCheckErrors prometheus.Counter
}

// Reasons for a full sync (the reason label of herald_dataplane_full_syncs_total).
const (
	fullSyncStart    = "start"    // the first sync
	fullSyncFailure  = "failure"  // after a failed sync
	fullSyncPeriodic = "periodic" // MaxSyncInterval elapsed
	fullSyncDrift    = "drift"    // the drift check found the kernel changed
)

// Sync results, the values of herald_dataplane_syncs_total's result label.
const (
	SyncSuccess = "success"
	SyncFailure = "failure"
)

// Health servers, the values of herald_dataplane_healthcheck_responses_total's server label.
const (
	HealthServerProxy   = "proxy"   // /healthz and /livez on :10256
	HealthServerService = "service" // a Service's healthCheckNodePort
)

// NewMetrics makes the data plane's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "herald", Subsystem: "dataplane", Name: name, Help: help}
	}
	m := &Metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts(opts("syncs_total",
			"Syncs handed to the backend (one kernel transaction each), by result (success, failure).")), []string{"result"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "herald", Subsystem: "dataplane",
			Name: "sync_duration_seconds", Help: "Time a sync handed to the backend takes, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}), // 0.5 ms … 33 s
		syncFailing: prometheus.NewGauge(prometheus.GaugeOpts(opts("sync_failing",
			"1 while the last sync failed: changes wait, retried with backoff as full syncs."))),
		services: prometheus.NewGauge(prometheus.GaugeOpts(opts("services",
			"Services the last successful sync programmed."))),
		servicePorts: prometheus.NewGauge(prometheus.GaugeOpts(opts("service_ports",
			"Service ports (the unit each backend programs rules for) the last successful sync programmed."))),
		healthChecks: prometheus.NewCounterVec(prometheus.CounterOpts(opts("healthcheck_responses_total",
			"Health-check answers, by server (proxy: /healthz and /livez; service: a healthCheckNodePort) and HTTP code.")),
			[]string{"server", "code"}),
		fullSyncs: prometheus.NewCounterVec(prometheus.CounterOpts(opts("full_syncs_total",
			"Full syncs of the data plane (every rule rewritten), by reason: start, failure, periodic, drift.")), []string{"reason"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts(opts("repairs_total",
			"Times the drift check found the data plane's kernel state changed behind its back (and a full sync repaired it)."))),
		driftCheckErrors: prometheus.NewCounter(prometheus.CounterOpts(opts("drift_check_errors_total",
			"Drift checks that could not read the kernel's state."))),
	}
	for _, c := range []prometheus.Collector{m.syncs, m.syncDuration, m.syncFailing, m.services, m.servicePorts, m.healthChecks,
		m.fullSyncs, m.repairs, m.driftCheckErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Both results from the start, so a rate over failures is 0, not absent, before the first one.
	m.syncs.WithLabelValues(SyncSuccess)
	m.syncs.WithLabelValues(SyncFailure)
	return m, nil
}

// syncDone records a sync the backend ran; services and ports are what it committed, when it
// succeeded.
func (m *Metrics) syncDone(took time.Duration, err error, services, ports int) {
	if m == nil {
		return
	}
	m.syncDuration.Observe(took.Seconds())
	if err != nil {
		m.syncs.WithLabelValues(SyncFailure).Inc()
		m.syncFailing.Set(1)
		return
	}
	m.syncs.WithLabelValues(SyncSuccess).Inc()
	m.syncFailing.Set(0)
	m.services.Set(float64(services))
	m.servicePorts.Set(float64(ports))
}

// fullSync counts a full sync with its reason (fullSync…).
func (m *Metrics) fullSync(reason string) {
	if m != nil {
		m.fullSyncs.WithLabelValues(reason).Inc()
	}
}

// repaired counts a repair of drifted kernel state.
func (m *Metrics) repaired() {
	if m != nil {
		m.repairs.Inc()
	}
}

// driftCheckFailed counts a drift check that could not read the kernel.
func (m *Metrics) driftCheckFailed() {
	if m != nil {
		m.driftCheckErrors.Inc()
	}
}

// HealthCheckAnswered counts one answer of a health server (HealthServerProxy or
// HealthServerService) with its HTTP status code.
func (m *Metrics) HealthCheckAnswered(server string, code int) {
	if m == nil {
		return
	}
	m.healthChecks.WithLabelValues(server, strconv.Itoa(code)).Inc()
}
