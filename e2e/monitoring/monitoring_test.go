// Package monitoring proves Herald's observability with a real Prometheus (Debian's prometheus
// package) in a lab of its own (namespace prefix herald-pm-): Prometheus scrapes the controller
// and every speaker and evaluates the chart's alert rules as the chart renders them; each alert's
// fault is injected for real (a BGP session cut at BIRD, BFD packets dropped at the router, a pool
// filled, repeated kills of an L2 owner, a data-plane sync refused by the kernel) and the alert
// must fire, through Prometheus's own API, and clear once the fault ends. Then every query of the
// chart's dashboard must return data, and every herald_* metric the binaries export must be in
// docs/metrics.md with its type.
//
// Needs what the lab needs plus prometheus (apt-get install prometheus); without it the tests skip,
// or fail when HERALD_REQUIRE_REAL=1.
package monitoring

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/charts"
	"github.com/heraldlb/herald/config"
	heraldscheme "github.com/heraldlb/herald/config/scheme"
	"github.com/heraldlb/herald/config/v1beta1"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/e2e/lab/labsuite"
	"github.com/heraldlb/herald/heraldctl/status"
	"github.com/heraldlb/herald/internal/metricsdoc"
	"github.com/heraldlb/herald/internal/testenv"
)

// The data plane is nftables for certain: the sync-failure fault is an nftables table held by
// another process.
func TestMain(m *testing.M) {
	labsuite.Main(m, "herald-pm-", func(c *lab.Config) { c.ChartValues = []string{"dataplane.mode=nftables"} })
}

// Alert settings for the lab: every for: is 2 s, a failover storm is more than 2 L2 ownership
// changes of one node in 30 s, a data plane repaired more than twice in 30 s is alerted, and a
// userspace client failure is remembered for 30 s. The pool threshold stays the default 0.9.
var ruleValues = []string{
	"metrics.prometheusRule.forOverride=2s",
	"metrics.prometheusRule.failoverStormChanges=2",
	"metrics.prometheusRule.failoverStormWindow=30s",
	"metrics.prometheusRule.dataplaneRepairs=2",
	"metrics.prometheusRule.dataplaneRepairsWindow=30s",
	"metrics.prometheusRule.userspaceFailuresWindow=30s",
}

const namespace = "monitoring-e2e"

// fixture is the lab with Prometheus and the objects every subtest relies on.
type fixture struct {
	l   *lab.Lab
	cs  kubernetes.Interface
	dyn dynamic.Interface
	// l2IPs are the Services' L2 addresses, bgpIP the BGP one.
	l2IPs []netip.Addr
	bgpIP netip.Addr
}

func TestMonitoring(t *testing.T) {
	l := labsuite.Lab(t)
	testenv.Tools(t, "prometheus", "nft")
	ctx := context.Background()
	if err := l.StartPrometheus(ctx, ruleValues...); err != nil {
		t.Fatal(err)
	}
	f := setup(t, l)

	t.Run("targets", f.targetsUp)
	t.Run("HeraldBGPSessionDown", f.bgpSessionDown)
	t.Run("HeraldBFDSessionDown", f.bfdSessionDown)
	t.Run("HeraldPoolNearlyExhausted", f.poolNearlyExhausted)
	t.Run("HeraldFailoverStorm", f.failoverStorm)
	t.Run("HeraldDataplaneSyncFailing", f.dataplaneSyncFailing)
	t.Run("HeraldDataplaneRepairing", f.dataplaneRepairing)
	t.Run("HeraldUserspaceConnectionsFailing", f.userspaceConnectionsFailing)
	t.Run("dashboard", f.dashboardPanels)
	t.Run("heraldctl status agrees", f.statusAgrees)
	t.Run("metrics documented", f.metricsDocumented)
}

