package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/heraldlb/herald/dataplane"
)

// maxReplay is how much of what a client sent before the backend's first byte the proxy keeps,
// to send again to the next endpoint when the first one resets. A client that sends more before
// any answer is committed to its endpoint (a reset then reaches it).
const maxReplay = 64 << 10

// tcpListener accepts one Service port's cluster or external TCP traffic.
type tcpListener struct {
	p        *Proxy
	port     *portState
	external bool
	ln       net.Listener
}

// listenTCP opens one socket on bind (see Proxy.binds): with a kernel backend, ":0" is one
// dual-stack socket on a port the kernel picks, to which it redirects the Service's IPv4 and
// IPv6 traffic.
func (p *Proxy) listenTCP(ps *portState, external bool, bind string) (listener, error) {
	ln, err := p.opts.Listen(p.listenConfig(), "tcp", bind)
	if err != nil {
		return nil, err
	}
	l := &tcpListener{p: p, port: ps, external: external, ln: ln}
	p.spawn(l.serve)
	return l, nil
}

func (l *tcpListener) Port() uint16 { return uint16(l.ln.Addr().(*net.TCPAddr).Port) }
func (l *tcpListener) Close() error { return l.ln.Close() }

func (l *tcpListener) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: the client is lost either way; do not spin.
			l.p.opts.Logger.Warn("userspace proxy: accept", "service", l.port.name.String(), "error", err)
			select {
			case <-l.p.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.p.spawn(func() { l.p.handleTCP(l.port, l.external, c.(*net.TCPConn)) })
	}
}

// tcpConn is one client connection being proxied.
type tcpConn struct {
	p          *Proxy
	port       *portState
	sp         *dataplane.ServicePort
	client     *net.TCPConn
	candidates []dataplane.Endpoint // still to try
	attempts   int
	header     []byte // PROXY protocol header, nil without

	// Until committed (the backend sent its first byte, or the replay overflowed), the
	// backend may still be replaced (under mu, which guards the fields below); after, they
	// no longer change.
	mu        sync.Mutex
	backend   *net.TCPConn
	endpoint  netip.AddrPort
	replay    []byte
	committed bool
	clientEOF bool
	sent      int64 // client-to-backend bytes before the splice phase
}

func (p *Proxy) handleTCP(ps *portState, external bool, client *net.TCPConn) {
	sp := ps.load()
	label := ps.name.String()
	p.metrics.connections.WithLabelValues(label).Inc()
	stop := context.AfterFunc(p.ctx, func() { client.Close() })
	defer stop()
	local, remote := addrPortOf(client.LocalAddr()), addrPortOf(client.RemoteAddr())
	if p.opts.Direct && !sourceAllowed(sp, local.Addr(), remote.Addr()) {
		reset(client)
		return
	}
	now := time.Now()
	c := &tcpConn{p: p, port: ps, sp: sp, client: client,
		candidates: ps.candidates(endpointsFor(sp, external, local.Addr()), remote.Addr(), sp.Userspace.ConnectTries, p.suspects, sp.AffinityTimeout > 0, now)}
	if sp.Userspace.ProxyProtocol {
		c.header = proxyHeaderV2(remote, local, false)
	}
	if !c.dialNext() {
		p.metrics.failures.WithLabelValues(label).Inc()
		reset(client)
		return
	}
	stopBackend := context.AfterFunc(p.ctx, func() { c.currentBackend().Close() })
	defer stopBackend()

	// Either direction failing ends both: the client gets a reset, the backend is closed,
	// which also unblocks the other direction.
	var once sync.Once
	abort := func() { once.Do(func() { reset(client); c.currentBackend().Close() }) }
	toBackend := make(chan struct{})
	go func() { // waited for below
		defer close(toBackend)
		if err := c.copyToBackend(); err != nil {
			abort()
		}
	}()
	if err := c.copyFromBackend(remote.Addr()); err != nil {
		abort()
	}
	<-toBackend
	client.Close()
	c.currentBackend().Close()
}

// dialNext connects to the next candidate that answers, marking those that do not as suspect,
// and sends it the PROXY header and the replay. False when no candidate is left.
func (c *tcpConn) dialNext() bool {
	label := c.port.name.String()
	for len(c.candidates) > 0 {
		ep := c.candidates[0]
		c.candidates = c.candidates[1:]
		if c.attempts++; c.attempts > 1 {
			c.p.metrics.retries.WithLabelValues(label).Inc()
		}
		ctx, cancel := context.WithTimeout(c.p.ctx, c.p.opts.ConnectTimeout)
		conn, err := c.p.opts.Dial(ctx, "tcp", ep.AddrPort().String())
		cancel()
		if err == nil {
			be := conn.(*net.TCPConn)
			if err = writeAll(be, c.header, c.replay); err == nil {
				if c.backend != nil {
					c.backend.Close()
				}
				c.backend, c.endpoint = be, ep.AddrPort()
				if c.clientEOF {
					// A failed half-close breaks this connection; its next read says so.
					_ = be.CloseWrite()
				}
				c.p.suspects.clear(ep.AddrPort())
				return true
			}
			conn.Close()
		}
		c.p.suspects.mark(ep.AddrPort(), time.Now())
		c.p.opts.Logger.Debug("userspace proxy: endpoint failed, trying the next", "service", label, "endpoint", ep.AddrPort(), "error", err)
	}
	return false
}

