#!/usr/bin/env bash
# Installs the Debian packages the lab, the tests and the demo use, once. Quick when all are there.
set -euo pipefail
pkgs=(bird2 arping ndisc6 nftables iproute2 conntrack tcpdump curl qemu-system-x86 busybox-static kmod cpio ipvsadm socat prometheus
  containerd runc containernetworking-plugins dash netcat-openbsd wget)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# The packages enable a system-wide BIRD, Prometheus (listening on :9090 of the machine) and
# containerd; the lab and the tests run their own, inside namespaces.
systemctl disable --now bird.service prometheus.service containerd.service >/dev/null 2>&1 || true
