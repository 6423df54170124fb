#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU: the full CIFAR-10 trained by the fast and the seed profiles and
# more (bench/gpu_runs.py says what, in order), within BUDGET seconds (default 420), then (TESTS=1) the GPU tests.
# Results: OUT/gpu_check.json (the summary, rewritten after every run), OUT/results.tar.gz (every run's bench JSON),
# OUT/tests.log. DRY_RUN=1: a few short runs on any device, for the suite's test of this script.
#
#   here:   bash bench/gpu_wheels.sh && bash bench/gpu_shards.sh ../shared/cifar10 .gpu
#   there:  three device calls in a row (the machine stays warm between them and keeps its disk), each carrying
#           one shard and unpacking it into the same folder; the last one also runs this script:
#             call 1 (carry .gpu/train-a.tar.gz): mkdir -p /root/c10 && tar xzf .gpu/train-a.tar.gz -C /root/c10
#             call 2 (carry .gpu/train-b.tar.gz): tar xzf .gpu/train-b.tar.gz -C /root/c10
#             call 3 (carry .gpu/test.tar.gz and .whl): tar xzf .gpu/test.tar.gz -C /root/c10 && bash bench/gpu_check.sh $OUT /root/c10
# For a Python with torch but without fastai or albumentations, the wheels (.whl/, from bench/gpu_wheels.sh) are
# installed without dependencies into /tmp/site. The package runs from this checkout.
set -uo pipefail
python=${PYTHON:-python3}  # the Python to run with (the suite passes its own: a venv need not be first on PATH)
out=${1:?usage: bench/gpu_check.sh OUT DATA [WHEELS]}; data=${2:?usage: bench/gpu_check.sh OUT DATA [WHEELS]}; wheels=${3:-.whl}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${DRY_RUN:-}" ]; then
  "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU seen by torch")' || exit 1
fi
if ! "$python" -c 'import fastai, albumentations, torchmetrics' 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
n_train=$(find "$data/train" -type f | wc -l); n_test=$(find "$data/test" -type f | wc -l)
echo "== data: $data: $n_train training and $n_test test files"
[ -z "${DRY_RUN:-}" ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

"$python" bench/gpu_runs.py --out "$out" --data "$data" --budget "${BUDGET:-420}" ${DRY_RUN:+--dry-run}
rc=$?
tar -czf "$out/results.tar.gz" -C "$out" results && rm -r "$out/results"

if [ -n "${TESTS:-}" ]; then
  echo "== tests (GPU paths)"
  RECIPE_DATA=$data timeout 150 "$python" -m pytest -q -x -p no:cacheprovider tests/test_augment.py tests/test_fast.py tests/test_model.py 2>&1 | tee "$out/tests.log"
fi
exit $rc
