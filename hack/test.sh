#!/usr/bin/env bash
# `make test`: every suite against real parts. Each stage is timed; a summary follows; any failure
# fails the run. HERALD_REQUIRE_REAL=1 turns "prerequisite missing" skips into failures, so this can
# never pass by skipping.
set -uo pipefail
cd "$(dirname "$0")/.."
export HERALD_REQUIRE_REAL=${HERALD_REQUIRE_REAL:-1}
export HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$(hack/k8s-bins.sh) || { echo "test: could not build the Kubernetes binaries" >&2; exit 1; }
export KUBEBUILDER_ASSETS=${k8sdir/\/k8s-/\/assets-}
logs=${HERALD_TEST_LOGS:-/tmp/herald-test-logs}
rm -rf "$logs" && mkdir -p "$logs"

summary=()
failed=0
# stage NAME CMD…: runs CMD, its output to the terminal and to $logs/NAME.log.
stage() {
  local name=$1; shift
  local start=$SECONDS
  echo "=== stage $name: $*"
  if "$@" 2>&1 | tee "$logs/$name.log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    summary+=("ok    $name ($((SECONDS - start))s)")
  else
    summary+=("FAIL  $name ($((SECONDS - start))s), log: $logs/$name.log")
    failed=1
  fi
}

stage lint make -s lint
stage go-test go test -count=1 -timeout 40m ./...
stage fuzz-allocator go test -run '^$' -fuzz '^FuzzAllocator$' -fuzztime 30s ./controller/allocator

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
