#!/bin/bash
# Re-packs the device kit (../shared/device/vllm-gpu-kit/build.sh KIT) into N smaller parts, so that a device
# call carrying one part plus the working tree stays under the 64 MiB a call may carry once the tracked tree
# outgrows the ~4 MiB the kit's 60 MiB parts leave. The kit's install.sh joins the big wheel's chunks by name
# from every part and takes the small wheels from any part, so only the packing changes.
#   scripts/device/resplit-kit.sh .kit .kit4 4     # then carry .kit4/part01 … part04, installing with the last
set -euo pipefail
KIT=${1:?kit folder made by build.sh}; OUT=${2:?new folder}; N=${3:-4}
rm -rf "$OUT"; mkdir -p "$OUT"
last=$(ls -d "$KIT"/part* | sort | tail -1)
big=$(ls "$KIT"/part*/*.whl.part-* | sed 's#.*/##; s#\.part-[a-z]*$##' | sort -u)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat $(ls "$KIT"/part*/"$big".part-* | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2) > "$tmp/$big"
small=$(du -cb "$last"/* | tail -1 | cut -f1); small=$((small - $(du -cb "$last"/*.part-* | tail -1 | cut -f1)))
total=$(( $(stat -c %s "$tmp/$big") + small ))
chunk=$(( (total / N) + 1048576 ))
split -b "$chunk" -a 2 "$tmp/$big" "$tmp/$big.part-"
i=0; for c in "$tmp/$big".part-*; do i=$((i+1)); mkdir -p "$OUT/part0$i"; mv "$c" "$OUT/part0$i/"; done
# The installer, its lists and the small wheels go with the last chunk, as build.sh packs them.
find "$last" -maxdepth 1 -type f ! -name '*.part-*' -exec cp {} "$OUT/part0$i/" \;
du -sb "$OUT"/part* | awk '{printf "%s %.1f MiB\n", $2, $1/1048576}'
