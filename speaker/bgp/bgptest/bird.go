package bgptest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// BirdPeer is one BGP protocol in the router's configuration.
type BirdPeer struct {
	Name     string // BIRD protocol name
	Neighbor netip.Addr
	ASN      uint32 // the node's ASN as BIRD expects it
	LocalASN uint32 // the router's ASN on this session; 0 means RouterASN
	Password string
	// BFD watches the session with BFD; with GracefulRestart too, a BFD failure makes BIRD keep
	// the routes as stale (BIRD's "bfd graceful"), as after a silent session loss.
	BFD bool
	// Multihop makes the session (and its BFD session, RFC 5883) multi-hop although the node is
	// on the router's segment.
	Multihop bool
	// GracefulRestart makes BIRD keep the node's routes as stale when the session drops silently.
	GracefulRestart bool
}

// The timers are the lab's committed ones (e2e/lab/bird.conf.tmpl): reconnect at once after a
// Cease, 9 s hold time, BFD at 100 ms x 3.
var birdConf = template.Must(template.New("bird.conf").Parse(`
log "{{.Dir}}/bird.log" all;
router id {{.RouterID}};
timeformat protocol iso long ms;
timeformat route iso long ms;
protocol device { scan time 10; }
# The segment's routes, so multi-hop sessions' next hops resolve.
protocol direct { ipv4; ipv6; }
protocol bfd {
  interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; {{if .BFDPassive}}passive yes;{{end}} };
  multihop { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; {{if .BFDPassive}}passive yes;{{end}} };
}
{{range .Peers}}
protocol bgp {{.Name}} {
  local as {{if .LocalASN}}{{.LocalASN}}{{else}}{{$.RouterASN}}{{end}};
  neighbor {{.Neighbor}} as {{.ASN}};
  {{if .Multihop}}multihop 2; source address {{if .Neighbor.Is4}}{{$.RouterID}}{{else}}{{$.RouterV6}}{{end}};{{else}}direct;{{end}}
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  hold time 9;
  keepalive time 3;
  {{if .Password}}password "{{.Password}}";{{end}}
  {{if .BFD}}bfd {{if .GracefulRestart}}graceful{{else}}on{{end}};{{end}}
  {{if .GracefulRestart}}graceful restart on;{{end}}
  {{if .Neighbor.Is4}}ipv4{{else}}ipv6{{end}} { import all; export none; gateway {{if .Multihop}}recursive{{else}}direct{{end}}; };
}
{{end}}
`))

// Bird is the router's BIRD and a client on its control socket.
type Bird struct {
	Socket string
	Conf   string
	Log    string
	cmd    *exec.Cmd

	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
}

// WriteBirdConfig renders the router's configuration for peers.
func (t *Topology) WriteBirdConfig(peers []BirdPeer) (string, error) {
	var b strings.Builder
	err := birdConf.Execute(&b, map[string]any{
		"Dir": t.Dir, "RouterID": t.Router.IPv4, "RouterASN": RouterASN, "Peers": peers, "BFDPassive": t.BirdBFDPassive,
		"RouterV6": t.Router.IPv6,
	})
	if err != nil {
		return "", err
	}
	path := filepath.Join(t.Dir, "bird.conf")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// StartBird starts BIRD in the router's namespace with a configuration for peers.
func (t *Topology) StartBird(ctx context.Context, peers []BirdPeer) error {
	conf, err := t.WriteBirdConfig(peers)
	if err != nil {
		return err
	}
	b := &Bird{Socket: filepath.Join(t.Dir, "bird.ctl"), Conf: conf, Log: filepath.Join(t.Dir, "bird.log")}
	// -f: stay in the foreground, so the process we hold is BIRD itself.
	b.cmd = exec.Command("ip", "netns", "exec", t.Router.Netns, "bird", "-f", "-c", conf, "-s", b.Socket, "-P", filepath.Join(t.Dir, "bird.pid"))
	out, err := os.Create(filepath.Join(t.Dir, "bird.out"))
	if err != nil {
		return err
	}
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		return err
	}
	t.Bird = b
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := b.connect(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("BIRD's control socket: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Reconfigure rewrites the configuration and makes BIRD apply it; protocols whose configuration
// did not change keep running.
func (t *Topology) Reconfigure(peers []BirdPeer) error {
	if _, err := t.WriteBirdConfig(peers); err != nil {
		return err
	}
	out, err := t.Bird.Command("configure")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure: %s", out)
	}
	return nil
}

// DialBird connects to a running BIRD's control socket (the lab's, for instance).
func DialBird(socket string) (*Bird, error) {
	b := &Bird{Socket: socket}
	return b, b.connect()
}

// Close closes the control connection.
func (b *Bird) Close() error { return b.conn.Close() }

func (b *Bird) connect() error {
	conn, err := net.Dial("unix", b.Socket)
	if err != nil {
		return err
	}
	b.conn, b.rd = conn, bufio.NewReader(conn)
	_, err = b.readReply() // the "0001 BIRD x.y.z ready." greeting
	return err
}

func (b *Bird) stop() {
	if b.conn != nil {
		b.conn.Close()
	}
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = b.cmd.Process.Kill()
		}
	}
}

