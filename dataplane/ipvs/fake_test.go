package ipvs

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// fakeHandle is an in-memory IPVS with the kernel's uniqueness rules, counting every call.
type fakeHandle struct {
	svcs  map[string]*ipvs.Service
	dsts  map[string]map[string]*ipvs.Destination
	calls map[string]int
	// unlisted makes NewService succeed without the service appearing, like moby/ipvs on a kernel
	// without ip_vs.
	unlisted bool
}

func newFakeHandle() *fakeHandle {
	return &fakeHandle{svcs: map[string]*ipvs.Service{}, dsts: map[string]map[string]*ipvs.Destination{}, calls: map[string]int{}}
}

func svcID(s *ipvs.Service) string {
	if s.FWMark != 0 {
		return fmt.Sprintf("fwmark:%d", s.FWMark)
	}
	a, _ := netip.AddrFromSlice(s.Address)
	return fmt.Sprintf("%d:%s", s.Protocol, netip.AddrPortFrom(a.Unmap(), s.Port))
}

func dstID(d *ipvs.Destination) string {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port).String()
}

func (f *fakeHandle) GetServices() ([]*ipvs.Service, error) {
	f.calls["GetServices"]++
	var out []*ipvs.Service
	for _, s := range f.svcs {
		c := *s
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeHandle) NewService(s *ipvs.Service) error {
	f.calls["NewService"]++
	if f.unlisted {
		return nil
	}
	if _, ok := f.svcs[svcID(s)]; ok {
		return unix.EEXIST
	}
	c := *s
	f.svcs[svcID(s)] = &c
	f.dsts[svcID(s)] = map[string]*ipvs.Destination{}
	return nil
}

func (f *fakeHandle) UpdateService(s *ipvs.Service) error {
	f.calls["UpdateService"]++
	if _, ok := f.svcs[svcID(s)]; !ok {
		return unix.ESRCH
	}
	c := *s
	f.svcs[svcID(s)] = &c
	return nil
}

func (f *fakeHandle) DelService(s *ipvs.Service) error {
	f.calls["DelService"]++
	if _, ok := f.svcs[svcID(s)]; !ok {
		return unix.ESRCH
	}
	delete(f.svcs, svcID(s))
	delete(f.dsts, svcID(s))
	return nil
}

func (f *fakeHandle) GetDestinations(s *ipvs.Service) ([]*ipvs.Destination, error) {
	f.calls["GetDestinations"]++
	ds, ok := f.dsts[svcID(s)]
	if !ok {
		return nil, unix.ESRCH
	}
	var out []*ipvs.Destination
	for _, d := range ds {
		c := *d
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeHandle) NewDestination(s *ipvs.Service, d *ipvs.Destination) error {
	f.calls["NewDestination"]++
	ds, ok := f.dsts[svcID(s)]
	if !ok {
		return unix.ESRCH
	}
	if _, ok := ds[dstID(d)]; ok {
		return unix.EEXIST
	}
	c := *d
	ds[dstID(d)] = &c
	return nil
}

func (f *fakeHandle) UpdateDestination(s *ipvs.Service, d *ipvs.Destination) error {
	f.calls["UpdateDestination"]++
	ds, ok := f.dsts[svcID(s)]
	if !ok {
		return unix.ESRCH
	}
	old, ok := ds[dstID(d)]
	if !ok {
		return unix.ENOENT
	}
	c := *d
	c.ActiveConnections, c.InactiveConnections = old.ActiveConnections, old.InactiveConnections
	ds[dstID(d)] = &c
	return nil
}

func (f *fakeHandle) DelDestination(s *ipvs.Service, d *ipvs.Destination) error {
	f.calls["DelDestination"]++
	ds, ok := f.dsts[svcID(s)]
	if !ok {
		return unix.ESRCH
	}
	if _, ok := ds[dstID(d)]; !ok {
		return unix.ENOENT
	}
	delete(ds, dstID(d))
	return nil
}

// dump renders the fake's state like "tcp/10.0.0.1:80 rr [10.1.0.1:8080 w1 ...]", sorted.
func (f *fakeHandle) dump() []string {
	var out []string
	for id, s := range f.svcs {
		line := fmt.Sprintf("%s %s", id, s.SchedName)
		if s.Flags&flagPersistent != 0 {
			line += fmt.Sprintf(" persistent %d", s.Timeout)
		}
		var ds []string
		for did, d := range f.dsts[id] {
			ds = append(ds, fmt.Sprintf("%s w%d", did, d.Weight))
		}
		sort.Strings(ds)
		out = append(out, fmt.Sprintf("%s %v", line, ds))
	}
	sort.Strings(out)
	return out
}

func (f *fakeHandle) resetCalls() { f.calls = map[string]int{} }

// fakeLinks is an in-memory dummy link and node address list.
type fakeLinks struct {
	dummy     map[netip.Addr]bool // nil: no dummy link
	nodeAddrs []netip.Addr
}

func (f *fakeLinks) EnsureDummy() error {
	if f.dummy == nil {
		f.dummy = map[netip.Addr]bool{}
	}
	return nil
}

func (f *fakeLinks) ServiceIPs() ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range f.dummy {
		out = append(out, a)
	}
	return out, nil
}

func (f *fakeLinks) AddServiceIP(a netip.Addr) error  { f.dummy[a] = true; return nil }
func (f *fakeLinks) DelServiceIP(a netip.Addr) error  { delete(f.dummy, a); return nil }
func (f *fakeLinks) NodeAddrs() ([]netip.Addr, error) { return f.nodeAddrs, nil }
func (f *fakeLinks) DeleteDummy() error               { f.dummy = nil; return nil }
