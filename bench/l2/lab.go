package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bench/internal/labprobe"
	"github.com/heraldlb/herald/e2e/lab"
)

// The lab figures use the whole product: the real controller and speakers (bin/controller,
// bin/speaker with their embedded nftables data plane) on the lab's three nodes, Services written
// to the real API server, and the client on the segment opening TCP connections (one HTTP request
// each) to the Service IP. A reply counts only when it came through the node meant: the lab's
// Services have externalTrafficPolicy Cluster, so the backend sees the address of the node the
// connection entered by (masqueraded), which tells the old owner from the new one.

const (
	labPrefix    = "herald-l2bl-"
	labNamespace = "bench-l2"
)

func runLab(dir string, trials int) error {
	ctx := context.Background()
	bin := filepath.Join(dir, "bin")
	for _, name := range []string{"speaker", "controller"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", name, err, out)
		}
	}
	labDir := filepath.Join(dir, "lab")
	l, err := lab.Up(ctx, lab.Config{Dir: labDir, Prefix: labPrefix, BinDir: bin, CRDDir: filepath.Join("config", "crd")})
	defer func() { _ = lab.Down(context.Background(), labDir, labPrefix) }()
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	cs, err := labprobe.SetUpL2(ctx, l, labNamespace)
	if err != nil {
		return err
	}

	// 1. Service created -> the client reaches it: ARP resolves to the new owner and a TCP
	// connection through its data plane is answered by a backend. The clock starts before the
	// create call; the lab writes the EndpointSlice right after it (it has no EndpointSlice
	// controller), the controller assigns the IP.
	nodes := l.Nodes()
	for _, n := range nodes { // the speakers start with the lab: let them join first
		if err := labprobe.WaitSettled(ctx, l, n); err != nil {
			return err
		}
	}
	var reached []time.Duration
	var ips []netip.Addr
	for i := range trials {
		ip := netip.AddrFrom4([4]byte{10, 77, 0, byte(200 + i)})
		m, err := labprobe.Timed(ctx, 30*time.Second, func(ctx context.Context) error {
			return labprobe.CreateService(ctx, l, cs, labNamespace, fmt.Sprintf("s%d", i), ip)
		}, labprobe.ViaNode(l, ip, nil))
		if err != nil {
			return fmt.Errorf("service %d (%s): %w", i, ip, err)
		}
		reached = append(reached, m)
		ips = append(ips, ip)
	}
	labprobe.Report(command, "L2 lab: Service created -> client reaches the IP (ARP + TCP + HTTP reply)", reached, "")

	// 2. Failover as the client sees it over TCP: from the owner's failure to the first reply that
	// came through another node. One Service, its owner failing in turn. The others go first:
	// with them, a node that returns would be handed some back (rebalancing), and a planned
	// handover of the measured IP in the middle of a trial would pass for a failover.
	ip := ips[0]
	for i := 1; i < trials; i++ {
		if err := cs.CoreV1().Services(labNamespace).Delete(ctx, fmt.Sprintf("s%d", i), metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	breakages := []struct {
		name         string
		break_, mend func(ctx context.Context, node string) error
	}{
		{"SIGKILL of the owner's speaker",
			func(_ context.Context, n string) error { return l.SignalSpeaker(n, syscall.SIGKILL) },
			func(ctx context.Context, n string) error { return l.StartSpeaker(ctx, n) }},
		{"carrier down on the owner's link", l.CutLink, func(ctx context.Context, n string) error {
			// Setting the bridge port's state right after bringing it up can meet it still down
			// ("Network is down"): try again for a moment.
			var err error
			for range 20 {
				if err = l.RestoreLink(ctx, n); err == nil {
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return err
		}},
	}
	for _, b := range breakages {
		var took []time.Duration
		for range trials {
			old, err := labprobe.Answering(ctx, l, ip, nodes)
			if err != nil {
				return err
			}
			m, err := labprobe.Timed(ctx, 10*time.Second, func(ctx context.Context) error { return b.break_(ctx, old.Name) }, labprobe.ViaNode(l, ip, old))
			if err != nil {
				return fmt.Errorf("%s of %s: %w", b.name, old.Name, err)
			}
			took = append(took, m)
			if err := b.mend(ctx, old.Name); err != nil {
				return err
			}
			if err := labprobe.WaitSettled(ctx, l, old); err != nil {
				return err
			}
		}
		labprobe.Report(command, "L2 lab failover, "+b.name+" -> first TCP reply through the new owner", took, "p50 < 300 ms, p99 < 1000 ms")
	}
	return nil
}
