package userspace

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the userspace proxy's, per Service port ("namespace/name/protocol/port").
type metrics struct {
	connections, retries, failures *prometheus.CounterVec
	bytes                          *prometheus.CounterVec
}

var (
	registerOnce   sync.Once
	sharedMetrics  *metrics
	suspectSources struct {
		sync.Mutex
		all []*suspects
	}
)

// metricsFor returns the process's userspace-proxy metrics, registered once with the default
// registry (the speaker's /metrics), and counts s's endpoints in the suspect gauge.
func metricsFor(s *suspects) *metrics {
	registerOnce.Do(func() {
		sharedMetrics = &metrics{
			connections: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "herald_userspace_connections_total",
				Help: "Client connections (TCP) or sessions (UDP) the userspace proxy accepted.",
			}, []string{"service"}),
			retries: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "herald_userspace_retries_total",
				Help: "Connection attempts to another endpoint after one refused, reset or timed out.",
			}, []string{"service"}),
			failures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "herald_userspace_failures_total",
				Help: "Client connections the userspace proxy failed after its bounded tries.",
			}, []string{"service"}),
			bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "herald_userspace_bytes_total",
				Help: "Bytes the userspace proxy carried, by direction (to_backend, from_backend).",
			}, []string{"service", "direction"}),
		}
		suspectsGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_userspace_suspect_endpoints",
			Help: "Endpoints tried last for a while because a connection to them failed.",
		}, func() float64 {
			suspectSources.Lock()
			defer suspectSources.Unlock()
			n := 0
			for _, s := range suspectSources.all {
				n += s.count(time.Now())
			}
			return float64(n)
		})
		prometheus.MustRegister(sharedMetrics.connections, sharedMetrics.retries, sharedMetrics.failures, sharedMetrics.bytes, suspectsGauge)
	})
	suspectSources.Lock()
	suspectSources.all = append(suspectSources.all, s)
	suspectSources.Unlock()
	return sharedMetrics
}

// forget drops a port's series once it is no longer proxied.
func (m *metrics) forget(name interface{ String() string }) {
	label := name.String()
	m.connections.DeleteLabelValues(label)
	m.retries.DeleteLabelValues(label)
	m.failures.DeleteLabelValues(label)
	m.bytes.DeleteLabelValues(label, "to_backend")
	m.bytes.DeleteLabelValues(label, "from_backend")
}

// stopCounting removes s from the suspect gauge (its Proxy closed).
func stopCounting(s *suspects) {
	suspectSources.Lock()
	defer suspectSources.Unlock()
	suspectSources.all = slices.DeleteFunc(suspectSources.all, func(x *suspects) bool { return x == s })
}
