package lab

import (
	"net/netip"
	"testing"
)

func TestParseMACs(t *testing.T) {
	got := parseMACs("02:4c:00:77:00:0b\n02:4C:00:77:00:0C\n02:4c:00:77:00:0b\n")
	if len(got) != 2 || got[0] != "02:4c:00:77:00:0b" || got[1] != "02:4c:00:77:00:0c" {
		t.Errorf("arping -r output: %v", got)
	}
	ndisc := "Soliciting fd00:77::200 (fd00:77::200) on eth0...\nTarget link-layer address: 02:4C:00:77:00:0D\n from fd00:77::13\n"
	if got := parseMACs(ndisc); len(got) != 1 || got[0] != "02:4c:00:77:00:0d" {
		t.Errorf("ndisc6 output: %v", got)
	}
}

func TestSolicitedNodeGroup(t *testing.T) {
	if g := SolicitedNodeGroup(netip.MustParseAddr("fd00:77::12:3456")); g.String() != "ff02::1:ff12:3456" {
		t.Errorf("got %s", g)
	}
}