// setup configures BGP with BFD to the router, an L2 pool, and Services announced both ways.
func setup(t *testing.T, l *lab.Lab) *fixture {
	cs, dyn := labsuite.Clients(t, l)
	f := &fixture{l: l, cs: cs, dyn: dyn, bgpIP: netip.MustParseAddr("10.79.0.20")}
	router := l.Topology.Host(lab.HostRouter)
	labsuite.Create(t, dyn, "bfdprofiles", "BFDProfile", "fast", map[string]any{
		"receiveInterval": int64(100), "transmitInterval": int64(100), "detectMultiplier": int64(3),
	})
	for _, peer := range []struct {
		name string
		addr netip.Addr
	}{{"router-v4", router.IPv4}, {"router-v6", router.IPv6}} {
		labsuite.Create(t, dyn, "bgppeers", "BGPPeer", peer.name, map[string]any{
			"myASN": int64(lab.NodeASN), "peerASN": int64(lab.RouterASN), "peerAddress": peer.addr.String(),
			"holdTime": "9s", "bfdProfile": "fast",
		})
	}
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "bgp", map[string]any{
		"addresses": []any{lab.BGPPoolV4, lab.BGPPoolV6}, "autoAssign": false,
	})
	labsuite.Create(t, dyn, "bgpadvertisements", "BGPAdvertisement", "bgp", map[string]any{"ipAddressPools": []any{"bgp"}})
	labsuite.Create(t, dyn, "ipaddresspools", "IPAddressPool", "l2", map[string]any{
		"addresses": []any{lab.L2PoolV4}, "autoAssign": false,
	})
	labsuite.Create(t, dyn, "l2advertisements", "L2Advertisement", "l2", map[string]any{"ipAddressPools": []any{"l2"}})

	f.service(t, "bgp", f.bgpIP, corev1.ServiceExternalTrafficPolicyCluster, nil)
	// Several L2 addresses, so that killing a node moves several at once (the failover storm),
	// one Service with externalTrafficPolicy Local, for a healthCheckNodePort, and one through the
	// userspace proxy, for its metrics.
	for i := range 4 {
		ip := netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", 210+i))
		etp := corev1.ServiceExternalTrafficPolicyCluster
		if i == 0 {
			etp = corev1.ServiceExternalTrafficPolicyLocal
		}
		var annotations map[string]string
		if i == 3 {
			annotations = map[string]string{config.AnnotationProxyMode: config.ProxyModeUserspace}
		}
		f.service(t, fmt.Sprintf("l2-%d", i), ip, etp, annotations)
		f.l2IPs = append(f.l2IPs, ip)
	}
	ctx := context.Background()
	labsuite.WaitFor(t, 60*time.Second, "both BGP sessions and BFD up on every node", func() (bool, string) {
		s, err := l.PromQuery(ctx, `herald_bgp_session_up == 1 and on (node, peer) herald_bgp_bfd_session_up == 1`)
		return err == nil && len(s) == 2*len(l.Nodes()), fmt.Sprint(len(s), err)
	})
	return f
}

// service creates a single-stack IPv4 LoadBalancer Service asking for ip, backed by every pod.
func (f *fixture) service(t *testing.T, name string, ip netip.Addr, etp corev1.ServiceExternalTrafficPolicy, annotations map[string]string) {
	t.Helper()
	svc := lab.LoadBalancerService(namespace, name)
	svc.Annotations = map[string]string{config.AnnotationLoadBalancerIPs: ip.String()}
	for k, v := range annotations {
		svc.Annotations[k] = v
	}
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	svc.Spec.ExternalTrafficPolicy = etp
	created, err := f.l.CreateBackendService(context.Background(), f.cs, svc, f.l.Pods())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.cs.CoreV1().Services(namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})
	labsuite.WaitFor(t, 30*time.Second, name+" gets "+ip.String(), func() (bool, string) {
		got, err := f.cs.CoreV1().Services(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(got.Status.LoadBalancer.Ingress) == 1 && got.Status.LoadBalancer.Ingress[0].IP == ip.String(),
			fmt.Sprint(got.Status.LoadBalancer.Ingress, got.Status.Conditions)
	})
}

