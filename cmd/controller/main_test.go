package main

// The controller binary's probes and --log-level, against a real kube-apiserver.

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	controllere2e "github.com/heraldlb/herald/e2e/controller"
	"github.com/heraldlb/herald/internal/realapi"
)

// probe GETs path on the metrics address: status code and body (0 while nothing listens).
func probe(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls path until it answers want, or fails the test after timeout.
func waitFor(t *testing.T, addr, path string, want int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := probe(addr, path)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s: %d %q, want %d", path, addr, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinary shares one apiserver between the probe and log-level checks. The Lease lives in
// "default": this apiserver has no herald-system namespace (without it no replica can lead or
// stand by, and none is ready).
func TestBinary(t *testing.T) {
	api := realapi.Start(t)
	bin := controllere2e.BuildController(t)
	t.Run("probes", func(t *testing.T) { testProbes(t, bin, api.Kubeconfig) })
	t.Run("log level", func(t *testing.T) { testLogLevel(t, bin, api.Kubeconfig) })
}

func testProbes(t *testing.T, bin, kubeconfig string) {

	t.Run("apiserver unreachable: alive, not ready", func(t *testing.T) {
		// A kubeconfig whose server refuses connections.
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, le := range []string{"--leader-elect=true", "--leader-elect=false"} {
			p := controllere2e.StartController(t, bin, kc, le)
			if body := waitFor(t, p.MetricsAddr, "/healthz", http.StatusOK, 30*time.Second); body != "ok" {
				t.Errorf("%s: /healthz body %q", le, body)
			}
			time.Sleep(2 * time.Second) // long enough to have synced or seen a Lease, were the apiserver there
			if code, body := probe(p.MetricsAddr, "/readyz"); code != http.StatusInternalServerError || !strings.Contains(body, "[-]informers failed") {
				t.Errorf("%s: /readyz without an apiserver answered %d %q, want 500 naming the informers check", le, code, body)
			}
			p.Kill()
		}
	})

	t.Run("leader and standby both ready", func(t *testing.T) {
		a := controllere2e.StartController(t, bin, kubeconfig, "--namespace=default")
		waitFor(t, a.MetricsAddr, "/readyz", http.StatusOK, time.Minute)
		b := controllere2e.StartController(t, bin, kubeconfig, "--namespace=default")
		waitFor(t, b.MetricsAddr, "/readyz", http.StatusOK, time.Minute)
		if body := waitFor(t, a.MetricsAddr, "/readyz?verbose", http.StatusOK, time.Second); !strings.Contains(body, "[+]informers ok") {
			t.Errorf("/readyz?verbose: %q", body)
		}
		logs, _ := os.ReadFile(b.LogPath)
		if !strings.Contains(string(logs), "waiting: another replica leads") {
			t.Errorf("the second replica is not the standby; its log:\n%s", logs)
		}
	})
	t.Run("without leader election: ready once synced", func(t *testing.T) {
		p := controllere2e.StartController(t, bin, kubeconfig, "--leader-elect=false")
		waitFor(t, p.MetricsAddr, "/readyz", http.StatusOK, time.Minute)
	})
}

// testLogLevel checks that --log-level sets the level: the Info line about the Lease appears at
// info and debug, not at warn; an unknown level is refused.
func testLogLevel(t *testing.T, bin, kubeconfig string) {
	for _, tc := range []struct {
		level    string
		wantInfo bool
	}{{"debug", true}, {"info", true}, {"warn", false}} {
		p := controllere2e.StartController(t, bin, kubeconfig, "--namespace=default", "--log-level="+tc.level)
		waitFor(t, p.MetricsAddr, "/readyz", http.StatusOK, time.Minute)
		p.Kill()
		logs, _ := os.ReadFile(p.LogPath)
		if got := strings.Contains(string(logs), "level=INFO"); got != tc.wantInfo {
			t.Errorf("--log-level=%s: Info lines logged %v, want %v; log:\n%s", tc.level, got, tc.wantInfo, logs)
		}
	}
	out, err := exec.Command(bin, "--log-level=verbose").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "log-level") {
		t.Errorf("--log-level=verbose accepted: %v\n%s", err, out)
	}
}
