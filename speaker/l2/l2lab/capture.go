package l2lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/packet"

	"github.com/heraldlb/herald/internal/netnsrun"
	"github.com/heraldlb/herald/speaker/membership"
)

const (
	etherTypeAll  = 0x0003 // ETH_P_ALL: a bridge port hands frames to the bridge before protocol taps
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
)

// CaptureHeartbeats records up to n membership datagrams (UDP payloads) node sends, read at its
// bridge port in the switch namespace, as a stranger on the segment would.
func (l *Lab) CaptureHeartbeats(node string, n int, timeout time.Duration) ([][]byte, error) {
	var conn *packet.Conn
	err := netnsrun.Do(l.SwitchNS, func() error {
		ifi, err := net.InterfaceByName(l.Node(node).Port)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, etherTypeAll, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	src := l.Node(node).IPv4
	var out [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(timeout)
	_ = conn.SetReadDeadline(deadline)
	for len(out) < n && time.Now().Before(deadline) {
		k, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		if k < 14 || binary.BigEndian.Uint16(buf[12:14]) != etherTypeIPv4 {
			continue
		}
		if p, ok := udpPayload(buf[14:k], src, membership.Port); ok {
			out = append(out, append([]byte(nil), p...))
		}
	}
	return out, nil
}

// udpPayload returns the payload of an unfragmented IPv4 UDP datagram from src to dstPort.
func udpPayload(b []byte, src netip.Addr, dstPort uint16) ([]byte, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != 17 {
		return nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	if netip.AddrFrom4([4]byte(b[12:16])) != src || len(b) < ihl+8 {
		return nil, false
	}
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 { // fragment
		return nil, false
	}
	udp := b[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != dstPort {
		return nil, false
	}
	return udp[8:], true
}

// SendFromClient sends datagrams from the client namespace to a node's membership port.
func (l *Lab) SendFromClient(node string, datagrams [][]byte) error {
	var conn *net.UDPConn
	err := netnsrun.Do(l.ClientNS, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", nil)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	dst := netip.AddrPortFrom(l.Node(node).IPv4, membership.Port)
	for _, d := range datagrams {
		if _, err := conn.WriteToUDPAddrPort(d, dst); err != nil {
			return err
		}
	}
	return nil
}

// SolicitationsSeen records, per node, the targets of the NDP neighbour solicitations that
// reach the node's eth0 from elsewhere while during runs. A packet socket sees every frame the
// switch delivers to the port, without joining any group: it is what an NDP responder that relies
// on the switch flooding multicast would hear.
func (l *Lab) SolicitationsSeen(nodes []*Node, during func()) (map[string][]netip.Addr, error) {
	seen := map[string][]netip.Addr{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var conns []*packet.Conn
	stop := func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}
	for _, n := range nodes {
		var conn *packet.Conn
		err := netnsrun.Do(n.NS, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			conn, err = packet.Listen(ifi, packet.Raw, etherTypeIPv6, nil)
			return err
		})
		if err != nil {
			stop()
			return nil, err
		}
		conns = append(conns, conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, _, err := conn.ReadFrom(buf)
				if err != nil {
					return
				}
				if k < 12 || bytes.Equal(buf[6:12], n.MAC) { // the node's own frames
					continue
				}
				if target, ok := solicitationTarget(buf[:k]); ok {
					mu.Lock()
					seen[n.Name] = append(seen[n.Name], target)
					mu.Unlock()
				}
			}
		}()
	}
	during()
	time.Sleep(100 * time.Millisecond) // let the last frames in
	stop()
	return seen, nil
}

// solicitationTarget returns the target of an Ethernet frame holding an ICMPv6 neighbour
// solicitation without extension headers (as ndisc6 sends them).
func solicitationTarget(f []byte) (netip.Addr, bool) {
	const eth, ip6, nextHeader, icmpv6, neighborSolicitation = 14, 40, 6, 58, 135
	if len(f) < eth+ip6+24 || binary.BigEndian.Uint16(f[12:14]) != etherTypeIPv6 {
		return netip.Addr{}, false
	}
	if f[eth+nextHeader] != icmpv6 || f[eth+ip6] != neighborSolicitation {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(f[eth+ip6+8 : eth+ip6+24])), true
}

// groupPorts returns the switch ports the bridge's multicast database holds group on.
func (l *Lab) groupPorts(ctx context.Context, group netip.Addr) []string {
	out, _ := l.Exec(ctx, l.SwitchNS, "bridge", "mdb", "show", "dev", "br0")
	var ports []string
	for _, line := range strings.Split(string(out), "\n") {
		// "dev br0 port n1 grp ff02::1:ff00:207 temp proto kernel"
		if f := strings.Fields(line); len(f) >= 6 && f[2] == "port" && f[4] == "grp" && f[5] == group.String() {
			ports = append(ports, f[3])
		}
	}
	return ports
}
