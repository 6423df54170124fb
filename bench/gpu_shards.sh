#!/usr/bin/env bash
# Split a CIFAR-layout folder into three archives that each fit one device call (64 MiB with the working tree):
# train classes 1-5, train classes 6-10, test. gzip squeezes the tar headers (one per PNG); the PNGs stay as they are.
#     bash bench/gpu_shards.sh [DATA] [DIR]     # default $RECIPE_DATA and .gpu/ (ignored by git)
# On the GPU machine, three calls in a row each unpack one into the same folder (bench/gpu_check.sh, "full data").
set -euo pipefail
data=${1:-${RECIPE_DATA:?usage: bench/gpu_shards.sh DATA [DIR]}}; dir=${2:-.gpu}
[ -d "$data/train" ] && [ -d "$data/test" ] || { echo "gpu_shards: $data has no train/ and test/ (fastai's CIFAR layout)" >&2; exit 1; }
mkdir -p "$dir"
mapfile -t classes < <(ls "$data/train")
half=$(( (${#classes[@]} + 1) / 2 ))
tar -C "$data" -czf "$dir/train-a.tar.gz" $(printf 'train/%s ' "${classes[@]:0:$half}")
tar -C "$data" -czf "$dir/train-b.tar.gz" $(printf 'train/%s ' "${classes[@]:$half}")
tar -C "$data" -czf "$dir/test.tar.gz" test
for f in "$dir"/*.tar.gz; do echo "$f $(du -m "$f" | cut -f1) MB, $(tar -tzf "$f" | grep -c '\.png$') PNG files"; done
