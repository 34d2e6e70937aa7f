#!/bin/sh
# BGP announcer against a real BIRD 2 in network namespaces (needs root, iproute2, bird2); about 30 s.
set -e
cd "$(dirname "$0")/../.."
go build -o "${TMPDIR:-/tmp}/herald-bench-bgp" ./bench/bgp
exec "${TMPDIR:-/tmp}/herald-bench-bgp" "$@"
