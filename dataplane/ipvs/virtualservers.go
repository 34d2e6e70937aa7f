package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// flagPersistent is IP_VS_SVC_F_PERSISTENT: connections from one client go to the same real server
// for Timeout seconds (sessionAffinity: ClientIP).
const flagPersistent = 0x1

// vsKey identifies one virtual server: an address, a protocol (unix.IPPROTO_*) and a port; or,
// for a firewall-mark virtual server, the mark and the family's unspecified address (Proto and
// Port 0).
type vsKey struct {
	Addr   netip.Addr
	Proto  uint16
	Port   uint16
	FWMark uint32
}

// fwmarkKey is the key of the firewall-mark virtual server of mark in the family of addr.
func fwmarkKey(ipv6 bool, mark uint32) vsKey {
	if ipv6 {
		return vsKey{Addr: netip.IPv6Unspecified(), FWMark: mark}
	}
	return vsKey{Addr: netip.IPv4Unspecified(), FWMark: mark}
}

func (k vsKey) String() string {
	if k.FWMark != 0 {
		return fmt.Sprintf("fwmark %#x (IPv%s)", k.FWMark, map[bool]string{false: "4", true: "6"}[k.Addr.Is6()])
	}
	return fmt.Sprintf("%s/%s", protoName(k.Proto), netip.AddrPortFrom(k.Addr, k.Port))
}

// realKey identifies one real server of a virtual server.
type realKey struct {
	Addr netip.Addr
	Port uint16
}

// virtualServer is what the backend wants in the kernel for one vsKey.
type virtualServer struct {
	Scheduler string
	// AffinitySeconds > 0 makes the virtual server persistent with that timeout.
	AffinitySeconds uint32
	// Reals maps each real server to its weight (> 0).
	Reals map[realKey]int
}

// virtualServers commits desired virtual servers to IPVS through a Handle, remembering what it
// committed so each sync sends only the differences; the kernel is listed only by Adopt.
type virtualServers struct {
	h Handle
	// grace bounds how long a removed real server may keep draining at weight 0.
	grace       time.Duration
	committed   map[vsKey]*virtualServer
	terminating map[vsKey]map[realKey]time.Time // deadline per draining real server
}

func newVirtualServers(h Handle, grace time.Duration) *virtualServers {
	return &virtualServers{h: h, grace: grace, committed: map[vsKey]*virtualServer{}, terminating: map[vsKey]map[realKey]time.Time{}}
}

// Adopt reads the kernel's virtual servers and takes over those owned(key) accepts: after a restart
// they become "committed" so the next Sync updates or deletes them instead of failing on duplicates.
func (v *virtualServers) Adopt(owned func(vsKey) bool) error {
	svcs, err := v.h.GetServices()
	if err != nil {
		return fmt.Errorf("listing IPVS virtual servers: %w", err)
	}
	for _, s := range svcs {
		key, ok := keyOf(s)
		if !ok || !owned(key) {
			continue
		}
		vs := &virtualServer{Scheduler: s.SchedName, Reals: map[realKey]int{}}
		if s.Flags&flagPersistent != 0 {
			vs.AffinitySeconds = s.Timeout
		}
		dsts, err := v.h.GetDestinations(s)
		if err != nil {
			return fmt.Errorf("listing real servers of %s: %w", key, err)
		}
		for _, d := range dsts {
			addr, ok := netip.AddrFromSlice(d.Address)
			if !ok {
				continue
			}
			rk := realKey{Addr: addr.Unmap(), Port: d.Port}
			if d.Weight == 0 {
				// Draining when we stopped: keep draining, with a fresh deadline.
				v.markTerminating(key, rk, time.Now())
				continue
			}
			vs.Reals[rk] = d.Weight
		}
		v.committed[key] = vs
	}
	return nil
}

// Sync makes the kernel hold exactly desired (plus draining real servers), and removes drained ones.
func (v *virtualServers) Sync(desired map[vsKey]*virtualServer, now time.Time) error {
	var remove []vsKey
	for key := range v.committed {
		if _, ok := desired[key]; !ok {
			remove = append(remove, key)
		}
	}
	return v.Apply(desired, remove, now)
}

