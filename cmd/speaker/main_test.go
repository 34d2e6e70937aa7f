package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/internal/realapi"
	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/speaker/l2"
)

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// build builds this command once per test binary.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "herald-speaker-test-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "speaker")
		if out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestFailoverTiming(t *testing.T) {
	def := l2.DefaultElectionTiming
	for _, tc := range []struct {
		detect, heartbeat, dead, settle time.Duration
		err                             bool
	}{
		{detect: 0, settle: def.Settle}, // membership's defaults
		{detect: time.Second, heartbeat: 200 * time.Millisecond, dead: time.Second, settle: 1200 * time.Millisecond},
		{detect: 250 * time.Millisecond, heartbeat: 50 * time.Millisecond, dead: 250 * time.Millisecond, settle: max(def.Settle, 300*time.Millisecond)},
		{detect: 50 * time.Millisecond, err: true},
		{detect: -time.Second, err: true},
	} {
		got, err := failoverTiming(tc.detect)
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v, want error %v", tc.detect, err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if got.heartbeat != tc.heartbeat || got.deadAfter != tc.dead || got.election.Settle != tc.settle ||
			got.election.RebalanceAfter != def.RebalanceAfter {
			t.Errorf("%s: heartbeat %s dead %s settle %s, want %s %s %s", tc.detect, got.heartbeat, got.deadAfter, got.election.Settle,
				tc.heartbeat, tc.dead, tc.settle)
		}
	}
}

// TestProbesAndTheChartsRBAC runs the real speaker in a network namespace of its own (never in
// the machine's) against a real apiserver, reached through a forwarder on the namespace's
// loopback, as the chart's speaker ServiceAccount before the chart is installed (so it may not
// list anything): alive, not ready, the failing check named. Once the chart is installed (its
// RBAC, nothing more), the caches sync, the speaker becomes ready, writes its SpeakerStatus with
// a BGP session for a peer whose passwordSecret it reads, and is refused nothing: a permission
// missing from speaker-rbac.yaml shows here, not in a user's cluster.
func TestProbesAndTheChartsRBAC(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root (a network namespace for the speaker)")
	}
	if _, err := charts.Helm(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	api := realapi.Start(t)
	dir := t.TempDir()
	bin := build(t)
	ns := fmt.Sprintf("herald-spkt-%d", os.Getpid())
	_ = exec.Command("ip", "netns", "del", ns).Run() // a leftover of an earlier run
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	apiURL, err := url.Parse(api.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	forward(t, ns, "127.0.0.1:6443", apiURL.Host)

	// The speaker's kubeconfig: the admin's credentials impersonating the chart's ServiceAccount.
	const user = "system:serviceaccount:herald-system:herald-speaker"
	kcfg, err := clientcmd.LoadFromFile(api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range kcfg.Clusters {
		c.Server = "https://127.0.0.1:6443"
	}
	for _, a := range kcfg.AuthInfos {
		a.Impersonate = user
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kcfg, kc); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "speaker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var cmd *exec.Cmd
	start := func() {
		t.Helper()
		cmd = exec.Command("ip", "netns", "exec", ns, bin, "--node-name=node1", "--kubeconfig="+kc, "--secret-file="+key,
			"--dataplane=off", "--metrics-addr=127.0.0.1:9651")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	start()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("speaker log:\n%s", log)
		}
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: lab.DialerIn(ns)}}
	get := func(path string) (int, string) {
		resp, err := client.Get("http://127.0.0.1:9651" + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(path string, want int, timeout time.Duration) string {
		t.Helper()
		for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
			code, body := get(path)
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %q, want %d", path, code, body, want)
			}
		}
	}
	if body := waitFor("/healthz", http.StatusOK, 60*time.Second); body != "ok" {
		t.Errorf("/healthz: %q", body)
	}
	time.Sleep(2 * time.Second) // long enough to sync, were it allowed to list
	code, body := get("/readyz")
	if code != http.StatusInternalServerError || !strings.Contains(body, "[-]caches failed") || !strings.Contains(body, "[+]dataplane ok") ||
		!strings.Contains(body, "[+]membership ok") {
		t.Errorf("/readyz while forbidden to list: %d %q, want 500 with caches failing, the (off) data plane and membership ok", code, body)
	}
	// Stopped (SIGTERM, as the kubelet stops a pod) while its caches cannot sync: a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if log, _ := os.ReadFile(logPath); err != nil || strings.Contains(string(log), "speaker failed") {
			t.Errorf("speaker stopped by SIGTERM while its caches were syncing: %v, want exit status 0 and no failure logged:\n%s", err, log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("speaker still running 30 s after SIGTERM")
	}
	start()
	waitFor("/healthz", http.StatusOK, 60*time.Second)

	if out, err := charts.RunHelm("install", "herald", filepath.Join(realapi.RepoRoot(), "charts", "herald"), "--kubeconfig", api.Kubeconfig,
		"--namespace", "herald-system", "--create-namespace", "--set", "dataplane.mode=off"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	// The informers retry with back-off (up to 30 s between attempts).
	if body := waitFor("/readyz?verbose", http.StatusOK, 90*time.Second); !strings.Contains(body, "[+]caches ok") {
		t.Errorf("/readyz?verbose once allowed: %q", body)
	}
	// /metrics serves the speaker's own registry: what its packages registered there, and the Go
	// runtime's figures.
	metrics := waitFor("/metrics", http.StatusOK, 5*time.Second)
	for _, want := range []string{"herald_membership_quorum 1", `herald_dataplane_backend{backend="off"} 1`, "go_goroutines "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A BGP peer with a password Secret (the speaker reads it; the peer's address is unreachable
	// from the namespace, which has only a loopback) and the node the speaker runs as.
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(api.Config)
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("herald-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tor-md5"},
		Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	peer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1beta1.GroupVersion.String(), "kind": "BGPPeer", "metadata": map[string]any{"name": "tor"},
		"spec": map[string]any{"myASN": int64(64512), "peerASN": int64(64500), "peerAddress": "192.0.2.254",
			"passwordSecret": map[string]any{"name": "tor-md5"}}}}
	if _, err := dynamic.NewForConfigOrDie(api.Config).Resource(v1beta1.GroupVersion.WithResource("bgppeers")).
		Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var st v1beta1.SpeakerStatus
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		u, err := dynamic.NewForConfigOrDie(api.Config).Resource(v1beta1.GroupVersion.WithResource("speakerstatuses")).
			Get(ctx, "node1", metav1.GetOptions{})
		if err == nil && runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &st) == nil &&
			len(st.Status.BGPSessions) == 1 && st.Status.BGPSessions[0].Peer == "tor" {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("no SpeakerStatus with the session to tor after 60 s (%v, %+v); refused:\n%s", err, st.Status, refused(string(log)))
		}
	}
	if log, _ := os.ReadFile(logPath); refused(string(log)) != "" {
		t.Errorf("as the chart's ServiceAccount the speaker was refused something:\n%s", refused(string(log)))
	}
}

