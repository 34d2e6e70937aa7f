package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResultCounting(t *testing.T) {
	r := result{exit: -1}
	for _, line := range []string{
		"=== RUN   TestA", "--- PASS: TestA (0.01s)", "    --- PASS: TestA/sub (0.00s)",
		"--- FAIL: TestB (1.00s)", "--- SKIP: TestC (0.00s)", "some output --- PASS: not a result",
		"HERALD-VM-EXIT 1",
	} {
		r.addLine(line)
	}
	if r.passed != 2 || r.failed != 1 || r.skipped != 1 || r.exit != 1 {
		t.Fatalf("counted %+v", r)
	}
}

// TestInitrdPayloadScript checks the payload archive: every payload runs in its directory with its
// arguments quoted for the shell and the -env variables set, a failure does not stop the next one,
// the -file files are at their places, and the watchdog is set.
func TestInitrdPayloadScript(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("needs cpio")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.cpio")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var payloads []payload
	for _, pkg := range []string{"./a", "./b"} {
		f := filepath.Join(dir, "bin"+pkg[2:])
		if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, payload{pkg: pkg, file: f, args: []string{"-test.run", "It's"}, dir: treeDir + "/" + pkg[2:]})
	}
	doc := filepath.Join(dir, "doc.md")
	if err := os.WriteFile(doc, []byte("table"), 0o644); err != nil {
		t.Fatal(err)
	}
	var files []extraFile
	for _, v := range []string{"docs/x.md", doc + "=/herald/cache/doc.md"} {
		f, err := parseExtraFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if f.src == "docs/x.md" {
			f.src = doc // the relative form's source, from the test's directory
		}
		files = append(files, f)
	}
	for _, bad := range []string{"/abs/path", "../outside", "x=relative/dest"} {
		if _, err := parseExtraFile(bad); err == nil {
			t.Errorf("-file %s accepted", bad)
		}
	}
	initrd := filepath.Join(dir, "initrd")
	if err := writeInitrd(initrd, base, payloads, files, []string{"HERALD_X=a b"}, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "cpio --quiet -id < "+initrd)
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, b)
	}
	run, err := os.ReadFile(filepath.Join(out, "herald", "run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(cd '/herald/tree/b' && /herald/payload1 '-test.run' 'It'\\''s') || rc=1",
		"export 'HERALD_X=a b'", "exit $rc"} {
		if !strings.Contains(string(run), want) {
			t.Fatalf("run script:\n%s\nwant a line %q", run, want)
		}
	}
	for _, f := range []string{"herald/tree/docs/x.md", "herald/cache/doc.md"} {
		if b, err := os.ReadFile(filepath.Join(out, f)); err != nil || string(b) != "table" {
			t.Errorf("%s in the archive: %q, %v", f, b, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "herald/tree/a")); err != nil || !fi.IsDir() {
		t.Errorf("payload directory herald/tree/a: %v", err)
	}
	wd, _ := os.ReadFile(filepath.Join(out, "herald", "watchdog"))
	if strings.TrimSpace(string(wd)) != "570" {
		t.Fatalf("watchdog %q, want 570 (30 s before the 10 min limit)", wd)
	}
}
