#!/usr/bin/env bash
# Builds what makes lab nodes real Kubernetes nodes (`lab up --kubelet`): kubelet and kube-scheduler,
# from the same k8s.io/kubernetes module and throw-away module as hack/k8s-bins.sh (whose go.mod and
# go.sum it starts from), once. Output: $HERALD_CACHE/k8s-$K8S_VERSION/{kubelet,kube-scheduler}, next
# to the control-plane binaries; prints that directory. The container runtime (containerd, runc) and
# the CNI plugins are Debian's (hack/deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$("$here/k8s-bins.sh")
tools=(kubelet kube-scheduler)

have_all() {
  for t in "${tools[@]}"; do [ -x "$k8sdir/$t" ] || return 1; done
}
if have_all; then echo "$k8sdir"; exit 0; fi

# The same lock as hack/k8s-bins.sh: one Kubernetes build at a time on this machine.
exec 9>"$CACHE/.k8s-build.lock"
flock 9
if have_all; then echo "$k8sdir"; exit 0; fi

src=$CACHE/k8s-node-src-$K8S_VERSION
mkdir -p "$src"
cp "$CACHE/k8s-src-$K8S_VERSION/go.mod" "$CACHE/k8s-src-$K8S_VERSION/go.sum" "$src/"
sed -i 's|^module .*|module herald.io/k8s-node-bins|' "$src/go.mod"
cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
cd "$src"
export GOFLAGS=-mod=mod CGO_ENABLED=0
go mod tidy -e >&2 || true
minor=${K8S_VERSION#v1.}
maj=${K8S_VERSION#v}; maj=${maj%%.*}
ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$maj -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
for t in "${tools[@]}"; do
  [ -x "$k8sdir/$t" ] || go build -tags tools -ldflags "$ld" -o "$k8sdir/$t" "k8s.io/kubernetes/cmd/$t" >&2
done
echo "$k8sdir"
