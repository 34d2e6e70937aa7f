// Command userspace benchmarks the userspace proxy mode against nftables, side by side in one
// run on the same backends: HTTP requests/s with keep-alive and with a new connection per
// request, bulk TCP throughput, p99 latency of a new-connection request, the proxy's CPU per
// 10k requests, and failed connections while a backend is dead but still listed.
//
// Everything runs in network namespaces named herald-us-bench-* (removed at the start and on
// exit): the node runs the nftables backend with the proxy in front (in this process), two
// backends and the client are this binary again in helper roles. Needs root, ip and nft.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/nftables"
	"github.com/heraldlb/herald/dataplane/userspace"
)

var (
	quick = flag.Bool("quick", false, "a tiny run that checks the benchmark works (figures meaningless)")
	// Helper roles.
	serve    = flag.Bool("serve", false, "internal: serve HTTP on :8080 and bulk bytes on :9000")
	nodeRole = flag.Bool("node", false, "internal: run the nftables backend and the proxy here until stdin closes")
	loadAddr = flag.String("load", "", "internal: load this address, print JSON results")
	newConns = flag.Bool("new-conns", false, "internal: a new connection per request")
	bulk     = flag.Int64("bulk", 0, "internal: read this many bytes from addr, print MB/s")
	duration = flag.Duration("duration", 3*time.Second, "internal: load duration")
	workers  = flag.Int("conns", 8, "internal: concurrent clients")
	tries    = flag.Int("tries", 0, "internal: make this many sequential new connections, print failures")
)

const prefix = "herald-us-bench-"

var (
	kernelIP = netip.MustParseAddr("10.96.0.10")
	userIP   = netip.MustParseAddr("10.96.0.20")
)

func main() {
	flag.Parse()
	switch {
	case *serve:
		runServer()
	case *nodeRole:
		if err := runNode(); err != nil {
			fmt.Fprintln(os.Stderr, "bench/userspace node:", err)
			os.Exit(1)
		}
	case *loadAddr != "":
		runLoad()
	default:
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench/userspace:", err)
			cleanup()
			os.Exit(1)
		}
	}
}

