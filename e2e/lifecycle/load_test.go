package lifecycle

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/lab"
)

// target is one address the load reaches: a LoadBalancer IP of one Service, one family.
type target struct {
	Service string // Service name
	Local   bool   // externalTrafficPolicy Local
	Addr    netip.AddrPort
	From    string // lab host the load starts from
	// BGP: the address is announced by BGP (reached from behind the router, watched at BIRD),
	// else by L2 (reached from the segment's client, watched with ARP/NDP).
	BGP bool
}

func (t target) String() string { return t.Service + " " + t.Addr.String() }

// counts are what the load saw, per target; every field only grows, so the figures of an event are
// the difference between two snapshots (Sub).
type counts struct {
	Conns, Failed   int // new connections (one HTTP request each) started and failed
	Slow            int // new connections answered, but after more than a second (a lost SYN, a retransmit)
	Streams, Broken int // long-lived streams opened and broken (a read error, or no line for streamStall)
	Open            int // streams open now (a gauge: Sub keeps the later value)
	// BrokenOn counts broken streams by the node of the backend that was serving them.
	BrokenOn map[string]int
	Moves    int // owner (MAC) changes of the target's IP seen by the client's ARP/NDP probes
	Dual     int // ARP requests for the target's IP that two MACs answered (a handover's overlap)
	// Routes counts the changes of the set of nodes BIRD holds a path from for the target's IP
	// (BGP); Gaps the times that set went empty: a withdrawal before another path was in, which
	// make-before-break never shows.
	Routes, Gaps int
	Writes       int // writes to the target's Service (resourceVersion changes)
	Errors       map[string]int
}

func (c counts) clone() counts {
	d := c
	d.BrokenOn, d.Errors = map[string]int{}, map[string]int{}
	for k, v := range c.BrokenOn {
		d.BrokenOn[k] = v
	}
	for k, v := range c.Errors {
		d.Errors[k] = v
	}
	return d
}

// Sub is what happened between snapshot o and c.
func (c counts) Sub(o counts) counts {
	d := c.clone()
	d.Conns -= o.Conns
	d.Failed -= o.Failed
	d.Slow -= o.Slow
	d.Streams -= o.Streams
	d.Broken -= o.Broken
	d.Moves -= o.Moves
	d.Dual -= o.Dual
	d.Routes -= o.Routes
	d.Gaps -= o.Gaps
	d.Writes -= o.Writes
	for k, v := range o.BrokenOn {
		if d.BrokenOn[k] -= v; d.BrokenOn[k] == 0 {
			delete(d.BrokenOn, k)
		}
	}
	for k, v := range o.Errors {
		if d.Errors[k] -= v; d.Errors[k] == 0 {
			delete(d.Errors, k)
		}
	}
	return d
}

const (
	// streamInterval is how often a stream's backend sends a line; streamStall without one is a
	// broken stream (a black-holed path shows as silence, not as an error).
	streamInterval = 100 * time.Millisecond
	streamStall    = 2 * time.Second
	// connTimeout is how long a new connection is given to answer: beyond a lost SYN's 1 s
	// retransmit, so a failure is a real one.
	connTimeout = 3 * time.Second
)

// load keeps new connections and long-lived streams going to every target from the client hosts
// (the segment's client for L2 addresses, the one behind the router for BGP addresses), watches
// the owners of the L2 addresses with ARP (IPv4) and NDP (IPv6) probes from the segment's client
// and the paths of the BGP addresses at the router's BIRD, and counts the writes to the Services. Start starts it; Stop stops and waits for all of
// its goroutines.
type load struct {
	l       *lab.Lab
	cs      kubernetes.Interface
	ns      string
	targets []target
	rate    int // new connections per second per target
	streams int // long-lived streams per target

	mu     sync.Mutex
	counts map[string]*counts // by target String
	owner  map[netip.Addr]string
	// paths are the nodes BIRD holds a path from, per BGP address (sorted).
	paths map[netip.Addr][]string
	// changes are the owner changes (L2) and path changes (BGP), in order.
	changes []change
	last    time.Time // last failure, broken stream, move or route change
	events  []disruption
	// announced are the gratuitous ARPs and unsolicited NAs of the L2 addresses the client
	// received, in order (watchAnnouncements).
	announced []announcement

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLoad(l *lab.Lab, cs kubernetes.Interface, ns string, targets []target, rate, streams int) *load {
	ld := &load{l: l, cs: cs, ns: ns, targets: targets, rate: rate, streams: streams,
		counts: map[string]*counts{}, owner: map[netip.Addr]string{}, paths: map[netip.Addr][]string{}}
	for _, t := range targets {
		ld.counts[t.String()] = &counts{BrokenOn: map[string]int{}, Errors: map[string]int{}}
	}
	return ld
}

func (ld *load) add(t target, f func(c *counts)) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	f(ld.counts[t.String()])
}

