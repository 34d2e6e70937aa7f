#!/bin/sh
# L2 failover in network namespaces (needs root, iproute2, nftables, arping, ndisc6, and for the
# lab part BIRD and the Kubernetes binaries); about 6 minutes. Pass -parts l2node or -parts lab for one part.
set -e
cd "$(dirname "$0")/../.."
go build -o "${TMPDIR:-/tmp}/herald-bench-l2" ./bench/l2
go build -o "${TMPDIR:-/tmp}/herald-bench-l2node" ./speaker/l2/l2lab/l2node
exec "${TMPDIR:-/tmp}/herald-bench-l2" -l2node "${TMPDIR:-/tmp}/herald-bench-l2node" "$@"
