package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Command returns a command that runs argv inside a lab host.
func (l *Lab) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	h, err := l.Host(host)
	if err != nil {
		return nil, err
	}
	full := inNetns(h.Netns, argv...)
	return exec.CommandContext(ctx, full[0], full[1:]...), nil
}

// Exec runs argv inside a lab host and returns its combined output.
func (l *Lab) Exec(ctx context.Context, host string, argv ...string) ([]byte, error) {
	h, err := l.Host(host)
	if err != nil {
		return nil, err
	}
	return run(ctx, "", inNetns(h.Netns, argv...)...)
}

// Birdc runs a birdc command against the router's BIRD ("show", "route", "all").
func (l *Lab) Birdc(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, "", append([]string{"birdc", "-s", l.BirdSocket}, args...)...)
}

// BirdRoutes returns BIRD's routes with their attributes (`show route all`).
func (l *Lab) BirdRoutes(ctx context.Context) ([]BirdRoute, error) {
	out, err := l.Birdc(ctx, "show", "route", "all")
	if err != nil {
		return nil, err
	}
	return ParseBirdRoutes(out)
}

// BirdRouteCount returns how many routes BIRD holds in all its tables (`show route count`), cheaper
// than listing them when a benchmark waits for thousands.
func (l *Lab) BirdRouteCount(ctx context.Context) (int, error) {
	out, err := l.Birdc(ctx, "show", "route", "count")
	if err != nil {
		return 0, err
	}
	return parseBirdRouteCount(out)
}

// BirdLog is the path of BIRD's log (session events such as a received Cease).
func (l *Lab) BirdLog() string { return filepath.Join(l.Dir, "bird.log") }

// ReconfigureBird appends extra to the lab's BIRD configuration (e.g. another protocol with a
// password) and makes BIRD reload it; sessions whose configuration did not change stay up. An
// empty extra restores the committed configuration.
func (l *Lab) ReconfigureBird(ctx context.Context, extra string) error {
	conf, err := renderBirdConf(l.Topology, l.Dir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "bird.conf"), append(conf, extra...), 0o644); err != nil {
		return err
	}
	out, err := l.Birdc(ctx, "configure")
	if err != nil {
		return err
	}
	if !strings.Contains(string(out), "Reconfigured") && !strings.Contains(string(out), "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure: %s", out)
	}
	return nil
}

// BirdProtocols returns BIRD's protocols (BGP sessions are named <node>v4 and <node>v6).
func (l *Lab) BirdProtocols(ctx context.Context) ([]BirdProtocol, error) {
	out, err := l.Birdc(ctx, "show", "protocols")
	if err != nil {
		return nil, err
	}
	return ParseBirdProtocols(out)
}

// ResolveMACs sends `count` ARP requests (IPv4) or Neighbor Solicitations (IPv6) for ip from host's
// eth0 and returns every distinct MAC that answered, sorted: none when nobody answers, more than one
// when two hosts claim the address. arping and ndisc6 are the tools an operator would use.
func (l *Lab) ResolveMACs(ctx context.Context, host string, ip netip.Addr, count int) ([]string, error) {
	var argv []string
	if ip.Is4() {
		// -r: print only each reply's MAC; -W: interval; -w: give up after this long.
		argv = []string{"arping", "-r", "-i", segmentIf, "-c", strconv.Itoa(count), "-W", "0.1",
			"-w", strconv.FormatFloat(0.1*float64(count)+0.5, 'f', 1, 64), ip.String()}
	} else {
		// -m: wait for and print every advertisement; -n: numeric; -r attempts, -w ms each.
		argv = []string{"ndisc6", "-m", "-n", "-r", strconv.Itoa(count), "-w", "300", ip.String(), segmentIf}
	}
	out, err := l.Exec(ctx, host, argv...)
	// Both tools exit non-zero when nobody answers: that is an answer (no MAC), not an error.
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, err
	}
	return parseMACs(string(out)), nil
}

// parseMACs picks MAC addresses out of arping -r / ndisc6 output.
func parseMACs(out string) []string {
	seen := map[string]bool{}
	for _, f := range strings.FieldsFunc(out, func(r rune) bool { return r == ' ' || r == '\n' || r == '\t' }) {
		if hw, err := net.ParseMAC(f); err == nil && len(hw) == 6 {
			seen[hw.String()] = true
		}
	}
	var macs []string
	for m := range seen {
		macs = append(macs, m)
	}
	sort.Strings(macs)
	return macs
}

// HostByMAC returns the segment host whose eth0 has mac, or nil.
func (l *Lab) HostByMAC(mac string) *Host {
	for _, h := range l.Topology.Hosts {
		if h.MAC != "" && strings.EqualFold(h.MAC, mac) {
			return h
		}
	}
	return nil
}

// BackendReply is what a backend answers: its name, its node, and the client address it saw.
type BackendReply struct {
	Backend string `json:"backend"`
	Node    string `json:"node"`
	Client  string `json:"client"` // ip:port as the backend's socket saw it
}

// ClientIP is the address part of Client.
func (r BackendReply) ClientIP() netip.Addr {
	ap, err := netip.ParseAddrPort(r.Client)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// HTTPClient returns an HTTP client whose connections start inside a lab host. Keep-alives are off
// so every request is a new connection (and can land on a different backend).
func (l *Lab) HTTPClient(host string, timeout time.Duration) (*http.Client, error) {
	h, err := l.Host(host)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: DialerIn(h.Netns), DisableKeepAlives: true},
	}, nil
}

// Get sends one HTTP request from a lab host to addr (ip:port) and returns the backend's reply.
func (l *Lab) Get(ctx context.Context, host string, addr netip.AddrPort, timeout time.Duration) (BackendReply, error) {
	c, err := l.HTTPClient(host, timeout)
	if err != nil {
		return BackendReply{}, err
	}
	return getBackend(ctx, c, addr)
}

