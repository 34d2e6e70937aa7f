// Package bgptest is the BGP announcer's test bed: a router namespace running a real BIRD 2 and
// node namespaces, on one segment, each running an announcer in a process of its own (a GoBGP
// instance opens sockets from many goroutines, so it must run in a process that lives entirely in
// the node's namespace). Nothing is created in the machine's own namespace; everything is named
// herald-bgpt-<pid>-<n>-..., removed by Close and, when a run died, by the next run.
//
// It serves speaker/bgp's tests and bench/bgp; the full-cluster tests use e2e/lab.
package bgptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/testenv"
)

// NamePrefix starts every namespace this package creates.
const NamePrefix = "herald-bgpt-"

// RouterASN is the AS of the BIRD router.
const RouterASN = 64500

// Host is a namespace on the segment.
type Host struct {
	Name  string // node1, node2, ... or router
	Netns string
	IPv4  netip.Addr
	IPv6  netip.Addr
}

// Topology is a router and nodes on one segment (a bridge inside the router's namespace).
type Topology struct {
	Dir    string
	Router Host
	Nodes  []Host
	Bird   *Bird
	// BirdBFDPassive makes BIRD's BFD wait for the node to speak first (from the next
	// StartBird or Reconfigure on).
	BirdBFDPassive bool
}

var labSeq atomic.Int32

// Require skips the test when the test bed cannot run here (not root, no ip or BIRD), or fails it
// when HERALD_REQUIRE_REAL=1.
func Require(tb testing.TB) {
	tb.Helper()
	if err := Available(); err != nil {
		testenv.Missing(tb, "BGP test bed unavailable: %v", err)
	}
}

// Available says why the test bed cannot run, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "bird", "birdc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed (apt-get install iproute2 bird2)", tool)
		}
	}
	return nil
}

// New creates the namespaces and the segment: router 10.88.0.1 / fd88::1, node i at 10.88.0.(10+i)
// and fd88::(10+i). It does not start BIRD (see StartBird).
func New(ctx context.Context, dir string, nodes int) (*Topology, error) {
	CleanStale(ctx)
	prefix := fmt.Sprintf("%s%d-%d-", NamePrefix, os.Getpid(), labSeq.Add(1))
	t := &Topology{Dir: dir, Router: Host{
		Name: "router", Netns: prefix + "r",
		IPv4: netip.MustParseAddr("10.88.0.1"), IPv6: netip.MustParseAddr("fd88::1"),
	}}
	for i := 1; i <= nodes; i++ {
		t.Nodes = append(t.Nodes, Host{
			Name: fmt.Sprintf("node%d", i), Netns: fmt.Sprintf("%sn%d", prefix, i),
			IPv4: netip.AddrFrom4([4]byte{10, 88, 0, byte(10 + i)}),
			IPv6: netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x88, 15: byte(0x10 + i)}),
		})
	}
	if err := t.build(ctx); err != nil {
		t.close(ctx)
		return nil, err
	}
	return t, nil
}

func (t *Topology) build(ctx context.Context) error {
	r := t.Router.Netns
	if err := run(ctx, "ip", "netns", "add", r); err != nil {
		return err
	}
	if err := ipBatch(ctx, r,
		"link set lo up",
		"link add br0 type bridge",
		"link set br0 up",
		// A port that never goes away keeps the bridge's carrier up when a node's port is
		// disabled (DropFrames), so the router notices nothing but the missing frames.
		"link add keep0 type veth peer name keep1",
		"link set keep1 up",
		"link set keep0 master br0",
		"link set keep0 up",
		"addr add "+t.Router.IPv4.String()+"/24 dev br0",
		"addr add "+t.Router.IPv6.String()+"/64 dev br0 nodad",
	); err != nil {
		return err
	}
	for i, n := range t.Nodes {
		if err := run(ctx, "ip", "netns", "add", n.Netns); err != nil {
			return err
		}
		port := fmt.Sprintf("p%d", i+1)
		if err := ipBatch(ctx, r,
			"link add "+port+" type veth peer name eth0 netns "+n.Netns,
			"link set "+port+" master br0",
			"link set "+port+" up",
		); err != nil {
			return err
		}
		if err := ipBatch(ctx, n.Netns,
			"link set lo up",
			"addr add "+n.IPv4.String()+"/24 dev eth0",
			"addr add "+n.IPv6.String()+"/64 dev eth0 nodad",
			"link set eth0 up",
		); err != nil {
			return err
		}
	}
	return nil
}

// Close stops BIRD, kills whatever still runs in the namespaces and deletes them.
func (t *Topology) Close() { t.close(context.Background()) }

// close is Close with ctx's values; it is not cut short when ctx ends (a failed build may have
// failed because ctx ended, and its namespaces must go all the same).
func (t *Topology) close(ctx context.Context) {
	if t.Bird != nil {
		t.Bird.stop()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, n := range t.Nodes {
		removeNetns(ctx, n.Netns)
	}
	removeNetns(ctx, t.Router.Netns)
}

// CleanStale removes the namespaces of runs whose process is gone.
func CleanStale(ctx context.Context) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, NamePrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, NamePrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || processAlive(pid) {
			continue
		}
		removeNetns(ctx, name)
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// removeNetns kills the processes inside ns (all of them ours: the namespace is) and deletes it.
func removeNetns(ctx context.Context, ns string) {
	out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = exec.CommandContext(ctx, "ip", "netns", "delete", ns).Run()
}

func run(ctx context.Context, argv ...string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func ipBatch(ctx context.Context, ns string, cmds ...string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Exec runs argv inside host's namespace and returns its combined output.
func Exec(ctx context.Context, h Host, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Netns}, argv...)...)
	return cmd.CombinedOutput()
}

// LogPath is where a host's process logs.
func (t *Topology) LogPath(h Host) string { return filepath.Join(t.Dir, h.Name+".log") }

// DropFrames makes the segment silently drop every frame from and to node i (0-based) while its
// carrier stays up (its bridge port goes to the disabled STP state): a node that dies silently.
func (t *Topology) DropFrames(ctx context.Context, i int) error {
	return run(ctx, "bridge", "-n", t.Router.Netns, "link", "set", "dev", fmt.Sprintf("p%d", i+1), "state", "0")
}

// RestoreFrames undoes DropFrames.
func (t *Topology) RestoreFrames(ctx context.Context, i int) error {
	return run(ctx, "bridge", "-n", t.Router.Netns, "link", "set", "dev", fmt.Sprintf("p%d", i+1), "state", "3")
}
