package lab

import (
	"net/netip"
	"strings"
	"testing"
)

// Output of BIRD 2.0.12 with the lab's timeformat, captured on this machine.
const birdShowRouteAll = `BIRD 2.0.12 ready.
Table master4:
10.79.0.1/32         unicast [s1 2026-11-23 04:25:22.265] * (200)
	via 10.77.0.11 on d0
	Type: static univ
	BGP.local_pref: 200
	BGP.community: (64500,1)
                     unicast [s2 2026-11-23 04:25:22.265] (200)
	via 10.77.0.13 on d0
	Type: static univ
10.79.0.2/32         unicast [s1 2026-11-23 04:25:22.265] * (200)
	via 10.77.0.12 on d0
	Type: static univ
Table master6:
fd00:79::5/128       unicast [node2v6 2026-11-23 04:25:22.265] * (100) [AS64512i]
	via fd00:77::12 on eth0 weight 1
	via fd00:77::13 on eth0 weight 1
`

const birdShowProtocols = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-11-23 04:25:22.265  
s1         Static     master4    up     2026-11-23 04:25:22.265  
n1v4       BGP        ---        start  2026-11-23 04:25:22.265  Connect       
n2v4       BGP        ---        up     2026-11-23 04:25:23.001  Established   
`

func TestParseBirdRoutes(t *testing.T) {
	routes, err := ParseBirdRoutes([]byte(birdShowRouteAll))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 4 {
		t.Fatalf("got %d routes, want 4: %+v", len(routes), routes)
	}
	r := routes[0]
	if r.Table != "master4" || r.Prefix != netip.MustParsePrefix("10.79.0.1/32") || r.Protocol != "s1" || !r.Primary ||
		len(r.NextHops) != 1 || r.NextHops[0] != netip.MustParseAddr("10.77.0.11") ||
		r.Attrs["BGP.local_pref"] != "200" || r.Attrs["BGP.community"] != "(64500,1)" {
		t.Errorf("first route = %+v", r)
	}
	if r := routes[1]; r.Prefix != netip.MustParsePrefix("10.79.0.1/32") || r.Protocol != "s2" || r.Primary || r.NextHops[0].String() != "10.77.0.13" {
		t.Errorf("second route to the same prefix = %+v", r)
	}
	if r := routes[3]; r.Table != "master6" || r.Protocol != "node2v6" || len(r.NextHops) != 2 {
		t.Errorf("multipath IPv6 route = %+v", r)
	}
	if _, err := ParseBirdRoutes([]byte("Table master4:\n\tvia 10.0.0.1 on eth0\n")); err == nil {
		t.Error("a via line without a route was accepted")
	}
}

func TestParseBirdProtocols(t *testing.T) {
	ps, err := ParseBirdProtocols([]byte(birdShowProtocols))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 {
		t.Fatalf("got %d protocols, want 4", len(ps))
	}
	if p := ps[3]; p.Name != "n2v4" || p.Proto != "BGP" || p.State != "up" || p.Since != "2026-11-23 04:25:23.001" || p.Info != "Established" {
		t.Errorf("n2v4 = %+v", p)
	}
}

func TestBirdConfNamesEveryNode(t *testing.T) {
	topo, err := NewTopology("herald-", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := renderBirdConf(topo, "/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol bgp node3v4 from node", "neighbor fd00:77::13 as 64512", "local as 64500",
		"connect delay time 1", "error wait time 1, 5", "min rx interval 100 ms", "multiplier 3"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("bird.conf lacks %q", want)
		}
	}
}

func TestParseBirdRouteCount(t *testing.T) {
	out := "BIRD 2.0.12 ready.\n3 of 3 routes for 2 networks in table master4\n0 of 0 routes for 0 networks in table master6\nTotal: 3 of 3 routes for 2 networks in 2 tables\n"
	if n, err := parseBirdRouteCount([]byte(out)); err != nil || n != 3 {
		t.Errorf("count = %d, %v; want 3", n, err)
	}
	if _, err := parseBirdRouteCount([]byte("BIRD 2.0.12 ready.\n")); err == nil {
		t.Error("output without counts was accepted")
	}
}
