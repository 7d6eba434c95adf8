#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The long fuzz runs recorded in docs/fuzzing.md: each target for RUNS
# executions (default 1,000,000), starting from its committed corpus, new
# inputs kept in a scratch directory. Prints one Markdown table row per target.
# Usage: fuzz/run-long.sh [build-fuzz] [target...]   (RUNS=3000000 fuzz/run-long.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for t in "$build"/fuzz/fuzz_*; do [[ -x $t ]] && targets+=("$(basename "$t")"); done
fi
runs=${RUNS:-1000000}
scratch=$(mktemp -d /tmp/tagmem-fuzz-XXXXXX)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

echo "| target | executions | seconds | exec/s | coverage (cov / ft) | corpus after | result |"
echo "|---|---|---|---|---|---|---|"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  t0=$(date +%s)
  rc=0
  "$build/fuzz/$t" -runs="$runs" -print_final_stats=1 -artifact_prefix="$scratch/$t-" \
    "$scratch/$t" "fuzz/corpus/$t" >"$scratch/$t.log" 2>&1 || rc=$?
  secs=$(($(date +%s) - t0))
  last=$(grep -E '^#[0-9]+' "$scratch/$t.log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log")
  cov=$(sed -E -n 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/([^ ]+) .*/\1 \/ \2|\3 (\4)/p' <<<"$last")
  result=ok
  if ((rc != 0)); then
    result="**exit $rc**, see $scratch/$t.log"
    status=1
  fi
  echo "| $t | ${execs:-?} | $secs | ${rate:-?} | ${cov%%|*} | ${cov##*|} | $result |"
done
echo "logs and new inputs: $scratch" >&2
exit $status
