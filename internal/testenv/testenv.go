// Package testenv is how Herald's tests treat a missing prerequisite (root, a network namespace,
// nft, BIRD, the real kube-apiserver, helm, the lab): they skip with the reason on a developer's
// machine, and fail when HERALD_REQUIRE_REAL=1, as `make test` and CI set it, so a run can never
// pass by skipping the real thing.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireReal reports whether HERALD_REQUIRE_REAL=1.
func RequireReal() bool { return os.Getenv("HERALD_REQUIRE_REAL") == "1" }

// Missing skips the test because the prerequisite described by format is absent, or fails it
// under HERALD_REQUIRE_REAL=1.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if RequireReal() {
		tb.Fatalf("prerequisite missing (HERALD_REQUIRE_REAL=1): %s", msg)
	}
	tb.Skipf("skipped: %s (set HERALD_REQUIRE_REAL=1 to make this a failure)", msg)
}

// Tools calls Missing for the first of the programs that is not on PATH.
func Tools(tb testing.TB, programs ...string) {
	tb.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			Missing(tb, "needs %s on PATH", p)
		}
	}
}
