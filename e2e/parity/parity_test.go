// Package parity_test is the differential test of issue 16: kube-proxy v1.34.4 (nftables mode) and
// Herald's embedded data plane, each on node A of one of two identical topologies of network
// namespaces, both fed the same Services and EndpointSlices by one real apiserver, get the same
// probes (TCP and UDP, IPv4 and IPv6; from a client off the cluster, a pod and the node; to
// ClusterIPs, NodePorts, LoadBalancer IPs and externalIPs), and what happens to each (answered by
// which endpoints seeing which source address, refused, dropped) must be the same, unless the
// difference is listed with its reason in the table of docs/parity.md.
//
// The corpus is the rows plus generated Services (seeded). HERALD_PARITY_CASES sets its
// size (default 520, as in `make test`; the long run uses thousands), HERALD_PARITY_SEED its seed.
//
// HERALD_PARITY_MODE=ipvs runs both sides in IPVS mode instead (kube-proxy --proxy-mode=ipvs,
// Herald --dataplane=ipvs): in the VM of hack/ipvs-vm (hack/ipvs-vm/run-tests.sh), as this
// machine's kernel has no ip_vs. Differences are then looked up in the IPVS table of the doc.
package parity_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/e2e/controlplane"
	"github.com/heraldlb/herald/e2e/heraldproxy"
	"github.com/heraldlb/herald/e2e/proc"
	"github.com/heraldlb/herald/internal/netnsrun"
	"github.com/heraldlb/herald/internal/testenv"
)

// heraldEnv makes the test binary run Herald's data plane (against the kubeconfig it names)
// instead of the tests: the test starts it that way inside Herald's node namespace.
const heraldEnv = "HERALD_PARITY_RUN_HERALD"

// modeEnv picks the proxy mode both sides run: nftables (the default) or ipvs.
const modeEnv = "HERALD_PARITY_MODE"

// parityMode is a proxy mode the test runs both sides in, and the table of the doc it reads.
type parityMode struct {
	name string
	// marker is the line before the mode's table in docs/parity.md.
	marker string
	// tools are the programs the mode needs besides ip, nft and sysctl (kube-proxy's).
	tools []string
	// programmed bounds the wait for both sides to program a batch (the canaries).
	programmed time.Duration
	// zoneChange bounds the wait for a proxy to follow node A's zone label.
	zoneChange time.Duration
	// patient is the timeout of the resampled requests: longer than a SYN's retransmits
	// within it (1 s, then 2 s more), for IPVS drops the SYN of a new connection that reuses
	// the tuple of one it still tracks, on either side, and the probes open many.
	patient time.Duration
}

var modes = map[string]parityMode{
	"nftables": {name: "nftables", marker: "<!-- parity-table: read by e2e/parity -->", programmed: 3 * time.Minute, zoneChange: 30 * time.Second, patient: 3 * time.Second},
	// In the VM, under emulation: kube-proxy runs ipset once per entry, and everything is slower.
	"ipvs": {name: "ipvs", marker: "<!-- parity-table-ipvs: read by e2e/parity -->", tools: []string{"iptables", "ipset"},
		programmed: 10 * time.Minute, zoneChange: 2 * time.Minute, patient: 4 * time.Second},
}

// currentMode is the mode HERALD_PARITY_MODE names.
func currentMode() (parityMode, error) {
	name := os.Getenv(modeEnv)
	if name == "" {
		name = "nftables"
	}
	m, ok := modes[name]
	if !ok {
		return parityMode{}, fmt.Errorf("%s=%q: want nftables or ipvs", modeEnv, name)
	}
	return m, nil
}

