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
	Writes   int // writes to the target's Service (resourceVersion changes)
	Errors   map[string]int
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

// load keeps new connections and long-lived streams going to every target from the client hosts,
// watches the owners of the L2 addresses with ARP (IPv4) and NDP (IPv6) probes from the segment's
// client, and counts the writes to the Services. Start starts it; Stop stops and waits for all of
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
	last   time.Time // last failure, broken stream or move
	events []disruption

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLoad(l *lab.Lab, cs kubernetes.Interface, ns string, targets []target, rate, streams int) *load {
	ld := &load{l: l, cs: cs, ns: ns, targets: targets, rate: rate, streams: streams,
		counts: map[string]*counts{}, owner: map[netip.Addr]string{}}
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
		if ip := t.Addr.Addr(); !probed[ip] && t.From == lab.HostClient {
			probed[ip] = true
			ld.goRun(func() { ld.probeOwner(ctx, t) })
		}
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

// probeOwner runs arping (IPv4) for t's address from the segment's client for as long as the load
// runs, one request every 100 ms, and counts the changes of the MAC that alone answers a request
// (a request two MACs answer is counted as Dual, not as moves); IPv6 is asked with ndisc6 every
// 500 ms, and only single answers count.
func (ld *load) probeOwner(ctx context.Context, t target) {
	ip := t.Addr.Addr()
	seen := func(mac string) {
		h := ld.l.HostByMAC(mac)
		name := mac
		if h != nil {
			name = h.Name
		}
		ld.mu.Lock()
		prev, known := ld.owner[ip]
		ld.owner[ip] = name
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
	if ip.Is6() {
		for ctx.Err() == nil {
			macs, err := ld.l.ResolveMACs(ctx, lab.HostClient, ip, 1)
			if err == nil && len(macs) == 1 {
				seen(macs[0])
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		return
	}
	cmd, err := ld.l.Command(ctx, lab.HostClient, "arping", "-i", "eth0", "-W", "0.1", ip.String())
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors["arping: "+err.Error()]++ })
		return
	}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		ld.add(t, func(c *counts) { c.Errors["arping: "+err.Error()]++ })
		return
	}
	// Lines are "42 bytes from MAC (IP): index=N time=...": the MACs of request N are known once a
	// reply to a later request arrives.
	index, macs := "", map[string]bool{}
	decide := func() {
		switch len(macs) {
		case 1:
			for m := range macs {
				seen(m)
			}
		case 0:
		default:
			ld.add(t, func(c *counts) { c.Dual++ })
		}
		clear(macs)
	}
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
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
		macs[hw.String()] = true
	}
	if err := cmd.Wait(); ctx.Err() == nil {
		ld.add(t, func(c *counts) { c.Errors[fmt.Sprintf("arping ended: %v", err)]++ })
	}
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