// disruption is one failed connection, broken stream or move, for the event's timeline.
type disruption struct {
	At   time.Time
	What string
	Note bool // not a disruption: what Herald's pods did
}

// disrupted records a disruption now.
func (ld *load) disrupted(t target, what string) {
	ld.mu.Lock()
	ld.last = time.Now()
	ld.events = append(ld.events, disruption{At: ld.last, What: t.String() + ": " + what})
	ld.mu.Unlock()
}

// Disruptions returns the disruptions since from.
func (ld *load) Disruptions(from time.Time) []disruption {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var out []disruption
	for _, d := range ld.events {
		if !d.At.Before(from) {
			out = append(out, d)
		}
	}
	return out
}

// Snapshot returns every target's counts so far.
func (ld *load) Snapshot() map[string]counts {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := map[string]counts{}
	for k, c := range ld.counts {
		out[k] = c.clone()
	}
	return out
}

// LastDisruption is when a connection last failed, a stream broke or an IP moved.
func (ld *load) LastDisruption() time.Time {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.last
}

// Owners returns the node that last answered ARP/NDP for each probed address.
func (ld *load) Owners() map[netip.Addr]string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := map[netip.Addr]string{}
	for k, v := range ld.owner {
		out[k] = v
	}
	return out
}

func (ld *load) Start(ctx context.Context) error {
	ctx, ld.cancel = context.WithCancel(ctx)
	w, err := ld.cs.CoreV1().Services(ld.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ld.goRun(func() { ld.countWrites(ctx, w) })
	pw, err := ld.cs.CoreV1().Pods(lab.HeraldNamespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ld.goRun(func() { ld.notePods(ctx, pw) })
	if dir := os.Getenv(keepLogsEnv); dir != "" {
		ld.goRun(func() { keepPodLogs(ctx, ld.l, dir) })
	}
	probed := map[netip.Addr]bool{}
	for _, t := range ld.targets {
		ld.goRun(func() { ld.connect(ctx, t) })
		for range ld.streams {
			ld.goRun(func() { ld.stream(ctx, t) })
		}
		if ip := t.Addr.Addr(); !probed[ip] && !t.BGP {
			probed[ip] = true
			ld.goRun(func() { ld.probeOwner(ctx, t) })
		}
	}
	if slices.ContainsFunc(ld.targets, func(t target) bool { return t.BGP }) {
		ld.goRun(func() { ld.watchRoutes(ctx) })
	}
	if slices.ContainsFunc(ld.targets, func(t target) bool { return !t.BGP }) {
		ld.goRun(func() { ld.watchAnnouncements(ctx) })
	}
	return nil
}

func (ld *load) Stop() {
	ld.cancel()
	ld.wg.Wait()
}

func (ld *load) goRun(f func()) {
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		f()
	}()
}

// connect starts rate new connections per second to t, each one HTTP request, without waiting
// for the previous one (a slow answer does not slow the load down).
func (ld *load) connect(ctx context.Context, t target) {
	c, err := ld.l.HTTPClient(t.From, connTimeout)
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors[err.Error()]++ })
		return
	}
	tick := time.NewTicker(time.Second / time.Duration(ld.rate))
	defer tick.Stop()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			began := time.Now()
			err := get(ctx, c, t.Addr)
			if ctx.Err() != nil {
				return // stopping: not counted
			}
			took := time.Since(began)
			if err != nil {
				ld.disrupted(t, "new connection: "+shortError(err))
			}
			ld.add(t, func(c *counts) {
				c.Conns++
				switch {
				case err != nil:
					c.Failed++
					c.Errors[shortError(err)]++
				case took > time.Second:
					c.Slow++
				}
			})
		}()
	}
}

func get(ctx context.Context, c *http.Client, addr netip.AddrPort) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r lab.BackendReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("HTTP %d, not a backend's answer: %w", resp.StatusCode, err)
	}
	return nil
}

