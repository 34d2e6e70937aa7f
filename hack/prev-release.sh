#!/usr/bin/env bash
# The previous release of Herald, for e2e/lifecycle's upgrade from it: the chart and the image of an
# older commit ($HERALD_PREV_COMMIT; default 55dba60ec49c, main~10 when issue 18's lifecycle tests
# were written, which has the L2 restart hold and runs on the real-node lab), built once from a
# throw-away git worktree and cached in $HERALD_CACHE/herald-prev-<commit>/ as chart/ (the chart
# directory) and herald.oci.tar (the image, tagged ghcr.io/heraldlb/herald:prev-<commit>). Prints
# that directory.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
commit=$(git rev-parse --short=12 "${HERALD_PREV_COMMIT:-55dba60ec49c}^{commit}")
out=$CACHE/herald-prev-$commit
if [ -f "$out/herald.oci.tar" ] && [ -f "$out/chart/Chart.yaml" ]; then echo "$out"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.herald-prev.lock"
flock 9
if [ -f "$out/herald.oci.tar" ] && [ -f "$out/chart/Chart.yaml" ]; then echo "$out"; exit 0; fi
src=$(mktemp -d /tmp/herald-prev-src-XXXXXX)
trap 'git worktree remove --force "$src" >/dev/null 2>&1; rm -rf "$src"' EXIT
git worktree add --detach "$src" "$commit" >&2
repo=$(sed -n 's/^  repository: *//p' "$src/charts/herald/values.yaml" | head -1)
nft=/usr/sbin/nft
[ -x "$nft" ] || nft=
(
  cd "$src"
  for b in controller speaker heraldctl; do CGO_ENABLED=0 go build -trimpath -o "bin/$b" "./cmd/$b"; done
  mkdir -p "$out.tmp"
  go run ./hack/images -bin bin -nft "$nft" -ref "$repo:prev-$commit" -out "$out.tmp/herald.oci.tar"
) >&2
cp -r "$src/charts/herald" "$out.tmp/chart"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