func TestMain(m *testing.M) {
	if kubeconfig := os.Getenv(heraldEnv); kubeconfig != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		mode, err := currentMode()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var cidrs []netip.Prefix
		for _, c := range strings.Split(clusterCIDRs, ",") {
			cidrs = append(cidrs, netip.MustParsePrefix(c))
		}
		// As kube-proxy gets --cluster-cidr, Herald gets the speaker's --cluster-cidr; both open
		// NodePorts on the node's primary IPs (their defaults).
		err = heraldproxy.Run(ctx, heraldproxy.Config{Kubeconfig: kubeconfig, NodeName: nodeA, Backend: mode.name, HealthAddr: "127.0.0.1:10256",
			ClusterCIDRs: cidrs, NodePortAddresses: dataplane.NodePortAddresses{Primary: true},
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			fmt.Fprintln(os.Stderr, "herald data plane:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// batchSize bounds the Services applied at once (NodePorts: 2,768 in the default range).
const batchSize = 600

func TestKubeProxyParity(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root for network namespaces")
	}
	mode, err := currentMode()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Tools(t, append([]string{"ip", "nft", "sysctl"}, mode.tools...)...)
	bins, err := controlplane.CachedAPIServer()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	kubeProxy := filepath.Join(bins.KubeDir, "kube-proxy")
	if _, err := os.Stat(kubeProxy); err != nil {
		testenv.Missing(t, "%s missing: build it once with hack/k8s-bins.sh", kubeProxy)
	}
	table, err := readParityTable("../../docs/parity.md", mode.marker)
	if err != nil {
		t.Fatal(err)
	}
	if err := removeNamespaces(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNamespaces(); err != nil {
			t.Error(err)
		}
	})
	dir := t.TempDir()
	ctx := t.Context()

	api := nsPrefix + "api"
	ipCmd(t, "netns", "add", api)
	ipCmd(t, "-n", api, "link", "set", "lo", "up")
	dialAPI := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netnsrun.Do(api, func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return })
		return c, err
	}
	cp, err := controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(dir, "cp"), Binaries: bins, Address: "127.0.0.1",
		ServiceCIDRs: serviceCIDRs, NodePortRange: "30000-32767", Dial: dialAPI, APIServerOnly: true, ReadyTimeout: 5 * time.Minute,
		Wrap: func(argv []string) []string { return append([]string{"ip", "netns", "exec", api}, argv...) }})
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(cp.Stop)
	rc, err := cp.RESTConfig(dialAPI)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)

	for _, side := range sides {
		buildSide(t, side)
		echoServers(t, side)
		forwardAPIServer(t, nsName(side, "a"), dialAPI)
	}
	createNodes(t, cs)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	procs := map[string]proc.Process{}
	start := func(side, name string, argv []string, env []string) {
		p, err := proc.Start(name, append([]string{"ip", "netns", "exec", nsName(side, "a")}, argv...), filepath.Join(dir, name+".log"), env)
		if err != nil {
			t.Fatal(err)
		}
		procs[side] = p
		t.Cleanup(func() {
			_ = p.Stop(10 * time.Second)
			if t.Failed() {
				t.Logf("%s log (last lines):\n%s", name, p.Tail(4000))
			}
		})
	}
	start(sideKubeProxy, "kube-proxy", []string{kubeProxy, "--kubeconfig=" + cp.Kubeconfig, "--proxy-mode=" + mode.name,
		"--hostname-override=" + nodeA, "--cluster-cidr=" + clusterCIDRs,
		"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249", "--conntrack-max-per-core=0"}, nil)
	start(sideHerald, "herald", []string{self, "-test.run=^$"}, []string{heraldEnv + "=" + cp.Kubeconfig})

	n := envInt("HERALD_PARITY_CASES", 520)
	seed := uint64(envInt("HERALD_PARITY_SEED", 16))
	cases := corpus(seed, n)
	t.Logf("corpus: %d cases from seed %d (HERALD_PARITY_CASES, HERALD_PARITY_SEED), both sides in %s mode", len(cases), seed, mode.name)
	var diffs []difference
	probes := 0
	for first := 0; first < len(cases); first += batchSize {
		batch := cases[first:min(first+batchSize, len(cases))]
		began := time.Now()
		apply(t, cs, batch)
		waitProgrammed(t, cs, procs, first, mode.programmed)
		applied := time.Now()
		d, p := compare(batch, mode.patient)
		diffs, probes = append(diffs, d...), probes+p
		t.Logf("cases %d-%d: applied and programmed in %v, %d probes compared on both sides in %v, %d differences",
			first, first+len(batch)-1, applied.Sub(began).Round(time.Millisecond), p, time.Since(applied).Round(time.Millisecond), len(d))
		if first+batchSize < len(cases) {
			deleteBatch(t, cs)
		}
	}
	// The table's verdict first: the zone change stops the test when it fails.
	report(t, table, diffs, probes, mode)
	checkZoneChange(t, cs, procs, mode.zoneChange)
}

