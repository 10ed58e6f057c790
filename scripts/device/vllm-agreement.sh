#!/usr/bin/env bash
# On the H200 device (after the kit is installed): one vLLM server, then
#  1. servelab bench (A) and vllm bench serve (B) alternating ABBA at c = 1, 8, 32, 128 with the same lengths
#     and request counts (bench/vllm-agreement.md is computed from what this writes);
#  2. servelab's observer effect: the same c=32 phase with NVML sampling and /metrics scrapes on, and off,
#     alternating ABAB (docs/observer-effect.md).
# Usage: scripts/device/vllm-agreement.sh SERVELAB_BINARY OUT_DIR
set -euo pipefail
bin="$1"; out="$2"
mkdir -p "$out/vllm" "$out/runs"
py=/opt/torch/.venv/bin/python3
export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
$py -m vllm.entrypoints.cli.main serve /tmp/model --max-model-len 4096 --port 8000 >"$out/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; sleep 5; kill -KILL $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8000/health >/dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:8000/health >/dev/null
echo "server ready at $(date +%T)"

servelab_bench() { # c n tag
  "$bin" bench --url http://127.0.0.1:8000 --model /tmp/model --concurrency "$1" --requests "$2" --exact-requests \
    --max-tokens 64 --prompt-tokens 128 --warmup 2 --ignore-eos --out "$out/runs" --run-id "$3" >/dev/null 2>"$out/runs/$3.err"
}
vllm_bench() { # c n tag
  $py -m vllm.entrypoints.cli.main bench serve --backend vllm --model /tmp/model --host 127.0.0.1 --port 8000 \
    --dataset-name random --random-input-len 128 --random-output-len 64 --ignore-eos --num-prompts "$2" \
    --max-concurrency "$1" --num-warmups 2 --disable-tqdm --save-result --result-dir "$out/vllm" \
    --result-filename "$3.json" >"$out/vllm/$3.log" 2>&1
}
for c in 1 8 32 128; do
  n=$(( c == 1 ? 64 : c * 16 )); (( n > 2048 )) && n=2048
  servelab_bench "$c" "$n" "A-c$c-1"; vllm_bench "$c" "$n" "B-c$c-1"
  vllm_bench "$c" "$n" "B-c$c-2"; servelab_bench "$c" "$n" "A-c$c-2"
  echo "c=$c done at $(date +%T)"
done

# Observer effect: sampling on (NVML every 100 ms, /metrics every 500 ms) against off, ABAB at c=32.
for i in 1 2; do
  for m in on off; do
    "$bin" run experiments/h200/observer/$m.yaml --out "$out/runs" --run-id "obs-$m-$i" >/dev/null 2>"$out/runs/obs-$m-$i.err"
  done
done
echo "observer runs done at $(date +%T)"
