#!/bin/sh
# Herald on the lab's real nodes (kubelets, containerd, CNI; Herald installed with helm), issue 15:
#   - helm install -> the first LoadBalancer Service answering the client (fresh lab, images imported);
#   - a backend's readiness turning false -> its endpoint gone from the data plane, through the real
#     endpointslice controller, Herald vs kube-proxy v1.34.4 (nftables mode) on the same node of the
#     same cluster, p50/p99 of -trials (default 100) (bench/cluster/main.go says how);
#   - Kubernetes' e2e [sig-network] Services tests (e2e/conformance/selection.txt) with Herald and
#     with kube-proxy: pass counts and e2e.test wall time (hack/conformance.sh; its side-by-side table
#     is $HERALD_CONFORMANCE_OUT/results.md). CLUSTER_CONFORMANCE=0 leaves this part out.
# Needs root and what `make conformance` builds. About 15 min, plus 35 min for the e2e tests.
set -e
cd "$(dirname "$0")/../.."
make -s k8s-node-bins images >&2
go build -o /tmp/herald-bench-cluster ./bench/cluster
/tmp/herald-bench-cluster "$@"
if [ "${CLUSTER_CONFORMANCE:-1}" != 0 ]; then
  make -s k8s-test-bins test-images >&2
  hack/conformance.sh | grep '^BENCH '
fi
