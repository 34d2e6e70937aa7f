// Package l2lab builds a small L2 segment out of network namespaces for the L2 real-packet tests
// and the failover benchmark: a switch namespace holding a multicast-snooping bridge, N node
// namespaces running l2node (the speaker's L2 core without Kubernetes), and a client namespace that
// probes with ARP and NDP. Everything is named with the given prefix (which must start with
// "herald-"), removed by Down and by Cleanup on the next start. Nothing touches the root namespace
// except creating and deleting the namespaces.
package l2lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldlb/herald/speaker/l2"
)

// Node is one node namespace on the segment.
type Node struct {
	Name string
	NS   string
	IPv4 netip.Addr
	IPv6 netip.Addr
	MAC  net.HardwareAddr
	Port string // its port on the bridge, in the switch namespace
}

// Lab is a running segment.
type Lab struct {
	Prefix   string
	Dir      string
	Binary   string // l2node
	SwitchNS string
	ClientNS string
	Client   Node
	Nodes    []*Node

	mu    sync.Mutex
	procs map[string]*exec.Cmd
	args  []string
	// cgroups: node name → the cgroup v1 cpu directory its l2node runs in (ConfineLikePods).
	cgroups map[string]string
}

// Segment addresses: 10.78.0.0/24 and fd78::/64; node i is .1i, the client .100.
var (
	SegmentV4 = netip.MustParsePrefix("10.78.0.0/24")
	SegmentV6 = netip.MustParsePrefix("fd78::/64")
)

// ServiceIPv4 and ServiceIPv6 are the i-th Service addresses on the segment.
func ServiceIPv4(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 78, 0, byte(200 + i)}) }
func ServiceIPv6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x78, 14: 0x02, 15: byte(i)})
}

// Prerequisites returns why the lab cannot run here, or nil.
func Prerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "nft", "arping", "ndisc6"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s", tool)
		}
	}
	return nil
}

