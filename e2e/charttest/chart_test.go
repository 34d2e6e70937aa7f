// Package charttest runs Herald in a lab of its own exactly as the Helm chart renders it (the lab
// translates the chart's containers: e2e/lab/chart.go) with non-default values, and checks that
// the values take effect for real: the processes' arguments, environment and capabilities, the
// probes, the failover timing on the wire, L2 and BGP switched off, and the uninstall hook's
// cleanup leaving a node clean.
//
// Needs what the lab needs (root, bird2, arping, ndisc6, the Kubernetes binaries, helm); without
// it the tests skip, or fail when HERALD_REQUIRE_REAL=1.
package charttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/config"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
	"github.com/heraldlb/herald/e2e/proc"
)

// values are the chart values the lab runs Herald with: the nftables data plane (capabilities
// instead of privileged), a slower failover (heartbeats every 200 ms), debug logs.
var values = []string{"dataplane.mode=nftables", "failover.detectAfter=1s", "logLevel=debug"}

func TestMain(m *testing.M) {
	labsuite.Main(m, "herald-cht-", func(c *lab.Config) { c.ChartValues = values })
}

// procFile reads /proc/<pid>/<name> of a lab process.
func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// statusField returns a field of /proc/<pid>/status ("CapEff", "Uid", "NoNewPrivs").
func statusField(t *testing.T, pid int, field string) string {
	t.Helper()
	for _, line := range strings.Split(procFile(t, pid, "status"), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// running waits until a lab process has become the named binary: the lab starts it through
// ip netns exec and setpriv, each exec'ing the next, which on a busy machine can take seconds
// (ip netns exec waits for mount namespace operations).
func running(t *testing.T, p proc.Process, binary string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// exe names the new binary early in execve, before its arguments are in place: wait for
		// both, or cmdline reads empty.
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if err == nil && filepath.Base(exe) == binary && len(cmdline) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) is %q, not %s, after 30 s (%v)", p.Name, p.PID, exe, binary, err)
		}
	}
}

