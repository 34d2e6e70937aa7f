package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/heraldlb/herald/internal/netnsrun"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// run runs a command and returns its combined output, with the output in the error.
func run(ctx context.Context, stdin string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out.String())
	}
	return out.Bytes(), nil
}

// inNetns prefixes a command line so it runs inside the named namespace. `ip netns exec` execs the
// command in place, so the pid we start is the command's own.
func inNetns(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// applyPlan creates nothing outside the steps' namespaces: sysctls via `ip netns exec`, links via
// `ip -n`. Every namespace's sysctls are set before any link is made, because a veth peer created
// from another namespace takes its new namespace's defaults (accept_dad) at creation.
func applyPlan(ctx context.Context, steps []Step) error {
	for _, s := range steps {
		if len(s.Sysctls) > 0 {
			if _, err := run(ctx, "", inNetns(s.Netns, append([]string{"sysctl", "-q", "-w"}, s.Sysctls...)...)...); err != nil {
				return err
			}
		}
	}
	for _, s := range steps {
		if len(s.IP) > 0 {
			if _, err := run(ctx, strings.Join(s.IP, "\n")+"\n", "ip", "-n", s.Netns, "-batch", "-"); err != nil {
				return err
			}
		}
	}
	return nil
}

// addNetns creates the named namespaces.
func addNetns(ctx context.Context, hosts []*Host) error {
	var adds []string
	for _, h := range hosts {
		adds = append(adds, "netns add "+h.Netns)
	}
	_, err := run(ctx, strings.Join(adds, "\n")+"\n", "ip", "-batch", "-")
	return err
}

// listNetns returns the names of the named namespaces that match the lab's pattern.
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pat := NetnsPattern(prefix)
	var out []string
	for _, e := range entries {
		if pat.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// DialerIn returns a dial function whose sockets are created inside the named namespace, so a Go
// program in the machine's own namespace (a test, `lab`) talks to lab hosts without any route or
// link in its own namespace. The socket is created on an OS thread switched into the namespace for
// that one call; a socket keeps its namespace for life, whatever thread later uses it.
func DialerIn(ns string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		var c net.Conn
		err := netnsrun.Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}

// ListenPacketIn opens a UDP socket inside the named namespace.
func ListenPacketIn(ns, network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := netnsrun.Do(ns, func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// ListenIn opens a listening socket inside the named namespace.
func ListenIn(ns, network, address string) (net.Listener, error) {
	var l net.Listener
	err := netnsrun.Do(ns, func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}
