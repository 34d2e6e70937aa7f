package main

import (
	"strings"
	"testing"
)

func TestParseKeepsOnlyBenchLinesAndRequiresACommand(t *testing.T) {
	in := "progress…\nBENCH {\"figure\":\"a\",\"value\":1.5,\"unit\":\"s\",\"command\":\"make bench\"}\n"
	got, err := parse(strings.NewReader(in), "2026-11-23")
	if err != nil || len(got) != 1 || got[0].Value != 1.5 || got[0].Date != "2026-11-23" {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	if _, err := parse(strings.NewReader(`BENCH {"figure":"a","value":1}`), "d"); err == nil {
		t.Fatal("a figure without a command was accepted")
	}
}

func TestMergeReplacesEverythingTheRerunCommandMeasured(t *testing.T) {
	kept := []Figure{
		{Figure: "a p99 of 986", Value: 1, Command: "x"},
		{Figure: "b", Value: 2, Command: "y"},
	}
	got := merge(kept, []Figure{{Figure: "a p99 of 979", Value: 3, Command: "x"}})
	if len(got) != 2 || got[0].Figure != "a p99 of 979" || got[0].Value != 3 || got[1].Value != 2 {
		t.Fatalf("merge = %+v", got)
	}
}

func TestReplaceTableNeedsMarkers(t *testing.T) {
	out, err := replaceTable("x\n"+tableStart+"\nold\n"+tableEnd+"\ny", "new\n")
	if err != nil || !strings.Contains(out, "new") || strings.Contains(out, "old") {
		t.Fatalf("replaceTable = %q, %v", out, err)
	}
	if _, err := replaceTable("no markers", "t"); err == nil {
		t.Fatal("missing markers were not reported")
	}
}

func TestHumanValues(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{2038.959, "ms", "2.04 s"},
		{1802.235, "ms", "1.80 s"},
		{45.432, "ms", "45.4 ms"},
		{3.696, "ms", "3.70 ms"},
		{0.608693, "s", "609 ms"},
		{17.892436011, "s", "17.9 s"},
		{18192, "req/s", "18,192 req/s"},
		{70056, "operations", "70,056 operations"},
		{5, "operations", "5 operations"},
		{95.80035180299032, "%", "95.8 %"},
		{121.3515625, "MiB", "121 MiB"},
		{0.5737454928653345, "x", "0.574 x"},
	} {
		if got := humanValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("humanValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestTableGroupsByAreaAndPutsThePeerBeside(t *testing.T) {
	out := table([]Figure{
		{Figure: "Herald nftables data plane: RSS", Value: 100, Unit: "MiB", Command: "BENCH_ONLY=dataplane make bench"},
		{Figure: "kube-proxy v1.34.4 nftables: RSS", Value: 267, Unit: "MiB", Command: "BENCH_ONLY=dataplane make bench"},
		{Figure: "BGP: route added", Value: 4.5, Unit: "ms", Command: "BENCH_ONLY=bgp make bench"},
	})
	if !strings.Contains(out, "| Herald nftables data plane: RSS | 100 MiB | kube-proxy v1.34.4 nftables: 267 MiB |") {
		t.Errorf("peer not beside Herald's figure:\n%s", out)
	}
	if strings.Count(out, "kube-proxy") != 1 {
		t.Errorf("the peer's figure has a row of its own too:\n%s", out)
	}
	if bgp, dp := strings.Index(out, "**bgp**"), strings.Index(out, "**dataplane**"); bgp < 0 || dp < bgp {
		t.Errorf("areas missing or out of order:\n%s", out)
	}
}
