#!/bin/sh
# `make test-ipvs`: the suites that need a kernel with ip_vs (and SCTP, which this machine's kernel
# lacks too), run in a qemu VM booted from Debian's cloud kernel: the IPVS backend's kernel tests,
# the backend spec against both backends with real packets, and the --dataplane=auto decision.
# It prints "N passed, M failed"; it fails when anything failed or the suite did not run, and
# skips only when qemu or the kernel cannot be obtained (no apt), unless HERALD_REQUIRE_REAL=1.
# About 3 minutes with a warm build cache (first run: +30 s to fetch the kernel and build the image).
set -e
cd "$(dirname "$0")/../.."
exec go run ./hack/ipvs-vm -timeout 20m -test ./dataplane/ipvs,./dataplane/backendspec,./dataplane/mode "$@"
