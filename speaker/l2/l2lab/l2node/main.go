// Command l2node runs the speaker's L2 core (membership + election + ARP/NDP responders) without
// Kubernetes, from a JSON file of IPs and candidates, for the real-packet tests and the failover
// benchmark. It is a test tool: run it only inside a network namespace made for a test.
//
//	l2node --name n1 --peers n1=10.78.0.11,n2=10.78.0.12 --secret-file S --config ips.json
//
// ips.json: {"10.78.0.200": {"Candidates": ["n1","n2"], "Interfaces": []}, ...}; SIGHUP re-reads it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/heraldlb/herald/speaker/l2"
	"github.com/heraldlb/herald/speaker/membership"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "l2node:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		name           = flag.String("name", "", "node name")
		peersFlag      = flag.String("peers", "", "name=ip,... of every member (this node may be listed)")
		secretFile     = flag.String("secret-file", "", "shared secret")
		configFile     = flag.String("config", "", "JSON map of IP to l2.Policy")
		interval       = flag.Duration("interval", 50*time.Millisecond, "heartbeat interval")
		deadAfter      = flag.Duration("dead-after", 250*time.Millisecond, "silence before a peer is dead")
		rebalanceAfter = flag.Duration("rebalance-after", l2.DefaultElectionTiming.RebalanceAfter, "age before a node receives handovers")
		restartHold    = flag.Duration("restart-hold", 0, "on SIGTERM, hold this node's IPs for a restart this long (0: release them)")
		restartGrace   = flag.Duration("restart-grace", 0, "a restarted peer's grace (membership.Config.RestartGrace; 0: its default, negative: none)")
		configureAfter = flag.Duration("configure-after", 0, "read --config this long after the announcer started, as the speaker configures its announcer only once its data plane forwards")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", *name)
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	peers := map[string]netip.AddrPort{}
	for _, p := range strings.Split(*peersFlag, ",") {
		n, ip, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("bad --peers entry %q", p)
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return err
		}
		peers[n] = netip.AddrPortFrom(a, membership.Port)
	}
	if err := membership.RaisePriority(membership.Nice); err != nil {
		log.Warn("cannot raise CPU priority", "err", err)
	}
	m, err := membership.New(membership.Config{Name: *name, Key: membership.DeriveKey(secret),
		Listen:   netip.AddrPortFrom(netip.IPv6Unspecified(), membership.Port),
		Interval: *interval, DeadAfter: *deadAfter, RestartGrace: *restartGrace, Logger: log})
	if err != nil {
		return err
	}
	m.SetPeers(peers)
	timing := l2.DefaultElectionTiming
	timing.Settle = *deadAfter + *interval
	timing.RebalanceAfter = *rebalanceAfter
	a := l2.New(l2.Config{Node: *name, Membership: m, Links: l2.NetlinkLinks{}, Timing: timing, Logger: log,
		RestartHold: *restartHold, Handover: l2.NetlinkHandover{}})

	load := func() error {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return err
		}
		ips := map[netip.Addr]l2.Policy{}
		if err := json.Unmarshal(b, &ips); err != nil {
			return err
		}
		a.SetIPs(ips)
		return nil
	}
	if *configureAfter == 0 {
		if err := load(); err != nil {
			return err
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := load(); err != nil {
				log.Error("reload", "err", err)
			}
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	memberCtx, stopMembership := context.WithCancel(context.Background())
	go func() {
		if err := m.Run(memberCtx); err != nil {
			log.Error("membership", "err", err)
		}
	}()
	if *configureAfter > 0 {
		configure := time.AfterFunc(*configureAfter, func() {
			if err := load(); err != nil {
				log.Error("configure", "err", err)
			}
		})
		defer configure.Stop()
	}
	err = a.Run(ctx)
	time.Sleep(150 * time.Millisecond) // let the last state ("owns nothing", or the hold) reach the peers
	stopMembership()
	return err
}
