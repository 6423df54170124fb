"""The host's cost per training step and per epoch: a plain PyTorch loop against the recipe's `Learner` with every
callback of each profile, on a model that costs (almost) nothing, so what is timed is the loop around it.

Both see the same in-memory uint8 batches (the recipe's `InMemoryDL`, its augmentation and normalisation). The
Learner gets exactly what `recipe.train` gives it: the profile's optimizer, schedule and callbacks, the NaN check,
the run record (metrics.csv, results.json) and the checkpoint after every epoch. Per step: the training phase's
time over its steps. Per epoch: the rest of the epoch (the test pass, the record, the checkpoint). fp32 throughout.

    python bench/step_overhead.py                       # 300 training / 100 test images of noise, batch 32, 1 thread
    python bench/step_overhead.py --model fast --data DIR --bs 2000 --epochs 3   # the real fast net (e.g. on a GPU)
"""
import json, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.vision.all import Callback
from fastcore.script import call_parse
from PIL import Image

import recipe
from recipe.checkpoint import CHECKPOINT
from recipe.config import PROFILES
SEED = PROFILES['seed']  # the seed profile's settings, at any commit
from recipe.model import make_model
try:  # the package's shape since issue 17
    from recipe.callbacks import Checkpoint, ExpectedDuration, RunRecord, StopOnNaN
    from recipe.run import make_learner, recipe_of, settings_for
    fit = lambda learn, s, cbs: recipe_of(s).fit(learn, s, cbs)
    expected_duration = lambda s: ExpectedDuration(recipe_of(s).CPU_ADVICE)
except ImportError:  # older commits: the script also measures them ("before" in the README)
    from recipe.checkpoint import Checkpoint
    from recipe.record import RunRecord
    from recipe.train import ExpectedDuration, StopOnNaN, fit_fast, fit_recipe, make_learner, settings_for
    def fit(learn, s, cbs):
        if s['opt'] == 'adam': fit_recipe(learn, s['epochs'], s['lr_min'], s['lr_max'], cbs=cbs)
        elif s['opt'] == 'muon': sys.modules['recipe.train'].fit_muon(learn, s['epochs'], s, cbs=cbs)
        else: fit_fast(learn, s['epochs'], s['lr_max'], s, cbs=cbs)
    expected_duration = lambda s: ExpectedDuration(s['profile'])
FP32 = dict(precision='fp32') if 'precision' in SEED else dict(cpu_bf16=False)


def noise_folder(root, n_train=300, n_test=100, classes=10):
    "A CIFAR-layout folder of random 32x32 PNGs"
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('test', n_test)):
        for i in range(n):
            d = Path(root)/split/f'c{i % classes}'; d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d/f'{i}.png')
    return Path(root)


def tiny_model(n_out=10):
    "What the fast profiles' optimizers expect (a biased first conv, a BatchNorm bias, filters, a head), at no cost"
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 1, bias=False),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, n_out, bias=False))


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def plain_loop(dls, model, epochs):
    """(s per step, s per epoch of fixed work): SGD on the same batches, then a test pass, nothing else; channels_last
    and cuDNN's autotuning as the Learner has them"""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    model.to(memory_format=torch.channels_last)
    if dls.device.type == 'cuda': torch.backends.cudnn.benchmark = True
    train_s = fixed_s = 0.
    steps = 0
    for _ in range(epochs):
        model.train(); sync(dls.device); t = time.perf_counter()
        for x, y in dls.train:
            x, y = x.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last), y.as_subclass(torch.Tensor)  # plain tensors
            loss = F.cross_entropy(model(x), y)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); steps += 1
        sync(dls.device); t1 = time.perf_counter(); train_s += t1 - t
        model.eval()
        with torch.no_grad(): correct = sum((model(x.as_subclass(torch.Tensor)).argmax(1) == y.as_subclass(torch.Tensor)).sum()
                                            for x, y in dls.valid)
        float(correct); fixed_s += time.perf_counter() - t1
    return train_s / steps, fixed_s / epochs


