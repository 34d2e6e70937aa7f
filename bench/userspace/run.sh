#!/bin/sh
# The userspace proxy mode (herald.io/proxy-mode: userspace) against nftables, side by side on
# the same two backends: HTTP requests/s with keep-alive and with a new connection per request,
# 1 GiB bulk TCP throughput, p99 added latency, proxy CPU per 10k requests, and failed new
# connections while one backend is SIGKILLed but still listed. Needs root, ip and nft; everything
# runs in network namespaces herald-us-bench-* (removed at the start and on exit). About a
# minute on an idle 2-core machine; `run.sh -quick` checks it works in seconds.
set -e
cd "$(dirname "$0")/../.."
go build -o /tmp/herald-us-bench-userspace ./bench/userspace
exec /tmp/herald-us-bench-userspace "$@"
