package l2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// GratuitousSchedule is when, after taking an IP, gratuitous ARPs / unsolicited NAs go out: at
// once for the clients and switches that hear it, and a few more in case the first were lost.
var GratuitousSchedule = []time.Duration{0, 50 * time.Millisecond, 250 * time.Millisecond, time.Second}

// responder answers ARP (IPv4) or NDP (IPv6) on one interface for the IPs it is given.
type responder interface {
	// setIPs replaces the answered set; IPs leaving it are not answered from now on.
	setIPs(ips map[netip.Addr]bool)
	// announce sends one gratuitous ARP / unsolicited NA for ip.
	announce(ip netip.Addr) error
	close()
}

// ipSet is swapped atomically so the receive loop never waits on the control loop. mayAnswer
// vetoes every answer while the announcer's state may be stale (see Announcer.mayAnswer).
type ipSet struct {
	p         atomic.Pointer[map[netip.Addr]bool]
	mayAnswer func() bool
}

func (s *ipSet) has(ip netip.Addr) bool {
	m := s.p.Load()
	return m != nil && (*m)[ip] && s.mayAnswer()
}

func (s *ipSet) set(ips map[netip.Addr]bool) { s.p.Store(&ips) }

// arpResponder answers ARP requests with the interface's MAC, through mdlayher/arp's raw socket.
type arpResponder struct {
	ipSet
	closed  atomic.Bool
	ifi     *net.Interface
	client  *arp.Client
	log     *slog.Logger
	metrics *Metrics
}

func newARPResponder(ifi *net.Interface, mayAnswer func() bool, log *slog.Logger, metrics *Metrics) (*arpResponder, error) {
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("arp on %s: %w", ifi.Name, err)
	}
	r := &arpResponder{ipSet: ipSet{mayAnswer: mayAnswer}, ifi: ifi, client: c, log: log, metrics: metrics}
	go r.serve()
	return r, nil
}

func (r *arpResponder) setIPs(ips map[netip.Addr]bool) { r.set(ips) }

func (r *arpResponder) serve() {
	for {
		p, _, err := r.client.Read()
		if err != nil {
			if r.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Read also fails on malformed frames; skip them.
			continue
		}
		if p.Operation != arp.OperationRequest || !r.has(p.TargetIP) {
			continue
		}
		r.metrics.requests.WithLabelValues(r.ifi.Name, "arp").Inc()
		if err := r.client.Reply(p, r.ifi.HardwareAddr, p.TargetIP); err != nil {
			r.log.Warn("ARP reply failed", "interface", r.ifi.Name, "ip", p.TargetIP, "err", err)
			continue
		}
		r.metrics.replies.WithLabelValues(r.ifi.Name, "arp").Inc()
	}
}

// announce sends an ARP announcement (RFC 5227: a request with sender and target set to ip, to
// broadcast), which updates every neighbour cache that has ip.
func (r *arpResponder) announce(ip netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, r.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err != nil {
		return err
	}
	if err := r.client.WriteTo(p, ethernet.Broadcast); err != nil {
		return err
	}
	r.metrics.gratuitous.WithLabelValues(r.ifi.Name, "arp").Inc()
	return nil
}

func (r *arpResponder) close() {
	r.closed.Store(true)
	r.client.Close()
}

// ndpResponder answers neighbor solicitations on one interface. mdlayher/ndp parses and builds
// the messages; the socket is our own raw ICMPv6 socket with IPV6_FREEBIND, because an
// advertisement must come from the target address itself (tools such as ndisc6 ignore answers
// from any other source, and ndp.Conn can only send from an address the interface holds). The
// socket only sees solicitations sent to the solicited-node multicast groups it joined, so it
// joins the group of every IP it answers for (a snooping switch does not flood them).
type ndpResponder struct {
	ipSet
	closed  atomic.Bool
	ifi     *net.Interface
	conn    *ipv6.PacketConn
	log     *slog.Logger
	metrics *Metrics

	mu     sync.Mutex
	groups map[netip.Addr]int // solicited-node group -> answered IPs in it
}

var allNodes = netip.MustParseAddr("ff02::1")

