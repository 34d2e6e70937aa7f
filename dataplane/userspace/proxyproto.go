package userspace

import (
	"encoding/binary"
	"net/netip"
)

// proxyV2Signature starts every PROXY protocol v2 header.
var proxyV2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyHeaderV2 is the PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2)
// telling the backend the client's address and the address it reached: what the backend would
// have seen without the proxy, which connects from the node's own address. udp selects the
// DGRAM transport. The addresses are of one family (the proxy keeps families apart).
func proxyHeaderV2(src, dst netip.AddrPort, udp bool) []byte {
	const cmdProxy = 0x21  // version 2, PROXY
	transport := byte(0x1) // STREAM
	if udp {
		transport = 0x2
	}
	var addrs []byte
	fam := byte(0x10) // AF_INET
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().Unmap().As4()
		addrs = append(append(addrs, s[:]...), d[:]...)
	} else {
		fam = 0x20 // AF_INET6
		s, d := src.Addr().As16(), dst.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	h := append([]byte{}, proxyV2Signature...)
	h = append(h, cmdProxy, fam|transport)
	h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)))
	return append(h, addrs...)
}