// Command runs one CLI command over the control socket (a persistent connection: a query costs
// well under a millisecond, so timing loops can poll it) and returns the reply as birdc prints it.
func (b *Bird) Command(cmd string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := fmt.Fprintf(b.conn, "%s\n", cmd); err != nil {
		return "", err
	}
	return b.readReply()
}

// readReply reads reply lines up to the final one. Each line starts with a 4-digit code and '-'
// (more follow) or ' ' (last); a line starting with a space continues the previous code.
func (b *Bird) readReply() (string, error) {
	var out strings.Builder
	for {
		line, err := b.rd.ReadString('\n')
		if err != nil {
			return out.String(), err
		}
		if strings.HasPrefix(line, " ") {
			out.WriteString(line[1:])
			continue
		}
		if len(line) < 5 {
			return out.String(), fmt.Errorf("BIRD reply line %q", line)
		}
		code, sep, text := line[:4], line[4], line[5:]
		out.WriteString(text)
		if sep == ' ' {
			if code[0] == '8' || code[0] == '9' {
				return out.String(), fmt.Errorf("BIRD: %s", strings.TrimSpace(text))
			}
			return out.String(), nil
		}
	}
}

// Route is one route BIRD holds for a prefix.
type Route struct {
	Protocol string
	NextHop  netip.Addr
	// Attrs are the attribute lines: "BGP.local_pref" -> "100", "BGP.community" -> "(65000,1)".
	Attrs map[string]string
}

// Routes returns BIRD's routes for exactly prefix.
func (b *Bird) Routes(prefix netip.Prefix) ([]Route, error) {
	out, err := b.Command("show route " + prefix.String() + " all")
	if err != nil {
		if strings.Contains(err.Error(), "Network not found") {
			return nil, nil
		}
		return nil, err
	}
	return parseRoutes(out), nil
}

// parseRoutes reads `show route all` output for one prefix: a route line per route
// ("10.0.0.1/32 unicast [n1 12:00:00.000] * (100) [AS64512i]" or, for further routes, the same
// without the prefix), then indented "via" and attribute lines.
func parseRoutes(out string) []Route {
	var routes []Route
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "Table ") || strings.HasPrefix(trimmed, "BIRD "):
		case strings.HasPrefix(line, "\t"):
			if len(routes) == 0 {
				continue
			}
			cur := &routes[len(routes)-1]
			if f := strings.Fields(trimmed); f[0] == "via" && len(f) > 1 {
				cur.NextHop, _ = netip.ParseAddr(f[1])
			} else if k, v, ok := strings.Cut(trimmed, ":"); ok {
				cur.Attrs[k] = strings.TrimSpace(v)
			}
		default:
			open, closing := strings.IndexByte(trimmed, '['), strings.IndexByte(trimmed, ']')
			if open < 0 || closing < open {
				continue
			}
			proto, _, _ := strings.Cut(trimmed[open+1:closing], " ")
			routes = append(routes, Route{Protocol: proto, Attrs: map[string]string{}})
		}
	}
	return routes
}

// Count returns how many routes BIRD holds from protocol proto.
func (b *Bird) Count(proto string) (int, error) {
	out, err := b.Command("show route protocol " + proto + " count")
	if err != nil {
		return 0, err
	}
	// "5000 of 5000 routes for 5000 networks in table master4"
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "%d", &n); err != nil {
		return 0, fmt.Errorf("route count %q: %w", out, err)
	}
	return n, nil
}

// ProtocolInfo is a BGP protocol's line in `show protocols`.
type ProtocolInfo struct {
	State string    // up, start, down
	Since time.Time // when it entered State
	Info  string    // Established, Active, Connect, ...
}

// SameSession tells whether two readings show one unbroken session. BIRD keeps the state change on
// its monotonic clock and converts it to wall time on every `show`, so two readings of one moment
// can differ by a millisecond; a session that was reset comes back no sooner than BIRD's connect
// delay (a second), far outside the tolerance.
func (p ProtocolInfo) SameSession(q ProtocolInfo) bool {
	const tolerance = 20 * time.Millisecond
	d := p.Since.Sub(q.Since)
	return p.Info == "Established" && q.Info == "Established" && d > -tolerance && d < tolerance
}

// Protocol returns the state of one protocol.
func (b *Bird) Protocol(name string) (ProtocolInfo, error) {
	out, err := b.Command("show protocols " + name)
	if err != nil {
		return ProtocolInfo{}, err
	}
	// "Name Proto Table State Since Info" then
	// "n1   BGP   ---   up    2026-11-23 04:00:00.123  Established"
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == name {
			since, err := time.ParseInLocation("2006-01-02 15:04:05.000", f[4]+" "+f[5], time.Local)
			if err != nil {
				return ProtocolInfo{}, fmt.Errorf("protocol %s: state change time: %w", name, err)
			}
			return ProtocolInfo{State: f[3], Since: since, Info: strings.Join(f[6:], " ")}, nil
		}
	}
	return ProtocolInfo{}, fmt.Errorf("protocol %s not in %q", name, out)
}

// WaitFor polls cond every interval until it holds or ctx ends.
func WaitFor(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
