#!/usr/bin/env bash
# `make demo`: installs what the lab needs, builds, and runs `bin/lab demo`, which builds a whole
# cluster in network namespaces and shows a LoadBalancer Service getting its IP and being reached.
# The lab stays up afterwards; `bin/lab down` removes it. With CI=true (or no terminal) the demo runs
# straight through without pauses.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "The lab creates network namespaces and needs root: run 'sudo make demo'." >&2
  exit 1
fi

# Debian packages: BIRD 2 (the router), arping and ndisc6 (what a client sees), nftables and
# conntrack (the data plane's tools), iproute2 (namespaces), curl (the client).
need=()
for pkg_cmd in bird2:bird arping:arping ndisc6:ndisc6 nftables:nft conntrack:conntrack iproute2:ip curl:curl; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need+=("${pkg_cmd%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
# The apt package enables a system-wide BIRD; the lab runs its own, inside its router namespace.
systemctl disable --now bird.service >/dev/null 2>&1 || true

echo "==> building the Kubernetes binaries the lab runs (once; cached)"
hack/k8s-bins.sh >/dev/null
echo "==> building helm (once; cached): the lab runs Herald as the chart renders it"
hack/helm.sh >/dev/null

echo "==> building Herald"
mkdir -p bin
for cmd in lab controller speaker; do
  if [ -d "cmd/$cmd" ]; then
    CGO_ENABLED=0 go build -trimpath -o "bin/$cmd" "./cmd/$cmd" # as `make build` does: no rebuild after it
  fi
done

exec bin/lab demo "$@"
