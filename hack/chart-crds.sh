#!/usr/bin/env bash
# Copies the generated CRDs (config/crd) into the Helm chart (charts/herald/crds), which Helm
# installs before the templates. charts/chart_test.go fails when the two differ.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f charts/herald/crds/*.yaml
cp config/crd/*.yaml charts/herald/crds/
