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
exec bin/lab demo "$@"
