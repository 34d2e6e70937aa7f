package scale

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/speaker/membership"
)

// BenchmarkFailoverAt100Members: how long the membership takes to declare a crashed speaker dead
// when 100 speakers heartbeat each other (all-to-all, 20 Hz, the defaults: DeadAfter 250 ms), on
// loopback. Two members, the observer and the victim, know all 99 others, so each sends and
// receives what a node of a 100-node cluster does (1,980 heartbeats/s each way); the 98 others are
// members of the same code that know only those two, so the machine runs about four nodes' load
// rather than a hundred. The victim crashes (its heartbeats stop) six times, each time starting
// again as a new process would (new epoch, new port); a sample is the time from the crash to the
// victim leaving the observer's view. Each crash comes after the victim's restart grace
// (membership.Config.RestartGrace, 10 s, during which a peer that has just restarted is given
// 4 × DeadAfter), so the samples are a running speaker's crash. Also: the CPU one heartbeat (its
// HMAC, send or receive) costs, all members together, and from it one node's heartbeat CPU at 100
// members.
func BenchmarkFailoverAt100Members(b *testing.B) {
	const members, rounds = 100, 6
	// The membership's default RestartGrace, and a second of margin.
	const sinceRestart = 11 * time.Second
	key := membership.DeriveKey([]byte("herald-scale-bench"))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	name := func(i int) string { return fmt.Sprintf("node%03d", i) }
	var regs []*prometheus.Registry
	newMember := func(i int) *membership.Membership {
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		m, err := membership.New(membership.Config{Name: name(i), Key: key, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
			Metrics: membership.NewMetrics(reg), Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(m *membership.Membership) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		wg.Go(func() {
			if err := m.Run(ctx); err != nil && ctx.Err() == nil {
				b.Error(err)
			}
		})
		return cancel
	}
	ms := make([]*membership.Membership, members)
	addrs := map[string]netip.AddrPort{}
	for i := range members {
		ms[i] = newMember(i)
		addrs[name(i)] = ms[i].LocalAddr()
	}
	// wire gives the observer and the victim everyone, the others only those two.
	wire := func() {
		pair := map[string]netip.AddrPort{name(0): addrs[name(0)], name(1): addrs[name(1)]}
		for i, m := range ms {
			if i < 2 {
				m.SetPeers(addrs)
			} else {
				m.SetPeers(pair)
			}
		}
	}
	wire()
	cancels := make([]context.CancelFunc, members)
	for i, m := range ms {
		m.SetPayload([]byte(name(i)))
		cancels[i] = start(m)
		defer func() { cancels[i]() }()
	}
	allAlive := func() {
		deadline := time.Now().Add(10 * time.Second)
		for _, m := range ms[:2] {
			for len(m.View().Alive) < members {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d members alive after 10 s", len(m.View().Alive), members)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	allAlive()

	// Steady state: CPU per heartbeat handled (sent or received, each with its HMAC), all members.
	accepted := func() float64 { return counterSum(regs, "herald_membership_messages_accepted_total") }
	a0, c0 := accepted(), processCPU()
	time.Sleep(3 * time.Second)
	perHeartbeat := (processCPU() - c0).Seconds() / (2 * (accepted() - a0)) // each accepted one was also sent
	perNode := perHeartbeat * 2 * float64((members-1)*20)

	var samples []time.Duration
	restarted := time.Now()
	for range rounds {
		time.Sleep(max(time.Second, sinceRestart-time.Since(restarted))) // steady state, past the grace
		crashed := time.Now()
		cancels[1]()
		for {
			if _, ok := ms[0].View().Alive[name(1)]; !ok {
				break
			}
			if time.Since(crashed) > 5*time.Second {
				b.Fatal("the crashed member is still seen alive 5 s later")
			}
			time.Sleep(time.Millisecond)
		}
		samples = append(samples, time.Since(crashed))
		// Back, as a restarted speaker: a new epoch on a new port.
		ms[1] = newMember(1)
		addrs[name(1)] = ms[1].LocalAddr()
		ms[1].SetPayload([]byte(name(1)))
		wire()
		cancels[1] = start(ms[1])
		restarted = time.Now()
		allAlive()
	}
	slices.Sort(samples)
	b.Logf("%d samples: %v", len(samples), samples)
	label := fmt.Sprintf("scale, heartbeats, %d members: ", members)
	emit(label+"crash to peer declared dead, p50", float64(samples[len(samples)/2])/float64(time.Millisecond), "ms")
	emit(label+"crash to peer declared dead, max", float64(samples[len(samples)-1])/float64(time.Millisecond), "ms")
	emit(label+"CPU per heartbeat sent or received (HMAC included)", perHeartbeat*1e6, "µs")
	emit(label+"one node's heartbeat CPU (1,980 sent + 1,980 received per second)", perNode*1000, "ms/s")
	emit(label+"of which HMACs (one per heartbeat sent or received)", hmacCost().Seconds()*2*float64((members-1)*20)*1000, "ms/s")
}

// hmacCost is the CPU of one heartbeat's HMAC-SHA256 (a 90-byte steady-state heartbeat, with the
// MAC made fresh as membership makes it): the share of the per-heartbeat cost that is crypto, the
// rest being the system calls and wake-ups.
func hmacCost() time.Duration {
	const n = 200_000
	key, msg := membership.DeriveKey([]byte("k")), make([]byte, 90)
	c0 := processCPU()
	for range n {
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		msg = m.Sum(msg[:90])[:90]
	}
	return (processCPU() - c0) / n
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
