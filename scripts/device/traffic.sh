#!/usr/bin/env bash
# The GPU evidence for trace replay and sessions (steps 2 and 3 of the device evidence issue), on a device
# machine where the kit is installed and /tmp/model made (../shared/device/README.md). Each step fits one
# device call (10 minutes at most); a step cut off by the call's limit is resumed by calling it again on the
# same warm machine (run folders live in /tmp/runs, and `servelab run --resume` skips what was measured).
#   scripts/device/traffic.sh BIN_DIR OUT_DIR lateness|trace|sessions [SECONDS [--set KEY=VALUE ...]]
# BIN_DIR holds servelab, servelab-zero-endpoint and the trace (mooncake_conversation_trace.jsonl.xz);
# OUT_DIR receives a tar of the run folder and the console; SECONDS bounds the step (default 540).
set -euo pipefail
bin=$(cd "$1" && pwd)
out="$2"
step="$3"
limit="${4:-540}"
export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 PATH=/opt/torch/.venv/bin:$PATH
trace="$bin/mooncake_conversation_trace.jsonl.xz"
runs=/tmp/runs
mkdir -p "$out" "$runs"
run_step() { # spec name run-id [--set ...]
  local spec="$1" name="$2" id="$3"
  shift 3
  local resume=()
  [ -d "$runs/$name/$id" ] && resume=(--resume "$runs/$name/$id")
  local rc=0
  timeout --signal=INT --kill-after=30 "$limit" "$bin/servelab" run "$spec" --out "$runs" --run-id "$id" \
    "${resume[@]}" "$@" >>"$out/$id-console.txt" 2>&1 || rc=$?
  echo "servelab run exited $rc" >>"$out/$id-console.txt"
  "$bin/servelab" compress "$runs/$name/$id" >/dev/null 2>>"$out/$id-console.txt" || echo "compress failed: records left plain" >>"$out/$id-console.txt"
  tar czf "$out/$id.tgz" -C "$runs/$name" "$id"
}
case "$step" in
  lateness)
    SERVELAB_BIN_DIR="$bin" SERVELAB_BENCH_MD="$out/trace-lateness.md" scripts/bench/trace-lateness.sh "$trace"
    { nproc; lscpu | grep -E 'Model name|Socket' || true; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } >"$out/host.txt"
    ;;
  trace) run_step experiments/h200/trace_replay.yaml trace-replay-gpu trace --set load.trace.path="$trace" "${@:5}" ;;
  sessions)
    # The tokenizer alone, without the model's config.json (experiments/h200/sessions.yaml says why).
    mkdir -p /tmp/model-tok && cp /tmp/model/tokenizer.json /tmp/model/tokenizer_config.json /tmp/model-tok/
    run_step experiments/h200/sessions.yaml sessions-gpu sessions "${@:5}" ;;
  *) echo "unknown step $step (lateness, trace or sessions)" >&2; exit 2 ;;
esac
