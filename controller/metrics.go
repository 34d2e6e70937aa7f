package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Metrics are the controller's Prometheus metrics, served on --metrics-addr from the registry
// the binary makes (cmd/controller).
type Metrics struct {
	// AddressesTotal and AddressesInUse count each pool's addresses per family (float: a /64 does
	// not fit an integer, Prometheus values are floats anyway).
	AddressesTotal *prometheus.GaugeVec
	AddressesInUse *prometheus.GaugeVec
	// Allocations counts Services that got new addresses, per pool; Failures counts refusals per
	// reason (once per change of a Service's answer, not per retry).
	Allocations *prometheus.CounterVec
	Failures    *prometheus.CounterVec
	queues      queueMetrics
}

// NewMetrics makes the controller's metrics and registers them with reg unless it is nil (then
// they are unregistered: tests, tools). The Go runtime and process collectors are the binary's.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		AddressesTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "herald", Subsystem: "controller",
			Name: "addresses", Help: "Addresses a pool gives out, per family."}, []string{"pool", "family"}),
		AddressesInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "herald", Subsystem: "controller",
			Name: "addresses_in_use", Help: "Addresses of a pool held by Services, per family."}, []string{"pool", "family"}),
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "herald", Subsystem: "controller",
			Name: "allocations_total", Help: "Services given new addresses, per pool."}, []string{"pool"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "herald", Subsystem: "controller",
			Name: "allocation_failures_total", Help: "Services refused addresses, per reason."}, []string{"reason"}),
	}
	m.queues = newQueueMetrics()
	if reg != nil {
		reg.MustRegister(m.AddressesTotal, m.AddressesInUse, m.Allocations, m.Failures)
		m.queues.register(reg)
	}
	return m
}

// queueMetrics implements client-go's workqueue.MetricsProvider with Prometheus vectors keyed by
// queue name: depth, adds, queue latency (time from Add to processing), work duration, retries.
type queueMetrics struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, work              *prometheus.HistogramVec
}

func newQueueMetrics() queueMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "herald", Subsystem: "controller_workqueue", Name: name, Help: help}
	}
	buckets := prometheus.ExponentialBuckets(0.0001, 4, 10) // 100µs … 26 s
	return queueMetrics{
		depth:      prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("depth", "Items waiting.")), []string{"name"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("unfinished_work_seconds", "Seconds of work in progress.")), []string{"name"}),
		longest:    prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("longest_running_processor_seconds", "Longest running item.")), []string{"name"}),
		adds:       prometheus.NewCounterVec(prometheus.CounterOpts(opts("adds_total", "Items added.")), []string{"name"}),
		retries:    prometheus.NewCounterVec(prometheus.CounterOpts(opts("retries_total", "Items re-added after a failure.")), []string{"name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "herald", Subsystem: "controller_workqueue",
			Name: "queue_duration_seconds", Help: "Time an item waits in the queue.", Buckets: buckets}, []string{"name"}),
		work: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "herald", Subsystem: "controller_workqueue",
			Name: "work_duration_seconds", Help: "Time processing an item takes.", Buckets: buckets}, []string{"name"}),
	}
}

func (q queueMetrics) register(r prometheus.Registerer) {
	r.MustRegister(q.depth, q.unfinished, q.longest, q.adds, q.retries, q.latency, q.work)
}

func (q queueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return q.depth.WithLabelValues(name)
}
func (q queueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return q.adds.WithLabelValues(name)
}
func (q queueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return q.latency.WithLabelValues(name)
}
func (q queueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return q.work.WithLabelValues(name)
}
func (q queueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.unfinished.WithLabelValues(name)
}
func (q queueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.longest.WithLabelValues(name)
}
func (q queueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return q.retries.WithLabelValues(name)
}