func run() error {
	cleanup()
	defer cleanup()
	node, client := prefix+"node", prefix+"client"
	for _, ns := range []string{node, client, prefix + "be1", prefix + "be2"} {
		if err := sh("", "ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := sh(ns, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"", "ip", "link", "add", "herald-us-x", "netns", node, "type", "veth", "peer", "name", "herald-us-y", "netns", client},
		{node, "ip", "link", "set", "herald-us-x", "name", "c1"}, {client, "ip", "link", "set", "herald-us-y", "name", "eth0"},
		{node, "ip", "addr", "add", "172.31.1.1/24", "dev", "c1"}, {client, "ip", "addr", "add", "172.31.1.2/24", "dev", "eth0"},
		{node, "ip", "link", "set", "c1", "up"}, {client, "ip", "link", "set", "eth0", "up"},
		{client, "ip", "route", "add", "default", "via", "172.31.1.1"},
		{node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for i := 1; i <= 2; i++ {
		be := fmt.Sprintf("%sbe%d", prefix, i)
		steps = append(steps,
			[]string{"", "ip", "link", "add", "herald-us-x", "netns", node, "type", "veth", "peer", "name", "herald-us-y", "netns", be},
			[]string{node, "ip", "link", "set", "herald-us-x", "name", fmt.Sprintf("b%d", i)},
			[]string{be, "ip", "link", "set", "herald-us-y", "name", "eth0"},
			[]string{node, "ip", "addr", "add", fmt.Sprintf("10.244.%d.1/24", i), "dev", fmt.Sprintf("b%d", i)},
			[]string{be, "ip", "addr", "add", fmt.Sprintf("10.244.%d.2/24", i), "dev", "eth0"},
			[]string{node, "ip", "link", "set", fmt.Sprintf("b%d", i), "up"},
			[]string{be, "ip", "link", "set", "eth0", "up"},
			[]string{be, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", i)})
	}
	for _, s := range steps {
		if err := sh(s[0], s[1:]...); err != nil {
			return err
		}
	}
	servers := map[int]*exec.Cmd{}
	startServer := func(i int) error {
		cmd := exec.Command("ip", "netns", "exec", fmt.Sprintf("%sbe%d", prefix, i), os.Args[0], "-serve")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		servers[i] = cmd
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			return fmt.Errorf("backend %d: %q, %w", i, line, err)
		}
		return nil
	}
	kill := func(i int) {
		if cmd := servers[i]; cmd != nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			delete(servers, i)
		}
	}
	defer func() {
		for i := range servers {
			kill(i)
		}
	}()
	for i := 1; i <= 2; i++ {
		if err := startServer(i); err != nil {
			return err
		}
	}

	// The node runs in a process of its own inside the node namespace, as the speaker does on a
	// node: its sockets are made there without switching namespaces per connection.
	nodeCmd := exec.Command("ip", "netns", "exec", node, os.Args[0], "-node")
	stdin, err := nodeCmd.StdinPipe()
	if err != nil {
		return err
	}
	nodeOut, err := nodeCmd.StdoutPipe()
	if err != nil {
		return err
	}
	nodeCmd.Stderr = os.Stderr
	if err := nodeCmd.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		_ = nodeCmd.Wait()
	}()
	if line, err := bufio.NewReader(nodeOut).ReadString('\n'); err != nil || line != "ready\n" {
		return fmt.Errorf("node: %q, %w", line, err)
	}
	cpuTime := func() time.Duration { u, s := processCPU(nodeCmd.Process.Pid); return u + s }

	d, bulkBytes, bulkRounds, window := *duration, int64(1<<30), 5, 1000
	if *quick {
		d, bulkBytes, bulkRounds, window = 300*time.Millisecond, 16<<20, 1, 100
	}
	const command = "BENCH_ONLY=userspace make bench"
	results := map[string]loadResult{}
	for _, mode := range []string{"nftables", "userspace"} {
		ip := kernelIP
		if mode == "userspace" {
			ip = userIP
		}
		for _, nc := range []bool{false, true} {
			var cpuBefore time.Duration
			if mode == "userspace" {
				cpuBefore = cpuTime()
			}
			var r loadResult
			if err := helper(client, &r, "-load", netip.AddrPortFrom(ip, 80).String(), fmt.Sprintf("-new-conns=%v", nc),
				"-duration", d.String()); err != nil {
				return err
			}
			if mode == "userspace" && r.Requests > 0 {
				r.cpuPer10k = (cpuTime() - cpuBefore).Seconds() * 1000 * 10000 / float64(r.Requests)
			}
			kind := "keep-alive"
			if nc {
				kind = "new connection per request"
			}
			results[mode+" "+kind] = r
			emit(fmt.Sprintf("userspace bench: HTTP requests/s through %s, %s, 8 clients", mode, kind), r.PerSecond, "req/s", "", command)
		}
	}
	// Bulk throughput: one transfer lasts well under a second here, so a single one measures
	// whatever else the two cores did at that moment. The modes take turns, several rounds,
	// and each reports its median.
	//
	// Besides the proxy's own CPU (user and system time apart: Go code against the kernel's
	// work in its system calls), the whole machine's CPU per GiB in each mode (/proc/stat:
	// sender, receiver, proxy, and the softirqs that run TCP and forwarding wherever they
	// land): both cores are saturated during a transfer, so throughput is about the cores
	// divided by that cost, and the ratio of the two costs bounds the ratio of throughputs.
	bulkRuns, hostCPU := map[string][]float64{}, map[string][]float64{}
	var bulkCPU, bulkUserCPU []float64 // the proxy's CPU ms per GiB, each userspace round
	perGiB := func(d time.Duration) float64 { return d.Seconds() * 1000 * float64(1<<30) / float64(bulkBytes) }
	for range bulkRounds {
		for _, mode := range []string{"nftables", "userspace"} {
			ip := kernelIP
			if mode == "userspace" {
				ip = userIP
			}
			var mbps float64
			userBefore, sysBefore := processCPU(nodeCmd.Process.Pid)
			hostBefore := machineCPU()
			if err := helper(client, &mbps, "-load", netip.AddrPortFrom(ip, 9000).String(), "-bulk", fmt.Sprint(bulkBytes)); err != nil {
				return err
			}
			hostCPU[mode] = append(hostCPU[mode], perGiB(machineCPU()-hostBefore))
			bulkRuns[mode] = append(bulkRuns[mode], mbps)
			if mode == "userspace" {
				user, sys := processCPU(nodeCmd.Process.Pid)
				bulkCPU = append(bulkCPU, perGiB(user+sys-userBefore-sysBefore))
				bulkUserCPU = append(bulkUserCPU, perGiB(user-userBefore))
			}
		}
	}
	for _, mode := range []string{"nftables", "userspace"} {
		mbps := median(bulkRuns[mode])
		results[mode+" bulk"] = loadResult{PerSecond: mbps}
		emit(fmt.Sprintf("userspace bench: bulk TCP throughput through %s, %d MiB, median of %d", mode, bulkBytes>>20, bulkRounds), mbps, "MB/s", "", command)
	}
	emit(fmt.Sprintf("userspace bench: proxy CPU per GiB of bulk TCP, median of %d", bulkRounds), median(bulkCPU), "ms", "", command)
	emit(fmt.Sprintf("userspace bench: proxy CPU per GiB of bulk TCP outside the kernel (user time), median of %d", bulkRounds), median(bulkUserCPU), "ms", "", command)
	for _, mode := range []string{"nftables", "userspace"} {
		emit(fmt.Sprintf("userspace bench: machine CPU per GiB of bulk TCP through %s, median of %d", mode, bulkRounds), median(hostCPU[mode]), "ms", "", command)
	}
	nc := "new connection per request"
	emit("userspace bench: new-connection request rate, userspace / nftables",
		100*results["userspace "+nc].PerSecond/results["nftables "+nc].PerSecond, "%", ">= 50 %", command)
	emit("userspace bench: bulk throughput, userspace / nftables",
		100*results["userspace bulk"].PerSecond/results["nftables bulk"].PerSecond, "%", ">= 80 %", command)
	for _, kind := range []string{"keep-alive", nc} {
		emit("userspace bench: p99 latency added by the proxy, "+kind,
			results["userspace "+kind].P99ms-results["nftables "+kind].P99ms, "ms", "", command)
	}
	emit("userspace bench: proxy CPU per 10k requests, keep-alive", results["userspace keep-alive"].cpuPer10k, "ms", "", command)
	emit("userspace bench: proxy CPU per 10k requests, new connection per request", results["userspace "+nc].cpuPer10k, "ms", "", command)

	// The dead-backend window: backend 2 SIGKILLed, its endpoint still listed.
	kill(2)
	for _, mode := range []string{"nftables", "userspace"} {
		ip := kernelIP
		if mode == "userspace" {
			ip = userIP
		}
		var failed int
		if err := helper(client, &failed, "-load", netip.AddrPortFrom(ip, 80).String(), "-tries", fmt.Sprint(window)); err != nil {
			return err
		}
		target := ""
		if mode == "userspace" {
			target = "0"
		}
		emit(fmt.Sprintf("userspace bench: failed new connections of %d with a dead endpoint listed (1 of 2), %s", window, mode),
			float64(failed), "connections", target, command)
	}
	return nil
}

// runNode is the node: the nftables backend with the userspace proxy in front, serving a
// kernel-mode and a userspace-mode Service on the same backends, until stdin closes.
func runNode() error {
	proxy := userspace.New(userspace.Options{})
	defer proxy.Close()
	kernel, err := nftables.New()
	if err != nil {
		return err
	}
	defer kernel.Close()
	kernel.SetUserspaceListeners(proxy)
	backend := userspace.NewBackend(kernel, proxy)
	if err := backend.Sync(context.Background(), dataplane.SyncRequest{State: benchState(), Full: true}); err != nil {
		return err
	}
	defer func() { _ = backend.Cleanup(context.Background()) }()
	fmt.Println("ready")
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// benchState is a kernel-mode and a userspace-mode Service, each with an HTTP and a bulk port,
// on the same two backends.
func benchState() *dataplane.State {
	st := &dataplane.State{Services: map[types.NamespacedName][]*dataplane.ServicePort{}}
	for _, s := range []struct {
		name string
		ip   netip.Addr
		user bool
	}{{"kernel", kernelIP, false}, {"userspace", userIP, true}} {
		for _, p := range []struct {
			name   string
			port   int32
			target int32
		}{{"http", 80, 8080}, {"bulk", 9000, 9000}} {
			sp := &dataplane.ServicePort{
				Name:       dataplane.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: s.name}, Port: p.name, Protocol: corev1.ProtocolTCP},
				Protocol:   corev1.ProtocolTCP,
				Port:       p.port,
				ClusterIPs: []netip.Addr{s.ip},
			}
			for i := 1; i <= 2; i++ {
				sp.ClusterEndpoints = append(sp.ClusterEndpoints, dataplane.Endpoint{
					Addr: netip.MustParseAddr(fmt.Sprintf("10.244.%d.2", i)), Port: p.target, Ready: true, Serving: true, Local: true})
			}
			sp.ExternalEndpoints, sp.HasEndpoints = sp.ClusterEndpoints, true
			if s.user {
				sp.Userspace = &dataplane.UserspaceOptions{ConnectTries: 3}
			}
			key := sp.Name.NamespacedName
			st.Services[key] = append(st.Services[key], sp)
		}
	}
	return st
}

// processCPU is the user and system CPU time of process pid (/proc/PID/stat, in clock ticks
// of 10 ms, the kernel's USER_HZ on Linux).
func processCPU(pid int) (user, system time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name (field 2) may hold spaces: count fields after its closing parenthesis.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0, 0
	}
	var utime, stime int64
	_, _ = fmt.Sscan(fields[11], &utime)
	_, _ = fmt.Sscan(fields[12], &stime)
	return time.Duration(utime) * 10 * time.Millisecond, time.Duration(stime) * 10 * time.Millisecond
}

