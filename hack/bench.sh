#!/usr/bin/env bash
# `make bench`: runs every benchmark under bench/ and records its figures in bench/results.json and
# the README's results table (see bench/report). BENCH_ONLY=name runs one (e.g. BENCH_ONLY=controller).
set -uo pipefail
cd "$(dirname "$0")/.."
export HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$(hack/k8s-bins.sh) || exit 1
export KUBEBUILDER_ASSETS=${k8sdir/\/k8s-/\/assets-}
status=0
for dir in bench/*/; do
  name=$(basename "$dir")
  [ "$name" = report ] && continue
  [ -n "${BENCH_ONLY:-}" ] && [ "$name" != "$BENCH_ONLY" ] && continue
  [ -x "$dir/run.sh" ] || { echo "bench: $dir has no run.sh, skipped" >&2; continue; }
  echo "=== bench $name" >&2
  "$dir/run.sh" || { echo "bench: $name failed" >&2; status=1; }
done | go run ./bench/report
exit $(( status | PIPESTATUS[0] ))
