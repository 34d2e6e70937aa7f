package l2lab

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/heraldlb/herald/internal/netnsrun"
)

// Reply is one ARP reply the client saw.
type Reply struct {
	At    time.Time
	Round int // the probe round it answered (replies arriving before the next request)
	IP    netip.Addr
	MAC   net.HardwareAddr
}

// Prober sends ARP requests from the client for a set of IPs every Interval and records every
// reply, so tests can tell when a new owner first answered and whether two MACs answered one round.
// Each round asks from a different sender address (roundSenders of them, reused cyclically), and a
// reply goes back to the sender address it answers, so every reply is attributed to its round even
// when it arrives after the next round started.
type Prober struct {
	client *arp.Client
	mac    net.HardwareAddr
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	round   int
	replies []Reply
}

// StartProber opens an ARP socket in the client namespace and probes ips every interval.
func (l *Lab) StartProber(ips []netip.Addr, interval time.Duration) (*Prober, error) {
	var c *arp.Client
	err := netnsrun.Do(l.ClientNS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		return nil, err
	}
	p := &Prober{client: c, mac: l.Client.MAC, stop: make(chan struct{}), done: make(chan struct{})}
	go p.read()
	go p.send(ips, interval)
	return p, nil
}

func (p *Prober) send(ips []netip.Addr, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.mu.Lock()
		p.round++
		sender := roundSender(p.round)
		p.mu.Unlock()
		for _, ip := range ips {
			if req, err := arp.NewPacket(arp.OperationRequest, p.mac, sender, ethernet.Broadcast, ip); err == nil {
				_ = p.client.WriteTo(req, ethernet.Broadcast)
			}
		}
		select {
		case <-p.stop:
			close(p.done)
			return
		case <-t.C:
		}
	}
}

func (p *Prober) read() {
	for {
		pkt, _, err := p.client.Read()
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
				continue
			}
		}
		if pkt.Operation != arp.OperationReply {
			continue
		}
		now := time.Now()
		idx, ok := senderIndex(pkt.TargetIP)
		if !ok {
			continue
		}
		p.mu.Lock()
		round := p.round - (p.round-idx+roundSenders)%roundSenders
		p.replies = append(p.replies, Reply{At: now, Round: round, IP: pkt.SenderIP, MAC: pkt.SenderHardwareAddr})
		p.mu.Unlock()
	}
}

// roundSenders sender addresses 10.78.0.128-191 on the segment, none held by a host.
const roundSenders = 64

func roundSender(round int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 78, 0, byte(128 + round%roundSenders)})
}

func senderIndex(ip netip.Addr) (int, bool) {
	b := ip.As4()
	if !ip.Is4() || b[0] != 10 || b[1] != 78 || b[2] != 0 || b[3] < 128 || b[3] >= 128+roundSenders {
		return 0, false
	}
	return int(b[3] - 128), true
}

// Close stops probing.
func (p *Prober) Close() {
	close(p.stop)
	<-p.done
	p.client.Close()
}

// Replies returns the replies seen so far.
func (p *Prober) Replies() []Reply {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Reply(nil), p.replies...)
}

// FirstReplyAfter returns the first reply for ip after t from a MAC other than not (nil: any).
func (p *Prober) FirstReplyAfter(ip netip.Addr, t time.Time, not net.HardwareAddr) (Reply, bool) {
	for _, r := range p.Replies() {
		if r.IP == ip && r.At.After(t) && (not == nil || !bytes.Equal(r.MAC, not)) {
			return r, true
		}
	}
	return Reply{}, false
}

// Double is a round in which two different MACs answered for one IP.
type Double struct {
	IP         netip.Addr
	Round      int
	First, Too string // the MACs, in the order they answered
	At         time.Time
}

func (d Double) String() string {
	return d.IP.String() + " answered by " + d.First + " and " + d.Too + " at " + d.At.Format("15:04:05.000")
}

// DoubleAnswers lists rounds in which two different MACs answered for the same IP.
func (p *Prober) DoubleAnswers() []Double {
	type key struct {
		round int
		ip    netip.Addr
	}
	first := map[key]string{}
	reported := map[key]bool{}
	var out []Double
	for _, r := range p.Replies() {
		k := key{r.Round, r.IP}
		if m, ok := first[k]; !ok {
			first[k] = r.MAC.String()
		} else if m != r.MAC.String() && !reported[k] {
			reported[k] = true
			out = append(out, Double{IP: r.IP, Round: r.Round, First: m, Too: r.MAC.String(), At: r.At})
		}
	}
	return out
}

// MACsSince lists the distinct MACs that answered for ip after t.
func (p *Prober) MACsSince(ip netip.Addr, t time.Time) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range p.Replies() {
		if r.IP == ip && r.At.After(t) && !seen[r.MAC.String()] {
			seen[r.MAC.String()] = true
			out = append(out, r.MAC.String())
		}
	}
	return out
}