// alerts returns the alerts named name in the given state, as "label=value,…" strings.
func (f *fixture) alerts(name, state string) ([]string, error) {
	all, err := f.l.PromAlerts(context.Background())
	var out []string
	for _, a := range all {
		if a.Labels["alertname"] == name && a.State == state {
			out = append(out, labelString(a.Labels))
		}
	}
	return out, err
}

func labelString(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// waitFiring waits until the alert fires with every label in want and returns its labels.
func (f *fixture) waitFiring(t *testing.T, name string, timeout time.Duration, want map[string]string) {
	t.Helper()
	took := labsuite.WaitFor(t, timeout, name+" firing with "+fmt.Sprint(want), func() (bool, string) {
		firing, err := f.alerts(name, "firing")
		if err != nil {
			return false, err.Error()
		}
		for _, a := range firing {
			if matches(a, want) {
				return true, a
			}
		}
		return false, fmt.Sprint("firing: ", firing)
	})
	t.Logf("%s fired %v after the fault", name, took.Round(10*time.Millisecond))
}

// waitQuiet waits until no alert of that name (pending or firing) has the labels in want, and
// logs how long that took.
func (f *fixture) waitQuiet(t *testing.T, name string, timeout time.Duration, want map[string]string) {
	t.Helper()
	took := f.quiet(t, name, timeout, want)
	t.Logf("%s cleared %v after the fault ended", name, took.Round(10*time.Millisecond))
}

// requireQuiet waits until the alert is neither pending nor firing at all: each fault starts
// from calm.
func (f *fixture) requireQuiet(t *testing.T, name string) {
	t.Helper()
	f.quiet(t, name, 60*time.Second, nil)
}

func (f *fixture) quiet(t *testing.T, name string, timeout time.Duration, want map[string]string) time.Duration {
	t.Helper()
	return labsuite.WaitFor(t, timeout, name+" quiet for "+fmt.Sprint(want), func() (bool, string) {
		all, err := f.l.PromAlerts(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, a := range all {
			if a.Labels["alertname"] == name && matches(labelString(a.Labels), want) {
				return false, a.State + " " + labelString(a.Labels)
			}
		}
		return true, ""
	})
}

func matches(labels string, want map[string]string) bool {
	have := map[string]bool{}
	for _, kv := range strings.Split(labels, ",") {
		have[kv] = true
	}
	for k, v := range want {
		if !have[k+"="+v] {
			return false
		}
	}
	return true
}

func (f *fixture) targetsUp(t *testing.T) {
	labsuite.WaitFor(t, 30*time.Second, "every target up", func() (bool, string) {
		targets, err := f.l.PromTargets(context.Background())
		if err != nil {
			return false, err.Error()
		}
		up := 0
		var bad []string
		for _, tg := range targets {
			if tg.Health == "up" {
				up++
			} else {
				bad = append(bad, tg.Labels["node"]+": "+tg.Health+" "+tg.LastError)
			}
		}
		return up == 1+len(f.l.Nodes()) && len(targets) == up, fmt.Sprint(len(targets), " targets; ", bad)
	})
}

// A BGP session cut at the router: BIRD's protocol for node1's IPv4 session disabled.
func (f *fixture) bgpSessionDown(t *testing.T) {
	const alert = "HeraldBGPSessionDown"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	node := f.l.Nodes()[0].Name
	if _, err := f.l.Birdc(ctx, "disable", node+"v4"); err != nil {
		t.Fatal(err)
	}
	enabled := false
	enable := func() {
		if !enabled {
			enabled = true
			if _, err := f.l.Birdc(ctx, "enable", node+"v4"); err != nil {
				t.Error(err)
			}
		}
	}
	defer enable()
	want := map[string]string{"node": node, "peer": "router-v4", "severity": "critical"}
	f.waitFiring(t, alert, 60*time.Second, want)
	if firing, _ := f.alerts(alert, "firing"); len(firing) != 1 {
		t.Errorf("%s fires for %v; only %s's IPv4 session is down", alert, firing, node)
	}
	enable()
	f.waitQuiet(t, alert, 90*time.Second, nil)
}

// BFD down: the router drops node2's BFD packets (UDP 3784). Both ends' BFD sessions go Down
// while BGP itself could carry on: BFD alone is at fault.
func (f *fixture) bfdSessionDown(t *testing.T) {
	const alert = "HeraldBFDSessionDown"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	node := f.l.Nodes()[1]
	table := "herald-pm-bfd-drop"
	rules := fmt.Sprintf("add table inet %[1]s\nadd chain inet %[1]s in { type filter hook input priority -10; }\n"+
		"add rule inet %[1]s in ip saddr %[2]s udp dport 3784 drop\nadd rule inet %[1]s in ip6 saddr %[3]s udp dport 3784 drop\n",
		table, node.IPv4, node.IPv6)
	cmd, err := f.l.Command(ctx, lab.HostRouter, "nft", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	removed := false
	remove := func() {
		if !removed {
			removed = true
			if out, err := f.l.Exec(ctx, lab.HostRouter, "nft", "delete", "table", "inet", table); err != nil {
				t.Errorf("nft delete table: %v: %s", err, out)
			}
		}
	}
	defer remove()
	f.waitFiring(t, alert, 60*time.Second, map[string]string{"node": node.Name, "peer": "router-v4", "severity": "critical"})
	f.waitFiring(t, alert, 10*time.Second, map[string]string{"node": node.Name, "peer": "router-v6", "severity": "critical"})
	if firing, _ := f.alerts(alert, "firing"); len(firing) != 2 {
		t.Errorf("%s fires for %v; only %s's sessions lost BFD", alert, firing, node.Name)
	}
	remove()
	f.waitQuiet(t, alert, 90*time.Second, nil)
	// BGP comes back too before the next fault.
	f.requireQuiet(t, "HeraldBGPSessionDown")
}

// A pool filled: two Services take both addresses of a two-address pool (100% > 0.9); a third
// is refused (PoolExhausted, counted by reason). Deleting one clears the alert.
func (f *fixture) poolNearlyExhausted(t *testing.T) {
	const alert = "HeraldPoolNearlyExhausted"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	labsuite.Create(t, f.dyn, "ipaddresspools", "IPAddressPool", "tiny", map[string]any{
		"addresses": []any{"10.79.1.1-10.79.1.2"}, "autoAssign": false,
	})
	var names []string
	for i := range 3 {
		svc := lab.LoadBalancerService(namespace, fmt.Sprintf("tiny-%d", i))
		svc.Annotations = map[string]string{config.AnnotationAddressPool: "tiny"}
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		if _, err := f.l.CreateBackendService(ctx, f.cs, svc, f.l.Pods()); err != nil {
			t.Fatal(err)
		}
		names = append(names, svc.Name)
	}
	deleteSvc := func(name string) {
		if err := f.cs.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Error(err)
		}
	}
	defer func() {
		for _, n := range names {
			deleteSvc(n)
		}
	}()
	f.waitFiring(t, alert, 60*time.Second, map[string]string{"pool": "tiny", "family": "IPv4", "severity": "warning"})
	labsuite.WaitFor(t, 30*time.Second, "a PoolExhausted refusal counted", func() (bool, string) {
		s, err := f.l.PromQuery(ctx, `herald_controller_allocation_failures_total{reason="PoolExhausted"} > 0`)
		return err == nil && len(s) == 1, fmt.Sprint(s, err)
	})
	// One Service gone: one of two addresses in use, 50%. The refused third may take the freed
	// address (back to 100%), so it goes first.
	for _, pending := range names {
		svc, err := f.cs.CoreV1().Services(namespace).Get(ctx, pending, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			deleteSvc(pending)
		}
	}
	deleteSvc(names[0])
	f.waitQuiet(t, alert, 60*time.Second, nil)
}

// A failover storm: the owner of the first L2 address is killed (its addresses move), restarted,
// and the next owner killed, until one node has gained or lost more than 2 addresses in 30 s.
func (f *fixture) failoverStorm(t *testing.T) {
	const alert = "HeraldFailoverStorm"
	f.requireQuiet(t, alert)
	for kill := 1; ; kill++ {
		firing, err := f.alerts(alert, "firing")
		if err != nil {
			t.Fatal(err)
		}
		if len(firing) > 0 {
			t.Logf("%s fires for %v after %d owner kills", alert, firing, kill-1)
			break
		}
		if kill > 8 {
			t.Fatalf("%s did not fire after %d owner kills", alert, kill-1)
		}
		owner := f.owner(t, f.l2IPs[0], "")
		if err := f.l.SignalSpeaker(owner, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		f.owner(t, f.l2IPs[0], owner) // moved on
		if err := f.l.StartSpeaker(t.Context(), owner); err != nil {
			t.Fatal(err)
		}
		f.speakerReady(t, owner)
	}
	f.waitQuiet(t, alert, 90*time.Second, nil)
}

// owner returns the node whose speaker answers ARP for ip, other than not.
func (f *fixture) owner(t *testing.T, ip netip.Addr, not string) string {
	t.Helper()
	var owner string
	labsuite.WaitFor(t, 20*time.Second, "one node other than "+not+" answering for "+ip.String(), func() (bool, string) {
		macs, err := f.l.ResolveMACs(context.Background(), lab.HostClient, ip, 1)
		if err != nil {
			return false, err.Error()
		}
		if len(macs) != 1 {
			return false, fmt.Sprint(macs)
		}
		h := f.l.HostByMAC(macs[0])
		if h == nil || h.Kind != lab.KindNode || h.Name == not {
			return false, fmt.Sprint(macs)
		}
		owner = h.Name
		return true, ""
	})
	return owner
}

// speakerReady waits for a node's speaker's /readyz (the chart's readiness probe).
func (f *fixture) speakerReady(t *testing.T, node string) {
	t.Helper()
	h, err := f.l.Host(node)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.l.HTTPClient(node, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, 60*time.Second, node+"'s speaker ready", func() (bool, string) {
		resp, err := c.Get(fmt.Sprintf("http://%s:9651/readyz", h.IPv4))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200, resp.Status + " " + string(b)
	})
}

// A data-plane sync refused by the kernel: on node3, another program replaces Herald's nftables
// table with one it owns (nft's "owner" flag: only the creating process may change it) and
// holds it; a Service change then fails to sync, and so does every retry, until that program
// exits (and its table goes with it).
func (f *fixture) dataplaneSyncFailing(t *testing.T) {
	const alert = "HeraldDataplaneSyncFailing"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	node := f.l.Nodes()[2].Name
	holder, err := f.l.Command(ctx, node, "nft", "-i")
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			stdin.Close() // nft -i exits at end of input; the kernel removes its owned table
			if err := holder.Wait(); err != nil {
				t.Errorf("nft -i: %v", err)
			}
		}
	}
	defer release()
	if _, err := io.WriteString(stdin, "delete table inet herald\nadd table inet herald { flags owner; }\n"); err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, 10*time.Second, "the owned herald table on "+node, func() (bool, string) {
		out, err := f.l.Exec(ctx, node, "nft", "list", "table", "inet", "herald")
		return err == nil && strings.Contains(string(out), "flags owner"), string(out)
	})
	// A change for the data plane to sync.
	f.service(t, "sync-trigger", netip.MustParseAddr("10.79.0.30"), corev1.ServiceExternalTrafficPolicyCluster, nil)
	f.waitFiring(t, alert, 60*time.Second, map[string]string{"node": node, "severity": "critical"})
	if firing, _ := f.alerts(alert, "firing"); len(firing) != 1 {
		t.Errorf("%s fires for %v; only %s's data plane is blocked", alert, firing, node)
	}
	release()
	f.waitQuiet(t, alert, 90*time.Second, nil)
	if s, err := f.l.PromQuery(ctx, fmt.Sprintf(`herald_dataplane_syncs_total{node=%q,result="failure"} > 0`, node)); err != nil || len(s) != 1 {
		t.Errorf("no failed sync counted on %s: %v %v", node, s, err)
	}
}

