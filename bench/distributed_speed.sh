#!/usr/bin/env bash
# One process (2 threads) against `torchrun --nproc_per_node 2` (1 thread each) on this machine: the same run
# (seed profile, width 16, 2 epochs, LRs given, seed 0), full data. Prints the seconds per epoch and the test
# accuracy of each and writes them to OUT/distributed_speed.json.
#     bash bench/distributed_speed.sh DATA OUT        # e.g. ../shared/cifar10 bench/results/distributed
set -euo pipefail
data=${1:?usage: bench/distributed_speed.sh DATA OUT}; out=${2:?usage: bench/distributed_speed.sh DATA OUT}
mkdir -p "$out"; runs=$(mktemp -d)
args=(train --data "$data" --width 16 --epochs 2 --lr-min 1e-3 --lr-max 1e-2 --seed 0)
python -m recipe "${args[@]}" --out "$runs/one"
OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m recipe "${args[@]}" --out "$runs/two"
python - "$runs" "$out" <<'PY'
import json, sys, pathlib
runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
res = {}
for name in ('one', 'two'):
    r = json.loads((runs/name/'results.json').read_text())
    res[name] = dict(processes=r['world_size'], threads=r['machine']['torch_threads'], epoch_seconds=[e['seconds'] for e in r['per_epoch']],
                     test_accuracy=r['test_accuracy'], wall_seconds=r['wall_seconds'], git_commit=r['git_commit'],
                     cpu=r['machine']['cpu'], n_train=r['data']['n_train'], n_test=r['data']['n_test'])
    print(f"{r['world_size']} process(es) x {r['machine']['torch_threads']} thread(s): epochs {res[name]['epoch_seconds']} s, "
          f"test accuracy {r['test_accuracy']:.4f}, wall {r['wall_seconds']} s")
(out/'distributed_speed.json').write_text(json.dumps(res, indent=1))
PY
