#!/usr/bin/env bash
# `make test`: every suite against real parts (kube-apiserver + etcd, BIRD, packets between network
# namespaces, an IPVS kernel under qemu). Each stage is timed; a summary follows; any failure fails
# the run. HERALD_REQUIRE_REAL=1 turns "prerequisite missing" skips into failures, so this can never
# pass by skipping. The root network namespace is snapshot first and compared last: the run must not
# leave a link, address, route, listener or herald- namespace behind.
set -uo pipefail
cd "$(dirname "$0")/.."
export HERALD_REQUIRE_REAL=${HERALD_REQUIRE_REAL:-1}
export HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
export HERALD_BIN_DIR=$PWD/bin # e2e suites use these binaries instead of building their own
k8sdir=$(hack/k8s-bins.sh) || { echo "test: could not build the Kubernetes binaries" >&2; exit 1; }
export KUBEBUILDER_ASSETS=${k8sdir/\/k8s-/\/assets-}
logs=${HERALD_TEST_LOGS:-/tmp/herald-test-logs}
rm -rf "$logs" && mkdir -p "$logs"

hack/rootns-check snapshot "$logs/rootns.before"
trap 'bin/lab down >/dev/null 2>&1 || true' EXIT

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

demo_then_down() {
  local rc=0
  CI=true hack/demo.sh || rc=$?
  bin/lab down || rc=1
  return $rc
}

stage lint make -s lint
# The L2 failover suite measures sub-second timings: it runs alone, not beside other packages.
timing_sensitive=github.com/heraldlb/herald/speaker/l2/l2lab
stage go-test go test -count=1 -timeout 45m $(go list ./... | grep -v -x "$timing_sensitive")
stage l2-failover go test -count=1 -timeout 15m "$timing_sensitive"
# The packages whose own goroutines share state (the controller's workers, the proxy's runner and
# its readers, the speaker's announcers, membership, BFD), again under the race detector, real-part
# tests included. Timing-measuring suites stay out: the detector slows them several times over.
race_pkgs=(./controller/... ./dataplane ./dataplane/embedded ./dataplane/healthcheck ./speaker ./speaker/membership ./speaker/bfd)
stage race go test -race -count=1 -timeout 20m "${race_pkgs[@]}"
stage fuzz-allocator go test -run '^$' -fuzz '^FuzzAllocator$' -fuzztime 30s ./controller/allocator
stage ipvs-vm make -s test-ipvs
stage demo demo_then_down
# Kubernetes' own e2e Services tests on the real-node lab with Herald, which must pass every selected
# test (hack/conformance.sh; its table: $logs/conformance/results.md). 954 s in CI with 46 tests;
# the 19 dual-stack tests add about 6 min. The kube-proxy run beside it (as long again) is
# `make conformance` / BENCH_ONLY=cluster make bench, outside make test's 45-minute budget.
stage conformance env CONFORMANCE_RUNS=herald HERALD_CONFORMANCE_OUT="$logs/conformance" hack/conformance.sh
stage root-namespace hack/rootns-check compare "$logs/rootns.before"

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
