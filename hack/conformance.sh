#!/usr/bin/env bash
# `make conformance`: Kubernetes' own e2e tests (e2e.test v1.34.4, built once by hack/k8s-test-bins.sh)
# against the lab's real cluster (`lab up --kubelet`: kubelets, containerd, CNI, CoreDNS), twice:
#   herald      Herald installed by helm as the only service proxy
#   kube-proxy  no Herald; kube-proxy v1.34.4 in nftables mode on every node
# with the tests `in:` e2e/conformance/selection.txt (every [sig-network] Services [Conformance] test,
# plus the other [sig-network] Services tests a bare-metal proxy can run; each line says why it is in
# or out). e2e.test runs inside the lab's control-plane namespace (it reaches nodes and pods there),
# never in the machine's own. Output in $HERALD_CONFORMANCE_OUT (default /tmp/herald-conformance):
# each run's ginkgo JSON report and log, and results.md side by side (also printed); BENCH lines for
# bench/report on stdout. CONFORMANCE_RUNS="herald" runs only Herald. Fails when a selected test
# fails with Herald.
set -euo pipefail
cd "$(dirname "$0")/.."
export HERALD_CACHE=${HERALD_CACHE:-$HOME/.cache/herald}
out=${HERALD_CONFORMANCE_OUT:-/tmp/herald-conformance}
runs=(${CONFORMANCE_RUNS:-herald kube-proxy})
labdir=${HERALD_LAB_DIR:-/tmp/herald-lab}
prefix=${HERALD_LAB_PREFIX:-herald-}
lab() { bin/lab --dir "$labdir" --prefix "$prefix" "$@"; }

hack/deps.sh
nice -n 10 hack/k8s-test-bins.sh
hack/test-images.sh >/dev/null
k8sdir=$(hack/k8s-node-bins.sh)
[ -x bin/lab ] && ls bin/images/*.tar >/dev/null 2>&1 || { echo "conformance: run make build images first" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
# The selected tests are split into $shards e2e.test processes run side by side (none is [Serial]):
# most of a test's time is waiting for pods, so the run takes about a third as long.
shards=${CONFORMANCE_SHARDS:-3}
go build -o bin/conformance-report ./hack/conformance
echo "conformance: $(bin/conformance-report focus | wc -l) tests selected (e2e/conformance/selection.txt), $shards shards" >&2

trap 'lab down >/dev/null 2>&1 || true' EXIT
reports=()
for r in "${runs[@]}"; do
  case $r in
    herald) upArgs=() ;;
    kube-proxy) upArgs=(--no-herald --kube-proxy) ;;
    *) echo "conformance: unknown run $r (herald, kube-proxy)" >&2; exit 2 ;;
  esac
  start=$SECONDS
  echo "conformance: $r: lab up --kubelet ${upArgs[*]} --dns" >&2
  # The suite checks every NodePort is in Kubernetes' default range.
  lab up --kubelet --images bin/images --images bin/test-images --dns --node-port-range 30000-32767 "${upArgs[@]}" >"$out/$r-lab.log" 2>&1 ||
    { cat "$out/$r-lab.log" >&2; exit 1; }
  echo "conformance: $r: lab up in $((SECONDS - start)) s; e2e.test" >&2
  start=$SECONDS
  pids=() jsons=()
  for ((i = 0; i < shards; i++)); do
    focusArgs=()
    while read -r f; do focusArgs+=("--ginkgo.focus=$f"); done < <(bin/conformance-report focus -shard "$i" -shards "$shards")
    # --provider skeleton: no cloud; the report's spec states are what we compare.
    lab exec cp -- "$k8sdir/e2e.test" --provider=skeleton --kubeconfig="$labdir/kubeconfig" \
      --kubectl-path="$k8sdir/kubectl" --report-dir="$out/$r-$i" --ginkgo.json-report="$out/$r-$i.json" \
      --ginkgo.no-color --ginkgo.timeout=40m "${focusArgs[@]}" >"$out/$r-$i.log" 2>&1 &
    pids+=($!) jsons+=("$out/$r-$i.json")
  done
  wait "${pids[@]}" || true
  echo "conformance: $r: e2e.test done in $((SECONDS - start)) s (logs $out/$r-*.log)" >&2
  for j in "${jsons[@]}"; do
    [ -s "$j" ] || { tail -50 "${j%.json}.log" >&2; echo "conformance: $r: e2e.test wrote no $j" >&2; exit 1; }
  done
  reports+=(-run "$r=$(IFS=,; echo "${jsons[*]}")")
  lab down >/dev/null
done
# Herald must pass every selected test.
rc=0
bin/conformance-report report "${reports[@]}" -out "$out/results.md" -must-pass herald || rc=$?
cat "$out/results.md" >&2
exit $rc
