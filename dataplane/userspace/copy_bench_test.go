package userspace

import (
	"io"
	"net"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// BenchmarkRoundTrip exchanges 64-byte requests and answers with an echo backend, directly and
// through the proxy, on one keep-alive connection and on a new connection per request: what the
// proxy adds per request (go test -bench RoundTrip -benchmem -cpuprofile/-memprofile to see where).
func BenchmarkRoundTrip(b *testing.B) {
	echo := serveTCP(b, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := New(Options{})
	defer p.Close()
	sp := servicePort(v1.ProtocolTCP, 1, echo)
	syncPort(b, p, sp)
	port, _, _ := p.UserspacePorts(sp.Name)
	proxied := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()
	for _, target := range []struct{ name, addr string }{{"direct", echo.String()}, {"proxy", proxied}} {
		b.Run("keep-alive/"+target.name, func(b *testing.B) { roundTrips(b, target.addr) })
		b.Run("new-connection/"+target.name, func(b *testing.B) {
			for range b.N {
				roundTrips(b, target.addr, 1)
			}
		})
	}
}

// roundTrips makes n exchanges on one new connection (b.N when n is 0).
func roundTrips(b *testing.B, addr string, n ...int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, got := make([]byte, 64), make([]byte, 64)
	count := b.N
	if len(n) > 0 {
		count = n[0]
	}
	for range count {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}
