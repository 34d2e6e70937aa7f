// Command selfrepair measures the data plane's self-repair as a client sees it (issue 16): the
// whole product in the e2e lab (real controller and speakers, nftables data plane), one L2
// Service, and on the node whose address the client reaches it by, Herald's kernel state changed
// behind its back. From the moment the change is made (the nft command has returned) to the first
// new TCP connection answered again through that node, over -trials trials per fault: p50 and max.
// The drift check runs every second (dataplane.DriftCheckInterval), so the figures are about half
// a second to a second plus the full sync.
//
// Needs root, iproute2, nftables, BIRD and the Kubernetes binaries (hack/k8s-bins.sh); everything
// runs in herald-srb-* namespaces.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldlb/herald/bench/internal/labprobe"
	"github.com/heraldlb/herald/e2e/lab"
)

const (
	labPrefix    = "herald-srb-"
	labNamespace = "bench-selfrepair"
	command      = "BENCH_ONLY=selfrepair make bench"
)

func main() {
	lab.RunBackendIfAsked() // the lab runs this program as its backend pods
	trials := flag.Int("trials", 10, "trials per fault")
	flag.Parse()
	dir, err := os.MkdirTemp("", "herald-selfrepair-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(dir, *trials); err != nil {
		log.Fatalf("bench/selfrepair: %v", err)
	}
}

func run(dir string, trials int) error {
	ctx := context.Background()
	bin := filepath.Join(dir, "bin")
	for _, name := range []string{"speaker", "controller"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", name, err, out)
		}
	}
	labDir := filepath.Join(dir, "lab")
	l, err := lab.Up(ctx, lab.Config{Dir: labDir, Prefix: labPrefix, BinDir: bin, CRDDir: filepath.Join("config", "crd"),
		ChartValues: []string{"dataplane.mode=nftables"}})
	defer func() { _ = lab.Down(context.Background(), labDir, labPrefix) }()
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	cs, err := labprobe.SetUpL2(ctx, l, labNamespace)
	if err != nil {
		return err
	}
	ip := netip.MustParseAddr("10.77.0.200")
	if err := labprobe.CreateService(ctx, l, cs, labNamespace, "web", ip); err != nil {
		return err
	}
	owner, err := labprobe.Answering(ctx, l, ip, l.Nodes())
	if err != nil {
		return err
	}
	// Connections from the client enter by the owner: the fault is made there.
	if _, err := labprobe.Timed(ctx, 30*time.Second, func(context.Context) error { return nil }, labprobe.ViaNode(l, ip, nil)); err != nil {
		return fmt.Errorf("the Service is not reachable before any fault: %w", err)
	}
	for _, fault := range []struct{ name, script string }{
		{"nft flush ruleset", "flush ruleset"},
		{"nft delete table inet herald", "delete table inet herald"},
		{"a drop rule inserted before Herald's", "insert rule inet herald nat-prerouting ip daddr " + ip.String() + " drop"},
	} {
		var took []time.Duration
		for range trials {
			m, err := labprobe.Timed(ctx, 10*time.Second, func(ctx context.Context) error {
				cmd, err := l.Command(ctx, owner.Name, "nft", "-f", "-")
				if err != nil {
					return err
				}
				cmd.Stdin = strings.NewReader(fault.script)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("nft %q on %s: %w: %s", fault.script, owner.Name, err, out)
				}
				return nil
			}, labprobe.ViaNode(l, ip, nil))
			if err != nil {
				return fmt.Errorf("%s: %w", fault.name, err)
			}
			took = append(took, m)
			// The next fault starts from a repaired, settled data plane, at a random moment of
			// the drift check's one-second period (a fixed pause would hit the same phase each
			// time and measure one point of the distribution).
			time.Sleep(1500*time.Millisecond + rand.N(time.Second))
		}
		labprobe.Report(command, "Data plane self-repair, "+fault.name+" -> traffic back", took, "under 2 s")
	}
	return nil
}