func (c *tcpConn) currentBackend() *net.TCPConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.backend
}

// copyFromBackend waits for the backend's first byte, moving to the next endpoint while the
// current one resets before it (and the replay still holds all the client sent), then
// splices the rest to the client and half-closes it.
func (c *tcpConn) copyFromBackend(client netip.Addr) error {
	label := c.port.name.String()
	buf := getBuffer()
	defer putBuffer(buf) // the splice phase below needs none
	for {
		be := c.currentBackend()
		n, err := be.Read(buf)
		if n > 0 || !isReset(err) {
			c.commit(client)
			if n > 0 {
				if werr := writeAll(c.client, buf[:n]); werr != nil {
					return werr
				}
				c.p.metrics.bytes.WithLabelValues(label, "from_backend").Add(float64(n))
				break
			}
			if errors.Is(err, io.EOF) {
				return c.client.CloseWrite()
			}
			return err
		}
		c.mu.Lock()
		ok := !c.committed && c.dialNext()
		c.mu.Unlock()
		if !ok {
			c.p.metrics.failures.WithLabelValues(label).Inc()
			return err
		}
	}
	n, err := io.Copy(c.client, c.backend) // splice(2)
	c.p.metrics.bytes.WithLabelValues(label, "from_backend").Add(float64(n))
	if err != nil {
		return err
	}
	return c.client.CloseWrite()
}

// commit ends the retry phase: the endpoint is the connection's for good.
func (c *tcpConn) commit(client netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.committed {
		return
	}
	c.committed, c.replay = true, nil
	if c.sp.AffinityTimeout > 0 {
		c.port.remember(client, c.endpoint, c.sp.AffinityTimeout, time.Now())
	}
}

// copyToBackend forwards the client's bytes, keeping them for a replay until the backend
// answered, then splices the rest and half-closes the backend when the client did. The lock
// is never held while writing: a backend that answers while the client still sends (an echo)
// must not wait for the lock to be read from. A chunk is kept in the replay before it is
// written, so a switch of endpoints in between sends it to the new one with the replay, and
// the write to the old one just fails.
func (c *tcpConn) copyToBackend() error {
	label := c.port.name.String()
	buf := getBuffer()
	defer putBuffer(buf)
	for {
		n, err := c.client.Read(buf)
		c.mu.Lock()
		if n > 0 && !c.committed {
			if len(c.replay)+n > maxReplay {
				c.committed, c.replay = true, nil // too much to keep: this endpoint it is
			} else {
				c.replay = append(c.replay, buf[:n]...)
			}
		}
		committed, be := c.committed, c.backend
		if err != nil {
			c.clientEOF = true
		}
		c.mu.Unlock()
		if n > 0 {
			// Before the commit, a failed write is the backend resetting: copyFromBackend
			// sees the reset and replays to the next endpoint.
			if werr := writeAll(be, buf[:n]); werr != nil && committed {
				return werr
			}
			c.sent += int64(n)
		}
		if err != nil {
			c.p.metrics.bytes.WithLabelValues(label, "to_backend").Add(float64(c.sent))
			if !errors.Is(err, io.EOF) {
				return err
			}
			// A switch of endpoints after this point half-closes the new one (clientEOF).
			// Before the commit, a failed half-close is the backend resetting, as with a
			// failed write above: copyFromBackend sees the reset and moves on.
			if cerr := be.CloseWrite(); cerr != nil && committed {
				return cerr
			}
			return nil
		}
		if committed {
			break
		}
	}
	n, err := io.Copy(c.backend, c.client) // splice(2)
	c.p.metrics.bytes.WithLabelValues(label, "to_backend").Add(float64(c.sent + n))
	if err != nil {
		return err
	}
	return c.backend.CloseWrite()
}

// buffers hold the first reads of each direction of a connection, until the bytes flow with
// splice: a pool, so a new connection per request does not allocate 32 KiB each time (that was
// 83 % of the bytes the proxy allocated per connection, BenchmarkRoundTrip -memprofile).
var buffers = sync.Pool{New: func() any { return new([16 << 10]byte) }}

func getBuffer() []byte { return buffers.Get().(*[16 << 10]byte)[:] }

func putBuffer(b []byte) { buffers.Put((*[16 << 10]byte)(b)) }

// isReset tells a backend that reset (or otherwise broke) the connection from one that
// closed it: only the former is worth another endpoint.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}

// reset ends a client connection with a RST, the nearest a proxy that accepted can come to
// refusing it: the client sees ECONNRESET at once instead of waiting.
func reset(c *net.TCPConn) {
	// Should the linger setting fail, Close sends a FIN instead: the client still learns at once.
	_ = c.SetLinger(0)
	c.Close()
}

func writeAll(w io.Writer, bufs ...[]byte) error {
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