// refused returns the log lines of requests the API server refused ("forbidden") once the
// speaker's caches had synced: before that it ran without permissions on purpose.
func refused(log string) string {
	_, after, _ := strings.Cut(log, `msg="caches synced" component=speaker`)
	var out []string
	for _, l := range strings.Split(after, "\n") {
		if strings.Contains(l, "forbidden") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// forward accepts TCP connections on listen inside ns and connects each to target in the
// machine's namespace (loopback only).
func forward(t *testing.T, ns, listen, target string) {
	t.Helper()
	ln, err := lab.ListenIn(ns, "tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				t.Logf("forwarding to %s: %v", target, err)
				in.Close()
				continue
			}
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}

// TestBadFlagsRefused: values the chart's schema also refuses never start a speaker.
func TestBadFlagsRefused(t *testing.T) {
	bin := build(t)
	for _, args := range [][]string{{"--log-level=verbose"}, {"--failover-detect-after=50ms", "--node-name=n", "--secret-file=/nonexistent"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		flagName := strings.SplitN(strings.TrimPrefix(args[0], "--"), "=", 2)[0]
		if err == nil || !strings.Contains(string(out), flagName) {
			t.Errorf("%v: %v, output %q: want a refusal naming --%s", args, err, out, flagName)
		}
	}
}

// TestMembershipFailureEndsTheSpeaker: when membership's Run fails (its socket), the error is
// logged, the readiness check fails with it and the speaker's context ends with it as the cause,
// so the speaker exits and the kubelet restarts it; heartbeats never stop silently. (membership's
// own TestRunReportsAFailedSocket shows Run returning that error from a real socket.)
func TestMembershipFailureEndsTheSpeaker(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil)) // read once the goroutine has ended
	speakerCtx, endSpeaker := context.WithCancelCause(context.Background())
	defer endSpeaker(nil)
	memberCtx, stopMembership := context.WithCancel(context.Background())
	defer stopMembership()
	fail := make(chan struct{})
	hb := runHeartbeats(memberCtx, func(ctx context.Context) error {
		select {
		case <-fail:
			return errors.New("waiting for heartbeats: the socket was closed")
		case <-ctx.Done():
			return nil
		}
	}, log, endSpeaker)
	if err := hb.ready(nil); err != nil {
		t.Fatalf("ready while membership runs: %v", err)
	}
	close(fail)
	hb.wait()
	if err := hb.ready(nil); err == nil || !strings.Contains(err.Error(), "the socket was closed") {
		t.Errorf("ready after membership failed: %v, want its error", err)
	}
	select {
	case <-speakerCtx.Done():
		if cause := context.Cause(speakerCtx); cause == nil || !strings.Contains(cause.Error(), "the socket was closed") {
			t.Errorf("the speaker's context ended with %v, want membership's error", cause)
		}
	default:
		t.Error("membership failed and the speaker's context goes on")
	}
	if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), "the socket was closed") {
		t.Errorf("log %q: want membership's error at level ERROR", logged.String())
	}
}

// TestMembershipStoppedIsNoFailure: membership ended by its context (shutdown) neither fails
// readiness nor ends the speaker.
func TestMembershipStoppedIsNoFailure(t *testing.T) {
	speakerCtx, endSpeaker := context.WithCancelCause(context.Background())
	defer endSpeaker(nil)
	memberCtx, stopMembership := context.WithCancel(context.Background())
	hb := runHeartbeats(memberCtx, func(ctx context.Context) error { <-ctx.Done(); return nil },
		slog.New(slog.NewTextHandler(io.Discard, nil)), endSpeaker)
	stopMembership()
	hb.wait()
	if err := hb.ready(nil); err != nil {
		t.Errorf("ready after a clean stop: %v", err)
	}
	if speakerCtx.Err() != nil {
		t.Error("a clean membership stop ended the speaker")
	}
}
