package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dispatchMap is where a proxy's ClusterIP dispatch elements live: `daddr . l4proto . dport :
// goto <service chain>` in both Herald's and kube-proxy's nftables rules. Watching it over
// netlink costs the benchmark little; `nft get element` would load nft's whole cache of the
// table (~0.4 s of CPU with 10,000 Services) on each poll, competing with the proxy measured.
type dispatchMap struct {
	ns      string
	table   *nftables.Table
	name    string
	chainOf string // prefix of the Service chains its elements jump to
}

var (
	kubeProxyMap = dispatchMap{table: &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "kube-proxy"}, name: "service-ips", chainOf: "service-"}
	heraldMap    = dispatchMap{table: &nftables.Table{Family: nftables.TableFamilyINet, Name: "herald"}, name: "service-ips4", chainOf: "svc4-"}
)

func (d dispatchMap) in(ns string) dispatchMap { d.ns = ns; return d }

// conn opens a netlink connection in d's namespace (the namespace is entered when the socket
// is made, so the connection is a lasting one; close it with CloseLasting).
func (d dispatchMap) conn() (*nftables.Conn, error) {
	h, err := netns.GetFromName(d.ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
}

// matches says whether e sends ip:80/tcp to a Service chain (not to a reject or drop: a
// Service without endpoints yet has its address in another map with the same key layout).
func (d dispatchMap) matches(e nftables.SetElement, ip netip.Addr) bool {
	// The key is the concatenation, each field padded to 4 bytes: address, protocol, port.
	want := append(ip.AsSlice(), unix.IPPROTO_TCP, 0, 0, 0, 0, 80, 0, 0)
	return bytes.Equal(e.Key, want) && strings.HasPrefix(verdictChain(e), d.chainOf)
}

// verdictChain is the chain a verdict-map element jumps or goes to. google/nftables leaves
// the value's attributes undecoded in Val: NFTA_VERDICT_CODE, then NFTA_VERDICT_CHAIN.
func verdictChain(e nftables.SetElement) string {
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return ad.String()
		}
	}
	return ""
}

// has says whether the map holds ip's element now (one dump of the map).
func (d dispatchMap) has(ip netip.Addr) bool {
	c, err := d.conn()
	if err != nil {
		return false
	}
	defer func() { _ = c.CloseLasting() }() // a netlink socket: nothing to do if closing fails
	set, err := c.GetSetByName(d.table, d.name)
	if err != nil {
		return false
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		return false
	}
	for _, e := range elems {
		if d.matches(e, ip) {
			return true
		}
	}
	return false
}

// waitFor polls every 50 ms until ip's element is in the map, the process dies or the limit
// passes, and returns when it saw it.
func (d dispatchMap) waitFor(ip netip.Addr, limit time.Duration, alive func() bool) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		if d.has(ip) {
			return time.Now(), nil
		}
		if !alive() || time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s %s never got %s", d.ns, d.name, ip)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// elementWatch is a subscription to the kernel's element events: each committed transaction
// is reported when it commits, so a change is seen the moment it is live.
type elementWatch struct {
	d      dispatchMap
	conn   *nftables.Conn
	mon    *nftables.Monitor
	events chan *nftables.MonitorEvent
}

func (d dispatchMap) watch() (*elementWatch, error) {
	c, err := d.conn()
	if err != nil {
		return nil, err
	}
	mon := nftables.NewMonitor(nftables.WithMonitorAction(nftables.MonitorActionNew), nftables.WithMonitorObject(nftables.MonitorObjectElements))
	events, err := c.AddMonitor(mon)
	if err != nil {
		_ = c.CloseLasting() // the error that matters is err
		return nil, err
	}
	return &elementWatch{d: d, conn: c, mon: mon, events: events}, nil
}

// until returns when ip's element was committed.
func (w *elementWatch) until(ip netip.Addr, limit time.Duration) (time.Time, error) {
	timeout := time.After(limit)
	for {
		select {
		case ev, ok := <-w.events:
			if !ok {
				return time.Time{}, fmt.Errorf("element events of %s ended", w.d.ns)
			}
			elems, _ := ev.Data.([]nftables.SetElement)
			for _, e := range elems {
				if w.d.matches(e, ip) {
					return time.Now(), nil
				}
			}
		case <-timeout:
			return time.Time{}, fmt.Errorf("no element for %s in %s within %v", ip, w.d.ns, limit)
		}
	}
}

func (w *elementWatch) close() {
	go func() {
		for range w.events { // lets the monitor's goroutines end
		}
	}()
	w.mon.Close()
	_ = w.conn.CloseLasting() // a netlink socket: nothing to do if closing fails
}
