#!/usr/bin/env bash
# Test-suite cost before and after the one-integration-binary change: test binaries and test counts from
# `cargo nextest list`, and the wall time of `cargo nextest run` with warm caches (built first, then run twice),
# for two checkouts of this repository. Writes bench/test-time.md (SERVELAB_BENCH_MD=FILE writes there).
#   scripts/bench/test-time.sh BEFORE_CHECKOUT AFTER_CHECKOUT
# The timed runs leave out the tests that start real vLLM servers or a Slurm cluster (binaries vllm_cpu,
# faults and slurm in both trees): they run one at a time, the same servers before and after, and take
# minutes of vLLM start-up that no test layout changes. Each checkout is run with the features its own
# README test command used (`--features failpoints` exists only after).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${SERVELAB_BENCH_MD:-$here/bench/test-time.md}
declare -A binaries tests walls
measure() { # label dir
  local label="$1" dir="$2" feats=()
  grep -q '^failpoints' "$dir/Cargo.toml" && feats=(--features failpoints)
  # nextest refuses a filter naming a binary that does not exist: slurm's exists only after.
  local filter='not (binary(vllm_cpu) | binary(faults))'
  [ -e "$dir/tests/slurm.rs" ] && filter='not (binary(vllm_cpu) | binary(faults) | binary(slurm))'
  (cd "$dir" && cargo nextest run --locked "${feats[@]}" --no-run >/dev/null 2>&1)
  local list
  list=$(cd "$dir" && cargo nextest list --locked "${feats[@]}" --message-format json 2>/dev/null)
  binaries[$label]=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["rust-suites"]))' <<<"$list")
  tests[$label]=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(len(s["testcases"]) for s in d["rust-suites"].values()))' <<<"$list")
  local w=()
  for _ in 1 2; do
    local t0 t1
    t0=$(date +%s.%N)
    local rc=0
    (cd "$dir" && SERVELAB_SKIP_SETUP=1 cargo nextest run --locked "${feats[@]}" -E "$filter" >/dev/null 2>&1) || rc=$?
    t1=$(date +%s.%N)
    # A failed run is timed too, and says so: its time is not the suite's.
    w+=("$(python3 -c "print(f'{$t1-$t0:.1f} s' + ('' if $rc == 0 else ' (exit $rc)'))")")
  done
  walls[$label]="${w[0]}, ${w[1]}"
}
measure before "$1"
measure after "$2"
{
  echo "# Test-suite cost: before and after one integration binary"
  echo
  echo "Made by \`scripts/bench/test-time.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d); before = $(git -C "$1" rev-parse --short HEAD), after = $(git -C "$2" rev-parse --short HEAD)."
  echo "Counts from \`cargo nextest list\` (all tests, real-vLLM and Slurm ones included). Wall time of \`cargo nextest run\`"
  echo "with warm caches (built first), twice, leaving out the binaries that start real vLLM servers or Slurm (vllm_cpu, faults, slurm)."
  echo
  echo "| tree | test binaries | tests | wall time (warm, twice) |"
  echo "|---|---:|---:|---|"
  for l in before after; do echo "| $l | ${binaries[$l]} | ${tests[$l]} | ${walls[$l]} |"; done
  echo
  echo "The two trees run different tests (the later one has more, among them seeded tune searches of tens of"
  echo "seconds each), so the wall time is each suite's own, not a cost per test. What one integration binary"
  echo "saves is linking: one test binary instead of ten links the dependency graph once per build."
} >"$out"
cat "$out"
