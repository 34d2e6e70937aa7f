#!/bin/sh
# BGP mode against a real BIRD 2 (needs root, iproute2, bird2, and for the lab parts what e2e/lab
# needs). Three parts: "announcer" (namespaces + BIRD only, about 40 s), "lab" (the real API
# server, controller and speakers in e2e/lab, 1,000 Services timed one by one then 5,000 in all:
# about 10 minutes on a busy 2-core machine) and "present" (the lab with 1,000, 10,000 then
# 20,000 Services already there, 200 more timed one by one at each, speakers announcing only,
# dataplane.mode=off; about 25 minutes, creating the Services most of it; BGP_BENCH_PRESENT sets
# the sizes). BGP_BENCH_PARTS=announcer runs the first part alone.
set -e
cd "$(dirname "$0")/../.."
go build -o "${TMPDIR:-/tmp}/herald-bench-bgp" ./bench/bgp
parts=${BGP_BENCH_PARTS:-announcer,lab,present}
bench="${TMPDIR:-/tmp}/herald-bench-bgp"
case ",$parts," in
*,present,*)
	others=$(echo ",$parts," | sed 's/,present,/,/; s/^,//; s/,$//')
	[ -z "$others" ] || "$bench" -parts "$others" "$@"
	exec "$bench" -parts present -present "${BGP_BENCH_PRESENT:-1000,10000,20000}" -lab-set dataplane.mode=off "$@"
	;;
esac
exec "$bench" -parts "$parts" "$@"
