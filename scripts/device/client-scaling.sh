#!/usr/bin/env bash
# Client scaling on a many-core host (the H200 evidence issue, step 1; no model server, no GPU work):
# `servelab bench --client-threads 1,2,4,8` against the zero endpoint, client and endpoint pinned to disjoint
# cores with taskset. Closed loop: tokens/s per thread count. Open loop: lateness against the schedule at
# 10,000 and 50,000 requests/s, 64-token streams. Figures are reported, not gated.
#   scripts/device/client-scaling.sh BIN_DIR OUT_DIR [CLOSED_REQUESTS] [OPEN_10K_REQUESTS] [OPEN_50K_REQUESTS]
# The request counts are small on purpose: every token's arrival is recorded, and the example folder that
# keeps these records (compressed) must stay under 1 MiB.
# BIN_DIR holds servelab and servelab-zero-endpoint; OUT_DIR receives the run folders (raw records
# compressed), host.txt (cores, pinning) and console.txt.
set -euo pipefail
bin="$1"
out="$2"
closed_n="${3:-3000}"
open_n=("${4:-3000}" "${5:-5000}")
cores=$(nproc)
half=$((cores / 2))
client_cpus="0-$((half - 1))"
endpoint_cpus="${half}-$((cores - 1))"
port=18611
mkdir -p "$out"
{
  echo "cores: $cores; client on $client_cpus, endpoint on $endpoint_cpus (taskset)"
  echo "endpoint: servelab-zero-endpoint --threads $half --itl-us 0"
  uname -r
  lscpu | grep -E 'Model name|Socket|NUMA node\(s\)' || true
} >"$out/host.txt"
taskset -c "$endpoint_cpus" "$bin/servelab-zero-endpoint" --port "$port" --threads "$half" --itl-us 0 \
  >"$out/endpoint.log" 2>&1 &
ep=$!
trap 'kill $ep 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
  sleep 0.1
done
common=(--base-url "http://127.0.0.1:$port" --random-input-len 64 --random-output-len 64 --ignore-eos
  --num-warmups 0 --out "$out" --request-timeout 30s --disable-tqdm)
# One run per thread count, so each run folder holds one cell. Closed loop: 256 requests in flight.
for t in 1 2 4 8; do
  taskset -c "$client_cpus" "$bin/servelab" bench "${common[@]}" --client-threads "$t" --max-concurrency 256 \
    --num-prompts "$closed_n" --run-id "closed-t$t" 2>&1 | tee -a "$out/console.txt"
  for i in 0 1; do
    rate=$((i == 0 ? 10000 : 50000))
    taskset -c "$client_cpus" "$bin/servelab" bench "${common[@]}" --client-threads "$t" --request-rate "$rate" \
      --num-prompts "${open_n[$i]}" --run-id "open-$rate-t$t" 2>&1 | tee -a "$out/console.txt"
  done
done
for run in "$out"/bench/*/; do
  "$bin/servelab" compress "$run" >/dev/null
done