func newNDPResponder(ctx context.Context, ifi *net.Interface, mayAnswer func() bool, log *slog.Logger, metrics *Metrics) (*ndpResponder, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1); serr != nil {
				return
			}
			serr = unix.BindToDevice(int(fd), ifi.Name)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ndp on %s: %w", ifi.Name, err)
	}
	c := ipv6.NewPacketConn(pc)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	for _, set := range []func() error{
		func() error { return c.SetICMPFilter(&f) },
		func() error { return c.SetChecksum(true, 2) },
		// RFC 4861: neighbor discovery messages carry hop limit 255, proof they were not routed.
		func() error { return c.SetHopLimit(ndp.HopLimit) },
		func() error { return c.SetMulticastHopLimit(ndp.HopLimit) },
		func() error { return c.SetControlMessage(ipv6.FlagHopLimit, true) },
	} {
		if err := set(); err != nil {
			c.Close()
			return nil, fmt.Errorf("ndp on %s: %w", ifi.Name, err)
		}
	}
	r := &ndpResponder{ipSet: ipSet{mayAnswer: mayAnswer}, ifi: ifi, conn: c, log: log, metrics: metrics, groups: map[netip.Addr]int{}}
	go r.serve()
	return r, nil
}

func (r *ndpResponder) setIPs(ips map[netip.Addr]bool) {
	r.set(ips)
	want := map[netip.Addr]int{}
	for ip := range ips {
		if g, err := ndp.SolicitedNodeMulticast(ip); err == nil {
			want[g]++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for g := range want {
		if r.groups[g] == 0 {
			if err := r.conn.JoinGroup(r.ifi, &net.IPAddr{IP: g.AsSlice()}); err != nil {
				r.log.Warn("cannot join solicited-node group", "interface", r.ifi.Name, "group", g, "err", err)
			}
		}
	}
	for g := range r.groups {
		if want[g] == 0 {
			_ = r.conn.LeaveGroup(r.ifi, &net.IPAddr{IP: g.AsSlice()})
		}
	}
	r.groups = want
}

func (r *ndpResponder) serve() {
	buf := make([]byte, 1500)
	for {
		n, cm, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			if r.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if cm == nil || cm.HopLimit != ndp.HopLimit {
			continue
		}
		m, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		ns, ok := m.(*ndp.NeighborSolicitation)
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if !ok || !r.has(ns.TargetAddress) {
			continue
		}
		r.metrics.requests.WithLabelValues(r.ifi.Name, "ndp").Inc()
		dst := src
		if src.IsUnspecified() {
			dst = allNodes // duplicate address detection: answer to all nodes
		}
		if err := r.advertise(ns.TargetAddress, dst, !src.IsUnspecified()); err != nil {
			r.log.Warn("neighbor advertisement failed", "interface", r.ifi.Name, "ip", ns.TargetAddress, "err", err)
			continue
		}
		r.metrics.replies.WithLabelValues(r.ifi.Name, "ndp").Inc()
	}
}

// advertise sends a neighbor advertisement for ip, from ip, with this interface's MAC.
func (r *ndpResponder) advertise(ip, dst netip.Addr, solicited bool) error {
	b, err := ndp.MarshalMessage(&ndp.NeighborAdvertisement{
		Solicited:     solicited,
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.ifi.HardwareAddr}},
	})
	if err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: ip.AsSlice(), IfIndex: r.ifi.Index}
	_, err = r.conn.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice(), Zone: r.ifi.Name})
	return err
}

// announce sends an unsolicited neighbor advertisement with the override flag to all nodes.
func (r *ndpResponder) announce(ip netip.Addr) error {
	if err := r.advertise(ip, allNodes, false); err != nil {
		return err
	}
	r.metrics.gratuitous.WithLabelValues(r.ifi.Name, "ndp").Inc()
	return nil
}

func (r *ndpResponder) close() {
	r.closed.Store(true)
	r.conn.Close()
}

// gratuitousBurst announces ip on every responder along GratuitousSchedule, stopping early when ctx
// ends (the IP was lost again).
func gratuitousBurst(ctx context.Context, ip netip.Addr, rs []responder, log *slog.Logger) {
	start := time.Now()
	for _, at := range GratuitousSchedule {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		for _, r := range rs {
			if err := r.announce(ip); err != nil {
				log.Warn("gratuitous announcement failed", "ip", ip, "err", err)
			}
		}
	}
}
