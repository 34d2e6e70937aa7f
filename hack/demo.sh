#!/usr/bin/env bash
# `make demo` runs this once its prerequisites are done (hack/deps.sh: the Debian packages;
# hack/k8s-bins.sh and hack/helm.sh: the Kubernetes binaries and helm, cached; bin/: Herald). It runs
# `bin/lab demo`, which builds a whole cluster in network namespaces and shows a LoadBalancer
# Service getting its IP and being reached. The lab stays up afterwards; `bin/lab down` removes it.
# With CI=true (or no terminal) the demo runs straight through without pauses.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "The lab creates network namespaces and needs root: run 'sudo make demo'." >&2
  exit 1
fi
# --cluster: `make demo-cluster`, the same on real nodes (kubelet, containerd, CNI; Herald installed
# with helm from its image, make images).
cmd=demo
if [ "${1:-}" = --cluster ]; then
  cmd=demo-cluster
  shift
fi
# HERALD_LAB_DIR and HERALD_LAB_PREFIX: another lab's place and namespace prefix (default /tmp/herald-lab, herald-).
exec bin/lab --prefix "${HERALD_LAB_PREFIX:-herald-}" "$cmd" "$@"
