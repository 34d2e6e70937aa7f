#!/bin/sh
# BGP mode against a real BIRD 2 (needs root, iproute2, bird2, and for the lab part what e2e/lab
# needs). Two parts: "announcer" (namespaces + BIRD only, about 40 s) and "lab" (the real API server,
# controller and speakers in e2e/lab, 1,000 Services timed one by one then 5,000 in all: about
# 10 minutes on a busy 2-core machine). BGP_BENCH_PARTS=announcer runs the first part alone.
set -e
cd "$(dirname "$0")/../.."
go build -o "${TMPDIR:-/tmp}/herald-bench-bgp" ./bench/bgp
exec "${TMPDIR:-/tmp}/herald-bench-bgp" -parts "${BGP_BENCH_PARTS:-announcer,lab}" "$@"
