package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// heartbeatSocket is the heartbeat UDP socket, used with plain blocking system calls rather than
// through Go's network poller. With the poller, a datagram's arrival and a timer's expiry are
// noticed by whichever runtime thread polls next and handed to the goroutine from there: on a
// saturated node that thread waits for CPU like any other, and the heartbeat thread's real-time
// priority (see runHeartbeats) would buy nothing. Here the kernel wakes the heartbeat thread
// itself, from ppoll, for a datagram, a deadline or a wake-up (an eventfd).
type heartbeatSocket struct {
	fd   int
	v6   bool // AF_INET6 (dual-stack): IPv4 peers are sent to as IPv4-mapped addresses
	wake int  // eventfd: SetPayload and shutdown interrupt the wait

	// mu orders wakeUp, called from any goroutine, before close: a write to a closed descriptor
	// could land in whatever file reused its number.
	mu     sync.RWMutex
	closed bool
}

// heartbeatRcvBuf is the heartbeat socket's receive buffer.
const heartbeatRcvBuf = 4 << 20

func listenHeartbeat(addr netip.AddrPort) (*heartbeatSocket, error) {
	s := &heartbeatSocket{fd: -1, wake: -1, v6: addr.Addr().Is6() && !addr.Addr().Is4In6()}
	family := unix.AF_INET
	if s.v6 {
		family = unix.AF_INET6
	}
	var err error
	if s.fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if s.v6 {
		// Dual-stack, as net.ListenUDP("udp", "[::]:port") is: peers may use either family.
		err = unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err == nil {
		// Room for a burst of chunked state from many peers at once (see chunksPerHeartbeat):
		// the default (about 200 KiB) holds three full chunks. Beyond net.core.rmem_max only with
		// CAP_NET_ADMIN (the speaker has it); without it the kernel's cap applies, and chunks lost
		// are sent again next round.
		if unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, heartbeatRcvBuf) != nil {
			_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, heartbeatRcvBuf)
		}
		err = unix.Bind(s.fd, sockaddr(addr, s.v6))
	}
	if err == nil {
		s.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func sockaddr(a netip.AddrPort, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}
}

func (s *heartbeatSocket) localAddr() netip.AddrPort {
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func (s *heartbeatSocket) sendTo(b []byte, to netip.AddrPort) error {
	if !s.v6 && !to.Addr().Unmap().Is4() {
		return fmt.Errorf("%s: an IPv4 socket cannot reach an IPv6 peer", to)
	}
	return unix.Sendto(s.fd, b, unix.MSG_DONTWAIT, sockaddr(to, s.v6))
}

// recv reads one waiting datagram; unix.EAGAIN when none is left.
func (s *heartbeatSocket) recv(buf []byte) (int, error) {
	n, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
	return n, err
}

// wait blocks until a datagram is waiting, wakeUp was called, or d passed; it reports whether it
// was woken (and clears the wake-up).
func (s *heartbeatSocket) wait(d time.Duration) (woken bool, err error) {
	ts := unix.NsecToTimespec(max(d, 0).Nanoseconds())
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.wake), Events: unix.POLLIN}}
	if _, err := unix.Ppoll(fds, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
		return false, err
	}
	if fds[0].Revents&unix.POLLNVAL != 0 {
		return false, errors.New("the socket was closed")
	}
	if fds[1].Revents == 0 {
		return false, nil
	}
	var counter [8]byte
	_, _ = unix.Read(s.wake, counter[:])
	return true, nil
}

// wakeUp interrupts wait (from any goroutine; after close it does nothing).
func (s *heartbeatSocket) wakeUp() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(s.wake, one[:])
}

// close closes both descriptors, once. Only the goroutine that waits, receives and sends may
// call it (or anyone, when nothing does those).
func (s *heartbeatSocket) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, fd := range []int{s.fd, s.wake} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}