func getBackend(ctx context.Context, c *http.Client, addr netip.AddrPort) (BackendReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/", nil)
	if err != nil {
		return BackendReply{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return BackendReply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return BackendReply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return BackendReply{}, fmt.Errorf("%s: HTTP %d: %s", addr, resp.StatusCode, body)
	}
	var r BackendReply
	if err := json.Unmarshal(body, &r); err != nil {
		return BackendReply{}, fmt.Errorf("%s: not a lab backend's answer: %q", addr, body)
	}
	return r, nil
}

// Spread sends n requests from host to addr and counts the answers per backend; failed requests
// are counted under "".
func (l *Lab) Spread(ctx context.Context, host string, addr netip.AddrPort, n int, timeout time.Duration) (map[string]int, error) {
	c, err := l.HTTPClient(host, timeout)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		r, err := getBackend(ctx, c, addr)
		if ctx.Err() != nil {
			return counts, ctx.Err()
		}
		if err != nil {
			counts[""]++
			continue
		}
		counts[r.Backend]++
	}
	return counts, nil
}

// HTTPAnswer is an HTTP answer as a load balancer's health checker sees it. Its String leaves
// out the Date header, which differs between any two answers, so two servers' answers can be
// compared byte for byte (status, headers, body).
type HTTPAnswer struct {
	Code   int
	Header http.Header
	Body   string
}

func (a HTTPAnswer) String() string {
	h := a.Header.Clone()
	h.Del("Date")
	return fmt.Sprintf("%d %v %q", a.Code, h, a.Body)
}

// FetchHTTP sends one GET for url with c and returns the whole answer.
func FetchHTTP(c *http.Client, url string) (HTTPAnswer, error) {
	resp, err := c.Get(url)
	if err != nil {
		return HTTPAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return HTTPAnswer{resp.StatusCode, resp.Header, string(b)}, err
}

// Probe is one attempt at reaching a service; nil means success.
type Probe func(ctx context.Context) error

// HTTPProbe is a Probe that sends one request from a lab host to addr, each attempt on a new
// connection, giving up on an attempt after attempt (a lost SYN would otherwise cost a 1 s retransmit).
func (l *Lab) HTTPProbe(host string, addr netip.AddrPort, attempt time.Duration) (Probe, error) {
	c, err := l.HTTPClient(host, attempt)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := getBackend(ctx, c, addr)
		return err
	}, nil
}

// Measurement is the result of TimeToFirstSuccess.
type Measurement struct {
	Elapsed  time.Duration // from the event's return to the first successful probe's return
	Attempts int           // probes sent, the successful one included
}

// TimeToFirstSuccess runs event (create a Service, kill a node, ...), then runs probe in a tight
// loop (pausing `interval` after each failure) until it succeeds or ctx ends, and reports how long
// that took from the moment event returned (a nil event: from the call). This is the figure a user feels: how long after X can clients
// reach the service. Other benchmarks reuse it with their own events and probes.
func TimeToFirstSuccess(ctx context.Context, event func(ctx context.Context) error, probe Probe, interval time.Duration) (Measurement, error) {
	if event != nil {
		if err := event(ctx); err != nil {
			return Measurement{}, fmt.Errorf("event: %w", err)
		}
	}
	start := time.Now()
	var m Measurement
	var last error
	for {
		m.Attempts++
		if last = probe(ctx); last == nil {
			m.Elapsed = time.Since(start)
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("no success after %s and %d attempts, last: %w", time.Since(start).Round(time.Millisecond), m.Attempts, last)
		case <-time.After(interval):
		}
	}
}

// Reachable reports whether ip answers at all from a lab host: it opens a TCP connection to a port
// nobody listens on (9, discard) and counts a refusal (the peer's kernel sent a reset) as reached,
// like ping but without needing ICMP tools or sockets.
func (l *Lab) Reachable(ctx context.Context, host string, ip netip.Addr, timeout time.Duration) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := DialerIn(h.Netns)(ctx, "tcp", netip.AddrPortFrom(ip, 9).String())
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("%s cannot reach %s: %w", host, ip, err)
}

// MulticastGroups returns, per switch port (host name), the multicast groups the switch has seen it
// join (`bridge mdb show`). With snooping on, a group's traffic reaches only these ports, so an NDP
// responder must join its addresses' solicited-node groups (ff02::1:ffXX:XXXX) to be asked.
func (l *Lab) MulticastGroups(ctx context.Context) (map[string][]netip.Addr, error) {
	out, err := run(ctx, "", "bridge", "-n", l.Topology.Host(HostSwitch).Netns, "-j", "mdb", "show")
	if err != nil {
		return nil, err
	}
	var dump []struct {
		MDB []struct {
			Port  string `json:"port"`
			Group string `json:"grp"`
		} `json:"mdb"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		return nil, fmt.Errorf("bridge mdb show: %w: %s", err, out)
	}
	groups := map[string][]netip.Addr{}
	for _, d := range dump {
		for _, e := range d.MDB {
			g, err := netip.ParseAddr(e.Group)
			if err != nil {
				continue // layer-2 (MAC) groups
			}
			groups[e.Port] = append(groups[e.Port], g)
		}
	}
	return groups, nil
}

// SolicitedNodeGroup is the multicast group NDP asks for ip on: ff02::1:ff + its last 24 bits.
func SolicitedNodeGroup(ip netip.Addr) netip.Addr {
	a := ip.As16()
	g := netip.MustParseAddr("ff02::1:ff00:0").As16()
	g[13], g[14], g[15] = a[13], a[14], a[15]
	return netip.AddrFrom16(g)
}