// Another program keeps deleting Herald's nftables table on node2 (as a firewall manager flushing
// the ruleset would): each time the drift check finds it and a full sync puts it back; the third
// repair within the window fires the alert, which clears once the window holds no more repairs.
func (f *fixture) dataplaneRepairing(t *testing.T) {
	const alert = "HeraldDataplaneRepairing"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	node := f.l.Nodes()[1].Name
	for i := range 3 {
		if out, err := f.l.Exec(ctx, node, "nft", "delete", "table", "inet", "herald"); err != nil {
			t.Fatalf("nft delete table: %v: %s", err, out)
		}
		labsuite.WaitFor(t, 10*time.Second, fmt.Sprintf("repair %d: the herald table back on %s", i+1, node), func() (bool, string) {
			out, err := f.l.Exec(ctx, node, "nft", "list", "table", "inet", "herald")
			return err == nil, string(out)
		})
	}
	f.waitFiring(t, alert, 60*time.Second, map[string]string{"node": node, "severity": "warning"})
	if firing, _ := f.alerts(alert, "firing"); len(firing) != 1 {
		t.Errorf("%s fires for %v; only %s's data plane was changed", alert, firing, node)
	}
	if s, err := f.l.PromQuery(ctx, fmt.Sprintf(`herald_dataplane_full_syncs_total{node=%q,reason="drift"} >= 3`, node)); err != nil || len(s) != 1 {
		t.Errorf("%s: fewer than 3 full syncs for drift counted: %v %v", node, s, err)
	}
	f.waitQuiet(t, alert, 90*time.Second, nil)
}

