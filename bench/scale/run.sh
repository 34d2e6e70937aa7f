#!/bin/sh
# Herald's cost to the API server, etcd and the network as the cluster grows (issue 20), on one
# machine: a real kube-apiserver + etcd (hack/k8s-bins.sh), simulated nodes (Node objects, no
# kubelets), every node's real status writer driven in-process, before (SpeakerStatus rewritten
# every minute) and after (a Lease per node, status written on change), with Herald's controller
# (built from this tree) running as a process reading them; then the membership heartbeats on
# loopback. Sizes (nodes × announcements per node, BGP: every node lists every Service IP):
# 10×10000, 100×1000, 1000×100 (100×10000 grew the API server past 22 GB: the benchmark stops a
# size at 6 GB); HERALD_SCALE_SIZES=10x1000,100x1000 picks others. A third design, derived, runs
# the speakers of this version: their statuses list no Cluster-policy BGP IP (the controller
# derives them from the sessions), and the Service created is a real one the controller
# allocates and marks Announced; HERALD_SCALE_DESIGNS=derived runs it alone.
# Writes, etcd writes and watch bytes are the API server's own counts (its /metrics); a watch the
# API server closes is resumed from its last resourceVersion.
# About 20 minutes on a busy 2-core machine (each size: a minute of steady state before, 30 s after).
set -e
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^Benchmark(StatusWriters|Heartbeats|FailoverAt100Members)$' -benchtime 1x -timeout 60m ./bench/scale) || { echo "$out" >&2; exit 1; }
echo "$out" | grep '^BENCH '
