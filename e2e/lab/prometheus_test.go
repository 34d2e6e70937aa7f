package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/internal/testenv"
)

// The lab's Prometheus configuration scrapes the controller and each speaker at the chart's
// metrics ports, each target labelled with its host, and passes `promtool check config`.
func TestPrometheusConfig(t *testing.T) {
	topo, err := NewTopology("herald-pm-", 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	pod := func(container string, port int32) corev1.PodSpec {
		return corev1.PodSpec{Containers: []corev1.Container{{Name: container,
			Ports: []corev1.ContainerPort{{Name: "health", ContainerPort: 1}, {Name: "metrics", ContainerPort: port}}}}}
	}
	l := &Lab{State: State{Topology: topo}}
	l.Chart.Controller, l.Chart.Speaker = pod("controller", 7650), pod("speaker", 7651)
	conf, err := l.prometheusConfig()
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string          `json:"targets"`
				Labels  map[string]string `json:"labels"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(conf, &parsed); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sc := range parsed.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			got = append(got, sc.JobName+" "+strings.Join(st.Targets, ",")+" node="+st.Labels["node"])
		}
	}
	want := []string{
		"herald-controller 10.77.0.2:7650 node=cp",
		"herald-speaker 10.77.0.11:7651 node=node1",
		"herald-speaker 10.77.0.12:7651 node=node2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("targets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	l.Chart.Speaker = pod("speaker", 0)
	l.Chart.Speaker.Containers[0].Ports = l.Chart.Speaker.Containers[0].Ports[:1]
	if _, err := l.prometheusConfig(); err == nil {
		t.Fatal("a speaker container without a metrics port gave a configuration")
	}

	testenv.Tools(t, "promtool")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("groups: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}