func sh(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Cleanup removes the namespaces a previous run with this prefix left behind (their processes die
// with the kill of everything running inside them).
func Cleanup(prefix string) {
	if !strings.HasPrefix(prefix, "herald-") {
		panic("l2lab: prefix must start with herald-")
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		ns, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if ns == "" || !strings.HasPrefix(ns, prefix) {
			continue
		}
		pids, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, p := range strings.Fields(string(pids)) {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = sh("ip", "netns", "del", ns)
	}
	// The cgroups of ConfineLikePods, empty now.
	cgroups, _ := filepath.Glob(filepath.Join(cgroupV1CPU, prefix+"*"))
	for _, cg := range cgroups {
		_ = os.Remove(cg)
	}
}

// Up builds the segment with n nodes. binary is the l2node program; dir holds its files.
func Up(prefix string, n int, binary, dir string) (*Lab, error) {
	Cleanup(prefix)
	l := &Lab{Prefix: prefix, Dir: dir, Binary: binary, SwitchNS: prefix + "sw", ClientNS: prefix + "cl", procs: map[string]*exec.Cmd{}}
	for i := 1; i <= n; i++ {
		l.Nodes = append(l.Nodes, &Node{
			Name: fmt.Sprintf("n%d", i), NS: fmt.Sprintf("%sn%d", prefix, i),
			IPv4: netip.AddrFrom4([4]byte{10, 78, 0, byte(10 + i)}),
			IPv6: netip.AddrFrom16([16]byte{0xfd, 0x78, 15: byte(0x10 + i)}),
			MAC:  net.HardwareAddr{0x02, 0x4c, 0x00, 0x78, 0x00, byte(0x10 + i)},
			Port: fmt.Sprintf("n%d", i),
		})
	}
	l.Client = Node{Name: "cl", NS: l.ClientNS, IPv4: netip.AddrFrom4([4]byte{10, 78, 0, 100}),
		IPv6: netip.AddrFrom16([16]byte{0xfd, 0x78, 15: 0x64}), MAC: net.HardwareAddr{0x02, 0x4c, 0x00, 0x78, 0x00, 0x64}, Port: "cl"}
	steps := [][]string{
		{"ip", "netns", "add", l.SwitchNS},
		// Snooping with the switch's own querier, in force 1 s after `up`; see the e2e lab's
		// plan.go for what this kernel's bridge floods, why mcast_flood stays on, and why br0
		// needs its link-local address (no DAD) before the querier is enabled.
		{"ip", "netns", "exec", l.SwitchNS, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"},
		{"ip", "-n", l.SwitchNS, "link", "add", "br0", "type", "bridge", "mcast_snooping", "1",
			"mcast_query_response_interval", "100", "mcast_startup_query_interval", "100"},
		{"ip", "-n", l.SwitchNS, "link", "set", "br0", "up"},
		{"ip", "-n", l.SwitchNS, "link", "set", "br0", "type", "bridge", "mcast_querier", "1"},
	}
	for _, h := range append([]*Node{&l.Client}, l.Nodes...) {
		steps = append(steps,
			[]string{"ip", "netns", "add", h.NS},
			[]string{"ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"},
			[]string{"ip", "-n", l.SwitchNS, "link", "add", h.Port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"ip", "-n", l.SwitchNS, "link", "set", h.Port, "master", "br0", "up"},
			[]string{"ip", "-n", h.NS, "link", "set", "eth0", "address", h.MAC.String()},
			[]string{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.IPv4, SegmentV4.Bits()).String(), "dev", "eth0"},
			[]string{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.IPv6, SegmentV6.Bits()).String(), "dev", "eth0", "nodad"},
			[]string{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			l.Down()
			return nil, err
		}
	}
	// Cut drops a node's frames silently at the bridge with its carrier up.
	nftRules := `table bridge herald_l2t {
	set cut { type ifname; }
	chain cut_forward { type filter hook forward priority 0; iifname @cut drop; oifname @cut drop; }
	chain cut_input { type filter hook input priority 0; iifname @cut drop; }
	chain cut_output { type filter hook output priority 0; oifname @cut drop; }
}`
	cmd := exec.Command("ip", "netns", "exec", l.SwitchNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nftRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.Down()
		return nil, fmt.Errorf("nft: %w: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("herald-l2-test-secret-0123456789"), 0o600); err != nil {
		l.Down()
		return nil, err
	}
	return l, nil
}

// Down stops every node and deletes the namespaces and cgroups.
func (l *Lab) Down() {
	l.mu.Lock()
	for _, c := range l.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	l.procs = map[string]*exec.Cmd{}
	l.mu.Unlock()
	Cleanup(l.Prefix)
}

// cgroupV1CPU is the cgroup v1 cpu hierarchy, where real-time group scheduling gives every new
// cgroup a real-time budget of 0.
const cgroupV1CPU = "/sys/fs/cgroup/cpu"

// ConfineLikePods runs each node's l2node from now on in a cpu cgroup of its own, as a kubelet
// runs a pod: cpu.shares shares against the rest of the machine, and, with real-time group
// scheduling (cgroup v1), no real-time budget, so the heartbeat thread runs at a normal priority
// as it does in a pod. It fails where there is no such hierarchy.
func (l *Lab) ConfineLikePods(shares int) error {
	if _, err := os.Stat(filepath.Join(cgroupV1CPU, "cpu.rt_runtime_us")); err != nil {
		return fmt.Errorf("no cgroup v1 cpu hierarchy with real-time group scheduling: %w", err)
	}
	l.cgroups = map[string]string{}
	for _, n := range l.Nodes {
		cg := filepath.Join(cgroupV1CPU, l.Prefix+n.Name)
		if err := os.Mkdir(cg, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		l.cgroups[n.Name] = cg
		if err := os.WriteFile(filepath.Join(cg, "cpu.shares"), []byte(strconv.Itoa(shares)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Node returns a node by name.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NodeByMAC returns the node with this MAC, or nil.
func (l *Lab) NodeByMAC(mac net.HardwareAddr) *Node {
	for _, n := range l.Nodes {
		if bytes.Equal(n.MAC, mac) {
			return n
		}
	}
	return nil
}

// SetIPs writes the IP policies every node reads, and tells running nodes to reload.
func (l *Lab) SetIPs(ips map[netip.Addr]l2.Policy) error {
	b, err := json.Marshal(ips)
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.Dir, "ips.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(l.Dir, "ips.json")); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.procs {
		_ = c.Process.Signal(syscall.SIGHUP)
	}
	return nil
}

// AllNodes lists every node's name.
func (l *Lab) AllNodes() []string {
	var out []string
	for _, n := range l.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// SetNodeArgs sets extra l2node flags for nodes started from now on.
func (l *Lab) SetNodeArgs(args ...string) { l.args = args }

// Start runs l2node in a node's namespace, with its log in Dir/<name>.log.
func (l *Lab) Start(name string, secretFile string) error {
	n := l.Node(name)
	var peers []string
	for _, p := range l.Nodes {
		peers = append(peers, p.Name+"="+p.IPv4.String())
	}
	if secretFile == "" {
		secretFile = filepath.Join(l.Dir, "secret")
	}
	logf, err := os.OpenFile(filepath.Join(l.Dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	argv := append([]string{"netns", "exec", n.NS, l.Binary, "--name", name, "--peers", strings.Join(peers, ","),
		"--secret-file", secretFile, "--config", filepath.Join(l.Dir, "ips.json")}, l.args...)
	cmd := exec.Command("ip", argv...)
	if cg := l.cgroups[name]; cg != "" {
		// Into the cgroup before l2node starts: a thread already in the real-time class could
		// not be moved into a cgroup without a real-time budget.
		cmd = exec.Command("sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec ip "$@"`, cg}, argv...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	l.mu.Lock()
	l.procs[name] = cmd
	l.mu.Unlock()
	return nil
}

// Kill sends SIGKILL to a node's l2node (ip netns exec replaces itself with it).
func (l *Lab) Kill(name string) error {
	l.mu.Lock()
	c := l.procs[name]
	delete(l.procs, name)
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%s is not running", name)
	}
	err := c.Process.Kill()
	_ = c.Wait()
	return err
}

// Stop sends SIGTERM and waits.
func (l *Lab) Stop(name string) error {
	l.mu.Lock()
	c := l.procs[name]
	delete(l.procs, name)
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%s is not running", name)
	}
	err := c.Process.Signal(syscall.SIGTERM)
	_ = c.Wait()
	return err
}

// Signal sends sig to a node's l2node (SIGSTOP freezes it, SIGCONT thaws it).
func (l *Lab) Signal(name string, sig syscall.Signal) error {
	l.mu.Lock()
	c := l.procs[name]
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%s is not running", name)
	}
	return c.Process.Signal(sig)
}

// SetCarrier takes a node's bridge port down or up: the node's eth0 loses or regains carrier.
func (l *Lab) SetCarrier(name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return sh("ip", "-n", l.SwitchNS, "link", "set", l.Node(name).Port, state)
}

// Cut drops (or stops dropping) every frame from and to a node at the bridge; its carrier stays up.
func (l *Lab) Cut(name string, cut bool) error {
	op := "delete"
	if cut {
		op = "add"
	}
	return sh("ip", "netns", "exec", l.SwitchNS, "nft", op, "element", "bridge", "herald_l2t", "cut", "{", l.Node(name).Port, "}")
}

// Exec runs a command in the client namespace and returns its output.
func (l *Lab) Exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
}

// ArpingMACs resolves ip from the client with arping (3 requests) and returns the distinct MACs
// that answered.
func (l *Lab) ArpingMACs(ctx context.Context, ip netip.Addr) ([]string, error) {
	out, _ := l.Exec(ctx, l.ClientNS, "arping", "-i", "eth0", "-c", "3", "-w", "1", ip.String())
	return distinctMACs(string(out)), nil
}

// Ndisc6MACs resolves ip from the client with ndisc6, collecting every answer.
func (l *Lab) Ndisc6MACs(ctx context.Context, ip netip.Addr) ([]string, error) {
	out, _ := l.Exec(ctx, l.ClientNS, "ndisc6", "-m", "-n", "-r", "2", "-w", "500", ip.String(), "eth0")
	return distinctMACs(string(out)), nil
}

// distinctMACs picks MAC addresses out of a tool's output.
func distinctMACs(out string) []string {
	seen := map[string]bool{}
	for _, f := range strings.FieldsFunc(out, func(r rune) bool {
		return r == ' ' || r == '\n' || r == '(' || r == ')' || r == '[' || r == ']' || r == '\t'
	}) {
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

// WaitFor polls cond every 20 ms until it holds or d passes.
func WaitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// SetClientNeighbor puts ip -> mac in the client's neighbour cache, as a client that talked to the
// IP before would have it.
func (l *Lab) SetClientNeighbor(ip netip.Addr, mac net.HardwareAddr) error {
	return sh("ip", "-n", l.ClientNS, "neigh", "replace", ip.String(), "lladdr", mac.String(), "dev", "eth0", "nud", "stale")
}

// ClientNeighbor returns the MAC the client's neighbour cache holds for ip ("" if none).
func (l *Lab) ClientNeighbor(ip netip.Addr) string {
	out, _ := exec.Command("ip", "-n", l.ClientNS, "neigh", "show", ip.String(), "dev", "eth0").Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}