func TestProcessesRunAsTheChartSays(t *testing.T) {
	l := labsuite.Lab(t)
	wantCaps := uint64(1)<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW | 1<<unix.CAP_SYS_NICE | 1<<unix.CAP_NET_BIND_SERVICE
	for _, n := range l.Nodes() {
		p, ok := l.Speaker(n.Name)
		if !ok || !p.Alive() {
			t.Fatalf("no speaker running on %s", n.Name)
		}
		running(t, p, "speaker")
		args := strings.Split(strings.TrimRight(procFile(t, p.PID, "cmdline"), "\x00"), "\x00")
		for _, want := range []string{"--node-name=" + n.Name, "--dataplane=nftables", "--failover-detect-after=1s",
			"--log-level=debug", "--metrics-addr=:9651", "--secret-file=" + l.SecretFile} {
			if !slices.Contains(args, want) {
				t.Errorf("%s speaker args %q lack %s", n.Name, args, want)
			}
		}
		env := strings.Split(procFile(t, p.PID, "environ"), "\x00")
		for _, want := range []string{"NODE_NAME=" + n.Name, "POD_NAMESPACE=" + lab.HeraldNamespace} {
			if !slices.Contains(env, want) {
				t.Errorf("%s speaker environment lacks %s", n.Name, want)
			}
		}
		capEff, err := strconv.ParseUint(statusField(t, p.PID, "CapEff"), 16, 64)
		if err != nil || capEff != wantCaps {
			t.Errorf("%s speaker effective capabilities %x, want %x (NET_ADMIN, NET_RAW, SYS_NICE, NET_BIND_SERVICE)", n.Name, capEff, wantCaps)
		}
		if nnp := statusField(t, p.PID, "NoNewPrivs"); nnp != "1" {
			t.Errorf("%s speaker NoNewPrivs %s, want 1 (allowPrivilegeEscalation: false)", n.Name, nnp)
		}
		// Those capabilities are all it needs: nothing it does was refused (netlink, nft, raw
		// sockets, TCP 179, raised and real-time priority).
		log, err := os.ReadFile(p.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, refused := range []string{"operation not permitted", "permission denied", "CAP_"} {
			if i := bytes.Index(bytes.ToLower(log), bytes.ToLower([]byte(refused))); i >= 0 {
				line := log[bytes.LastIndexByte(log[:i], '\n')+1:]
				t.Errorf("%s speaker was refused something: %s", n.Name, line[:bytes.IndexByte(append(line, '\n'), '\n')])
			}
		}
	}
	ctrl, ok := l.Processes[lab.RoleController]
	if !ok || !ctrl.Alive() {
		t.Fatal("no controller running")
	}
	running(t, ctrl, "controller")
	if uid := strings.Fields(statusField(t, ctrl.PID, "Uid")); uid[0] != "65532" {
		t.Errorf("controller runs as uid %v, want the chart's 65532", uid)
	}
	if capEff := statusField(t, ctrl.PID, "CapEff"); capEff != "0000000000000000" {
		t.Errorf("controller effective capabilities %s, want none", capEff)
	}
}

// get GETs a URL from the lab's client host.
func get(t *testing.T, l *lab.Lab, url string) (int, string) {
	t.Helper()
	c, err := l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbesAnswer(t *testing.T) {
	l := labsuite.Lab(t)
	targets := map[string]string{"controller": fmt.Sprintf("http://%s:9650", l.Topology.Host(lab.HostControlPlane).IPv4)}
	for _, n := range l.Nodes() {
		targets[n.Name] = fmt.Sprintf("http://%s:9651", n.IPv4)
	}
	for name, base := range targets {
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := get(t, l, base+"/readyz?verbose")
			if code == 200 {
				if name != "controller" && (!strings.Contains(body, "[+]caches ok") || !strings.Contains(body, "[+]dataplane ok")) {
					t.Errorf("%s /readyz?verbose: %q", name, body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s /readyz: %d %q", name, code, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code, body := get(t, l, base+"/healthz"); code != 200 || body != "ok" {
			t.Errorf("%s /healthz: %d %q", name, code, body)
		}
	}
}

// TestHeartbeatsFollowFailoverTiming times node2's heartbeats arriving at node1: with
// failover.detectAfter=1s they go every 200 ms (the default would be every 50 ms).
func TestHeartbeatsFollowFailoverTiming(t *testing.T) {
	l := labsuite.Lab(t)
	node2 := l.Nodes()[1]
	filter := fmt.Sprintf("udp dst port 9652 and (src host %s or src host %s)", node2.IPv4, node2.IPv6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// -tt: timestamps as seconds since the epoch; -c: stop after 11 heartbeats (10 gaps).
	out, err := l.Exec(ctx, l.Nodes()[0].Name, "tcpdump", "-i", "eth0", "-n", "-l", "-q", "-tt", "-c", "11", filter)
	if err != nil {
		t.Fatalf("tcpdump: %v\n%s", err, out)
	}
	var stamps []float64
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 2 && (f[1] == "IP" || f[1] == "IP6") {
			ts, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				t.Fatalf("tcpdump line %q: %v", line, err)
			}
			stamps = append(stamps, ts)
		}
	}
	if len(stamps) != 11 {
		t.Fatalf("%d heartbeats in tcpdump's output:\n%s", len(stamps), out)
	}
	var gaps []float64
	for i := 1; i < len(stamps); i++ {
		gaps = append(gaps, stamps[i]-stamps[i-1])
	}
	slices.Sort(gaps)
	// A payload change is sent at once, between two heartbeats: the median is the interval.
	if median := gaps[len(gaps)/2]; median < 0.15 || median > 0.26 {
		t.Errorf("median gap between node2's heartbeats %.0f ms, want 200 ms (the default is 50 ms)\n%s", median*1000, out)
	}
}

// restartSpeakers renders the chart with vals and restarts every speaker from it; ctx bounds the
// speakers' init steps (in a cleanup, not t.Context(): that has ended by then).
func restartSpeakers(ctx context.Context, t *testing.T, l *lab.Lab, vals ...string) {
	t.Helper()
	if err := l.RenderChart(vals...); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes() {
		if err := l.StartSpeaker(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// waitAnnounced waits until the client resolves ip to a node's MAC (or not: wantARP) and BIRD
// holds a route for it (or not: wantRoute), and fails the test when that is not so by timeout.
func waitAnnounced(t *testing.T, l *lab.Lab, ip netip.Addr, wantARP, wantRoute bool, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	var arp, route bool
	for end := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		macs, err := l.ResolveMACs(ctx, lab.HostClient, ip, 2)
		if err != nil {
			t.Fatal(err)
		}
		routes, err := l.BirdRoutes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		arp = len(macs) > 0
		route = slices.ContainsFunc(routes, func(r lab.BirdRoute) bool { return r.Prefix == netip.PrefixFrom(ip, 32) })
		if (arp == wantARP && route == wantRoute) || time.Now().After(end) {
			break
		}
	}
	if arp != wantARP || route != wantRoute {
		t.Fatalf("%s: answered by ARP %v (want %v), route in BIRD %v (want %v)", ip, arp, wantARP, route, wantRoute)
	}
}

// TestL2AndBGPSwitches announces one Service by L2 and BGP, then restarts the speakers with
// l2.enabled=false and bgp.enabled=false (nobody answers ARP, BIRD loses the route, nothing
// listens on TCP 179), then with the lab's values again (both come back).
func TestL2AndBGPSwitches(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	cs, dyn := labsuite.Clients(t, l)
	ip := netip.MustParseAddr("10.77.0.230")
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "switches", map[string]any{"addresses": []any{ip.String() + "/32"}, "autoAssign": false})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "switches", map[string]any{"ipAddressPools": []any{"switches"}})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "switches", map[string]any{"ipAddressPools": []any{"switches"}})
	labsuite.Create(t, dyn, "bgppeers", "BGPPeer", "router-v4", map[string]any{
		"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": l.Topology.Host(lab.HostRouter).IPv4.String(),
		"holdTime": "9s",
	})
	svc := lab.LoadBalancerService("chart-e2e", "switches")
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	if _, err := l.CreateBackendService(ctx, cs, svc, l.Pods()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Services("chart-e2e").Delete(context.Background(), "switches", metav1.DeleteOptions{})
	})

	waitAnnounced(t, l, ip, true, true, 30*time.Second)

	// The lab's speakers come back as the other tests expect them, also when this one fails.
	t.Cleanup(func() { restartSpeakers(context.Background(), t, l, values...) })
	restartSpeakers(ctx, t, l, append(slices.Clone(values), "l2.enabled=false", "bgp.enabled=false")...)
	for _, n := range l.Nodes() {
		p, _ := l.Speaker(n.Name)
		// The process goes ip netns exec -> setpriv -> speaker; read during an exec (a loaded
		// machine makes that window long) its cmdline is empty, which is no answer yet.
		var args string
		labsuite.WaitFor(t, 5*time.Second, n.Name+"'s speaker's cmdline", func() (bool, string) {
			if !p.Alive() {
				t.Fatalf("%s speaker exited:\n%s", n.Name, p.Tail(3000))
			}
			args = procFile(t, p.PID, "cmdline")
			return args != "", "empty"
		})
		if !strings.Contains(args, "--l2=false") || !strings.Contains(args, "--bgp=false") {
			t.Fatalf("%s speaker runs with %q", n.Name, args)
		}
	}
	// Long enough for a speaker with L2 on to have answered, and for BIRD to drop the sessions.
	time.Sleep(3 * time.Second)
	waitAnnounced(t, l, ip, false, false, 20*time.Second)
	for _, n := range l.Nodes() {
		out, err := l.Exec(ctx, n.Name, "ss", "-Hltn", "sport", "= :179")
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("%s with bgp.enabled=false: listening on TCP 179: %v %s", n.Name, err, out)
		}
	}

	restartSpeakers(ctx, t, l, values...)
	waitAnnounced(t, l, ip, true, true, 30*time.Second)
}

