package healthcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
)

// checkAnswers checks herald_dataplane_healthcheck_responses_total for one server.
func checkAnswers(t *testing.T, reg prometheus.Gatherer, server string, ok, unavailable int) {
	t.Helper()
	want := fmt.Sprintf(`# HELP herald_dataplane_healthcheck_responses_total Health-check answers, by server (proxy: /healthz and /livez; service: a healthCheckNodePort) and HTTP code.
# TYPE herald_dataplane_healthcheck_responses_total counter
herald_dataplane_healthcheck_responses_total{code="200",server=%[1]q} %[2]d
herald_dataplane_healthcheck_responses_total{code="503",server=%[1]q} %[3]d
`, server, ok, unavailable)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "herald_dataplane_healthcheck_responses_total"); err != nil {
		t.Fatal(err)
	}
}

// kubeProxyBody is kube-proxy v1.34's healthCheckNodePort body for ns/web with one endpoint
// (pkg/proxy/healthcheck/service_health.go: a dedented literal, trimmed of newlines).
const kubeProxyBody = "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"

func TestServiceServerAnswersLikeKubeProxy(t *testing.T) {
	view := dataplane.NewLocalEndpoints()
	view.OnEndpointSliceUpdate(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.1"}, NodeName: ptr.To("n1")},
			{Addresses: []string{"10.1.0.2"}, NodeName: ptr.To("n2")},
		},
	})
	healthy := true
	ports := map[int32]string{}
	listen := func(_, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			_, p, _ := net.SplitHostPort(addr)
			port, _ := strconv.Atoi(p)
			ports[int32(port)] = ln.Addr().String()
		}
		return ln, err
	}
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	// get answers the status code, the header and the body (the response itself is closed).
	get := func(s *ServiceServers, port int32) (int, http.Header, string) {
		t.Helper()
		resp, err := http.Get("http://" + ports[port] + "/anything")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	reg := prometheus.NewPedanticRegistry()
	metrics, err := dataplane.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	n1 := NewServiceServers("n1", view, func() (bool, time.Time) { return healthy, time.Now() }, listen, nil)
	n1.Metrics = metrics
	defer n1.Close()
	n1.Sync(map[types.NamespacedName]int32{svc: 32000}, AllAddresses)
	code, header, body := get(n1, 32000)
	if code != 200 || body != kubeProxyBody {
		t.Fatalf("n1: %d %q, want 200 %q", code, body, kubeProxyBody)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", "X-Load-Balancing-Endpoint-Weight": "1"} {
		if got := header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}

	// A node without a local endpoint answers 503 with 0.
	n3 := NewServiceServers("n3", view, func() (bool, time.Time) { return true, time.Now() }, listen, nil)
	n3.Metrics = metrics
	defer n3.Close()
	n3.Sync(map[types.NamespacedName]int32{svc: 32001}, AllAddresses)
	code, header, body = get(n3, 32001)
	if code != 503 || header.Get("X-Load-Balancing-Endpoint-Weight") != "0" {
		t.Fatalf("n3: %d %s", code, body)
	}
	var doc struct {
		LocalEndpoints      int  `json:"localEndpoints"`
		ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.LocalEndpoints != 0 || !doc.ServiceProxyHealthy {
		t.Fatalf("n3 body %q (%v)", body, err)
	}

	// An unhealthy proxy answers 503 even with local endpoints.
	healthy = false
	if code, _, _ := get(n1, 32000); code != 503 {
		t.Fatalf("unhealthy proxy answered %d", code)
	}

	checkAnswers(t, reg, "service", 1, 2)

	// Removing the Service closes its listener.
	n1.Sync(nil, nil)
	if resp, err := http.Get("http://" + ports[32000] + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("listener still open after the Service went away")
	}
}

func TestProxyServer(t *testing.T) {
	healthy := true
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := NewProxyServer(func() (bool, time.Time) { return healthy, last }, func() *v1.Node { return node })
	reg := prometheus.NewPedanticRegistry()
	var err error
	if p.Metrics, err = dataplane.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	check := func(path string, wantCode int, wantEligible *bool) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			LastUpdated  time.Time `json:"lastUpdated"`
			CurrentTime  time.Time `json:"currentTime"`
			NodeEligible *bool     `json:"nodeEligible"`
			Healthy      bool      `json:"healthy"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != wantCode || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, resp.Header)
		}
		if (wantEligible == nil) != (doc.NodeEligible == nil) || (wantEligible != nil && *wantEligible != *doc.NodeEligible) {
			t.Fatalf("%s: nodeEligible %v, want %v", path, doc.NodeEligible, wantEligible)
		}
		if doc.Healthy != healthy || doc.CurrentTime.IsZero() {
			t.Fatalf("%s: %+v", path, doc)
		}
	}
	check("/healthz", 200, ptr.To(true))
	check("/livez", 200, nil)
	node.Spec.Taints = []v1.Taint{{Key: toBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}
	check("/healthz", 503, ptr.To(false)) // being removed: drain
	check("/livez", 200, nil)             // but alive
	node.Spec.Taints = nil
	healthy = false
	check("/healthz", 503, ptr.To(true))
	check("/livez", 503, nil)
	checkAnswers(t, reg, "proxy", 3, 3)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Serve(ctx, "127.0.0.1:0"); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
}
