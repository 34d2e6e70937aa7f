package userspace

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// serveTCP accepts on a new listener on 127.0.0.1 until the test ends; see serveOn.
func serveTCP(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, handle)
}

// serveOn accepts on ln until the test ends, handling each connection in a goroutine of its own
// (handle need not close it). The test's cleanup closes the listener and every connection, then
// waits for the goroutines.
func serveOn(t testing.TB, ln net.Listener, handle func(net.Conn)) netip.AddrPort {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return addrPortOf(ln.Addr())
}

// answerUDP answers every datagram on pc with answer(datagram) until the test ends (the
// cleanup closes pc and waits).
func answerUDP(t *testing.T, pc net.PacketConn, answer func([]byte) []byte) netip.AddrPort {
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(answer(buf[:n]), from)
		}
	}()
	return addrPortOf(pc.LocalAddr())
}
