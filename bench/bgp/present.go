package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldlb/herald/e2e/lab"
)

// runPresent measures a Service created -> its route from every node in BIRD with many Services
// already there (issue 20): for each size in sizes (ascending), Services are created in parallel
// up to that many (the controller allocating them), the lab is left until every node's routes
// are all in BIRD, then n more are created one at a time and timed. Those stay: the next size
// counts them. Each speaker's CPU per Service created is read from /proc over the timed ones.
//
// With BGP_BENCH_PERF set to a directory, node1's speaker is profiled (perf record) over each
// size's timed Services and the report written there, to find the work per change that grows
// with the table.
func runPresent(dir string, n int, sizes []int, chartValues []string) error {
	ctx := context.Background()
	b, closeLab, err := startLab(dir, chartValues)
	if err != nil {
		return err
	}
	defer closeLab()
	total := 0
	for _, size := range sizes {
		if size < total {
			return fmt.Errorf("-present: sizes must grow (%d after %d)", size, total)
		}
		start := time.Now()
		if err := b.createMany(ctx, total, size); err != nil {
			return err
		}
		created := time.Since(start)
		total = size
		for _, p := range b.protos {
			if err := waitProtoCountBird(b.bird, p.Name, total, 15*time.Minute); err != nil {
				return fmt.Errorf("%d Services present: routes from %s: %w", total, p.Name, err)
			}
		}
		log.Printf("%d Services present: created in %v, every node's routes in BIRD after %v", total, created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		time.Sleep(5 * time.Second) // let the controller's and speakers' queues drain
		idleFrom, idleStart := processCPU(b.l), time.Now()
		time.Sleep(3 * time.Second)
		logCPUPerSecond(b.l, idleFrom, time.Since(idleStart))

		stopPerf := profileSpeaker(b.l, b.nodes[0].Name, size)
		cpuBefore := processCPU(b.l)
		phaseStart := time.Now()
		_, sinceCreated, _, toStatus, fromStatus, err := b.timeOneByOne(ctx, total, n)
		if err != nil {
			return err
		}
		wall := time.Since(phaseStart)
		cpuAfter := processCPU(b.l)
		stopPerf()
		logCPUPerService(b.l, cpuBefore, n, wall)
		total += n

		label := fmt.Sprintf("with %d Services present", size)
		percentiles("BGP lab: Service created (create call returned) -> route from all 3 nodes in BIRD, "+label, sinceCreated, "< 50 ms at 10,000")
		percentiles("BGP lab: Service create call returned -> IP in status (controller), "+label, toStatus, "")
		percentiles("BGP lab: Service IP in status -> route from all 3 nodes in BIRD (speakers only), "+label, fromStatus, "")
		var speakers time.Duration
		for _, h := range b.nodes {
			role := lab.SpeakerRole(h.Name)
			speakers += cpuAfter[role] - cpuBefore[role]
		}
		report(fmt.Sprintf("BGP lab: speaker CPU per Service created (mean of %d speakers, data plane included), %s", len(b.nodes), label),
			speakers/time.Duration(n*len(b.nodes)), "")
		report("BGP lab: controller CPU per Service created, "+label,
			(cpuAfter[lab.RoleController]-cpuBefore[lab.RoleController])/time.Duration(n), "")
	}
	return nil
}

// profileSpeaker starts perf record on node's speaker when BGP_BENCH_PERF names a directory; the
// function it returns stops it and writes the report beside the data.
func profileSpeaker(l *lab.Lab, node string, size int) func() {
	out := os.Getenv("BGP_BENCH_PERF")
	p, ok := l.Processes[lab.SpeakerRole(node)]
	if out == "" || !ok {
		return func() {}
	}
	data := filepath.Join(out, fmt.Sprintf("speaker-%d.perf", size))
	cmd := exec.Command("perf", "record", "-F", "997", "-g", "-p", fmt.Sprint(p.PID), "-o", data)
	if err := cmd.Start(); err != nil {
		log.Printf("perf record: %v", err)
		return func() {}
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		rep, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--percent-limit", "0.5").Output()
		if err != nil {
			log.Printf("perf report: %v", err)
		}
		if err := os.WriteFile(strings.TrimSuffix(data, ".perf")+".txt", rep, 0o644); err != nil {
			log.Printf("perf report: %v", err)
		}
	}
}
