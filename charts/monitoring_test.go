package charts

// The chart's monitoring with the real promtool (Debian's prometheus package): the rendered rules
// pass `promtool check rules`, every alert fires and stays quiet on the series of
// testdata/alerts_test.yaml (`promtool test rules`), the for: override reaches every alert, and
// every metric the alerts and the dashboard read is documented in docs/metrics.md. The lab suite
// e2e/monitoring proves the same rules and panels against a running cluster.

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/internal/metricsdoc"
	"github.com/heraldlb/herald/internal/testenv"
)

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert string `json:"alert"`
			Expr  string `json:"expr"`
			For   string `json:"for"`
		} `json:"rules"`
	} `json:"groups"`
}

func renderRules(t *testing.T, sets ...string) ([]byte, ruleFile) {
	t.Helper()
	requireHelm(t)
	b, err := PrometheusRules(sets...)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("rendered rules: %v\n%s", err, b)
	}
	return b, rf
}

func promtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("promtool", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestAlertRulesWithPromtool(t *testing.T) {
	testenv.Tools(t, "promtool")
	rules, rf := renderRules(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "rules.yaml")
	promtool(t, dir, "test", "rules", "alerts_test.yaml")

	// Every alert has a case where it fires and one where it must not.
	var cases struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &cases); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range cases.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: testdata/alerts_test.yaml needs a case where it fires (%v) and one where it does not (%v)",
					r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if alerts < 5 {
		t.Fatalf("the chart renders %d alerts, want at least 5", alerts)
	}
}

// metrics.prometheusRule.forOverride replaces every alert's for: (the lab suite's seconds), and
// the defaults stay what an operator needs.
func TestAlertForOverride(t *testing.T) {
	_, defaults := renderRules(t)
	_, short := renderRules(t, "metrics.prometheusRule.forOverride=5s")
	for gi, g := range short.Groups {
		for ri, r := range g.Rules {
			if r.For != "5s" {
				t.Errorf("alert %s: for %q with forOverride=5s", r.Alert, r.For)
			}
			if d := defaults.Groups[gi].Rules[ri].For; d == "" || d == "5s" {
				t.Errorf("alert %s: default for %q", r.Alert, d)
			}
		}
	}
	if _, err := Render("metrics.prometheusRule.enabled=true", "metrics.prometheusRule.forOverride=soon"); err == nil {
		t.Fatal("forOverride=soon rendered; the schema must refuse what is not a duration")
	}
}

// Every Herald metric an alert or a dashboard panel reads is documented in docs/metrics.md, every
// alert has its runbook line there, and every panel has a query.
func TestMonitoredMetricsDocumented(t *testing.T) {
	_, rf := renderRules(t)
	page, err := metricsdoc.Read()
	if err != nil {
		t.Fatal(err)
	}
	check := func(what, expr string) {
		names := MetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q reads no Herald metric", what, expr)
		}
		for _, n := range names {
			if _, ok := page.Metric(n); !ok {
				t.Errorf("%s reads %s, which docs/metrics.md does not document", what, n)
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			check("alert "+r.Alert, r.Expr)
			if !slices.Contains(page.Alerts, r.Alert) {
				t.Errorf("alert %s has no runbook line in docs/metrics.md", r.Alert)
			}
		}
	}
	panels, err := DashboardPanels()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
		}
	}
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (node, le) (rate(herald_dataplane_sync_duration_seconds_bucket[5m])))`: {"herald_dataplane_sync_duration_seconds"},
		`max by (pool, family) (herald_controller_addresses - herald_controller_addresses_in_use)`:              {"herald_controller_addresses", "herald_controller_addresses_in_use"},
		`herald_controller_workqueue_work_duration_seconds_count`:                                               {"herald_controller_workqueue_work_duration_seconds"},
		`up == 0`: nil,
	} {
		if got := MetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("MetricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}
