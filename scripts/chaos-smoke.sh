#!/usr/bin/env bash
# The CI chaos smoke: three nodes on their own network namespaces, partitions, pauses and
# clock skew while every workload runs, for 60 s. Faults last 7 s, past the failure timeout
# (5 s), so nodes are declared down, cut off and come back, and peer links route what they
# held anew (docs/chaos.md). Fails when a checker says `false` (exit 1); `unknown` (2)
# passes with a warning, a harness failure (3) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${CHAOS_SMOKE_OUT:-chaos/runs/ci-smoke-$(date -u +%Y%m%dT%H%M%SZ)}"
chaos/run --nemesis partition-halves,isolate-leader,pause-node,clock-skew --interval 7 \
  --workload register,messages,roster,bind,sessions --time 60 --nodes 3 --out "$out"
code=$?
case $code in
  0) echo "chaos smoke: valid ($out)" ;;
  2) echo "chaos smoke: WARNING: a checker could not decide (unknown); see $out/results.json" ;;
  *) echo "chaos smoke: FAILED (exit $code); see $out/results.json and $out/report.html"; exit 1 ;;
esac
