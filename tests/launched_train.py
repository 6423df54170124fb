"""`recipe.train()` inside a process launched by torchrun, for tests/test_distributed.py. Usage:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/launched_train.py DATA OUT [NAN_RANK]
Each rank writes OUT.rank<R>.json: how often it ran lr_find, its seed and (rank 0) the first and last steps' LRs.
NAN_RANK: that rank's loss becomes NaN at the second batch, as a diverging run's would on one rank only."""
import hashlib, json, os, sys
from pathlib import Path

import numpy as np
import torch

import recipe
import recipe.run as run_module, recipe.seed as seed_module
from recipe.callbacks import StopOnNaN
from recipe.data import AlbumentationsTransform

data, out = sys.argv[1], Path(sys.argv[2])
nan_rank = int(sys.argv[3]) if len(sys.argv) > 3 else None
rank = int(os.environ['RANK'])
calls, lrs = [], []
find_lrs, save_run_plots = seed_module.find_lrs, run_module.save_run_plots
seed_module.find_lrs = lambda learn: calls.append(1) or find_lrs(learn)
run_module.save_run_plots = lambda learn, out, *a: lrs.extend(learn.recorder.lrs) or save_run_plots(learn, out, *a)  # the plots reset them
if nan_rank == rank:
    check = StopOnNaN.after_loss
    def poisoned(self):
        if self.training and self.iter == 1: self.learn.loss = self.learn.loss * float('nan')
        check(self)
    StopOnNaN.after_loss = poisoned

# fp32: test_distributed.py compares the reported metrics with an fp32 evaluation of the saved weights, exactly
learn = recipe.train(data, epochs=2, bs=40, width=8, seed=0, out=out, precision='fp32')
# each rank's albumentations pipeline, after the same number of draws, on the same image: equal if they shared a seed
augment = next(t for t in getattr(learn.dls.train, 'dl', learn.dls.train).after_item.fs if isinstance(t, AlbumentationsTransform))
next_draw = augment.pipeline(image=np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))['image']
report = dict(lr_find_calls=len(calls), torch_seed=torch.initial_seed(), next_augmented=hashlib.sha256(next_draw.tobytes()).hexdigest())
if rank == 0: report.update(first_lr=lrs[0], last_lr=lrs[-1], steps=len(lrs))
Path(f'{out}.rank{rank}.json').write_text(json.dumps(report))