// A userspace-mode Service whose endpoints are all listed ready but listen on nothing (their
// EndpointSlice names a closed port): the proxy tries each, fails the client, and the alert names
// the Service. Real endpoints put back, it clears after its window.
func (f *fixture) userspaceConnectionsFailing(t *testing.T) {
	const alert = "HeraldUserspaceConnectionsFailing"
	f.requireQuiet(t, alert)
	ctx := context.Background()
	const name = "userspace-dead"
	ip := netip.MustParseAddr("10.77.0.220")
	f.service(t, name, ip, corev1.ServiceExternalTrafficPolicyCluster, map[string]string{config.AnnotationProxyMode: config.ProxyModeUserspace})
	service := namespace + "/" + name + "/tcp/http"
	failures := fmt.Sprintf(`herald_userspace_failures_total{service=%q}`, service)
	// The failure counters start at zero on every node; increase() needs that zero scraped, or the
	// first failures are the series' baseline and count for nothing.
	labsuite.WaitFor(t, 30*time.Second, "Prometheus scraped "+failures+" at 0 from every node", func() (bool, string) {
		s, err := f.l.PromQuery(ctx, failures+" == 0")
		return err == nil && len(s) == len(f.l.Nodes()), fmt.Sprint(s, err)
	})
	f.closeEndpointPorts(t, name)
	c, err := f.l.HTTPClient(lab.HostClient, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s/", ip)
	labsuite.WaitFor(t, 30*time.Second, "clients of "+name+" fail", func() (bool, string) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return false, "answered: " + resp.Status
		}
		return true, err.Error()
	})
	labsuite.WaitFor(t, 30*time.Second, "a failure counted", func() (bool, string) {
		s, err := f.l.PromQuery(ctx, failures+" > 0")
		return err == nil && len(s) > 0, fmt.Sprint(s, err)
	})
	f.waitFiring(t, alert, 60*time.Second, map[string]string{"service": service, "severity": "warning"})
	svc, err := f.cs.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.l.SetEndpoints(ctx, f.cs, svc, f.l.Pods()); err != nil {
		t.Fatal(err)
	}
	labsuite.WaitFor(t, 30*time.Second, name+" answers again", func() (bool, string) {
		resp, err := c.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return true, ""
	})
	f.waitQuiet(t, alert, 90*time.Second, nil)
}

