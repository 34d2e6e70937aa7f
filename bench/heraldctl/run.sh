#!/usr/bin/env bash
# heraldctl status on a large cluster: building the report of 10,000 Services, 40 pools and 100
# nodes' SpeakerStatus (the part that grows with the cluster; listing is the apiserver's).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^BenchmarkBuild$' -benchtime 20x ./heraldctl/status)
ns=$(awk '/^BenchmarkBuild/ {print $3}' <<<"$out")
[ -n "$ns" ] || { echo "$out" >&2; exit 1; }
ms=$(awk -v ns="$ns" 'BEGIN {printf "%.1f", ns / 1e6}')
echo "BENCH {\"figure\": \"heraldctl status report, 10k Services\", \"value\": $ms, \"unit\": \"ms\", \"target\": \"< 500 ms\", \"command\": \"BENCH_ONLY=heraldctl make bench\"}"
