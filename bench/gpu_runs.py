"""The runs of the full-data GPU check (bench/gpu_check.sh), in order of importance, within a time budget: a run that
would end past the deadline (judged by the last run of its kind) is skipped and listed as such.

1. the fast profile, seed 0: img/s per epoch, GPU utilisation, accuracy, time to 94%;
2. the seed profile exactly as the write-up has it (width 64, 24 epochs, lr_find; batched augmentation: the same
   pad/crop/flip/cutout on the GPU), seed 0;
3. the fast95 and fast96 profiles (after airbench95 and airbench96), seed 0 (seeds 1-2 later, in 6);
4. bench/step_overhead.py with the real fast net: a plain PyTorch loop against the recipe's Learner, img/s;
5. bench/compile_speed.py (eager against `torch.compile`d training steps of the fast net, and the compile's cost),
   then the fast profile with `--compile`, seed 0: whether compiling pays on this GPU;
6. more seeds and epoch counts of the fast, fast7, fast-progressive and quick profiles, the fast profile before Muon, and ablations.

Every run's bench JSON goes to OUT/results/; OUT/gpu_check.json (the summary, with each run's wall time itemised by
bench/fixed_cost.py) is rewritten after every run.

    python3 bench/gpu_runs.py --out OUT --data DIR [--budget 420] [--dry-run]
"""
import json, subprocess, sys, tempfile, time, traceback
from pathlib import Path
from statistics import mean

import torch
from fastcore.script import call_parse

sys.path.insert(0, str(Path(__file__).parent))
from recipe.bench import run_profile, time_to
from fixed_cost import itemise

FULL = [  # (name, profile, seed, overrides)
    ('fast-s0', 'fast', 0, {}),
    ('seed-w64-s0', 'seed', 0, dict(augment='batch')),
    ('fast95-s0', 'fast95', 0, {}),
    ('fast96-s0', 'fast96', 0, {}),
    ('step-overhead', None, None, {}),
    ('compile-speed', None, None, {}),
    ('fast-compile-s0', 'fast', 0, dict(compile=True)),
    *[(f'fast-s{s}', 'fast', s, {}) for s in (1, 2, 3, 4)],
    *[(f'quick-s{s}', 'quick', s, {}) for s in (0, 1)],
    *[(f'fast-e7-s{s}', 'fast', s, dict(epochs=7)) for s in (0, 1, 2, 3, 4)],
    *[(f'fast7-s{s}', 'fast7', s, {}) for s in (0, 1, 2, 3, 4)],
    *[(f'fast-progressive-s{s}', 'fast-progressive', s, {}) for s in (0, 1, 2, 3, 4)],
    ('quick-e1-s0', 'quick', 0, dict(epochs=1)),
    ('fast-sgd-s0', 'fast-sgd', 0, {}),
    ('fast-sgd-e10-s0', 'fast-sgd', 0, dict(epochs=10)),
    ('fast-sgd-e10-alternate-flip-s0', 'fast-sgd', 0, dict(epochs=10, ablation='alternate-flip')),
    *[(f'fast-ablation-{a}-s0', 'fast', 0, dict(ablation=a)) for a in ('random-flip', 'sgd', 'no-whitening', 'no-label-smoothing', 'no-identity-init')],
    *[(f'fast95-s{s}', 'fast95', s, {}) for s in (1, 2)],
    *[(f'fast-s{s}', 'fast', s, {}) for s in (5, 6, 7, 8, 9)],
    *[(f'fast96-s{s}', 'fast96', s, {}) for s in (1, 2)],
]
DRY = [('fast-s0', 'fast', 0, dict(epochs=2, width=8, bs=50)), ('seed-w64-s0', 'seed', 0, dict(augment='batch', epochs=1, width=8, bs=50)),
       ('step-overhead', None, None, {}), ('compile-speed', None, None, {}), ('quick-s0', 'quick', 0, dict(epochs=1, width=8, bs=50)),
       ('fast96-s0', 'fast96', 0, dict(epochs=2, width=8, bs=50))]


class Utilisation:
    "nvidia-smi's GPU utilisation every 200 ms while a run lasts (nothing where there is no nvidia-smi)"
    def __init__(self, path): self.path = Path(path)
    def __enter__(self):
        try: self.proc = subprocess.Popen(['nvidia-smi', '--query-gpu=utilization.gpu', '--format=csv,noheader,nounits', '-lms', '200'],
                                          stdout=open(self.path, 'w'), stderr=subprocess.DEVNULL)
        except OSError: self.proc = None
        return self
    def __exit__(self, *exc):
        if self.proc: self.proc.terminate(); self.proc.wait()
    def mean(self):
        v = [float(x) for x in self.path.read_text().split() if x.replace('.', '').isdigit()] if self.path.exists() else []
        return dict(mean=round(mean(v), 1), samples=len(v)) if v else None


