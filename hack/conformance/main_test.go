package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestSelectionFocusAndReport(t *testing.T) {
	sel, err := parseSelection(strings.NewReader(`# comment
in: [sig-network] Services should serve a basic endpoint from pods [Conformance] ## the proxy's basics
in: [sig-network] Services should be updated after adding or deleting ports ## ports change
out: [sig-network] Services should work after restarting kube-proxy [Disruptive] ## restarts kube-proxy
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 3 || !sel[0].In || sel[2].In || sel[2].Why != "restarts kube-proxy" {
		t.Fatalf("parsed %+v", sel)
	}
	// The focus matches the test's own text, trailing space included, and nothing longer.
	re := regexp.MustCompile(focusRegexp(sel[1].Name))
	if !re.MatchString(" [sig-network] Services should be updated after adding or deleting ports ") ||
		re.MatchString("[sig-network] Services should be updated after adding or deleting ports twice") {
		t.Errorf("focus %s", re)
	}
	if _, err := parseSelection(strings.NewReader("in: no reason\n")); err == nil {
		t.Error("a line without `## why` was accepted")
	}

	report := `[{"RunTime": 90000000000, "SpecReports": [
	 {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It", "LeafNodeText": "should serve a basic endpoint from pods [Conformance]", "State": "passed", "RunTime": 5000000000},
	 {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It", "LeafNodeText": "should be updated after adding or deleting ports ", "State": "failed", "RunTime": 7000000000,
	  "Failure": {"Message": "timed out\nmore"}},
	 {"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"}]}]`
	path := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	specs, wall, err := readReport(path)
	if err != nil {
		t.Fatal(err)
	}
	r := run{Name: "herald", Specs: specs, Wall: wall}
	// A second shard reports the same specs as skipped: the merge keeps what ran.
	other := filepath.Join(t.TempDir(), "r2.json")
	if err := os.WriteFile(other, []byte(strings.ReplaceAll(strings.ReplaceAll(report, `"passed"`, `"skipped"`), `"failed"`, `"skipped"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	merged, err := readShards("herald", []string{path, other})
	if err != nil {
		t.Fatal(err)
	}
	if c, o := merged.count(sel, true), merged.count(sel, false); c.passed != 1 || o.failed != 1 {
		t.Errorf("merged shards: %+v %+v", c, o)
	}
	if c, o := r.count(sel, true), r.count(sel, false); c.passed != 1 || o.failed != 1 {
		t.Errorf("counts %+v %+v", c, o)
	}
	var md, bench bytes.Buffer
	writeReport(&md, sel, []run{r, {Name: "kube-proxy", Specs: map[string]Spec{}}})
	for _, want := range []string{"| herald | 1 / 0 / 0 | 0 / 1 / 0 | 1m30s |", "failed (7s): timed out |", "| kube-proxy |", "not run"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	writeBench(&bench, sel, []run{r})
	if !strings.Contains(bench.String(), `"figure":"Herald: [sig-network] Services [Conformance] tests passed`) || strings.Count(bench.String(), "BENCH ") != 4 {
		t.Errorf("bench lines:\n%s", bench.String())
	}
}
