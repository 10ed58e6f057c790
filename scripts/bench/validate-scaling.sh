#!/usr/bin/env bash
# How `servelab validate` scales with the size of one grid axis (issue "Nothing killed that is not ours…":
# validate must stay linear). Writes bench/validate-scaling.md; compare the ratios within one run, not the
# absolute times across machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
bin=target/release/servelab
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=bench/validate-scaling.md
{
  echo "# \`servelab validate\` against the size of one grid axis"
  echo
  echo "Made by \`scripts/bench/validate-scaling.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d). Each spec has one axis of N"
  echo "distinct values. 10,000 is the most runs a plan may have, so that spec is planned in full (10,000 points);"
  echo "the larger ones are refused by the run cap after every per-value check has run over the whole axis, so"
  echo "their time per value shows how the checks scale (before the fix: 2.8 s at 50k, 23.5 s at 150k). Best of 3."
  echo
  echo "| values | seconds | seconds per 10k values |"
  echo "|---:|---:|---:|"
} > "$out"
for n in 10000 50000 150000; do
  python3 - "$n" "$tmp/spec.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
vals = ",".join(str(i) for i in range(1, n + 1))
open(path, "w").write('name: x\nengine:\n  model: m\n  args:\n    max-model-len: "{{ max_model_len }}"\ngrid:\n  max_model_len: [' + vals + ']\n')
PY
  best=""
  for _ in 1 2 3; do
    s=$(date +%s.%N); "$bin" validate "$tmp/spec.yaml" >/dev/null 2>&1 || true; e=$(date +%s.%N)
    t=$(python3 -c "print($e - $s)")
    best=$(python3 -c "print(min(float('${best:-1e9}'), $t))")
  done
  python3 -c "print(f'| {int($n):,} | {$best:.3f} | {$best / ($n / 10000):.4f} |')" >> "$out"
done
cat "$out"
