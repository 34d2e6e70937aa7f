package lab

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/testenv"
)

func TestTopologyNamesAndAddresses(t *testing.T) {
	topo, err := NewTopology("herald-", 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, h := range topo.Hosts {
		if !strings.HasPrefix(h.Netns, "herald-") {
			t.Errorf("%s: namespace %q lacks the herald- prefix", h.Name, h.Netns)
		}
		for _, a := range []string{h.IPv4.String(), h.IPv6.String(), h.MAC} {
			if a == "" || a == "invalid IP" {
				continue
			}
			if other, dup := seen[a]; dup {
				t.Errorf("%s and %s share %s", h.Name, other, a)
			}
			seen[a] = h.Name
		}
	}
	if got := len(topo.HostsOf(KindPod)); got != 6 {
		t.Errorf("pods = %d, want 6", got)
	}
	if h := topo.Host("node2"); h.IPv4.String() != "10.77.0.12" || h.IPv6.String() != "fd00:77::12" || h.MAC != "02:4c:00:77:00:0c" {
		t.Errorf("node2 = %+v", h)
	}
	if _, err := NewTopology("lab-", 3, 1); err == nil {
		t.Error("a prefix without herald- was accepted")
	}
}

func TestPlanStaysInLabNamespaces(t *testing.T) {
	topo, err := NewTopology("herald-x-", 89, 3)
	if err != nil {
		t.Fatal(err)
	}
	pat := NetnsPattern("herald-x-")
	for _, s := range topo.Plan() {
		if !pat.MatchString(s.Netns) {
			t.Errorf("step runs in %q, not a lab namespace", s.Netns)
		}
		for _, line := range s.IP {
			f := strings.Fields(line)
			// Interface names: "link add NAME ...", "peer name NAME".
			for i, w := range f {
				if (i > 0 && f[i-1] == "add" && f[0] == "link") || (i > 0 && f[i-1] == "name") {
					if len(w) > 15 {
						t.Errorf("interface name %q is longer than 15 characters", w)
					}
				}
				// A peer moved anywhere must land in a lab namespace.
				if i > 0 && f[i-1] == "netns" && !pat.MatchString(w) {
					t.Errorf("%q moves a link to %q", line, w)
				}
			}
		}
	}
}

func TestNetnsPatternSeparatesLabs(t *testing.T) {
	def := NetnsPattern("herald-")
	for name, want := range map[string]bool{
		"herald-sw": true, "herald-node12": true, "herald-node3-pod2": true, "herald-ext": true,
		"herald-lt-sw": false, "herald-lt-node1": false, "herald-l2t-a": false, "other-sw": false,
	} {
		if got := def.MatchString(name); got != want {
			t.Errorf("%s: match = %v, want %v", name, got, want)
		}
	}
}

// TestPlanWiresRealNamespaces applies the plan to real namespaces (no control plane) and checks
// that every host reaches the others it should, over IPv4 and IPv6.
func TestPlanWiresRealNamespaces(t *testing.T) {
	requireRoot(t)
	const prefix = "herald-lpt-"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	if err := Down(ctx, dir, prefix); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Down(context.Background(), dir, prefix); err != nil {
			t.Error(err)
		}
	})
	topo, err := NewTopology(prefix, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := addNetns(ctx, topo.Hosts); err != nil {
		t.Fatal(err)
	}
	if err := applyPlan(ctx, topo.Plan()); err != nil {
		t.Fatal(err)
	}
	l := &Lab{State: State{Topology: topo}}
	pairs := [][2]string{
		{"client", "node1"}, {"node1", "router"}, {"router", "node2"}, {"ext", "node1-pod1"},
		{"node2-pod1", "node1-pod1"}, {"client", "cp"}, {"node1-pod1", "ext"},
	}
	for _, p := range pairs {
		dst := topo.Host(p[1])
		for _, a := range []netip.Addr{dst.IPv4, dst.IPv6} {
			if err := l.Reachable(ctx, p[0], a, 2*time.Second); err != nil {
				t.Errorf("%s -> %s: %v", p[0], p[1], err)
			}
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testenv.Missing(t, "needs root (network namespaces)")
}