// Apply creates or updates the virtual servers in set, deletes those in remove, and reaps drained
// real servers; it touches nothing else, so an incremental sync costs O(changes). It carries on
// past individual failures so one bad virtual server does not block the others, and returns them
// joined.
func (v *virtualServers) Apply(set map[vsKey]*virtualServer, remove []vsKey, now time.Time) error {
	var errs []error
	// Deletions first: a Service that moved its port frees the key for another one.
	for _, key := range remove {
		have, ok := v.committed[key]
		if _, reused := set[key]; !ok || reused {
			continue // a key another Service takes over in this sync is updated, not re-created
		}
		// The Service (or this port of it) is gone: its connections have nowhere to go.
		if err := v.h.DelService(v.service(key, have)); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("deleting IPVS virtual server %s: %w", key, err))
			continue
		}
		delete(v.committed, key)
		delete(v.terminating, key)
	}
	for key, want := range set {
		if err := v.syncOne(key, want, now); err != nil {
			errs = append(errs, err)
		}
	}
	if err := v.ReapTerminating(now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (v *virtualServers) syncOne(key vsKey, want *virtualServer, now time.Time) error {
	have, ok := v.committed[key]
	svc := v.service(key, want)
	switch {
	case !ok:
		if err := v.h.NewService(svc); err != nil {
			return fmt.Errorf("creating IPVS virtual server %s: %w", key, err)
		}
		have = &virtualServer{Scheduler: want.Scheduler, AffinitySeconds: want.AffinitySeconds, Reals: map[realKey]int{}}
		v.committed[key] = have
	case have.Scheduler != want.Scheduler || have.AffinitySeconds != want.AffinitySeconds:
		if err := v.h.UpdateService(svc); err != nil {
			return fmt.Errorf("updating IPVS virtual server %s: %w", key, err)
		}
		have.Scheduler, have.AffinitySeconds = want.Scheduler, want.AffinitySeconds
	}
	var errs []error
	for rk, weight := range want.Reals {
		old, present := have.Reals[rk]
		_, draining := v.terminating[key][rk]
		var err error
		switch {
		case !present && !draining:
			err = v.h.NewDestination(svc, destination(rk, weight))
		case old != weight || draining:
			err = v.h.UpdateDestination(svc, destination(rk, weight))
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("setting real server %s of %s: %w", netip.AddrPortFrom(rk.Addr, rk.Port), key, err))
			continue
		}
		have.Reals[rk] = weight
		v.clearTerminating(key, rk)
	}
	for rk := range have.Reals {
		if _, ok := want.Reals[rk]; ok {
			continue
		}
		// Graceful termination: weight 0 stops new connections, existing ones carry on.
		if err := v.h.UpdateDestination(svc, destination(rk, 0)); err != nil {
			errs = append(errs, fmt.Errorf("draining real server %s of %s: %w", netip.AddrPortFrom(rk.Addr, rk.Port), key, err))
			continue
		}
		delete(have.Reals, rk)
		v.markTerminating(key, rk, now)
	}
	return errors.Join(errs...)
}

// ReapTerminating deletes draining real servers that have no connections left or whose deadline
// passed. It lists real servers only of virtual servers that have draining ones.
func (v *virtualServers) ReapTerminating(now time.Time) error {
	var errs []error
	for key, reals := range v.terminating {
		svc := v.service(key, v.committed[key])
		dsts, err := v.h.GetDestinations(svc)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing real servers of %s: %w", key, err))
			continue
		}
		conns := map[realKey]int{}
		for _, d := range dsts {
			if addr, ok := netip.AddrFromSlice(d.Address); ok {
				conns[realKey{Addr: addr.Unmap(), Port: d.Port}] = d.ActiveConnections + d.InactiveConnections
			}
		}
		for rk, deadline := range reals {
			n, present := conns[rk]
			if present && n > 0 && now.Before(deadline) {
				continue
			}
			if present {
				if err := v.h.DelDestination(svc, destination(rk, 0)); err != nil && !isNotExist(err) {
					errs = append(errs, fmt.Errorf("deleting drained real server %s of %s: %w", netip.AddrPortFrom(rk.Addr, rk.Port), key, err))
					continue
				}
			}
			v.clearTerminating(key, rk)
		}
	}
	return errors.Join(errs...)
}

// Draining reports how many real servers are draining; while > 0 the caller should sync again soon.
func (v *virtualServers) Draining() int {
	n := 0
	for _, reals := range v.terminating {
		n += len(reals)
	}
	return n
}

// DeleteAll removes every committed virtual server (cleanup).
func (v *virtualServers) DeleteAll() error {
	return v.Sync(nil, time.Now())
}

func (v *virtualServers) markTerminating(key vsKey, rk realKey, now time.Time) {
	if v.terminating[key] == nil {
		v.terminating[key] = map[realKey]time.Time{}
	}
	v.terminating[key][rk] = now.Add(v.grace)
}

func (v *virtualServers) clearTerminating(key vsKey, rk realKey) {
	if reals, ok := v.terminating[key]; ok {
		delete(reals, rk)
		if len(reals) == 0 {
			delete(v.terminating, key)
		}
	}
}

// service builds the moby/ipvs form of a virtual server; vs may be nil when only the key matters.
func (v *virtualServers) service(key vsKey, vs *virtualServer) *ipvs.Service {
	s := &ipvs.Service{
		AddressFamily: family(key.Addr),
		SchedName:     ipvs.RoundRobin,
		Netmask:       0xffffffff,
	}
	if key.FWMark != 0 {
		s.FWMark = key.FWMark
	} else {
		s.Address, s.Protocol, s.Port = net.IP(key.Addr.AsSlice()), key.Proto, key.Port
	}
	if key.Addr.Is6() {
		s.Netmask = 128
	}
	if vs != nil {
		s.SchedName = vs.Scheduler
		if vs.AffinitySeconds > 0 {
			s.Flags = flagPersistent
			s.Timeout = vs.AffinitySeconds
		}
	}
	return s
}

func destination(rk realKey, weight int) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         net.IP(rk.Addr.AsSlice()),
		Port:            rk.Port,
		Weight:          weight,
		ConnectionFlags: ipvs.ConnectionFlagMasq,
		AddressFamily:   family(rk.Addr),
	}
}

func keyOf(s *ipvs.Service) (vsKey, bool) {
	if s.FWMark != 0 {
		return fwmarkKey(s.AddressFamily == unix.AF_INET6, s.FWMark), true
	}
	addr, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return vsKey{}, false
	}
	return vsKey{Addr: addr.Unmap(), Proto: s.Protocol, Port: s.Port}, true
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func protoName(p uint16) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
