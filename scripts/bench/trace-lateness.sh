#!/usr/bin/env bash
# Lateness of a trace replay at 100× the Mooncake conversation trace's rate (12,031 requests over 3,537 s:
# ~3.4/s, so ~340/s), against the zero endpoint on this machine. Writes bench/trace-lateness.md. Not a timed
# test: the figure depends on the machine's cores and load, so it is measured here and stated with them.
# Usage: scripts/bench/trace-lateness.sh [TRACE] (default ../shared/data/traces/mooncake_conversation_trace.jsonl.xz)
# SERVELAB_BIN_DIR=DIR measures the servelab and servelab-zero-endpoint in DIR instead of building this tree's
# (to compare two builds in one session); SERVELAB_BENCH_MD=FILE writes there instead of bench/trace-lateness.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
trace=${1:-../shared/data/traces/mooncake_conversation_trace.jsonl.xz}
bins=${SERVELAB_BIN_DIR:-}
if [ -z "$bins" ]; then
  cargo build --release --quiet --bins
  bins=target/release
fi
bin=$bins/servelab
zero=$(cd "$bins" && pwd)/servelab-zero-endpoint
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=${SERVELAB_BENCH_MD:-bench/trace-lateness.md}
# Two windows of 600 trace seconds (~2,000 requests, 6 s each at 100×): prompts as the trace has them
# (14k tokens on average, ~70 KB of JSON per request) and capped to 2,048 tokens, outputs capped to 16.
cat > "$tmp/spec.yaml" <<YAML
name: trace-lateness
engine:
  kind: command
  command: ["$zero", "--port", "{{ port }}", "--threads", "1"]
  port: $port
  ready_timeout: 5s
grid:
  cap: [1000000, 2048]
load:
  trace: { path: "$trace", speedup: 100, duration: 600, max_input_tokens: "{{ cap }}", max_output_tokens: 16 }
  vocab_size: 32000
  warmup: 0
  server_warmup: 0s
measure: {memory: procfs, server_metrics: false}
YAML
"$bin" run "$tmp/spec.yaml" --out "$tmp/out" --run-id r >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
python3 - "$tmp/out/trace-lateness/r/trace_replay.json" "$out" "$(nproc)" "$(date -u +%Y-%m-%d)" <<'PY'
import json, sys
replays, out, cores, day = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
lines = [
    "# Trace replay lateness at 100× the trace's rate",
    "",
    f"Made by `scripts/bench/trace-lateness.sh` on {cores} cores, {day}: 600 trace seconds of the Mooncake",
    "conversation trace at speedup 100 (the whole trace's mean is 3.4 requests/s, so 340/s; this window's own",
    "rate is in the table) against `servelab-zero-endpoint` on the same machine, release build, outputs capped",
    "to 16 tokens. Lateness is `start_s − scheduled_s` (no `max_concurrency`, so all of it is the client's own).",
    "The target is p99 ≤ 1 ms. The machine's cores are shared with other work, so compare rows of one run.",
    "",
    "| prompt cap | requests | offered req/s | late p50 | late p99 | late max |",
    "|---:|---:|---:|---:|---:|---:|",
]
for r in replays:
    t = r["trace"]
    cap = t.get("max_input_tokens") or "none"
    rate = (t["requests"] - 1) / (t["span_s"] / t["speedup"])
    l = r["late"]
    lines.append(f"| {cap} | {r['requests']} | {rate:.0f} | {l['p50']*1e3:.3f} ms | {l['p99']*1e3:.3f} ms | {l['max']*1e3:.3f} ms |")
open(out, "w").write("\n".join(lines) + "\n")
print(open(out).read())
PY
