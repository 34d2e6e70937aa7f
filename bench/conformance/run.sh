#!/bin/sh
# Kubernetes' e2e [sig-network] Services tests (e2e/conformance/selection.txt) against Herald and
# against kube-proxy v1.34.4 (nftables mode) on the lab's real nodes: pass counts and e2e.test wall
# time per run (hack/conformance.sh, whose BENCH lines this passes on; its side-by-side table is
# $HERALD_CONFORMANCE_OUT/results.md). Needs what `make conformance` builds; about 20 min.
set -e
cd "$(dirname "$0")/../.."
hack/conformance.sh | grep '^BENCH '
