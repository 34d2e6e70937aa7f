#!/usr/bin/env bash
# Regenerates the API's deepcopy functions and CRD manifests from the Go types in config/v1beta1.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROLLER_GEN_VERSION=v0.19.0
bin=${HERALD_CACHE:-$HOME/.cache/herald}/controller-gen-$CONTROLLER_GEN_VERSION
[ -x "$bin/controller-gen" ] || GOBIN=$bin go install sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION
"$bin/controller-gen" object paths=./config/v1beta1/...
"$bin/controller-gen" crd:crdVersions=v1,maxDescLen=400 paths=./config/v1beta1/... output:crd:artifacts:config=config/crd
