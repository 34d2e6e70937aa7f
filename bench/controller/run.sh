#!/bin/sh
# The controller on a real kube-apiserver + etcd (hack/k8s-bins.sh): 2,000, 10,000 and 50,000
# pending LoadBalancer Services, then bin/controller starts; time until all have addresses, status
# writes per Service (the apiserver's own metrics), peak RSS, CPU; with them all present, its RSS and
# CPU over 10 s of steady state and 100 more created one at a time (create -> address, CPU each);
# then the floor: the same status patches from a plain client, the controller stopped. About
# 2 minutes for 2,000, 5 for 10,000 and 25 for 50,000 on a busy 2-core machine, most of it
# creating the Services.
set -e
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^BenchmarkAllocate$' -benchtime 1x -timeout 90m ./bench/controller) || { echo "$out" >&2; exit 1; }
echo "$out" | grep '^BENCH '
