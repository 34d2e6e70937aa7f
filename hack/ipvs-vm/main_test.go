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

// TestInitrdPayloadScript checks the payload archive: every payload runs with its arguments
// quoted for the shell, a failure does not stop the next one, and the watchdog is set.
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
		payloads = append(payloads, payload{pkg: pkg, file: f, args: []string{"-test.run", "It's"}})
	}
	initrd := filepath.Join(dir, "initrd")
	if err := writeInitrd(initrd, base, payloads, 10*time.Minute); err != nil {
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
	want := "/herald/payload1 '-test.run' 'It'\\''s' || rc=1"
	if !strings.Contains(string(run), want) || !strings.Contains(string(run), "exit $rc") {
		t.Fatalf("run script:\n%s\nwant a line %q", run, want)
	}
	wd, _ := os.ReadFile(filepath.Join(out, "herald", "watchdog"))
	if strings.TrimSpace(string(wd)) != "570" {
		t.Fatalf("watchdog %q, want 570 (30 s before the 10 min limit)", wd)
	}
}
