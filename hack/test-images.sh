#!/usr/bin/env bash
# `make test-images`: the images Kubernetes' e2e suite (hack/conformance.sh) and the lab's cluster
# DNS run on the lab's real nodes, under the names the suite asks for (`e2e.test --list-images`), as
# tarballs `bin/lab up --kubelet --images DIR` imports into every node. No Docker, no registry:
#   registry.k8s.io/e2e-test-images/agnhost:2.56   /agnhost (k8s.io/kubernetes test/images/agnhost),
#       dash as /bin/sh (Debian's busybox sh runs its own nc applet before PATH, and it lacks -v),
#       netcat-openbsd nc, curl, wget, seq, ss, and busybox applets for grep, tail, sleep, nslookup
#       (its own resolver, unlike busybox's wget), ...
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-1 and :1.36.1-1   Debian's busybox-static
#   registry.k8s.io/coredns/coredns:<version>      CoreDNS from its Go module (lab up --kubelet --dns)
# Binaries are built once (hack/k8s-test-bins.sh), the tarballs are cached in
# $HERALD_CACHE/test-images-$K8S_VERSION and linked into bin/test-images.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-v1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
out=$CACHE/test-images-$K8S_VERSION
mkdir -p "$out" bin/test-images
hack/k8s-test-bins.sh agnhost coredns
k8sdir=$(hack/k8s-bins.sh)
dnsdir=$CACHE/coredns-$COREDNS_VERSION

for tool in /bin/dash /bin/nc.openbsd /usr/bin/curl /usr/bin/seq /usr/bin/ss /bin/busybox /usr/bin/wget; do
  [ -x "$tool" ] || { echo "test-images: $tool missing: run hack/deps.sh (dash, netcat-openbsd, curl, iproute2, busybox-static, wget)" >&2; exit 1; }
done
applets=(cat cut date echo env grep head hostname ip ls mkdir printf ps rm sed sleep sort tail tee timeout touch tr true false uname wc nslookup)
links=()
for a in "${applets[@]}"; do links+=(-link "bin/$a=busybox"); done
# Not busybox's wget: in a static busybox, name resolution loads glibc's NSS modules, which the
# image lacks, and every wget segfaults. Debian's wget with its libraries instead.
wget=(-tool usr/bin/wget=/usr/bin/wget)

# image NAME REF ARGS…: builds $out/NAME.tar once.
image() {
  local name=$1 ref=$2; shift 2
  if [ -s "$out/$name.tar" ]; then return; fi
  echo "test-images: $ref" >&2
  go run ./hack/images -binaries= -nft= -ref "$ref" -title "$name" -out "$out/$name.tar.tmp" "$@" >/dev/null
  mv "$out/$name.tar.tmp" "$out/$name.tar"
}
image agnhost-2.56 registry.k8s.io/e2e-test-images/agnhost:2.56 \
  -file agnhost="$k8sdir/agnhost" -file bin/busybox=/bin/busybox "${links[@]}" \
  -tool bin/sh=/bin/dash -tool usr/bin/nc=/bin/nc.openbsd -tool usr/bin/curl=/usr/bin/curl \
  -tool usr/bin/seq=/usr/bin/seq -tool usr/bin/ss=/usr/bin/ss "${wget[@]}" -entrypoint /agnhost
for v in 1.37.0-1 1.36.1-1; do # the suite names both
  image "busybox-$v" "registry.k8s.io/e2e-test-images/busybox:$v" \
    -file bin/busybox=/bin/busybox -link bin/sh=busybox "${links[@]}" "${wget[@]}" -entrypoint /bin/sh
done
image "coredns-$COREDNS_VERSION" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
  -file coredns="$dnsdir/coredns" -entrypoint /coredns
rm -f bin/test-images/*.tar
ln -s "$out"/*.tar bin/test-images/
ls bin/test-images/*.tar
