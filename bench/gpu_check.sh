#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU (under 8 minutes): the GPU-relevant tests, the loader speed of both
# augmentation paths, 2 epochs of the seed profile at width 64 with each path (training img/s, GPU utilisation
# from nvidia-smi), and the fast profile once. It measures speed and correctness on a small data subset, not
# full-data accuracy. Results: OUT/gpu_check.json (summary), OUT/tests.log and one results JSON per run.
#
#   here:  bash bench/gpu_wheels.sh && python bench/subset.py --data ../shared/cifar10 --out gpu_data --train 1500 --test 200
#   there: bash bench/gpu_check.sh OUT gpu_data [.whl]
# For a Python with torch but without fastai or albumentations, the wheels (.whl/, from bench/gpu_wheels.sh) are
# installed without dependencies into /tmp/site. The package runs from this checkout.
set -uo pipefail
out=${1:?usage: bench/gpu_check.sh OUT DATA [WHEELS]}; data=${2:?usage: bench/gpu_check.sh OUT DATA [WHEELS]}; wheels=${3:-.whl}
mkdir -p "$out"; runs=$(mktemp -d)   # run folders stay out of OUT: checkpoints are large
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU seen by torch")' || exit 1
if ! python3 -c 'import fastai, albumentations' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

echo "== tests (GPU paths: batch augmentation on the device, fast profile, checkpoints)"
RECIPE_DATA=$data timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_fast.py tests/test_model.py tests/test_own_data.py 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== loader speed, both paths"
timeout 100 python3 bench/loader_speed.py --data "$data" --batches 20 --json-out "$runs/loader_speed.json"

sample_gpu() {  # GPU utilisation (%) every 200 ms into $1 while the command after it runs
  local f=$1; shift
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$f" & local pid=$!; fi
  "$@"; local rc=$?
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  return $rc
}
for augment in albumentations batch; do
  echo "== seed profile, width 64, 2 epochs, --augment $augment"
  sample_gpu "$runs/util-seed-$augment.txt" timeout 100 python3 -m recipe train --data "$data" --width 64 --epochs 2 \
    --lr-min 1e-3 --lr-max 1e-2 --seed 0 --augment "$augment" --out "$runs/seed-$augment"
  cp "$runs/seed-$augment/results.json" "$out/seed-w64-$augment.json" 2>/dev/null
done
echo "== fast profile"
sample_gpu "$runs/util-fast.txt" timeout 120 python3 -m recipe train --data "$data" --profile fast --seed 0 --out "$runs/fast"
cp "$runs/fast/results.json" "$out/fast.json" 2>/dev/null

python3 - "$runs" "$out" "$tests_rc" <<'PY'
import json, sys, pathlib, torch
runs, out, tests_rc = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
def util(name):
    f = runs/f'util-{name}.txt'
    v = [float(x) for x in f.read_text().split()] if f.exists() else []
    return dict(mean=sum(v)/len(v), samples=len(v)) if v else None
def run(name):
    f = runs/name/'results.json'
    if not f.exists(): return None
    r = json.loads(f.read_text())
    e = r['per_epoch'][-1] if r['per_epoch'] else None  # the last epoch: warm
    return dict(complete=r['complete'], test_accuracy=r.get('test_accuracy'), wall_seconds=r['wall_seconds'],
                last_epoch_seconds=e and e['seconds'], train_img_per_s_last_epoch=e and r['data']['n_train'] / e['seconds'],
                precision=r.get('precision'), n_train=r['data']['n_train'], n_test=r['data']['n_test'])
loader = runs/'loader_speed.json'
summary = dict(gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch=torch.__version__, tests_exit_status=tests_rc,
               loader_speed=json.loads(loader.read_text()) if loader.exists() else None,
               seed_w64_albumentations=run('seed-albumentations') | {'gpu_utilisation': util('seed-albumentations')} if run('seed-albumentations') else None,
               seed_w64_batch=run('seed-batch') | {'gpu_utilisation': util('seed-batch')} if run('seed-batch') else None,
               fast=run('fast') | {'gpu_utilisation': util('fast')} if run('fast') else None)
(out/'gpu_check.json').write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