// shortError drops the addresses from an error so equal failures count together.
func shortError(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// stream keeps one long-lived connection to t open: a GET of the backend's /stream, which sends a
// line every streamInterval. An error or streamStall without a line breaks it; it is then counted
// (with the node its backend ran on) and opened again.
func (ld *load) stream(ctx context.Context, t target) {
	h, err := ld.l.Host(t.From)
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors[err.Error()]++ })
		return
	}
	dial := lab.DialerIn(h.Netns)
	for ctx.Err() == nil {
		node, err := ld.streamOnce(ctx, dial, t)
		if node != "" {
			ld.add(t, func(c *counts) { c.Open-- })
		}
		if ctx.Err() != nil {
			return
		}
		if node != "" { // it was open: broken
			ld.disrupted(t, "stream via a backend on "+node+": "+shortError(err))
			ld.add(t, func(c *counts) { c.Broken++; c.BrokenOn[node]++; c.Errors["stream: "+shortError(err)]++ })
		} else {
			ld.add(t, func(c *counts) { c.Errors["stream open: "+shortError(err)]++ })
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// streamOnce opens a stream and reads it until it breaks or ctx ends; node is the backend's node
// once the stream was open (its first line read), empty if it never opened.
func (ld *load) streamOnce(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), t target) (node string, err error) {
	dctx, cancel := context.WithTimeout(ctx, connTimeout)
	conn, err := dial(dctx, "tcp", t.Addr.String())
	cancel()
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(connTimeout))
	if _, err := fmt.Fprintf(conn, "GET /stream?interval=%s HTTP/1.1\r\nHost: %s\r\n\r\n", streamInterval, t.Addr); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(streamStall))
		if !lines.Scan() {
			err := lines.Err()
			if err == nil {
				err = fmt.Errorf("the backend ended the stream")
			}
			return node, err
		}
		if node == "" {
			var r lab.BackendReply
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
				return "", err
			}
			node = r.Node
			ld.add(t, func(c *counts) { c.Streams++; c.Open++ })
		}
	}
}

// probeOwner watches the owner of t's address from the segment's client for as long as the load
// runs, one probe every ~100 ms: arping (IPv4) sends a request every 100 ms; ndisc6 (IPv6) has no
// continuous mode, so a shell in the client runs it round after round, each round one Neighbor
// Solicitation and 100 ms of collecting every advertisement (-m). A round answered by one MAC
// alone names the owner, and changes of it are counted as moves; a round two MACs answered is
// counted as Dual, not as moves.
func (ld *load) probeOwner(ctx context.Context, t target) {
	ip := t.Addr.Addr()
	seen := func(mac string, at time.Time) {
		h := ld.l.HostByMAC(mac)
		name := mac
		if h != nil {
			name = h.Name
		}
		ld.mu.Lock()
		prev, known := ld.owner[ip]
		ld.owner[ip] = name
		if known && prev != name {
			ld.changes = append(ld.changes, change{At: at, Addr: ip, From: []string{prev}, To: []string{name}})
		}
		ld.mu.Unlock()
		if known && prev != name {
			ld.disrupted(t, "moved from "+prev+" to "+name)
			for _, o := range ld.targets {
				if o.Addr.Addr() == ip {
					ld.add(o, func(c *counts) { c.Moves++ })
				}
			}
		}
	}
	every := strconv.FormatInt(probeEvery.Milliseconds(), 10)
	// -b: every request broadcast, so whoever answers for the address now answers it (arping
	// otherwise unicasts to the MAC of the first reply, and a new owner is seen only once a
	// gratuitous ARP of its reaches the client).
	argv := []string{"arping", "-b", "-i", "eth0", "-W", strconv.FormatFloat(probeEvery.Seconds(), 'f', -1, 64), ip.String()}
	if ip.Is6() {
		argv = []string{"sh", "-c", fmt.Sprintf("while :; do ndisc6 -m -n -r 1 -w %s %s eth0; echo %s; done", every, ip, ndiscRoundEnd)}
	}
	cmd, err := ld.l.Command(ctx, lab.HostClient, argv...)
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors[argv[0]+": "+err.Error()]++ })
		return
	}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors[argv[0]+": "+err.Error()]++ })
		return
	}
	// The MACs that answered the current round, and when its first answer came (a move's time).
	macs := map[string]bool{}
	var first time.Time
	answer := func(mac string) {
		if len(macs) == 0 {
			first = time.Now()
		}
		macs[mac] = true
	}
	decide := func() {
		switch len(macs) {
		case 1:
			for m := range macs {
				seen(m, first)
			}
		case 0:
		default:
			ld.add(t, func(c *counts) { c.Dual++ })
		}
		clear(macs)
	}
	// arping's lines are "42 bytes from MAC (IP): index=N time=...": the MACs of request N are
	// known once a reply to a later request arrives. ndisc6's rounds end with ndiscRoundEnd, and
	// each advertisement prints "Target link-layer address: MAC".
	index := ""
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if ip.Is6() {
			if len(f) == 1 && f[0] == ndiscRoundEnd {
				decide()
			} else if len(f) == 4 && f[1] == "link-layer" {
				if hw, err := net.ParseMAC(f[3]); err == nil {
					answer(hw.String())
				}
			}
			continue
		}
		if len(f) < 6 || f[1] != "bytes" {
			continue
		}
		hw, err := net.ParseMAC(f[3])
		if err != nil {
			continue
		}
		if f[5] != index {
			decide()
			index = f[5]
		}
		answer(hw.String())
	}
	if err := cmd.Wait(); ctx.Err() == nil {
		ld.add(t, func(c *counts) { c.Errors[fmt.Sprintf("%s ended: %v", argv[0], err)]++ })
	}
}