// closeEndpointPorts points the Service's EndpointSlices at a port nothing listens on, keeping
// every endpoint ready.
func (f *fixture) closeEndpointPorts(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	slices := f.cs.DiscoveryV1().EndpointSlices(namespace)
	list, err := slices.List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		for j := range s.Ports {
			s.Ports[j].Port = ptr.To[int32](9) // discard: nothing listens there
		}
		if _, err := slices.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// Every query of the chart's dashboard returns at least one series, evaluated by the real
// Prometheus in the lab after the faults above. Health checks are asked first (a client probing
// the Local Service's healthCheckNodePort and each node's proxy /healthz), and a forged heartbeat
// is sent, as a load balancer and an attacker would.
func (f *fixture) dashboardPanels(t *testing.T) {
	ctx := context.Background()
	f.askHealthChecks(t)
	f.forgeHeartbeat(t)
	panels, err := charts.DashboardPanels()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range panels {
		for _, tg := range p.Targets {
			labsuite.WaitFor(t, 30*time.Second, fmt.Sprintf("panel %q query %s: %s returns data", p.Title, tg.RefID, tg.Expr), func() (bool, string) {
				s, err := f.l.PromQuery(ctx, tg.Expr)
				return err == nil && len(s) > 0, fmt.Sprint(s, err)
			})
		}
	}
}

func (f *fixture) askHealthChecks(t *testing.T) {
	ctx := context.Background()
	svc, err := f.cs.CoreV1().Services(namespace).Get(ctx, "l2-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.HealthCheckNodePort == 0 {
		t.Fatal("the Local Service has no healthCheckNodePort")
	}
	c, err := f.l.HTTPClient(lab.HostClient, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.l.Nodes() {
		for _, url := range []string{
			fmt.Sprintf("http://%s:%d/", n.IPv4, svc.Spec.HealthCheckNodePort),
			fmt.Sprintf("http://%s:10256/healthz", n.IPv4),
		} {
			resp, err := c.Get(url)
			if err != nil {
				t.Fatalf("%s: %v", url, err)
			}
			resp.Body.Close()
		}
	}
}

// forgeHeartbeat sends node1 a membership datagram that is not one.
func (f *fixture) forgeHeartbeat(t *testing.T) {
	node := f.l.Nodes()[0]
	cmd, err := f.l.Command(context.Background(), lab.HostClient, "socat", "-u", "-", fmt.Sprintf("UDP:%s:9652", node.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader("not a heartbeat")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("socat: %v: %s", err, out)
	}
}

// Every herald_* metric Prometheus scraped from the lab is documented in docs/metrics.md with its
// type, and every documented one was scraped: the page cannot drift from the binaries.
func (f *fixture) metricsDocumented(t *testing.T) {
	page, err := metricsdoc.Read()
	if err != nil {
		t.Fatal(err)
	}
	scraped, err := f.l.PromMetadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range scraped {
		if !strings.HasPrefix(name, "herald_") {
			continue
		}
		m, ok := page.Metric(name)
		switch {
		case !ok:
			t.Errorf("%s (%s) is exported but not in docs/metrics.md", name, typ)
		case m.Type != typ:
			t.Errorf("%s is a %s; docs/metrics.md says %s", name, typ, m.Type)
		}
	}
	for _, m := range page.Metrics {
		if _, ok := scraped[m.Name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the lab's controller and speakers did not export", m.Name)
		}
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		testenv.Missing(t, "promtool not installed (apt-get install prometheus)")
	}
	f.checkMetricsWithPromtool(t)
}

// checkMetricsWithPromtool runs `promtool check metrics` on what the controller and a speaker
// serve: names, help texts and types follow Prometheus's conventions.
func (f *fixture) checkMetricsWithPromtool(t *testing.T) {
	cp := f.l.Topology.Host(lab.HostControlPlane)
	node := f.l.Nodes()[0]
	for _, target := range []struct{ host, url string }{
		{lab.HostControlPlane, fmt.Sprintf("http://%s:9650/metrics", cp.IPv4)},
		{node.Name, fmt.Sprintf("http://%s:9651/metrics", node.IPv4)},
	} {
		c, err := f.l.HTTPClient(target.host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(target.url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var herald []string
		for _, line := range strings.SplitAfter(string(body), "\n") {
			if strings.Contains(line, "herald_") {
				herald = append(herald, line)
			}
		}
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(strings.Join(herald, ""))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s's herald_* metrics: %v\n%s", target.url, err, out)
		}
	}
}

// heraldctl status (its report, from the API's objects) and the dashboard's sources (Prometheus,
// from the binaries' metrics) tell the same story: each pool's addresses in use and total per
// family, and each node's BGP and BFD session states.
func (f *fixture) statusAgrees(t *testing.T) {
	ctx := context.Background()
	rc, err := f.l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rc, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	// value returns the single series' value of a query, "" when there is none.
	value := func(expr string) (string, error) {
		s, err := f.l.PromQuery(ctx, expr)
		if err != nil || len(s) != 1 {
			return "", err
		}
		v, _ := s[0].Value[1].(string)
		return v, nil
	}
	labsuite.WaitFor(t, 60*time.Second, "heraldctl status and Prometheus agreeing", func() (bool, string) {
		report, err := status.Collect(ctx, c)
		if err != nil {
			return false, err.Error()
		}
		var diffs []string
		compare := func(what, expr, want string) {
			got, err := value(expr)
			if err != nil || got != want {
				diffs = append(diffs, fmt.Sprintf("%s: heraldctl %q, Prometheus %q (%v)", what, want, got, err))
			}
		}
		for _, p := range report.Pools {
			for family, counts := range map[string]*v1beta1.AddressCounts{"IPv4": p.IPv4, "IPv6": p.IPv6} {
				if counts == nil {
					continue
				}
				sel := fmt.Sprintf(`{pool=%q,family=%q}`, p.Name, family)
				compare(p.Name+" "+family+" in use", "herald_controller_addresses_in_use"+sel, counts.InUse)
				compare(p.Name+" "+family+" total", "herald_controller_addresses"+sel, counts.Total)
			}
		}
		sessions := 0
		for _, n := range report.Nodes {
			for _, s := range n.Sessions {
				sessions++
				sel := fmt.Sprintf(`{node=%q,peer=%q}`, n.Name, s.Peer)
				compare(n.Name+" "+s.Peer+" established", "herald_bgp_session_up"+sel, boolString(s.State == "Established"))
				if s.BFDState != "" {
					compare(n.Name+" "+s.Peer+" BFD up", "herald_bgp_bfd_session_up"+sel, boolString(s.BFDState == "Up"))
				}
			}
		}
		if len(report.Pools) == 0 || sessions != 2*len(f.l.Nodes()) {
			diffs = append(diffs, fmt.Sprintf("heraldctl status shows %d pools and %d sessions", len(report.Pools), sessions))
		}
		return len(diffs) == 0, strings.Join(diffs, "; ")
	})
}

func boolString(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
