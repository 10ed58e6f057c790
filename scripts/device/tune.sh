#!/usr/bin/env bash
# `servelab tune` on a device machine across several device calls (10 minutes at most each): every call goes on
# from the run folder in /tmp/runs (`--resume`), starts at most MAX_STARTS servers, and ships the folder back.
# The kit must be installed and /tmp/model made (../shared/device/README.md).
#   [RESUME_TGZ=tune.tgz] scripts/device/tune.sh BIN_DIR OUT_DIR SPEC MAX_STARTS [SECONDS]
# BIN_DIR holds servelab; OUT_DIR receives a tar of the run folder and the console; SECONDS bounds the call
# (default 560): past it servelab gets SIGINT and stops as after any signal, and the next call resumes.
set -euo pipefail
bin=$(cd "$1" && pwd)
out="$2"
spec="$3"
starts="$4"
limit="${5:-560}"
export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 PATH=/opt/torch/.venv/bin:$PATH
runs=/tmp/runs
id=tune
name=$(sed -n 's/^name: *//p' "$spec")
mkdir -p "$out" "$runs"
# A run folder brought back from an earlier device session (the tar this script left in OUT_DIR, carried in
# and named by RESUME_TGZ) goes on where it stopped, on a fresh machine as on a warm one.
if [ -n "${RESUME_TGZ:-}" ] && [ ! -d "$runs/$name/$id" ]; then
  mkdir -p "$runs/$name" && tar xzf "$RESUME_TGZ" -C "$runs/$name"
fi
resume=()
[ -d "$runs/$name/$id" ] && resume=(--resume "$runs/$name/$id")
rc=0
timeout --signal=INT --kill-after=30 "$limit" "$bin/servelab" tune "$spec" --out "$runs" --run-id "$id" \
  --max-starts "$starts" "${resume[@]}" >>"$out/$id-console.txt" 2>&1 || rc=$?
echo "servelab tune exited $rc" >>"$out/$id-console.txt"
"$bin/servelab" compress "$runs/$name/$id" >/dev/null 2>>"$out/$id-console.txt" || echo "compress failed: records left plain" >>"$out/$id-console.txt"
tar czf "$out/$id.tgz" -C "$runs/$name" "$id"
tail -n 40 "$out/$id-console.txt"