// machineCPU is the busy CPU time of the whole machine, all cores (/proc/stat: user, nice,
// system, irq, softirq and steal, in 10 ms ticks): what a transfer costs wherever it runs.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(fields) {
			var v int64
			_, _ = fmt.Sscan(fields[i], &v)
			busy += v
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// loadResult is what a load helper prints.
type loadResult struct {
	Requests  int64   `json:"requests"`
	Failures  int64   `json:"failures"`
	PerSecond float64 `json:"perSecond"`
	P99ms     float64 `json:"p99ms"`
	cpuPer10k float64
}

// helper runs this binary in ns with args and decodes its JSON output into out.
func helper(ns string, out any, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, os.Args[0]}, args...)...)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("helper %v: %w", args, err)
	}
	return json.Unmarshal(b, out)
}

// median of xs (not empty); sorts xs.
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func emit(figure string, value float64, unit, target, command string) {
	b, _ := json.Marshal(map[string]any{"figure": figure, "value": value, "unit": unit, "target": target, "command": command})
	fmt.Printf("BENCH %s\n", b)
}

func runServer() {
	body := strings.Repeat("x", 64)
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bulkLn, err := net.Listen("tcp", ":9000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			c, err := bulkLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var n int64
				if _, err := fmt.Fscan(c, &n); err != nil {
					return
				}
				for n > 0 {
					w, err := c.Write(chunk[:min(n, int64(len(chunk)))])
					if err != nil {
						return
					}
					n -= int64(w)
				}
			}()
		}
	}()
	fmt.Println("ready")
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
}

