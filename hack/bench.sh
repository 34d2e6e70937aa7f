#!/usr/bin/env bash
# `make bench`: runs every benchmark under bench/ (each has a run.sh printing `BENCH {json}` lines)
# and records the figures in bench/results.json and the README's results table (see bench/report).
# BENCH_ONLY=name runs one benchmark (e.g. BENCH_ONLY=controller make bench).
set -uo pipefail
cd "$(dirname "$0")/.."
export HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$(hack/k8s-bins.sh) || exit 1
export KUBEBUILDER_ASSETS=${k8sdir/\/k8s-/\/assets-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
for dir in bench/*/; do
  name=$(basename "$dir")
  [ -x "$dir/run.sh" ] || continue
  [ -n "${BENCH_ONLY:-}" ] && [ "$name" != "$BENCH_ONLY" ] && continue
  echo "=== bench $name" >&2
  "$dir/run.sh" | tee -a "$out" || { echo "bench: $name failed" >&2; status=1; }
done
go run ./bench/report < "$out" || status=1
exit $status
