package l2lab

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"

	"github.com/heraldlb/herald/speaker/membership"
)

const (
	etherTypeAll  = 0x0003 // ETH_P_ALL: a bridge port hands frames to the bridge before protocol taps
	etherTypeIPv4 = 0x0800
)

// CaptureHeartbeats records up to n membership datagrams (UDP payloads) node sends, read at its
// bridge port in the switch namespace, as a stranger on the segment would.
func (l *Lab) CaptureHeartbeats(node string, n int, timeout time.Duration) ([][]byte, error) {
	var conn *packet.Conn
	err := InNetns(l.SwitchNS, func() error {
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
	err := InNetns(l.ClientNS, func() error {
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
