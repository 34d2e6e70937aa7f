package userspace

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpListener serves one Service port's cluster or external UDP traffic: one session per client
// address, each with a connected socket to the endpoint chosen when it started. Replies leave
// from the address the client's datagram was redirected to (IPV6_PKTINFO on the dual-stack
// socket, which also carries v4-mapped addresses), so the kernel's NAT turns them back into
// replies from the Service address.
type udpListener struct {
	p        *Proxy
	port     *portState
	external bool
	conn     *net.UDPConn
	pktinfo  bool // IPV6_RECVPKTINFO is on

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
}

type udpSession struct {
	l        *udpListener
	client   netip.AddrPort
	local    netip.Addr // where the client's datagrams arrived (after the redirect); invalid if unknown
	endpoint netip.AddrPort
	backend  net.Conn
	lastSeen atomic.Int64 // unix nanoseconds of the last datagram either way
}

const maxDatagram = 64 << 10

// listenUDP opens one socket on bind (see Proxy.binds and listenTCP).
func (p *Proxy) listenUDP(ps *portState, external bool, bind string) (listener, error) {
	pc, err := p.opts.ListenPacket(p.listenConfig(), "udp", bind)
	if err != nil {
		return nil, err
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, errors.New("not a UDP socket")
	}
	l := &udpListener{p: p, port: ps, external: external, conn: conn, sessions: map[netip.AddrPort]*udpSession{}}
	if raw, err := conn.SyscallConn(); err == nil {
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}); err == nil && serr == nil {
			l.pktinfo = true
		}
	}
	p.spawn(l.serve)
	return l, nil
}

func (l *udpListener) Port() uint16 { return uint16(l.conn.LocalAddr().(*net.UDPAddr).Port) }

// Close stops the listener and its sessions.
func (l *udpListener) Close() error {
	err := l.conn.Close()
	l.mu.Lock()
	for _, s := range l.sessions {
		s.backend.Close()
	}
	l.mu.Unlock()
	return err
}

func (l *udpListener) serve() {
	label := l.port.name.String()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	for {
		n, oobn, _, client, err := l.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (e.g. an ICMP error queued on the socket)
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		local := localAddr(oob[:oobn])
		if !local.IsValid() {
			local = addrPortOf(l.conn.LocalAddr()).Addr() // a socket bound to one address
		}
		if l.p.opts.Direct && !sourceAllowed(l.port.load(), local, client.Addr()) {
			continue
		}
		s := l.session(client, local)
		if s == nil {
			l.p.metrics.failures.WithLabelValues(label).Inc()
			continue
		}
		s.lastSeen.Store(time.Now().UnixNano())
		if _, err := s.backend.Write(buf[:n]); err == nil {
			l.p.metrics.bytes.WithLabelValues(label, "to_backend").Add(float64(n))
		}
	}
}

// session returns client's session, starting one with the next endpoint when it has none;
// nil when the port has no endpoint of the client's family or none can be reached.
func (l *udpListener) session(client netip.AddrPort, local netip.Addr) *udpSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.sessions[client]; s != nil {
		return s
	}
	sp := l.port.load()
	now := time.Now()
	eps := endpointsFor(sp, l.external, client.Addr())
	for _, ep := range l.port.candidates(eps, client.Addr(), sp.Userspace.ConnectTries, l.p.suspects, sp.AffinityTimeout > 0, now) {
		ctx, cancel := context.WithTimeout(l.p.ctx, l.p.opts.ConnectTimeout)
		backend, err := l.p.opts.Dial(ctx, "udp", ep.AddrPort().String())
		cancel()
		if err != nil {
			l.p.suspects.mark(ep.AddrPort(), now)
			continue
		}
		if sp.AffinityTimeout > 0 {
			l.port.remember(client.Addr(), ep.AddrPort(), sp.AffinityTimeout, now)
		}
		s := &udpSession{l: l, client: client, local: local, endpoint: ep.AddrPort(), backend: backend}
		s.lastSeen.Store(now.UnixNano())
		l.sessions[client] = s
		l.p.metrics.connections.WithLabelValues(l.port.name.String()).Inc()
		l.p.spawn(s.replies)
		return s
	}
	return nil
}

// replies sends the endpoint's datagrams to the client until the session has been idle for
// the idle timeout, the endpoint refuses (ICMP port unreachable: it is marked suspect, and the
// client's next datagram starts a session with another endpoint), or the listener closes.
func (s *udpSession) replies() {
	l := s.l
	label := l.port.name.String()
	defer func() {
		l.mu.Lock()
		if l.sessions[s.client] == s {
			delete(l.sessions, s.client)
		}
		l.mu.Unlock()
		s.backend.Close()
	}()
	stop := context.AfterFunc(l.p.ctx, func() { s.backend.Close() })
	defer stop()
	idle := l.p.opts.UDPIdleTimeout
	buf := make([]byte, maxDatagram)
	var oob []byte
	if l.pktinfo && s.local.IsValid() {
		oob = pktinfo(s.local)
	}
	for {
		if err := s.backend.SetReadDeadline(time.Unix(0, s.lastSeen.Load()).Add(idle)); err != nil {
			return // a session that cannot expire must not linger: end it (the socket is gone)
		}
		n, err := s.backend.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, s.lastSeen.Load())) < idle {
				continue // traffic from the client moved the deadline on
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				l.p.suspects.mark(s.endpoint, time.Now())
			}
			return
		}
		s.lastSeen.Store(time.Now().UnixNano())
		if _, _, err := l.conn.WriteMsgUDPAddrPort(buf[:n], oob, s.client); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.p.metrics.bytes.WithLabelValues(label, "from_backend").Add(float64(n))
	}
}

// localAddr reads the IPV6_PKTINFO destination address from a datagram's control messages.
func localAddr(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo {
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap()
		}
	}
	return netip.Addr{}
}

// pktinfo is the control message that sends a datagram from src (IPv4 as v4-mapped).
func pktinfo(src netip.Addr) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Addr = src.As16() // v4-mapped for IPv4
	return b
}