// createNodes creates node A (the proxies' node) and node B with zones and addresses.
func createNodes(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for _, n := range []struct {
		name, zone string
		ips        []string
	}{{nodeA, zoneA, []string{nodeIP.String(), nodeIP6.String()}}, {nodeB, zoneB, []string{"10.0.0.2", "fd00::2"}}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelTopologyZone: n.zone}}}
		created, err := cs.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range n.ips {
			created.Status.Addresses = append(created.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		}
		created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// apply creates the batch's Services, EndpointSlices and LoadBalancer statuses, 16 at a time,
// and fills in the addresses the apiserver allocated.
func apply(t *testing.T, cs kubernetes.Interface, batch []*svcCase) {
	t.Helper()
	ctx := t.Context()
	work := make(chan *svcCase)
	errs := make(chan error, len(batch))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				errs <- applyOne(ctx, cs, c)
			}
		}()
	}
	for i, c := range batch {
		c.index = i
		c.addresses()
		work <- c
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func applyOne(ctx context.Context, cs kubernetes.Interface, c *svcCase) error {
	svc, slice := c.objects()
	created, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("%s: slice: %w", c.name, err)
	}
	created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: c.lbIP.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
	if _, err := cs.CoreV1().Services(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("%s: status: %w", c.name, err)
	}
	c.clusterIP = netip.MustParseAddr(created.Spec.ClusterIP)
	c.nodePort = uint16(created.Spec.Ports[0].NodePort)
	return nil
}

// waitProgrammed waits until both sides have finished a sync that read the whole batch, in two
// rounds of canaries (one Service per family each). Each proxy reads Services and EndpointSlices
// in the order they were written, and programs the whole state it has read in each sync, so a
// sync that programs a canary read the batch written before it. But a canary that answers proves
// only that such a sync has begun to program the kernel: kube-proxy's IPVS mode creates its
// virtual services first and runs iptables-restore (masquerade, source ranges, rejects) and its
// ipset updates after them, so the first canary answers while the batch's iptables side is not in
// place yet. The second round's canaries are created once the first answer on both sides: the
// sync that programs them read them after the first canaries' sync had begun, so it is a later
// one, and both proxies sync serially (kube-proxy's one sync runner, Herald's dataplane.Runner):
// when they answer, the sync that programmed the first round, and the batch, has finished.
//
// kube-proxy's metrics cannot say the same: kubeproxy_sync_proxy_rules_last_timestamp_seconds
// is stamped at the end of a sync, so a sync that began before the batch was queued and ended
// after it looks like one that programmed it.
func waitProgrammed(t *testing.T, cs kubernetes.Interface, procs map[string]proc.Process, round int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	index := 10000
	for _, pass := range []string{"begun", "finished"} {
		var canaries []*svcCase
		for _, v6 := range []bool{false, true} {
			c := &svcCase{name: fmt.Sprintf("canary-%d-%s-%v", round, pass, v6), proto: corev1.ProtocolTCP, v6: v6, ranges: rangesNone,
				topology: topoNone, endpoints: []endpoint{{endpointPods[0], conditions[0]}}, index: index}
			index++
			createNamed(t, cs, c)
			canaries = append(canaries, c)
		}
		for _, side := range sides {
			for _, c := range canaries {
				waitCanary(t, procs[side], side, c, deadline, within)
			}
		}
	}
}

