package metricsdoc

import (
	"slices"
	"testing"
)

func TestReadThePage(t *testing.T) {
	p, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := p.Metric("herald_dataplane_sync_duration_seconds"); !ok || m.Type != "histogram" {
		t.Errorf("herald_dataplane_sync_duration_seconds: %+v %v", m, ok)
	}
	if m, ok := p.Metric("herald_bgp_session_up"); !ok || m.Type != "gauge" {
		t.Errorf("herald_bgp_session_up: %+v %v", m, ok)
	}
	if !slices.Contains(p.Alerts, "HeraldBGPSessionDown") {
		t.Errorf("alerts %v", p.Alerts)
	}
	for _, m := range p.Metrics {
		if !slices.Contains([]string{"counter", "gauge", "histogram"}, m.Type) {
			t.Errorf("%s: type %q", m.Name, m.Type)
		}
	}
}