// probeEvery is how often the owner of an L2 address is asked: a move is seen up to this late.
const probeEvery = 100 * time.Millisecond

// ndiscRoundEnd is the line the IPv6 probe's shell prints after each ndisc6 round.
const ndiscRoundEnd = "ROUND-END"

// routePoll is how often BIRD's table is read: a gap shorter than it can go unseen (the streams
// and connections from behind the router would still show its damage).
const routePoll = 100 * time.Millisecond

// watchRoutes reads BIRD's routes every routePoll for as long as the load runs and counts, per
// BGP address, the changes of the set of nodes BIRD holds a path from (Routes), and the times
// that set went empty (Gaps).
func (ld *load) watchRoutes(ctx context.Context) {
	byAddr := map[netip.Addr][]target{}
	for _, t := range ld.targets {
		if t.BGP {
			byAddr[t.Addr.Addr()] = append(byAddr[t.Addr.Addr()], t)
		}
	}
	tick := time.NewTicker(routePoll)
	defer tick.Stop()
	for {
		routes, err := ld.l.BirdRoutes(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			for _, ts := range byAddr {
				ld.add(ts[0], func(c *counts) { c.Errors["birdc: "+shortError(err)]++ })
				break
			}
		} else {
			now := map[netip.Addr][]string{}
			for _, r := range routes {
				if a := r.Prefix.Addr(); r.Prefix.IsSingleIP() && byAddr[a] != nil {
					// BIRD's protocols are named <node>v4 and <node>v6 (e2e/lab/bird.conf.tmpl).
					now[a] = append(now[a], strings.TrimSuffix(strings.TrimSuffix(r.Protocol, "v4"), "v6"))
				}
			}
			for a, ts := range byAddr {
				ld.notePaths(a, ts, now[a])
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// notePaths records nodes as the BGP address a's paths at BIRD.
func (ld *load) notePaths(a netip.Addr, ts []target, nodes []string) {
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	ld.mu.Lock()
	prev, known := ld.paths[a]
	ld.paths[a] = nodes
	changed := known && !slices.Equal(prev, nodes)
	if changed {
		ld.changes = append(ld.changes, change{At: time.Now(), Addr: a, From: prev, To: nodes})
	}
	ld.mu.Unlock()
	if !changed {
		return
	}
	gap := len(nodes) == 0 && len(prev) > 0
	what := fmt.Sprintf("BGP paths from %v -> %v", prev, nodes)
	if gap {
		what += " (withdrawn with no other path in)"
	}
	ld.disrupted(ts[0], what)
	for _, t := range ts {
		ld.add(t, func(c *counts) {
			c.Routes++
			if gap {
				c.Gaps++
			}
		})
	}
}

// change is an owner change of an L2 address (From and To one node each) or a change of the
// nodes BIRD holds a path from for a BGP address.
type change struct {
	At       time.Time
	Addr     netip.Addr
	From, To []string
}

// MovesOf counts the L2 owner changes between from and to away from node and to it.
func (ld *load) MovesOf(node string, from, to time.Time) (away, back int) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, c := range ld.changes {
		if c.At.Before(from) || c.At.After(to) || len(c.From) != 1 || len(c.To) != 1 || ld.paths[c.Addr] != nil {
			continue // outside, or a BGP address's paths
		}
		if c.From[0] == node {
			away++
		}
		if c.To[0] == node {
			back++
		}
	}
	return away, back
}

// Paths returns the nodes BIRD holds a path from for each BGP address.
func (ld *load) Paths() map[netip.Addr][]string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := map[netip.Addr][]string{}
	for k, v := range ld.paths {
		out[k] = slices.Clone(v)
	}
	return out
}

// FailedOver returns, per address node served when the node was cut off at cut, how long after
// cut it first stopped doing so: an L2 address moved away from node, a BGP address lost node's
// path. An address still served by node has no entry.
func (ld *load) FailedOver(node string, cut time.Time, owners map[netip.Addr]string, paths map[netip.Addr][]string) map[netip.Addr]time.Duration {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := map[netip.Addr]time.Duration{}
	for _, c := range ld.changes {
		if c.At.Before(cut) {
			continue
		}
		if _, done := out[c.Addr]; done {
			continue
		}
		served := owners[c.Addr] == node || slices.Contains(paths[c.Addr], node)
		if served && slices.Contains(c.From, node) && !slices.Contains(c.To, node) {
			out[c.Addr] = c.At.Sub(cut)
		}
	}
	return out
}

// notePods puts Herald's pods' changes (created, Ready, terminating, gone) on the timeline, so a
// disruption can be told from what Herald was doing.
func (ld *load) notePods(ctx context.Context, w watch.Interface) {
	defer w.Stop()
	state := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			now := "created"
			switch {
			case ev.Type == watch.Deleted:
				now = "gone"
			case p.DeletionTimestamp != nil:
				now = "terminating"
			case p.Status.PodIP != "" && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			}):
				now = "Ready"
			case slices.ContainsFunc(p.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool { return c.State.Running != nil }):
				now = "running"
			}
			if state[p.Name] == now {
				continue
			}
			state[p.Name] = now
			ld.mu.Lock()
			ld.events = append(ld.events, disruption{At: time.Now(), What: "(pod " + p.Name + "@" + p.Spec.NodeName + " " + now + ")", Note: true})
			ld.mu.Unlock()
		}
	}
}

