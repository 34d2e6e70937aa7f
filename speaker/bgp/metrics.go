package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	sessionUpDesc = prometheus.NewDesc("herald_bgp_session_up",
		"1 when the BGP session with the peer is Established.", []string{"peer", "address"}, nil)
	bfdUpDesc = prometheus.NewDesc("herald_bgp_bfd_session_up",
		"1 when the BFD session with the peer is Up (only peers with a BFD profile).", []string{"peer", "address"}, nil)
	prefixesDesc = prometheus.NewDesc("herald_bgp_announced_prefixes",
		"Prefixes advertised to the peer.", []string{"peer", "address"}, nil)
	updatesSentDesc = prometheus.NewDesc("herald_bgp_updates_sent_total",
		"BGP UPDATE messages sent to the peer on its current session.", []string{"peer", "address"}, nil)
	updatesReceivedDesc = prometheus.NewDesc("herald_bgp_updates_received_total",
		"BGP UPDATE messages received from the peer on its current session.", []string{"peer", "address"}, nil)
)

// Collector exposes the announcer's session state as Prometheus metrics, read from GoBGP at each
// scrape (so they cannot drift from the sessions' real state).
type Collector struct{ a *Announcer }

// NewCollector returns a Collector for a; register it with the speaker's registry.
func NewCollector(a *Announcer) *Collector { return &Collector{a: a} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionUpDesc, bfdUpDesc, prefixesDesc, updatesSentDesc, updatesReceivedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, err := c.a.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sessionUpDesc, err)
		return
	}
	for _, s := range status {
		labels := []string{s.Name, s.Address.String()}
		ch <- prometheus.MustNewConstMetric(sessionUpDesc, prometheus.GaugeValue, boolValue(s.Established), labels...)
		if s.BFD != "" {
			ch <- prometheus.MustNewConstMetric(bfdUpDesc, prometheus.GaugeValue, boolValue(s.BFD == "Up"), labels...)
		}
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(s.PrefixesAdvertised), labels...)
		ch <- prometheus.MustNewConstMetric(updatesSentDesc, prometheus.CounterValue, float64(s.UpdatesSent), labels...)
		ch <- prometheus.MustNewConstMetric(updatesReceivedDesc, prometheus.CounterValue, float64(s.UpdatesReceived), labels...)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
