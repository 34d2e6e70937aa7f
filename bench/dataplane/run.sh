#!/bin/sh
# Herald's nftables data plane: program 10,000 Services x 2 endpoints from start, one change with
# 10,000 present, memory. Needs root (it runs in a private network namespace of its own, made
# with `unshare -n`) and nft. About a minute on an idle 2-core machine.
set -e
cd "$(dirname "$0")/../.."
go build -o /tmp/herald-bench-dataplane ./bench/dataplane
exec /tmp/herald-bench-dataplane "$@"
