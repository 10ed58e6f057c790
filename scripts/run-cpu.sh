#!/usr/bin/env bash
# The main job on a fresh machine: install vLLM for CPU (cached), make the local tiny model, build servelab,
# and run a CPU experiment (default: the KV-scaling reference experiment A).
#
#   scripts/run-cpu.sh [SPEC] [servelab run options...]
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:-experiments/cpu/kv_scaling.yaml}"
shift || true

venv="$(scripts/setup-vllm-cpu.sh | tail -n 1)"
"$venv/bin/python" scripts/make-tiny-model.py
cargo build --release --locked
# The spec's default engine command is `vllm serve ...`; the venv's bin/ provides it.
PATH="$venv/bin:$PATH" exec ./target/release/servelab run "$spec" "$@"