// TestUninstallHookLeavesNodeClean runs the chart's post-delete cleanup step on a node whose
// data plane has programmed its rules, after stopping its speaker as the hook waits for.
func TestUninstallHookLeavesNodeClean(t *testing.T) {
	l := labsuite.Lab(t)
	ctx := context.Background()
	node := l.Nodes()[2].Name
	sysctls := []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"}
	before, err := l.Exec(ctx, node, append([]string{"sysctl"}, sysctls...)...)
	if err != nil {
		t.Fatal(err)
	}
	// The data plane's table, with the lab's Services in it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := l.Exec(ctx, node, "nft", "list", "table", "inet", "herald")
		if err == nil && bytes.Contains(out, []byte("chain")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no nftables table inet herald on %s: %v %s", node, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		// t.Context() has ended by the time cleanups run.
		if err := l.StartSpeaker(context.Background(), node); err != nil {
			t.Error(err)
		}
	})
	p, _ := l.Speaker(node)
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The speaker leaves its rules in place on exit (connections survive a restart): what removes
	// them is the hook.
	if out, err := l.Exec(ctx, node, "nft", "list", "table", "inet", "herald"); err != nil {
		t.Fatalf("the table went with the speaker: %v %s", err, out)
	}
	out, err := l.RunCleanupHook(ctx, node)
	if err != nil {
		t.Fatalf("cleanup hook: %v\n%s", err, out)
	}
	if tables, err := l.Exec(ctx, node, "nft", "list", "tables"); err != nil || bytes.Contains(tables, []byte("herald")) {
		t.Errorf("after the cleanup hook: nft tables %q (%v)", tables, err)
	}
	// Link names only: the node's veth says link-netns herald-…-sw, which is the lab's.
	if links, err := l.Exec(ctx, node, "ip", "-br", "link", "show"); err != nil || bytes.Contains(links, []byte("\nherald")) || bytes.HasPrefix(links, []byte("herald")) {
		t.Errorf("after the cleanup hook: links %s (%v)", links, err)
	}
	if after, err := l.Exec(ctx, node, append([]string{"sysctl"}, sysctls...)...); err != nil || !bytes.Equal(before, after) {
		t.Errorf("sysctls before %s after %s (%v)", before, after, err)
	}
}
