#!/usr/bin/env bash
# `make images`: Herald's container image as an OCI image layout tarball, without a Docker engine.
# The image holds bin/controller, bin/speaker and bin/heraldctl (static, from `make build`) and
# Debian's nft with its libraries (the nftables data plane runs nft). Its name and tag are the Helm
# chart's defaults (values.yaml image.repository, Chart.yaml appVersion), so the chart runs it as is.
# Output: bin/images/herald-<tag>.oci.tar; push it with e.g.
#   crane push bin/images/herald-<tag>.oci.tar ghcr.io/heraldlb/herald:<tag>
#   skopeo copy oci-archive:bin/images/herald-<tag>.oci.tar docker://ghcr.io/heraldlb/herald:<tag>
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(sed -n 's/^  repository: *//p' charts/herald/values.yaml | head -1)
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/herald/Chart.yaml)
if [ -z "$repo" ] || [ -z "$tag" ]; then
  echo "images: cannot read image.repository from charts/herald/values.yaml or appVersion from Chart.yaml" >&2
  exit 1
fi
nft=/usr/sbin/nft
if [ ! -x "$nft" ]; then
  echo "images: $nft missing (apt-get install nftables): the image will have no nftables data plane" >&2
  nft=
fi
mkdir -p bin/images
go run ./hack/images -bin bin -nft "$nft" -ref "$repo:$tag" -out "bin/images/herald-$tag.oci.tar"
