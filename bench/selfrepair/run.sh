#!/bin/sh
# The data plane's self-repair as a client sees it: on the node a LoadBalancer Service's traffic
# enters by, `nft flush ruleset`, `nft delete table inet herald` and a foreign drop rule, each
# -trials times (default 10); the time from the fault to the first new connection answered again.
# Needs root, nftables, BIRD and the Kubernetes binaries; everything runs in herald-srb-*
# namespaces. About 3 minutes on an idle 2-core machine.
set -e
cd "$(dirname "$0")/../.."
go build -o /tmp/herald-bench-selfrepair ./bench/selfrepair
exec /tmp/herald-bench-selfrepair "$@"
