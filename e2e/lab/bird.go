package lab

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"net/netip"
	"strings"
	"text/template"
)

//go:embed bird.conf.tmpl
var birdConfTemplate string

var birdConf = template.Must(template.New("bird.conf").Parse(birdConfTemplate))

// renderBirdConf renders the router's BIRD configuration for the topology.
func renderBirdConf(t *Topology, dir string) ([]byte, error) {
	r := t.Host(HostRouter)
	var b bytes.Buffer
	err := birdConf.Execute(&b, map[string]any{
		"Dir": dir, "RouterID": r.IPv4, "RouterIPv6": r.IPv6,
		"RouterASN": RouterASN, "NodeASN": NodeASN, "Nodes": t.HostsOf(KindNode),
	})
	return b.Bytes(), err
}

// BirdRoute is one route in BIRD's table, as `birdc show route all` prints it.
type BirdRoute struct {
	Table    string       // master4, master6
	Prefix   netip.Prefix // the destination
	Protocol string       // the protocol it came from: node1v4, ...
	Primary  bool         // BIRD's best route for the prefix (marked *)
	NextHops []netip.Addr // "via" addresses (several for a merged multipath route)
	// Attrs holds the attribute lines: "BGP.local_pref" -> "100", "BGP.community" -> "(64500,1)".
	Attrs map[string]string
}

// ParseBirdRoutes parses the output of `birdc show route all` (or plain `show route`).
func ParseBirdRoutes(out []byte) ([]BirdRoute, error) {
	var routes []BirdRoute
	var table string
	var prefix netip.Prefix
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(trimmed, "Network "):
		case strings.HasPrefix(line, "Table "):
			table = strings.TrimSuffix(strings.TrimPrefix(line, "Table "), ":")
		case strings.HasPrefix(line, "\t"):
			if len(routes) == 0 {
				return nil, fmt.Errorf("detail line before any route: %q", line)
			}
			cur := &routes[len(routes)-1]
			if f := strings.Fields(trimmed); f[0] == "via" && len(f) > 1 {
				a, err := netip.ParseAddr(f[1])
				if err != nil {
					return nil, fmt.Errorf("route %s: %q: %w", cur.Prefix, line, err)
				}
				cur.NextHops = append(cur.NextHops, a)
			} else if k, v, ok := strings.Cut(trimmed, ":"); ok {
				cur.Attrs[k] = strings.TrimSpace(v)
			}
		default:
			// "PREFIX  unicast [PROTO ...] * (100) ..." or, for further routes to the same prefix,
			// the same without PREFIX (the line starts with spaces).
			rest := trimmed
			if !strings.HasPrefix(line, " ") {
				f := strings.Fields(trimmed)
				p, err := netip.ParsePrefix(f[0])
				if err != nil {
					return nil, fmt.Errorf("route line %q: %w", line, err)
				}
				prefix, rest = p, strings.TrimSpace(strings.TrimPrefix(trimmed, f[0]))
			}
			open := strings.IndexByte(rest, '[')
			closing := strings.IndexByte(rest, ']')
			if open < 0 || closing < open || !prefix.IsValid() {
				return nil, fmt.Errorf("route line %q: no [protocol ...]", line)
			}
			proto := strings.Fields(rest[open+1 : closing])
			if len(proto) == 0 {
				return nil, fmt.Errorf("route line %q: empty protocol", line)
			}
			after := strings.Fields(rest[closing+1:])
			routes = append(routes, BirdRoute{
				Table: table, Prefix: prefix, Protocol: proto[0],
				Primary: len(after) > 0 && after[0] == "*",
				Attrs:   map[string]string{},
			})
		}
	}
	return routes, sc.Err()
}

// BirdProtocol is one line of `birdc show protocols`.
type BirdProtocol struct {
	Name, Proto, Table, State string
	Since                     string // when State last changed (BIRD's "iso long ms" format)
	Info                      string // e.g. "Established", "Active  Socket: Connection refused"
}

// ParseBirdProtocols parses `birdc show protocols` printed with `timeformat protocol iso long ms`.
func ParseBirdProtocols(out []byte) ([]BirdProtocol, error) {
	var ps []BirdProtocol
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(line, "Name ") || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return nil, fmt.Errorf("protocol line %q: too few fields", line)
		}
		p := BirdProtocol{Name: f[0], Proto: f[1], Table: f[2], State: f[3], Since: f[4] + " " + f[5]}
		if len(f) > 6 {
			p.Info = strings.Join(f[6:], " ")
		}
		ps = append(ps, p)
	}
	return ps, sc.Err()
}

// parseBirdRouteCount sums the "N of M routes for K networks in table T" lines of `show route count`.
func parseBirdRouteCount(out []byte) (int, error) {
	total, found := 0, false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var n, m, k int
		var table string
		if _, err := fmt.Sscanf(strings.TrimSpace(sc.Text()), "%d of %d routes for %d networks in table %s", &n, &m, &k, &table); err == nil {
			total += n
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("no route count in %q", out)
	}
	return total, sc.Err()
}