class Phases(Callback):
    "Times the training phase and the rest of each epoch (the test pass and every callback's after_epoch)"
    order = 1000  # after_epoch last: after the record and the checkpoint
    def before_fit(self): self.train_s, self.fixed_s, self.steps = 0., 0., 0
    def before_train(self): sync(self.dls.device); self.t = time.perf_counter()
    def after_batch(self):
        if self.training: self.steps += 1
    def after_train(self): sync(self.dls.device); self.t1 = time.perf_counter(); self.train_s += self.t1 - self.t
    def after_epoch(self): self.fixed_s += time.perf_counter() - self.t1


def learner_loop(dls, model, profile, epochs, out):
    "(s per step, s per epoch) of `profile`'s Learner, as `recipe.train` sets it up, around `model`"
    lrs = dict(lr_min=1e-4, lr_max=1e-3) | (dict(sgd_lr=1e-3, head_lr=1e-3) if 'sgd_lr' in SEED else {})  # the LRs do not matter here
    s = settings_for(profile, dict(FP32, epochs=epochs, **lrs))
    learn = make_learner(dls, path=out, settings=s)
    learn.model = model
    record = dict(profile=profile, record_to=[])
    phases = Phases()
    cbs = [StopOnNaN(), Checkpoint(Path(out)/CHECKPOINT, s), RunRecord(record, Path(out)/'metrics.csv', [Path(out)/'results.json'], time.perf_counter()),
           expected_duration(s), phases]
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch table
        fit(learn, s, cbs)
    return phases.train_s / phases.steps, phases.fixed_s / epochs


@call_parse
def main(data: str = None,      # a CIFAR-layout folder; default: 300 training and 100 test images of noise
         bs: int = 32,          # batch size (the test batches are twice that, as in the recipe)
         epochs: int = 20,      # epochs of each loop (the first is left out of neither: all are timed)
         threads: int = 1,      # torch threads on a CPU
         model: str = 'zero',   # 'zero': a model that costs nothing; 'fast': the fast profile's net
         profiles: str = None,  # the profiles whose Learner is timed (comma-separated); default seed and the fast ones
         json_out: str = None): # also write the results here
    "Print ms per step and per epoch of a plain loop and of each profile's Learner"
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(data) if data else noise_folder(Path(tmp)/'data')
        dls = recipe.image_dls(path, bs=bs, seed=0, augment='batch')
        new = (lambda: tiny_model(len(dls.vocab))) if model == 'zero' else (lambda: make_model('fast', len(dls.vocab), 64))
        torch.manual_seed(0)
        rows = {'plain PyTorch loop': plain_loop(dls, new().to(dls.device), epochs)}
        for p in profiles.split(',') if profiles else [p for p in ('seed', 'fast', 'fast-sgd') if p in PROFILES]:
            if p not in PROFILES: raise recipe.RecipeError(f"unknown profile {p!r}: choose among {', '.join(PROFILES)}")
            out = Path(tmp)/p; out.mkdir()
            torch.manual_seed(0)
            rows[f'Learner, {p} profile'] = learner_loop(dls, new().to(dls.device), p, epochs, out)
    n_train, n_test = len(dls.train_ds), len(dls.valid_ds)
    print(f"{model} model, {n_train} training / {n_test} test images, batch {bs}, {epochs} epochs, device {dls.device}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'':28}{'ms per step':>12}{'ms per epoch (fixed)':>22}{'ms per epoch (all)':>20}")
    for name, (step, fixed) in rows.items():
        print(f"{name:28}{1e3*step:>12.2f}{1e3*fixed:>22.1f}{1e3*(step*len(dls.train) + fixed):>20.1f}")
    if json_out:
        Path(json_out).write_text(json.dumps(dict(model=model, n_train=n_train, n_test=n_test, bs=bs, epochs=epochs,
                                                  device=str(dls.device), threads=torch.get_num_threads(), steps_per_epoch=len(dls.train),
                                                  ms={k: dict(per_step=1e3*a, per_epoch_fixed=1e3*b) for k, (a, b) in rows.items()}), indent=1))
