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
	// Above 20,000 Services the lab's NodePort range is full: these Services take none (the
	// speakers announce only; nothing here goes through a NodePort).
	b.noNodePorts = true
	total := 0
	for _, size := range sizes {
		if size < total {
			return fmt.Errorf("-present: sizes must grow (%d after %d)", size, total)
		}
		// The controller and the speakers are stopped while the Services are created: each
		// speaker translates the whole table again for every change it sees (the work measured
		// here), which on this 2-core machine slowed 9,000 creations (with the controller
		// allocating each as it came) to 20 a second. Started again, the controller allocates
		// them all as at a restart, and each speaker reads them all at once.
		start := time.Now()
		for _, role := range b.speakersAndController() {
			if p, ok := b.l.Processes[role]; ok {
				_ = p.Stop(10 * time.Second)
			}
		}
		if err := b.createMany(ctx, total, size); err != nil {
			return err
		}
		created := time.Since(start)
		total = size
		if err := b.l.StartController(); err != nil {
			return err
		}
		for _, h := range b.nodes {
			if err := b.l.StartSpeaker(ctx, h.Name); err != nil {
				return err
			}
		}
		for _, p := range b.protos {
			if err := waitProtoCountBird(b.bird, p.Name, total, 15*time.Minute); err != nil {
				return fmt.Errorf("%d Services present: routes from %s: %w", total, p.Name, err)
			}
		}
		log.Printf("%d Services present: created in %v, every node's routes in BIRD after %v", total, created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		waitQuiet(b.l, 3*time.Minute)
		idleFrom, idleStart := processCPU(b.l), time.Now()
		time.Sleep(3 * time.Second)
		logCPUPerSecond(b.l, idleFrom, time.Since(idleStart))

		stopPerf := profileSpeaker(b.l, b.nodes[0].Name, size)
		cpuBefore := processCPU(b.l)
		phaseStart := time.Now()
		_, sinceCreated, _, toStatus, fromStatus, err := b.timeOneByOne(total, n)
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
		report(fmt.Sprintf("BGP lab: speaker CPU per Service created (mean of %d speakers), %s", len(b.nodes), label),
			speakers/time.Duration(n*len(b.nodes)), "")
		report("BGP lab: controller CPU per Service created, "+label,
			(cpuAfter[lab.RoleController]-cpuBefore[lab.RoleController])/time.Duration(n), "")
	}
	return nil
}

// speakersAndController are the lab's Herald processes by role.
func (b *benchLab) speakersAndController() []string {
	roles := []string{lab.RoleController}
	for _, h := range b.nodes {
		roles = append(roles, lab.SpeakerRole(h.Name))
	}
	return roles
}

// waitQuiet waits (at most limit) until the controller and every speaker use under 10% of a
// core: the Services' conditions written, the routes all sent.
func waitQuiet(l *lab.Lab, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		before, from := processCPU(l), time.Now()
		time.Sleep(2 * time.Second)
		after, wall := processCPU(l), time.Since(from)
		busy := false
		for role := range after {
			if (role == lab.RoleController || strings.HasPrefix(role, "speaker/")) && after[role]-before[role] > wall/10 {
				busy = true
			}
		}
		if !busy {
			return
		}
	}
	log.Printf("still busy after %v; measuring anyway", limit)
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
