// Command l2 benchmarks L2 mode with the method of issue 4, in two parts (-parts).
//
// "l2node": three nodes (network namespaces, each running l2node, the speaker's membership +
// election + ARP/NDP responders, with the default timers) on a snooping bridge, and a client
// namespace probing the Service IP with ARP every 5 ms:
//
//   - SIGKILL of the owner -> first ARP reply from the new owner, as seen by the client,
//   - carrier down on the owner's link -> the same,
//   - new IP configured on the nodes -> first ARP reply (no API server).
//
// "lab": the whole product in the e2e lab (lab.go): Service created -> the client reaches it over
// TCP, and SIGKILL / carrier down -> first TCP reply through the new owner.
//
// Each over -trials trials: p50, p99 (nearest rank) and max. Needs root, iproute2, nftables,
// arping and ndisc6, and for "lab" BIRD and the Kubernetes binaries (hack/k8s-bins.sh); everything
// runs in herald-l2b-* and herald-l2bl-* namespaces.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldlb/herald/bench/internal/labprobe"
	"github.com/heraldlb/herald/e2e/lab"
	"github.com/heraldlb/herald/speaker/l2"
	"github.com/heraldlb/herald/speaker/l2/l2lab"
)

const (
	prefix  = "herald-l2b-"
	command = "BENCH_ONLY=l2 make bench"
)

func main() {
	lab.RunBackendIfAsked() // the lab runs this program as its backend pods
	trials := flag.Int("trials", 20, "trials per figure")
	l2node := flag.String("l2node", "", "l2node binary (built from speaker/l2/l2lab/l2node if empty)")
	parts := flag.String("parts", "l2node,lab", "which parts to run (comma-separated: l2node, lab)")
	flag.Parse()
	if err := l2lab.Prerequisites(); err != nil {
		log.Fatalf("bench/l2: %v", err)
	}
	dir, err := os.MkdirTemp("", "herald-l2-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if strings.Contains(*parts, "l2node") {
		if err := runL2node(dir, *l2node, *trials); err != nil {
			log.Fatalf("bench/l2: %v", err)
		}
	}
	if strings.Contains(*parts, "lab") {
		if err := runLab(dir, *trials); err != nil {
			log.Fatalf("bench/l2: lab: %v", err)
		}
	}
}

// runL2node measures failover and new-IP times on an l2lab segment of three l2node processes.
func runL2node(dir, l2node string, trials int) error {
	if l2node == "" {
		l2node = filepath.Join(dir, "l2node")
		if out, err := exec.Command("go", "build", "-o", l2node, "github.com/heraldlb/herald/speaker/l2/l2lab/l2node").CombinedOutput(); err != nil {
			return fmt.Errorf("building l2node: %w\n%s", err, out)
		}
	}
	segment, err := l2lab.Up(prefix, 3, l2node, dir)
	if err != nil {
		return err
	}
	defer segment.Down()
	return run(segment, trials)
}

func run(seg *l2lab.Lab, trials int) error {
	ip := l2lab.ServiceIPv4(0)
	ips := map[netip.Addr]l2.Policy{ip: {Candidates: seg.AllNodes()}}
	if err := seg.SetIPs(ips); err != nil {
		return err
	}
	for _, n := range seg.Nodes {
		if err := seg.Start(n.Name, ""); err != nil {
			return err
		}
	}
	probeIPs := []netip.Addr{ip}
	for i := 1; i <= trials; i++ {
		probeIPs = append(probeIPs, l2lab.ServiceIPv4(i))
	}
	p, err := seg.StartProber(probeIPs, 5*time.Millisecond)
	if err != nil {
		return err
	}
	defer p.Close()

	breakages := []struct {
		name         string
		break_, mend func(string) error
	}{
		{"SIGKILL of the owner", seg.Kill, func(n string) error { return seg.Start(n, "") }},
		{"carrier down on the owner's link", func(n string) error { return seg.SetCarrier(n, false) }, func(n string) error { return seg.SetCarrier(n, true) }},
	}
	for _, b := range breakages {
		var took []time.Duration
		for range trials {
			old, err := owner(seg, p, ip)
			if err != nil {
				return err
			}
			t0 := time.Now()
			if err := b.break_(old.Name); err != nil {
				return err
			}
			if !l2lab.WaitFor(5*time.Second, func() bool { _, ok := p.FirstReplyAfter(ip, t0, old.MAC); return ok }) {
				return fmt.Errorf("%s: no other node answered within 5 s", b.name)
			}
			r, _ := p.FirstReplyAfter(ip, t0, old.MAC)
			took = append(took, r.At.Sub(t0))
			if err := b.mend(old.Name); err != nil {
				return err
			}
			// Let the node rejoin (and its first heartbeats settle) before the next trial.
			time.Sleep(1500 * time.Millisecond)
		}
		labprobe.Report(command, "L2 failover, "+b.name+" -> first ARP reply from the new owner", took, "p50 < 300 ms, p99 < 1000 ms")
	}

	var took []time.Duration
	for i := 1; i <= trials; i++ {
		newIP := l2lab.ServiceIPv4(i)
		ips[newIP] = l2.Policy{Candidates: seg.AllNodes()}
		t0 := time.Now()
		if err := seg.SetIPs(ips); err != nil {
			return err
		}
		if !l2lab.WaitFor(5*time.Second, func() bool { _, ok := p.FirstReplyAfter(newIP, t0, nil); return ok }) {
			return fmt.Errorf("new IP %s not answered within 5 s", newIP)
		}
		r, _ := p.FirstReplyAfter(newIP, t0, nil)
		took = append(took, r.At.Sub(t0))
		time.Sleep(200 * time.Millisecond)
	}
	labprobe.Report(command, "L2 new IP configured -> first ARP reply (no API server)", took, "")
	return nil
}

func owner(seg *l2lab.Lab, p *l2lab.Prober, ip netip.Addr) (*l2lab.Node, error) {
	var n *l2lab.Node
	ok := l2lab.WaitFor(5*time.Second, func() bool {
		macs := p.MACsSince(ip, time.Now().Add(-100*time.Millisecond))
		if len(macs) != 1 {
			return false
		}
		for _, node := range seg.Nodes {
			if node.MAC.String() == macs[0] {
				n = node
			}
		}
		return n != nil
	})
	if !ok {
		return nil, fmt.Errorf("%s has no single owner", ip)
	}
	return n, nil
}
