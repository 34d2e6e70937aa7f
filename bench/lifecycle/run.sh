#!/bin/sh
# Zero-disruption lifecycle (issue 18): e2e/lifecycle on the lab's real nodes, each event (helm
# upgrade, rollback, speaker pod deleted, controller killed during an upgrade, kubectl drain, the
# drained node's speaker stopped, kubectl uncordon, kubelet stopped, a node cut off the network, upgrade from the previous release) under live
# traffic to L2 and BGP Services; prints per event, for L2 and BGP apart, the failed/total new
# connections and broken streams, the L2 moves, the BGP path changes at the router, the Service
# writes and the time to steady state as BENCH lines.
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
