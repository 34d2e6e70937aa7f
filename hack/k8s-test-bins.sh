#!/usr/bin/env bash
# Builds what Kubernetes' own e2e suite needs to run against the lab's real cluster (hack/conformance.sh),
# once: e2e.test and agnhost from the same k8s.io/kubernetes module and throw-away module as
# hack/k8s-bins.sh (whose go.mod and go.sum it starts from), and CoreDNS from its own Go module (the
# suite reaches Services by name, so the cluster needs DNS). Output: $HERALD_CACHE/k8s-$K8S_VERSION/
# {e2e.test,agnhost} and $HERALD_CACHE/coredns-$COREDNS_VERSION/coredns, progress lines on stderr.
# Arguments name what to build (agnhost coredns e2e.test; default all): hack/test-images.sh needs
# only the first two. e2e.test is a heavy link (about 10 min cold on 2 cores): run under `nice`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
k8sdir=$("$here/k8s-bins.sh")
dnsdir=$CACHE/coredns-$COREDNS_VERSION

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(agnhost coredns e2e.test)
path() { case $1 in coredns) echo "$dnsdir/coredns" ;; agnhost | e2e.test) echo "$k8sdir/$1" ;; *) return 1 ;; esac; }
wanted() { [[ " ${want[*]} " == *" $1 "* ]] && [ ! -x "$(path "$1")" ]; }
have_all() {
  for w in "${want[@]}"; do
    p=$(path "$w") || { echo "k8s-test-bins: unknown target $w (agnhost, coredns, e2e.test)" >&2; exit 2; }
    [ -x "$p" ] || return 1
  done
}
if have_all; then exit 0; fi

# The same lock as hack/k8s-bins.sh: one Kubernetes build at a time on this machine.
exec 9>"$CACHE/.k8s-build.lock"
flock 9
if have_all; then exit 0; fi

export CGO_ENABLED=0
if wanted coredns; then
  echo "k8s-test-bins: building coredns $COREDNS_VERSION (about 4 min cold)" >&2
  mkdir -p "$dnsdir"
  GOBIN=$dnsdir go install "github.com/coredns/coredns@$COREDNS_VERSION"
fi

wanted agnhost || wanted e2e.test || { echo "k8s-test-bins: done" >&2; exit 0; }
src=$CACHE/k8s-test-src-$K8S_VERSION
mkdir -p "$src"
cp "$CACHE/k8s-src-$K8S_VERSION/go.mod" "$CACHE/k8s-src-$K8S_VERSION/go.sum" "$src/"
sed -i 's|^module .*|module herald.io/k8s-test-bins|' "$src/go.mod"
# go mod tidy keeps only what the module's own packages import: name the packages e2e.test's main
# test file imports (the test sources and framework init), not only test/e2e itself.
mod=$(cd "$src" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes 2>/dev/null || true)
if [ -z "$mod" ]; then
  (cd "$src" && GOFLAGS=-mod=mod go mod download k8s.io/kubernetes)
  mod=$(cd "$src" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)
fi
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  echo '	_ "k8s.io/kubernetes/test/e2e"'
  echo '	_ "k8s.io/kubernetes/test/images/agnhost"'
  sed -n '/^import (/,/^)/p' "$mod/test/e2e/e2e_test.go" | grep -o '"k8s.io/kubernetes/[^"]*"\|"github.com/onsi/ginkgo/v2"' |
    sort -u | sed 's/^/	_ /'
  echo ')'
} > "$src/tools.go"
cd "$src"
export GOFLAGS=-mod=mod
echo "k8s-test-bins: resolving modules for e2e.test and agnhost" >&2
go mod tidy -e >&2 || true
minor=${K8S_VERSION#v1.}
maj=${K8S_VERSION#v}; maj=${maj%%.*}
ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$maj -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
if wanted agnhost; then
  echo "k8s-test-bins: building agnhost" >&2
  go build -ldflags "$ld" -o "$k8sdir/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
  mv "$k8sdir/agnhost.tmp" "$k8sdir/agnhost"
fi
if wanted e2e.test; then
  echo "k8s-test-bins: building e2e.test (about 10 min cold)" >&2
  go test -c -vet=off -ldflags "$ld" -o "$k8sdir/e2e.test.tmp" k8s.io/kubernetes/test/e2e
  mv "$k8sdir/e2e.test.tmp" "$k8sdir/e2e.test"
fi
echo "k8s-test-bins: done" >&2
