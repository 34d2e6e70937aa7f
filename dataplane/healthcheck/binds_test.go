package healthcheck

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/dataplane"
	"github.com/heraldlb/herald/dataplane/internal/netnstest"
	"github.com/heraldlb/herald/internal/netnsrun"
)

// TestListenersOnNodePortAddresses opens healthCheckNodePort listeners in a node namespace with
// two IPv4 and two IPv6 addresses and checks, with real connections from a client namespace,
// where they answer: as kube-proxy v1.34 binds them (pkg/proxy/healthcheck: the node addresses
// --nodeport-addresses selects, per family; a family it names no address of, every address), on
// the primary IPv4 address only with the default (primary, and no IPv6 node IP: every IPv6
// address), on the addresses within the CIDRs of a list, and everywhere with 0.0.0.0/0,::/0.
func TestListenersOnNodePortAddresses(t *testing.T) {
	netnstest.Require(t)
	l := netnstest.New(t, "herald-hc-np-")
	node, client := l.AddNS("node"), l.AddNS("client")
	l.Link(node, "eth0", "10.0.1.1/24", client, "eth0", "10.0.1.2/24")
	for _, a := range [][2]string{{node, "10.0.2.1/24"}, {node, "fd00:1::1/64"}, {node, "fd00:2::1/64"},
		{client, "10.0.2.2/24"}, {client, "fd00:1::2/64"}, {client, "fd00:2::2/64"}} {
		l.Run(a[0], "ip", "addr", "add", a[1], "dev", "eth0", "nodad")
	}
	nodeAddrs := func() (addrs []netip.Addr, err error) {
		err = netnsrun.Do(node, func() (err error) { addrs, err = dataplane.NodeAddrs(nil, ""); return err })
		return addrs, err
	}
	listen := func(network, address string) (net.Listener, error) { return netnstest.Listen(node, network, address) }
	client4 := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: netnstest.Dialer(client, &net.Dialer{})}}

	st := &dataplane.State{NodeIPs: []netip.Addr{netip.MustParseAddr("10.0.1.1")}}
	all := []string{"10.0.1.1", "10.0.2.1", "fd00:1::1", "fd00:2::1"}
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	for i, c := range []struct {
		flag   string
		answer []string // the node addresses that must answer; the others must refuse
	}{
		{"primary", []string{"10.0.1.1", "fd00:1::1", "fd00:2::1"}},
		{"10.0.2.0/24,fd00:1::/64", []string{"10.0.2.1", "fd00:1::1"}},
		{"0.0.0.0/0,::/0", all},
		{"192.0.2.0/24", []string{"fd00:1::1", "fd00:2::1"}}, // no IPv4 address selected: no IPv4 listener
	} {
		t.Run(c.flag, func(t *testing.T) {
			np, err := dataplane.ParseNodePortAddresses(c.flag)
			if err != nil {
				t.Fatal(err)
			}
			binds, err := Binds(np, st, nodeAddrs)
			if err != nil {
				t.Fatal(err)
			}
			s := NewServiceServers("n1", dataplane.NewLocalEndpoints(), func() (bool, time.Time) { return true, time.Now() }, listen, nil)
			defer s.Close()
			port := uint16(32000 + i)
			s.Sync(map[types.NamespacedName]int32{svc: int32(port)}, binds)
			for _, a := range all {
				url := "http://" + netip.AddrPortFrom(netip.MustParseAddr(a), port).String() + "/"
				resp, err := client4.Get(url)
				if err == nil {
					resp.Body.Close()
				}
				if want := slices.Contains(c.answer, a); (err == nil) != want {
					t.Errorf("binds %v: %s answered %v (err %v), want answered %v", binds, url, err == nil, err, want)
				}
			}
		})
	}
}
