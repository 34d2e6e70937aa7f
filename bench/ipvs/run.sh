#!/bin/sh
# IPVS vs nftables backend, 10,000 Services x 2 endpoints, inside the qemu VM with Debian's cloud
# kernel (hack/ipvs-vm; needs root for apt/qemu on first use). A few minutes under emulation.
set -e
cd "$(dirname "$0")/../.."
exec go run ./hack/ipvs-vm -timeout 25m -build ./bench/ipvs -- "$@"
