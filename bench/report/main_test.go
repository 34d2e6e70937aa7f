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