def summary_of(path) -> dict:
    r = json.loads(Path(path).read_text())
    secs = [e['seconds'] for e in r['per_epoch']]
    return dict(complete=r['complete'], epochs=r['epochs'], test_accuracy=r.get('test_accuracy'),
                test_accuracy_no_tta=r.get('test_accuracy_no_tta'), wall_seconds=r['wall_seconds'],
                epoch_seconds=secs, train_img_per_s_best_epoch=round(r['data']['n_train'] / min(secs)) if secs else None,
                time_to_94=time_to(r, 0.94), time_to_90=time_to(r, 0.90), precision=r.get('precision'),
                n_train=r['data']['n_train'], n_test=r['data']['n_test'], git_commit=r.get('git_commit'), file=Path(path).name,
                fixed_cost=itemise(r) if r['complete'] and 'phases' in r else None)  # bench/fixed_cost.py


def run_one(name, profile, seed, o, out, data, runs, dry_run) -> dict:
    "One run of the plan: a bench script's measurements, or a profile's run (its folder in `runs`) summarised"
    if name == 'compile-speed':
        import compile_speed
        res = compile_speed.measure('fast', **(dict(steps=2, bs=8, width=8) if dry_run else dict(steps=20)))
        print(json.dumps({k: v for k, v in res.items() if k not in ('machine', 'versions')}), flush=True)
        return res
    if name == 'step-overhead':
        import step_overhead
        f = out/'step_overhead.json'
        step_overhead.main.__wrapped__(data=data, bs=2000 if not dry_run else 32, epochs=3 if not dry_run else 2,
                                       model='fast' if not dry_run else 'zero', json_out=str(f), threads=torch.get_num_threads())
        return json.loads(f.read_text())
    with Utilisation(runs/f'{name}.util') as util:
        path = run_profile(profile, seed=seed, data=data, results=out/'results', runs=runs, **o)
    return summary_of(path) | dict(gpu_utilisation=util.mean())


@call_parse
def main(out: str = 'gpu_check',  # folder for gpu_check.json and results/
         data: str = None,     # CIFAR-10 in fastai's layout (the full data); default $RECIPE_DATA
         budget: float = 420,  # seconds for all the runs
         dry_run: bool = False):  # a few short runs (any device): for the test of this script
    "Run the GPU check's plan within the budget"
    t0, out = time.time(), Path(out)
    (out/'results').mkdir(parents=True, exist_ok=True)
    # the run folders stay out of OUT (checkpoints are large) and are removed at the end: their bench JSONs are in OUT/results
    runs = tempfile.TemporaryDirectory(prefix='gpu_check_runs-', ignore_cleanup_errors=True)
    summary = dict(gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch=torch.__version__,
                   dry_run=dry_run, budget_s=budget, runs={}, skipped=[], failed={})
    took = {}  # kind of run -> seconds its last one took
    for name, profile, seed, o in DRY if dry_run else FULL:
        kind = (name if profile is None else profile, o.get('epochs'), o.get('ablation'), o.get('compile'))
        left = budget - (time.time() - t0)
        if took.get(kind, 0) * 1.1 > left or left < 5: summary['skipped'].append(name); continue
        print(f'== {name} ({left:.0f} s left)', flush=True)
        t = time.time()
        try: summary['runs'][name] = run_one(name, profile, seed, o, out, data, Path(runs.name), dry_run)
        except Exception as e:
            summary['failed'][name] = ''.join(traceback.format_exception_only(e)).strip()[-2000:]
            traceback.print_exc()
        took[kind] = time.time() - t
        summary['seconds'] = round(time.time() - t0, 1)
        fast = [r['test_accuracy'] for n, r in summary['runs'].items()  # fast-s<N>: the fast profile as it is
                if n.startswith('fast-s') and n[len('fast-s'):].isdigit() and r.get('complete')]
        if fast: summary['fast_mean_tta'] = dict(n=len(fast), mean=mean(fast), min=min(fast), max=max(fast))
        (out/'gpu_check.json').write_text(json.dumps(summary, indent=1))
    runs.cleanup()
    print(json.dumps({k: v for k, v in summary.items() if k != 'runs'}, indent=1))
    keys = ('test_accuracy', 'test_accuracy_no_tta', 'wall_seconds', 'train_img_per_s_best_epoch', 'time_to_94', 'gpu_utilisation')
    for n, r in summary['runs'].items():
        print(n, r['ms'] if 'ms' in r else  # step-overhead
              {k: r[k] for k in ('eager_ms_per_step', 'compiled_ms_per_step', 'compile_s', 'pays_after_steps')} if 'compile_s' in r else
              {k: r.get(k) for k in keys})
