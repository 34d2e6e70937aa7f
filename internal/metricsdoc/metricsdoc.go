// Package metricsdoc reads docs/metrics.md, the operator's list of Herald's metrics and alerts,
// for the tests that hold the binaries, the chart's rules and dashboard, and that page together.
package metricsdoc

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Metric is one row of the page's metric tables.
type Metric struct {
	Name string // herald_…
	Type string // counter, gauge, histogram
}

// Page is what the page documents.
type Page struct {
	Metrics []Metric
	Alerts  []string // the alert table's names
}

// Path is docs/metrics.md in the source tree.
func Path() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs", "metrics.md")
}

// Read parses the page: metric rows start with "| `herald_", alert rows with "| **".
func Read() (Page, error) {
	b, err := os.ReadFile(Path())
	if err != nil {
		return Page{}, err
	}
	var p Page
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		first := strings.TrimSpace(cells[1])
		switch {
		case strings.HasPrefix(first, "`herald_"):
			p.Metrics = append(p.Metrics, Metric{Name: strings.Trim(first, "`"), Type: strings.TrimSpace(cells[2])})
		case strings.HasPrefix(first, "**"):
			p.Alerts = append(p.Alerts, strings.Trim(first, "*"))
		}
	}
	return p, nil
}

// Metric returns the documented metric of that name.
func (p Page) Metric(name string) (Metric, bool) {
	for _, m := range p.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}
