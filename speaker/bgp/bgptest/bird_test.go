package bgptest

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	b := &Bird{rd: bufio.NewReader(strings.NewReader(
		"1007-Table master4:\n" +
			"1007-192.0.2.10/32      unicast [n1 2026-11-23 04:00:00.000] * (100) [AS64512i]\n" +
			" \tvia 10.88.0.11 on br0\n" +
			"1012-\tBGP.community: (65000,1)\n" +
			"0000 \n" +
			"8001 Network not found\n"))}
	out, err := b.readReply()
	if err != nil {
		t.Fatal(err)
	}
	routes := parseRoutes(out)
	if len(routes) != 1 || routes[0].Protocol != "n1" || routes[0].NextHop != netip.MustParseAddr("10.88.0.11") ||
		routes[0].Attrs["BGP.community"] != "(65000,1)" {
		t.Errorf("parsed %+v from %q", routes, out)
	}
	if _, err := b.readReply(); err == nil || !strings.Contains(err.Error(), "Network not found") {
		t.Errorf("an 8xxx reply is an error: %v", err)
	}
}
