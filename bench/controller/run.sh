#!/bin/sh
# The controller on a real kube-apiserver + etcd (hack/k8s-bins.sh): 2,000 and then 10,000 pending
# LoadBalancer Services, then bin/controller starts; time until all have addresses, status writes
# per Service (the apiserver's own metrics), peak RSS, CPU. About 2 minutes for 2,000 and 5 for
# 10,000 on a busy 2-core machine, most of it creating the Services.
set -e
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^BenchmarkAllocate$' -benchtime 1x -timeout 30m ./bench/controller) || { echo "$out" >&2; exit 1; }
echo "$out" | grep '^BENCH '
