package userspace

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the userspace proxy's, per Service port ("namespace/name/protocol/port").
type metrics struct {
	connections, retries, failures *prometheus.CounterVec
	bytes                          *prometheus.CounterVec
	suspects, unserved             prometheus.GaugeFunc
}

// newMetrics makes a proxy's metrics; the suspect gauge counts s's endpoints, the unserved one
// is what unserved returns. They are registered by whoever owns the registry (Proxy.Collectors).
func newMetrics(s *suspects, unserved func() float64) *metrics {
	return &metrics{
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
		suspects: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_userspace_suspect_endpoints",
			Help: "Endpoints tried last for a while because a connection to them failed.",
		}, func() float64 { return float64(s.count(time.Now())) }),
		unserved: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_userspace_unserved_ports",
			Help: "Service ports --dataplane=userspace leaves without traffic on this node (SCTP: the proxy speaks TCP and UDP only).",
		}, unserved),
	}
}

// collectors are the metrics to register.
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.retries, m.failures, m.bytes, m.suspects, m.unserved}
}

// start makes a port's series at zero, so a rate of its failures reads 0, not absent, before
// the first one.
func (m *metrics) start(name interface{ String() string }) {
	label := name.String()
	m.connections.WithLabelValues(label)
	m.retries.WithLabelValues(label)
	m.failures.WithLabelValues(label)
	m.bytes.WithLabelValues(label, "to_backend")
	m.bytes.WithLabelValues(label, "from_backend")
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