// waitCanary waits until side answers at c's ClusterIP from the client pod.
func waitCanary(t *testing.T, p proc.Process, side string, c *svcCase, deadline time.Time, within time.Duration) {
	t.Helper()
	dst := netip.AddrPortFrom(c.clusterIP, c.port())
	for {
		if r := request(nsName(side, "ac"), "TCP", netip.Addr{}, dst, 500*time.Millisecond); r.kind == answered {
			return
		}
		if !p.Alive() {
			t.Fatalf("%s exited:\n%s", p.Name, p.Tail(4000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not program canary %s within %v:\n%s", p.Name, dst, within, p.Tail(4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deleteBatch deletes every Service and EndpointSlice of the namespace and waits until they are gone.
func deleteBatch(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	list, err := cs.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if err := cs.CoreV1().Services(namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	if err := cs.DiscoveryV1().EndpointSlices(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// difference is a probe whose outcome differs between the sides.
type difference struct {
	c                 *svcCase
	p                 probe
	attrs             map[string]string
	kubeProxy, herald string
}

// compare sends every probe of the batch on both sides and returns the differences and the
// number of probes. 32 Services are probed at a time, each one's probes in order: with session
// affinity, which endpoint a probe finds depends on the probes before it from the same source,
// and the order must be the same on both sides.
func compare(batch []*svcCase, patient time.Duration) ([]difference, int) {
	work := make(chan *svcCase)
	var mu sync.Mutex
	var diffs []difference
	probes := 0
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				for _, p := range c.probes() {
					k, h := outcomes(c, p, patient)
					mu.Lock()
					probes++
					if k != h {
						attrs := c.attrs()
						attrs["src"], attrs["dst"] = p.src, p.dst
						diffs = append(diffs, difference{c, p, attrs, k, h})
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range batch {
		work <- c
	}
	close(work)
	wg.Wait()
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].c.index < diffs[j].c.index })
	return diffs, probes
}

// Requests per probe and side; on a difference both sides get resampleRequests more, so that a
// set of endpoints one side happened not to show in a few random picks is not taken for a
// difference.
const (
	sampleRequests   = 8
	resampleRequests = 48
	dropTimeout      = 800 * time.Millisecond
)

// outcomes probes both sides at once and returns what each did.
func outcomes(c *svcCase, p probe, patient time.Duration) (k, h string) {
	sample := func(n int, timeout time.Duration) map[string]*tally {
		results := make([]*tally, 2)
		var wg sync.WaitGroup
		for i, side := range sides {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = sampleSide(nsName(side, p.host), string(c.proto), p, n, timeout)
			}()
		}
		wg.Wait()
		return map[string]*tally{sideKubeProxy: results[0], sideHerald: results[1]}
	}
	t := sample(sampleRequests, dropTimeout)
	if t[sideKubeProxy].String(c) != t[sideHerald].String(c) {
		// A random miss, or a slow first packet under load: look harder before calling it a difference.
		more := sample(resampleRequests, patient)
		for _, side := range sides {
			t[side].merge(more[side])
		}
	}
	return t[sideKubeProxy].String(c), t[sideHerald].String(c)
}

// tally counts one side's replies to a probe.
type tally struct {
	answers map[string]bool // "backend<-source"
	kinds   map[string]int  // unanswered kinds
	failure string          // the first error of kind failed
}

func (t *tally) merge(o *tally) {
	for a := range o.answers {
		t.answers[a] = true
	}
	for k, n := range o.kinds {
		t.kinds[k] += n
	}
	if t.failure == "" {
		t.failure = o.failure
	}
	// What one patient look answered or refused without a drop, a hasty one may have called
	// dropped: a SYN that IPVS drops (a reused tuple) is answered or refused on its retransmit,
	// after the hasty timeout. Seen for refusals too, on either side at random, in the long IPVS run.
	if (len(o.answers) > 0 || o.kinds[refused] > 0) && o.kinds[dropped] == 0 {
		delete(t.kinds, dropped)
	}
}

// String is the outcome as compared: the endpoints that answered with the source each saw
// (with session affinity only how many did: which one the first pick chose is chance), and
// what became of the unanswered requests.
func (t *tally) String(c *svcCase) string {
	var parts []string
	if len(t.answers) > 0 {
		answers := slices.Sorted(func(yield func(string) bool) {
			for a := range t.answers {
				if !yield(a) {
					return
				}
			}
		})
		if c.affinity {
			parts = append(parts, fmt.Sprintf("answered by %d endpoint(s) (affinity)", len(answers)))
		} else {
			parts = append(parts, "answered by "+strings.Join(answers, ","))
		}
	}
	for _, k := range []string{refused, unreachable, dropped} {
		if t.kinds[k] > 0 {
			parts = append(parts, k)
		}
	}
	if t.kinds[failed] > 0 {
		parts = append(parts, "failed ("+t.failure+")")
	}
	return strings.Join(parts, "+")
}

func sampleSide(ns, proto string, p probe, n int, timeout time.Duration) *tally {
	t := &tally{answers: map[string]bool{}, kinds: map[string]int{}}
	for i := 0; i < n; i++ {
		r := request(ns, proto, p.from, p.to, timeout)
		if r.kind == answered {
			t.answers[r.backend+"<-"+r.source] = true
			continue
		}
		t.kinds[r.kind]++
		if r.kind == failed && t.failure == "" {
			t.failure = r.err.Error()
		}
		if len(t.answers) == 0 && t.kinds[r.kind] == 2 {
			break // refused or dropped twice, never answered: that is the outcome
		}
	}
	return t
}

// report matches every difference against the parity table and fails the test on the ones no
// row explains.
func report(t *testing.T, table []tableRow, diffs []difference, probes int, mode parityMode) {
	t.Helper()
	explained := make([]int, len(table))
	var unexplained []difference
	for _, d := range diffs {
		row := -1
		for i, r := range table {
			if r.matches(d.attrs) {
				row = i
				break
			}
		}
		if row < 0 {
			unexplained = append(unexplained, d)
			continue
		}
		explained[row]++
	}
	for i, r := range table {
		t.Logf("%s parity table row %q (%s): %d differences", mode.name, r.item, r.when, explained[i])
	}
	t.Logf("%d probes, %d differences, %d explained by the %s table of docs/parity.md, %d not", probes, len(diffs), len(diffs)-len(unexplained), mode.name, len(unexplained))
	for i, d := range unexplained {
		if i == 40 {
			t.Errorf("... and %d more", len(unexplained)-i)
			break
		}
		t.Errorf("difference not in the %s table of docs/parity.md: %s\n  case %s\n  kube-proxy: %s\n  herald:     %s", mode.name, d.p, d.c.describe(), d.kubeProxy, d.herald)
	}
	// All of them by the attributes rows usually name, for writing a row (only 40 are shown).
	groups := map[string]int{}
	for _, d := range unexplained {
		groups[fmt.Sprintf("src=%s dst=%s proto=%s etp=%s itp=%s affinity=%s ranges=%s local-endpoints=%s", d.attrs["src"], d.attrs["dst"],
			d.attrs["proto"], d.attrs["etp"], d.attrs["itp"], d.attrs["affinity"], d.attrs["ranges"], d.attrs["local-endpoints"])]++
	}
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		t.Logf("not in the table: %d x %s", groups[g], g)
	}
}

// tableRow is a row of the parity table: a difference Herald keeps on purpose (or has not fixed
// yet), and the probes it covers.
type tableRow struct {
	item, when string
	conds      map[string][]string
}

func (r tableRow) matches(attrs map[string]string) bool {
	for k, vals := range r.conds {
		if !slices.Contains(vals, attrs[k]) {
			return false
		}
	}
	return true
}

// readParityTable reads the rows of the table that follows the marker line in path. The second
// column holds the condition in backquotes: space-separated key=value, a value may list
// alternatives with "|", escaped in the Markdown (`src=pod\|node dst=lb etp=Local`).
func readParityTable(path, marker string) ([]tableRow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, after, ok := strings.Cut(string(b), marker)
	if !ok {
		return nil, fmt.Errorf("%s: no line %s", path, marker)
	}
	var rows []tableRow
	header := false
	for _, line := range strings.Split(after, "\n") {
		line = strings.TrimSpace(line)
		if header && !strings.HasPrefix(line, "|") {
			break // the table ends (it may have no rows)
		}
		if strings.HasPrefix(line, "| Item") {
			header = true
		}
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|--") || strings.HasPrefix(line, "| Item") {
			continue
		}
		// A "|" inside a cell is written "\|" (Markdown's escape).
		cells := strings.Split(strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00"), "|")
		if len(cells) < 2 {
			return nil, fmt.Errorf("%s: row %q has no condition column", path, line)
		}
		when := strings.ReplaceAll(strings.Trim(strings.TrimSpace(cells[1]), "`"), "\x00", "|")
		r := tableRow{item: strings.TrimSpace(cells[0]), when: when, conds: map[string][]string{}}
		for _, f := range strings.Fields(when) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return nil, fmt.Errorf("%s: row %q: %q is not key=value", path, r.item, f)
			}
			r.conds[k] = strings.Split(v, "|")
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// createNamed creates c's Service and EndpointSlice under c's own name (outside the corpus's
// numbering) and sets c.clusterIP to the address the apiserver gave it.
func createNamed(t *testing.T, cs kubernetes.Interface, c *svcCase) {
	t.Helper()
	c.addresses()
	svc, slice := c.objects()
	svc.Name, slice.Name = c.name, c.name+"-1"
	slice.Labels["kubernetes.io/service-name"] = c.name
	created, err := cs.CoreV1().Services(namespace).Create(t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.clusterIP = netip.MustParseAddr(created.Spec.ClusterIP)
}
