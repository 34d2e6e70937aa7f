#!/bin/sh
# Herald's nftables data plane, 10,000 Services x 2 endpoints: program from start, one change with
# 10,000 present, memory, requests/s through a LoadBalancer IP vs direct, and (when
# hack/k8s-bins.sh has built kube-proxy) kube-proxy v1.34.4 side by side on a real apiserver.
# Needs root and nft: everything runs in network namespaces of its own (`unshare -n`, and
# herald-dpt-bench-* removed on exit and at the next start). About 2 minutes, plus about 5 with
# kube-proxy, on an idle 2-core machine.
set -e
cd "$(dirname "$0")/../.."
go build -o /tmp/herald-bench-dataplane ./bench/dataplane
args=""
if [ -x "${HERALD_CACHE:-$HOME/.cache/herald}/k8s-v1.34.4/kube-proxy" ]; then
	args="-kube-proxy"
fi
exec /tmp/herald-bench-dataplane $args "$@"
