#!/usr/bin/env bash
# Builds the real Kubernetes and etcd binaries the tests and the lab run, from their Go modules, once.
# k8s.io/kubernetes cannot be `go install`ed (its go.mod points the staging modules at local paths),
# so we build it from a throw-away module that requires it and replaces each staging module with the
# published one of the same patch. Output: $HERALD_CACHE/k8s-$K8S_VERSION/{kube-apiserver,...} and
# $HERALD_CACHE/etcd-$ETCD_VERSION/etcd, and $HERALD_CACHE/assets-$K8S_VERSION/ with links to all of
# them (the layout controller-runtime's envtest wants in KUBEBUILDER_ASSETS). Prints the k8s directory.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$CACHE/k8s-$K8S_VERSION
etcddir=$CACHE/etcd-$ETCD_VERSION
tools=(kube-apiserver kube-controller-manager kube-proxy kubectl)

assets=$CACHE/assets-$K8S_VERSION
have_all() {
  for t in "${tools[@]}"; do [ -x "$k8sdir/$t" ] || return 1; done
  [ -x "$etcddir/etcd" ] && [ -e "$assets/etcd" ]
}
if have_all; then echo "$k8sdir"; exit 0; fi

# One builder at a time: parallel test packages may all ask for the binaries.
mkdir -p "$CACHE"
exec 9>"$CACHE/.k8s-build.lock"
flock 9
if have_all; then echo "$k8sdir"; exit 0; fi

src=$CACHE/k8s-src-$K8S_VERSION
mkdir -p "$src" "$k8sdir" "$etcddir"
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)
minor=${K8S_VERSION#v1.}
{
  echo "module herald.io/k8s-bins"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo
  for s in "${staging[@]}"; do echo "replace k8s.io/$s => k8s.io/$s v0.$minor"; done
} > "$src/go.mod"
cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
cd "$src"
export GOFLAGS=-mod=mod CGO_ENABLED=0
# Say what happens: a fresh machine spends most of `make test` and `make demo` here, once.
log=$CACHE/k8s-build.log
say() { echo "k8s-bins: $*" >&2; }
say "building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION from their Go modules, once (cached in $CACHE;"
say "about 10 minutes on 2 cores the first time, seconds afterwards). Details: $log"
: > "$log"
started=$SECONDS
say "downloading the modules"
go mod tidy -e >>"$log" 2>&1 || true
# build NAME PKG OUT [LDFLAGS]: one binary, with its time.
build() {
  local t0=$SECONDS
  say "building $1 ..."
  if ! go build -tags tools ${4:+-ldflags "$4"} -o "$3" "$2" >>"$log" 2>&1; then
    say "building $1 failed; the last lines of $log:"
    tail -20 "$log" >&2
    exit 1
  fi
  say "built $1 in $((SECONDS - t0)) s"
}
maj=${K8S_VERSION#v}; maj=${maj%%.*}
ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$maj -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
[ -x "$etcddir/etcd" ] || build etcd go.etcd.io/etcd/server/v3 "$etcddir/etcd"
for t in "${tools[@]}"; do
  [ -x "$k8sdir/$t" ] || build "$t" "k8s.io/kubernetes/cmd/$t" "$k8sdir/$t" "$ld"
done
say "done in $((SECONDS - started)) s"
mkdir -p "$assets"
for t in "${tools[@]}"; do ln -sf "$k8sdir/$t" "$assets/$t"; done
ln -sf "$etcddir/etcd" "$assets/etcd"
echo "$k8sdir"
