#!/usr/bin/env bash
# Builds golangci-lint from its Go module, once, into
# $HERALD_CACHE/golangci-lint-$GOLANGCI_LINT_VERSION/golangci-lint, and prints that path.
# CPU-heavy the first time (many minutes on 2 cores); instant afterwards.
set -euo pipefail
GOLANGCI_LINT_VERSION=${GOLANGCI_LINT_VERSION:-v2.5.0}
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
dir=$CACHE/golangci-lint-$GOLANGCI_LINT_VERSION
if [ -x "$dir/golangci-lint" ]; then echo "$dir/golangci-lint"; exit 0; fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$dir/golangci-lint" ]; then echo "$dir/golangci-lint"; exit 0; fi
# Outside any module, so the repository's go.mod plays no part; golangci-lint's go.sum pins its deps.
cd "$dir"
GOBIN="$dir/.build" GOFLAGS= go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION" >&2
mv "$dir/.build/golangci-lint" "$dir/golangci-lint"
rmdir "$dir/.build"
echo "$dir/golangci-lint"
