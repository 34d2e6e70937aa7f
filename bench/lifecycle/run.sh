#!/bin/sh
# Zero-disruption lifecycle (issue 18): e2e/lifecycle on the lab's real nodes, each event (helm
# upgrade, rollback, speaker pod deleted, controller killed during an upgrade, kubectl drain,
# kubelet stopped, upgrade from the previous release) under live traffic; prints per event the
# failed/total new connections, broken streams, IP moves and time to steady state as BENCH lines.
# Needs what make lifecycle needs (root, real-node prerequisites, make build images). About 10
# minutes on an idle 2-core machine.
set -e
cd "$(dirname "$0")/../.."
export HERALD_LIFECYCLE=1 HERALD_BIN_DIR="${HERALD_BIN_DIR:-$PWD/bin}"
HERALD_PREV_DIR=$(hack/prev-release.sh)
export HERALD_PREV_DIR
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
go test -count=1 -v -timeout 40m -run '^TestLifecycle$' ./e2e/lifecycle >"$out" 2>&1 || status=$?
grep -v '^BENCH ' "$out" >&2
grep '^BENCH ' "$out" || true
exit $status
