package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/charts"
)

// RolePrometheus is the lab's Prometheus in State.Processes.
const RolePrometheus = "prometheus"

// PrometheusAddress is where the lab's Prometheus listens: the control plane namespace's loopback,
// so nothing outside that namespace reaches it (PrometheusQuery dials from inside).
const PrometheusAddress = "127.0.0.1:9090"

// prometheusDir holds the configuration, the rules and the database under the lab's directory.
const prometheusDir = "prometheus"

// StartPrometheus starts a real Prometheus (Debian's prometheus package) in the control plane's
// namespace, replacing a running one: it scrapes every second the controller and each node's
// speaker at the metrics ports the chart gives their containers, each target labelled with its
// node as the chart's ServiceMonitor labels it, and evaluates every second the chart's alert
// rules, rendered with ruleValues (helm --set, e.g. metrics.prometheusRule.forOverride=3s).
// Down stops it and removes its files.
func (l *Lab) StartPrometheus(ctx context.Context, ruleValues ...string) error {
	if p, ok := l.Processes[RolePrometheus]; ok {
		_ = p.Stop(5 * time.Second)
	}
	dir := filepath.Join(l.Dir, prometheusDir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rules, err := charts.PrometheusRules(ruleValues...)
	if err != nil {
		return fmt.Errorf("the chart's alert rules: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		return err
	}
	conf, err := l.prometheusConfig()
	if err != nil {
		return err
	}
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		return err
	}
	if err := l.start(RolePrometheus, l.Topology.Host(HostControlPlane), nil, "prometheus",
		"--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+PrometheusAddress, "--log.level=warn"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := l.prometheusGet(ctx, "/-/ready", nil)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !l.Processes[RolePrometheus].Alive() {
			return fmt.Errorf("prometheus did not get ready: %w\n%s", err, l.Processes[RolePrometheus].Tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// prometheusConfig scrapes the controller (job herald-controller) and the speakers (job
// herald-speaker) where the chart's containers serve /metrics.
func (l *Lab) prometheusConfig() ([]byte, error) {
	controllerPort, err := metricsPort(&l.Chart.Controller, "controller")
	if err != nil {
		return nil, err
	}
	speakerPort, err := metricsPort(&l.Chart.Speaker, "speaker")
	if err != nil {
		return nil, err
	}
	type target struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	cp := l.Topology.Host(HostControlPlane)
	controller := []target{{Targets: []string{fmt.Sprintf("%s:%d", cp.IPv4, controllerPort)}, Labels: map[string]string{"node": cp.Name}}}
	var speakers []target
	for _, n := range l.Nodes() {
		speakers = append(speakers, target{Targets: []string{fmt.Sprintf("%s:%d", n.IPv4, speakerPort)}, Labels: map[string]string{"node": n.Name}})
	}
	return yaml.Marshal(map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
		"rule_files": []string{"rules.yaml"},
		"scrape_configs": []any{
			map[string]any{"job_name": "herald-controller", "static_configs": controller},
			map[string]any{"job_name": "herald-speaker", "static_configs": speakers},
		},
	})
}

// metricsPort is the port of the container's port named "metrics".
func metricsPort(spec *corev1.PodSpec, container string) (int32, error) {
	for _, c := range spec.Containers {
		if c.Name != container {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				return p.ContainerPort, nil
			}
		}
	}
	return 0, fmt.Errorf("the chart's %s container has no port named metrics", container)
}

// prometheusGet sends a GET to the lab's Prometheus from inside the control plane's namespace.
func (l *Lab) prometheusGet(ctx context.Context, path string, query url.Values) ([]byte, error) {
	c, err := l.HTTPClient(HostControlPlane, 10*time.Second)
	if err != nil {
		return nil, err
	}
	u := url.URL{Scheme: "http", Host: PrometheusAddress, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("prometheus %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// prometheusAPI calls an endpoint of Prometheus's HTTP API and decodes its data into out.
func (l *Lab) prometheusAPI(ctx context.Context, path string, query url.Values, out any) error {
	body, err := l.prometheusGet(ctx, path, query)
	if err != nil {
		return err
	}
	var envelope struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	if envelope.Status != "success" {
		return fmt.Errorf("prometheus %s: %s", path, envelope.Error)
	}
	return json.Unmarshal(envelope.Data, out)
}

// PromSample is one series of an instant query's result.
type PromSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

// PromQuery evaluates a PromQL expression now in the lab's Prometheus and returns its series (an
// expression whose result is not a vector, a scalar say, is an error).
func (l *Lab) PromQuery(ctx context.Context, expr string) ([]PromSample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := l.prometheusAPI(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("%q is a %s, not a vector", expr, data.ResultType)
	}
	var out []PromSample
	return out, json.Unmarshal(data.Result, &out)
}

// PromAlert is an alert the lab's Prometheus holds (pending or firing).
type PromAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"` // pending, firing
}

// PromAlerts returns the alerts the lab's Prometheus holds now.
func (l *Lab) PromAlerts(ctx context.Context) ([]PromAlert, error) {
	var data struct {
		Alerts []PromAlert `json:"alerts"`
	}
	err := l.prometheusAPI(ctx, "/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// PromTarget is a scrape target of the lab's Prometheus.
type PromTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"` // up, down, unknown
	LastError string            `json:"lastError"`
}

// PromTargets returns the active scrape targets.
func (l *Lab) PromTargets(ctx context.Context) ([]PromTarget, error) {
	var data struct {
		Active []PromTarget `json:"activeTargets"`
	}
	err := l.prometheusAPI(ctx, "/api/v1/targets", nil, &data)
	return data.Active, err
}

// PromMetadata returns the type of every metric the lab's Prometheus has scraped, by name.
func (l *Lab) PromMetadata(ctx context.Context) (map[string]string, error) {
	var data map[string][]struct {
		Type string `json:"type"`
	}
	if err := l.prometheusAPI(ctx, "/api/v1/metadata", nil, &data); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for name, md := range data {
		if len(md) == 0 {
			return nil, errors.New("prometheus metadata: " + name + " has none")
		}
		out[name] = md[0].Type
	}
	return out, nil
}