// keepLogsEnv names a directory where the test keeps a copy of Herald's pods' logs: the kubelet
// removes a pod's logs with the pod, and an upgrade replaces every pod.
const keepLogsEnv = "HERALD_LIFECYCLE_KEEP_LOGS"

// keepPodLogs copies Herald's pods' container logs into dir every second until ctx ends.
func keepPodLogs(ctx context.Context, l *lab.Lab, dir string) {
	for {
		files, _ := filepath.Glob(filepath.Join(l.Dir, "nodes", "*", "pod-logs", lab.HeraldNamespace+"_*", "*", "*.log"))
		for _, f := range files {
			rel, err := filepath.Rel(filepath.Join(l.Dir, "nodes"), f)
			if err != nil {
				continue
			}
			if b, err := os.ReadFile(f); err == nil {
				out := filepath.Join(dir, rel)
				if os.MkdirAll(filepath.Dir(out), 0o755) == nil {
					_ = os.WriteFile(out, b, 0o644) // best effort: a copy for reading, not a result
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// countWrites counts every change of a Service's resourceVersion in the namespace (any write: its
// status by Herald's controller, metadata, spec).
func (ld *load) countWrites(ctx context.Context, w watch.Interface) {
	defer w.Stop()
	seen := map[string]string{} // the last status and annotations of each Service, to say what a write changed
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			s, isSvc := ev.Object.(*corev1.Service)
			if !isSvc {
				continue
			}
			now, _ := json.Marshal(map[string]any{"status": s.Status, "annotations": s.Annotations})
			before := seen[s.Name]
			seen[s.Name] = string(now)
			if ev.Type != watch.Modified {
				continue
			}
			ld.mu.Lock()
			ld.events = append(ld.events, disruption{At: time.Now(), What: "(Service " + s.Name + " written: " + string(now) + ", was " + before + ")", Note: true})
			ld.mu.Unlock()
			for _, t := range ld.targets {
				if t.Service == s.Name { // counted once, on the Service's first target
					ld.add(t, func(c *counts) { c.Writes++ })
					break
				}
			}
		}
	}
}

// total sums the counts of all targets whose key passes keep.
func total(snap map[string]counts, keep func(key string) bool) counts {
	sum := counts{BrokenOn: map[string]int{}, Errors: map[string]int{}}
	var keys []string
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !keep(k) {
			continue
		}
		c := snap[k]
		sum.Conns += c.Conns
		sum.Failed += c.Failed
		sum.Slow += c.Slow
		sum.Streams += c.Streams
		sum.Broken += c.Broken
		sum.Open += c.Open
		sum.Moves += c.Moves
		sum.Dual += c.Dual
		sum.Routes += c.Routes
		sum.Gaps += c.Gaps
		sum.Writes += c.Writes
		for n, v := range c.BrokenOn {
			sum.BrokenOn[n] += v
		}
		for e, v := range c.Errors {
			sum.Errors[e] += v
		}
	}
	return sum
}
