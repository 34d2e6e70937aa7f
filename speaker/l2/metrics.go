package l2

import "github.com/prometheus/client_golang/prometheus"

// Metrics are L2's Prometheus metrics. The speaker registers them in its registry;
// NewMetrics(nil) makes them unregistered (tests, tools).
type Metrics struct {
	// requests, replies and gratuitous are labelled by interface and protocol (arp, ndp).
	requests, replies, gratuitous *prometheus.CounterVec
	ownershipChanges              *prometheus.CounterVec
}

// NewMetrics makes L2's metrics and registers them with reg unless it is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_requests_total",
			Help: "ARP requests and neighbor solicitations received for IPs this node answers for.",
		}, []string{"interface", "protocol"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_replies_total",
			Help: "ARP replies and neighbor advertisements sent in answer to a request.",
		}, []string{"interface", "protocol"}),
		gratuitous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_gratuitous_sent_total",
			Help: "Gratuitous ARPs and unsolicited neighbor advertisements sent on taking an IP.",
		}, []string{"interface", "protocol"}),
		ownershipChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_l2_ownership_changes_total",
			Help: "IPs this node started (gained) or stopped (lost) answering for.",
		}, []string{"change"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.replies, m.gratuitous, m.ownershipChanges)
	}
	return m
}
