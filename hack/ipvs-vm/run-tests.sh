#!/usr/bin/env bash
# `make test-ipvs`: the suites that need a kernel with ip_vs (and SCTP, which this machine's kernel
# lacks too), run in a qemu VM booted from Debian's cloud kernel: the IPVS backend's kernel tests,
# the backend spec against both backends with real packets, the --dataplane=auto decision, and the
# differential test with kube-proxy (e2e/parity) with both sides in IPVS mode, on a real
# kube-apiserver and etcd that run in the VM too.
# It prints "N passed, M failed"; it fails when anything failed or the suite did not run, and
# skips only when qemu or the kernel cannot be obtained (no apt), unless HERALD_REQUIRE_REAL=1.
# HERALD_PARITY_CASES sets the differential test's corpus (default 20 here; the long run:
# HERALD_PARITY_CASES=100 HERALD_VM_TIMEOUT=60m hack/ipvs-vm/run-tests.sh -- -test.run TestKubeProxyParity), HERALD_PARITY_SEED its seed.
set -e
cd "$(dirname "$0")/../.."
k8sdir=$(hack/k8s-bins.sh)
etcd=$(readlink -f "${k8sdir/\/k8s-/\/assets-}/etcd")
# The VM's cache holds what the differential test runs, at the paths e2e/controlplane expects.
vmcache=/herald/cache
files="-file docs/parity.md"
for b in kube-apiserver kube-proxy; do
  files="$files -file $k8sdir/$b=$vmcache/$(basename "$k8sdir")/$b"
done
files="$files -file $etcd=$vmcache/$(basename "$(dirname "$etcd")")/etcd"
# shellcheck disable=SC2086 # $files is a list of flags
exec go run ./hack/ipvs-vm -timeout "${HERALD_VM_TIMEOUT:-20m}" -m 4096 $files \
  -env HERALD_CACHE=$vmcache -env HERALD_PARITY_MODE=ipvs \
  -env HERALD_PARITY_CASES="${HERALD_PARITY_CASES:-20}" -env HERALD_PARITY_SEED="${HERALD_PARITY_SEED:-16}" \
  -test ./dataplane/ipvs,./dataplane/backendspec,./dataplane/mode,./e2e/parity "$@"