func runLoad() {
	var out any
	switch {
	case *bulk > 0:
		out = bulkRead(*loadAddr, *bulk)
	case *tries > 0:
		failed := 0
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for range *tries {
			resp, err := c.Get("http://" + *loadAddr + "/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil {
				failed++
			}
		}
		out = failed
	default:
		out = httpLoad(*loadAddr, *newConns, *duration, *workers)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func bulkRead(addr string, n int64) float64 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "%d\n", n)
	// Read in 1 MiB chunks: io.Copy to io.Discard reads 8 KiB at a time, and on two cores the
	// client's own system calls then take the CPU both proxies need.
	got, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 1<<20))
	if err != nil || got != n {
		fmt.Fprintf(os.Stderr, "bulk: %d of %d bytes, %v\n", got, n, err)
		os.Exit(1)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

func httpLoad(addr string, newConn bool, d time.Duration, n int) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableKeepAlives: newConn}
	c := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	var requests, failures atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := c.Get("http://" + addr + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					failures.Add(1)
					continue
				}
				requests.Add(1)
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	r := loadResult{Requests: requests.Load(), Failures: failures.Load(), PerSecond: float64(requests.Load()) / el.Seconds()}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		r.P99ms = float64(latencies[len(latencies)*99/100]) / 1e6
	}
	return r
}

func sh(ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// cleanup removes the benchmark's namespaces (their links go with them).
func cleanup() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}
