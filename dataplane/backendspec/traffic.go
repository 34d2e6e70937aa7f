package backendspec

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Protocol names as Kubernetes spells them.
const (
	TCP  = "TCP"
	UDP  = "UDP"
	SCTP = "SCTP"
)

// dialTimeout bounds every client attempt: a dropped packet shows up as a timeout.
const dialTimeout = 2 * time.Second

// sctpInitialRTO is SCTP's first retransmission timeout (RFC 4960, RTO.Initial).
const sctpInitialRTO = 3 * time.Second

// Reply is what a backend answers: its name and the source address it saw.
type Reply struct {
	Backend string
	Source  netip.Addr
}

// Serve starts a server in the host's namespace on port for proto that answers every connection
// (or datagram) with "<host name> <client address>\n". TCP and SCTP connections stay open and
// answer each further line with the host's name, so tests can hold long-lived connections.
func (h *Host) Serve(t *testing.T, proto string, port int) {
	t.Helper()
	addr := fmt.Sprintf(":%d", port)
	var err error
	switch proto {
	case TCP:
		var l net.Listener
		err = inNetns(h.NS, func() (e error) { l, e = net.Listen("tcp", addr); return })
		if err == nil {
			t.Cleanup(func() { l.Close() })
			go h.acceptLoop(l)
		}
	case SCTP:
		var l net.Listener
		err = inNetns(h.NS, func() (e error) { l, e = listenSCTP(port); return })
		if err == nil {
			t.Cleanup(func() { l.Close() })
			go h.acceptLoop(l)
		}
	case UDP:
		var pc net.PacketConn
		err = inNetns(h.NS, func() (e error) { pc, e = net.ListenPacket("udp", addr); return })
		if err == nil {
			t.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 1500)
				for {
					_, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo([]byte(h.greeting(from)), from)
				}
			}()
		}
	default:
		t.Fatalf("unknown protocol %q", proto)
	}
	if err != nil {
		t.Fatalf("%s: serving %s %s: %v", h.Name, proto, addr, err)
	}
}

func (h *Host) greeting(from net.Addr) string {
	host, _, _ := net.SplitHostPort(from.String())
	return h.Name + " " + host + "\n"
}

func (h *Host) acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := c.Write([]byte(h.greeting(c.RemoteAddr()))); err != nil {
				return
			}
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
				if _, err := c.Write([]byte(h.Name + "\n")); err != nil {
					return
				}
			}
		}()
	}
}

// Conn is an open client connection (TCP or SCTP) through a Service.
type Conn struct {
	c     net.Conn
	r     *bufio.Reader
	First Reply
}

// Ping sends a line on the connection and returns the name of the backend that answers.
func (c *Conn) Ping() (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := c.c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

func (c *Conn) Close() error { return c.c.Close() }

// Open connects from the host (from src, or the host's first address of dst's family when src is
// invalid) to dst and reads the backend's greeting.
func (h *Host) Open(proto string, src netip.Addr, dst netip.AddrPort) (*Conn, error) {
	return h.open(proto, src, dst, dialTimeout)
}

// TryTCP is one TCP request from the host's first address to dst that gives up after timeout:
// for polling until traffic flows, at a finer grain than a request's own retransmissions.
func (h *Host) TryTCP(dst netip.AddrPort, timeout time.Duration) (Reply, error) {
	c, err := h.open(TCP, netip.Addr{}, dst, timeout)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	return c.First, nil
}

func (h *Host) open(proto string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (*Conn, error) {
	if !src.IsValid() {
		src = h.FirstAddr(dst.Addr())
	}
	var c net.Conn
	err := inNetns(h.NS, func() (e error) {
		switch proto {
		case TCP:
			d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.IP(src.AsSlice())}}
			c, e = d.Dial("tcp", dst.String())
		case SCTP:
			c, e = dialSCTP(src, dst)
		default:
			e = fmt.Errorf("Open is for connection protocols, not %s", proto)
		}
		return
	})
	if err != nil {
		return nil, err
	}
	conn := &Conn{c: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := conn.r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading greeting from %s: %w", dst, err)
	}
	conn.First, err = parseReply(line)
	if err != nil {
		c.Close()
		return nil, err
	}
	return conn, nil
}

// Request makes one request (a connection, or a datagram for UDP) and returns the reply.
func (h *Host) Request(proto string, src netip.Addr, dst netip.AddrPort) (Reply, error) {
	if proto != UDP {
		c, err := h.Open(proto, src, dst)
		if err != nil {
			return Reply{}, err
		}
		defer c.Close()
		return c.First, nil
	}
	if !src.IsValid() {
		src = h.FirstAddr(dst.Addr())
	}
	var pc net.PacketConn
	if err := inNetns(h.NS, func() (e error) {
		pc, e = net.ListenPacket("udp", netip.AddrPortFrom(src, 0).String())
		return
	}); err != nil {
		return Reply{}, err
	}
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := pc.WriteTo([]byte("hello\n"), net.UDPAddrFromAddrPort(dst)); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return Reply{}, err
	}
	return parseReply(string(buf[:n]))
}

func parseReply(line string) (Reply, error) {
	name, src, ok := strings.Cut(strings.TrimSpace(line), " ")
	addr, err := netip.ParseAddr(src)
	if !ok || err != nil {
		return Reply{}, fmt.Errorf("unexpected reply %q", line)
	}
	return Reply{Backend: name, Source: addr.Unmap()}, nil
}

// listenSCTP opens a one-to-one style SCTP listening socket; it behaves like a stream socket, so
// the standard library can run it as a net.Listener.
func listenSCTP(port int) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, fmt.Errorf("SCTP socket (sctp module loaded?): %w", err)
	}
	f := os.NewFile(uintptr(fd), "sctp-listener")
	defer f.Close()
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		return nil, err
	}
	return net.FileListener(f)
}

// dialSCTP connects a one-to-one style SCTP socket from src to dst with a timeout.
func dialSCTP(src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if !src.Is4() || !dst.Addr().Is4() {
		return nil, errors.New("the SCTP helper speaks IPv4 only")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, fmt.Errorf("SCTP socket (sctp module loaded?): %w", err)
	}
	f := os.NewFile(uintptr(fd), "sctp-conn")
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		return nil, err
	}
	// SCTP retransmits a lost INIT only after RTO.Initial, 3 s (RFC 4960), so a connect deadline
	// shorter than that turns one lost packet into a failure; allow one retransmission.
	tv := unix.NsecToTimeval((dialTimeout + sctpInitialRTO).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
		return nil, fmt.Errorf("SCTP connect %s: %w", dst, err)
	}
	return net.FileConn(f)
}

// sctpSupported reports whether this kernel can open SCTP sockets (the build machines' cannot).
func sctpSupported() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
