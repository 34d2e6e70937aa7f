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
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv6"
)

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_l2_requests_total",
		Help: "ARP requests and neighbor solicitations received for IPs this node answers for.",
	}, []string{"interface", "protocol"})
	repliesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_l2_replies_total",
		Help: "ARP replies and neighbor advertisements sent in answer to a request.",
	}, []string{"interface", "protocol"})
	gratuitousTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_l2_gratuitous_sent_total",
		Help: "Gratuitous ARPs and unsolicited neighbor advertisements sent on taking an IP.",
	}, []string{"interface", "protocol"})
)

func init() {
	prometheus.MustRegister(requestsTotal, repliesTotal, gratuitousTotal)
}

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

// ipSet is swapped atomically so the receive loop never waits on the control loop.
type ipSet struct {
	p atomic.Pointer[map[netip.Addr]bool]
}

func (s *ipSet) has(ip netip.Addr) bool {
	m := s.p.Load()
	return m != nil && (*m)[ip]
}

func (s *ipSet) set(ips map[netip.Addr]bool) { s.p.Store(&ips) }

// arpResponder answers ARP requests with the interface's MAC, through mdlayher/arp's raw socket.
type arpResponder struct {
	ipSet
	closed atomic.Bool
	ifi    *net.Interface
	client *arp.Client
	log    *slog.Logger
}

func newARPResponder(ifi *net.Interface, log *slog.Logger) (*arpResponder, error) {
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("arp on %s: %w", ifi.Name, err)
	}
	r := &arpResponder{ifi: ifi, client: c, log: log}
	go r.serve()
	return r, nil
}

func (r *arpResponder) setIPs(ips map[netip.Addr]bool) { r.ipSet.set(ips) }

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
		requestsTotal.WithLabelValues(r.ifi.Name, "arp").Inc()
		if err := r.client.Reply(p, r.ifi.HardwareAddr, p.TargetIP); err != nil {
			r.log.Warn("l2: ARP reply failed", "interface", r.ifi.Name, "ip", p.TargetIP, "err", err)
			continue
		}
		repliesTotal.WithLabelValues(r.ifi.Name, "arp").Inc()
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
	gratuitousTotal.WithLabelValues(r.ifi.Name, "arp").Inc()
	return nil
}

func (r *arpResponder) close() {
	r.closed.Store(true)
	r.client.Close()
}

// ndpResponder answers neighbor solicitations through mdlayher/ndp's ICMPv6 socket. The socket
// only sees solicitations sent to the solicited-node multicast groups it joined, so it joins the
// group of every IP it answers for (a snooping switch does not flood them).
type ndpResponder struct {
	ipSet
	closed atomic.Bool
	ifi    *net.Interface
	conn   *ndp.Conn
	log    *slog.Logger

	mu     sync.Mutex
	groups map[netip.Addr]int // solicited-node group -> answered IPs in it
}

var allNodes = netip.MustParseAddr("ff02::1")

func newNDPResponder(ifi *net.Interface, log *slog.Logger) (*ndpResponder, error) {
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, fmt.Errorf("ndp on %s: %w", ifi.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("ndp on %s: filter: %w", ifi.Name, err)
	}
	r := &ndpResponder{ifi: ifi, conn: c, log: log, groups: map[netip.Addr]int{}}
	go r.serve()
	return r, nil
}

func (r *ndpResponder) setIPs(ips map[netip.Addr]bool) {
	r.ipSet.set(ips)
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
			if err := r.conn.JoinGroup(g); err != nil {
				r.log.Warn("l2: cannot join solicited-node group", "interface", r.ifi.Name, "group", g, "err", err)
			}
		}
	}
	for g := range r.groups {
		if want[g] == 0 {
			_ = r.conn.LeaveGroup(g)
		}
	}
	r.groups = want
}

func (r *ndpResponder) serve() {
	for {
		m, _, src, err := r.conn.ReadFrom()
		if err != nil {
			if r.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ns, ok := m.(*ndp.NeighborSolicitation)
		if !ok || !r.has(ns.TargetAddress) {
			continue
		}
		requestsTotal.WithLabelValues(r.ifi.Name, "ndp").Inc()
		dst := src
		if src.IsUnspecified() {
			dst = allNodes // duplicate address detection: answer to all nodes
		}
		if err := r.advertise(ns.TargetAddress, dst, !src.IsUnspecified()); err != nil {
			r.log.Warn("l2: neighbor advertisement failed", "interface", r.ifi.Name, "ip", ns.TargetAddress, "err", err)
			continue
		}
		repliesTotal.WithLabelValues(r.ifi.Name, "ndp").Inc()
	}
}

func (r *ndpResponder) advertise(ip, dst netip.Addr, solicited bool) error {
	na := &ndp.NeighborAdvertisement{
		Solicited:     solicited,
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.ifi.HardwareAddr}},
	}
	return r.conn.WriteTo(na, nil, dst)
}

// announce sends an unsolicited neighbor advertisement with the override flag to all nodes.
func (r *ndpResponder) announce(ip netip.Addr) error {
	if err := r.advertise(ip, allNodes, false); err != nil {
		return err
	}
	gratuitousTotal.WithLabelValues(r.ifi.Name, "ndp").Inc()
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
				log.Warn("l2: gratuitous announcement failed", "ip", ip, "err", err)
			}
		}
	}
}
