#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3), once, into $HERALD_CACHE/helm-$HELM_VERSION/helm,
# and prints that path. CPU-heavy the first time (a few minutes on 2 cores); instant afterwards.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.19.0}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
dir=$CACHE/helm-$HELM_VERSION
if [ -x "$dir/helm" ]; then echo "$dir/helm"; exit 0; fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$dir/helm" ]; then echo "$dir/helm"; exit 0; fi
# Outside any module, so the repository's go.mod plays no part; helm's own go.sum pins its deps.
cd "$dir"
echo "helm: building helm $HELM_VERSION from its Go module, once (cached in $dir; a few minutes on 2 cores)" >&2
start=$SECONDS
# The Kubernetes version helm assumes without a cluster (helm template) is set at link time, as
# helm's own Makefile does; unset it is 1.20.
CGO_ENABLED=0 GOBIN="$dir/.build" GOFLAGS= go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$dir/build.log" 2>&1 ||
  { echo "helm: the build failed; the last lines of $dir/build.log:" >&2; tail -20 "$dir/build.log" >&2; exit 1; }
mv "$dir/.build/helm" "$dir/helm"
echo "helm: built in $((SECONDS - start)) s" >&2
rmdir "$dir/.build"
echo "$dir/helm"
