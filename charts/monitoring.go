package charts

import (
	"encoding/json"
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// PrometheusRules renders the chart's PrometheusRule (metrics.prometheusRule.enabled=true, plus
// the given --set values) and returns its groups as a Prometheus rule file: what the Prometheus
// Operator hands its Prometheus, so a plain Prometheus (the lab's) and promtool load the same rules.
func PrometheusRules(sets ...string) ([]byte, error) {
	objs, err := Render(append([]string{"metrics.prometheusRule.enabled=true"}, sets...)...)
	if err != nil {
		return nil, err
	}
	rule := Find(objs, "PrometheusRule", "herald")
	if rule == nil {
		return nil, fmt.Errorf("the chart rendered no PrometheusRule (values %v)", sets)
	}
	groups, ok, err := unstructured.NestedSlice(rule.Object, "spec", "groups")
	if err != nil || !ok {
		return nil, fmt.Errorf("PrometheusRule herald has no spec.groups (%w)", err)
	}
	return yaml.Marshal(map[string]any{"groups": groups})
}

// Panel is one panel of the chart's Grafana dashboard (dashboards/herald.json).
type Panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// DashboardPanels returns the panels of the chart's Grafana dashboard.
func DashboardPanels() ([]Panel, error) {
	b, err := chart.ReadFile("herald/dashboards/herald.json")
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []Panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dashboards/herald.json: %w", err)
	}
	return d.Panels, nil
}

// heraldMetric matches the names of Herald's metrics in a PromQL expression.
var heraldMetric = regexp.MustCompile(`\bherald_[a-z0-9_]+`)

// MetricNames returns the Herald metric names a PromQL expression reads, with a histogram's
// _bucket, _sum and _count series named by the histogram.
func MetricNames(expr string) []string {
	var names []string
	for _, n := range heraldMetric.FindAllString(expr, -1) {
		names = append(names, histogramSeries.ReplaceAllString(n, "$1"))
	}
	return names
}

// histogramSeries matches the series of Herald's histograms (all in seconds).
var histogramSeries = regexp.MustCompile(`(_seconds)_(?:bucket|sum|count)$`)
