// Package netnstest builds small network-namespace topologies for the data plane's real-packet
// tests: every namespace is named with a caller-chosen "herald-…" prefix, removed when the test
// ends and, if an earlier run died, at the next start.
package netnstest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/netnsrun"
	"github.com/heraldlb/herald/internal/testenv"
)

// Require skips the test when it cannot run here (not root, no `ip` or `nft`), or fails it
// when HERALD_REQUIRE_REAL=1 (internal/testenv).
func Require(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Missing(t, "needs %s for network namespaces", strings.Join(missing, ", "))
}

// Lab is a set of namespaces sharing a name prefix.
type Lab struct {
	t      *testing.T
	prefix string
}

// New removes leftovers with this prefix and registers removal at the end of the test. Every
// namespace whose name starts with prefix is removed, so a prefix must not be the beginning of
// another test's (tests of several packages run at the same time).
func New(t *testing.T, prefix string) *Lab {
	if !strings.HasPrefix(prefix, "herald-") {
		t.Fatalf("namespace prefix %q must start with herald-", prefix)
	}
	l := &Lab{t: t, prefix: prefix}
	l.cleanup()
	t.Cleanup(l.cleanup)
	return l
}

func (l *Lab) cleanup() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, l.prefix) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// NS returns the full name of the namespace called short in this lab.
func (l *Lab) NS(short string) string { return l.prefix + short }

// AddNS creates a namespace with loopback up.
func (l *Lab) AddNS(short string) string {
	name := l.NS(short)
	l.Run("", "ip", "netns", "add", name)
	l.Run(name, "ip", "link", "set", "lo", "up")
	return name
}

// Link connects namespace a (interface ifA, address addrA in CIDR form) to b (ifB, addrB).
func (l *Lab) Link(a, ifA, addrA, b, ifB, addrB string) {
	l.Run("", "ip", "link", "add", "herald-tmp-a", "netns", a, "type", "veth", "peer", "name", "herald-tmp-b", "netns", b)
	l.Run(a, "ip", "link", "set", "herald-tmp-a", "name", ifA)
	l.Run(b, "ip", "link", "set", "herald-tmp-b", "name", ifB)
	l.Run(a, "ip", "addr", "add", addrA, "dev", ifA)
	l.Run(b, "ip", "addr", "add", addrB, "dev", ifB)
	l.Run(a, "ip", "link", "set", ifA, "up")
	l.Run(b, "ip", "link", "set", ifB, "up")
}

// Run runs a command inside namespace ns ("" for the caller's), failing the test on error.
func (l *Lab) Run(ns string, args ...string) string {
	l.t.Helper()
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Listen opens a listener inside ns.
func Listen(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netnsrun.Do(ns, func() (err error) { ln, err = net.Listen(network, addr); return err })
	return ln, err
}

// Dialer dials from inside ns.
func Dialer(ns string, d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netnsrun.Do(ns, func() (err error) { c, err = d.DialContext(ctx, network, addr); return err })
		return c, err
	}
}
