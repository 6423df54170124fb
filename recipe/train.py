"""Training: `Learner` with Adam and cross-entropy, LRMIN/LRMAX from `lr_find`, `fit_one_cycle` peaking at 5/24.

    import recipe
    learn = recipe.train(data='path/to/cifar10', width=32, seed=0)   # returns the fitted fastai Learner
"""
import json, sys, time
from datetime import datetime
from pathlib import Path

import torch
from fastai.vision.all import (Adam, Callback, CrossEntropyLossFlat, Learner, ProgressCallback, accuracy, default_device,
                               minimum, set_seed, slide, steep, valley)
from fastcore.imports import IN_NOTEBOOK

from .config import BS, CIFAR_MEAN, CIFAR_STD, EPOCHS, LR_RATIO, LRMAX_PER_MINIMUM, PEAK_AT, WD, WIDTH
from .checkpoint import CHECKPOINT, Checkpoint, load_checkpoint, restore
from .data import RecipeError, cifar_dls
from .model import CustomResNet
from .plots import plot_lr_find, save_fig, save_run_plots
from .record import RunRecord, data_info, git_commit, machine_info, save_weights, versions

__all__ = ['train', 'make_learner', 'fit_recipe', 'StopOnNaN', 'check_options', 'check_out', 'make_out', 'choose_lrs', 'find_lrs', 'print_row']


def check_options(epochs, bs, width, lr_min, lr_max, seed):
    "Reject bad options before any work, naming the value"
    for name, v in dict(epochs=epochs, bs=bs, width=width).items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0: raise RecipeError(f"{name} must be a positive integer, got {v!r}")
    for name, v in dict(lr_min=lr_min, lr_max=lr_max).items():
        if v is not None and not (isinstance(v, (int, float)) and 0 < v < float('inf')): raise RecipeError(f"{name} must be a positive number, got {v!r}")
    if lr_min is not None and lr_max is not None and lr_min > lr_max: raise RecipeError(f"lr_min ({lr_min}) must not exceed lr_max ({lr_max})")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0): raise RecipeError(f"seed must be a non-negative integer, got {seed!r}")


def check_out(out=None) -> Path:
    "The run folder (default runs/<timestamp>), refused if it already holds files; created later by `make_out`"
    out = Path(out) if out is not None else Path('runs')/datetime.now().strftime('%Y%m%d-%H%M%S')
    if out.exists() and (not out.is_dir() or any(out.iterdir())): raise RecipeError(f"output folder {out} already exists and is not empty: choose another --out")
    return out


def make_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out/'.write_test').touch(); (out/'.write_test').unlink()
    except OSError as e: raise RecipeError(f"cannot write to output folder {out}: {e.strerror}") from None
    return out


def find_lrs(learn) -> dict:
    "Run fastai's lr_find (a short run with the LR rising exponentially) and return all four suggestions"
    names = ('minimum', 'steep', 'valley', 'slide')
    found = learn.lr_find(suggest_funcs=(minimum, steep, valley, slide), show_plot=False)
    return {n: float(v) for n, v in zip(names, found)}


def choose_lrs(suggestions: dict, lr_min=None, lr_max=None):
    """LRMAX = 3 x `minimum` (one third of the LR where lr_find's loss was lowest: just below where it stops falling),
    LRMIN = LRMAX / 10. A given value wins; a single given one fixes the other. Why: README "Choices"."""
    if lr_max is None: lr_max = lr_min * LR_RATIO if lr_min is not None else suggestions['minimum'] * LRMAX_PER_MINIMUM
    if lr_min is None: lr_min = lr_max / LR_RATIO
    return lr_min, lr_max


TABLE_HEADER = ['epoch', 'train_loss', 'test_loss', 'test_accuracy', 'time']


CONFIG_KEYS = ('data', 'epochs', 'bs', 'width', 'lr_min', 'lr_max', 'seed', 'wd', 'skip_bad')  # what a resume needs


def print_row(row):
    "One line per epoch, flushed: readable in a log file (no progress bars, no carriage returns)"
    if len(row) < 3: return  # an epoch skipped on resume has no metrics
    print('  '.join(f'{v:>13.6f}' if isinstance(v, float) else f'{v!s:>13}' for v in row), flush=True)


def make_learner(dls, width=WIDTH, wd=WD, path='.') -> Learner:
    "The custom ResNet in a fastai `Learner`: Adam, cross-entropy, accuracy; channels_last, and fp16 on CUDA"
    learn = Learner(dls, CustomResNet(len(dls.vocab), width), loss_func=CrossEntropyLossFlat(), opt_func=Adam,
                    metrics=accuracy, wd=wd, path=path, model_dir='.')
    learn.to_channelslast(use_amp=torch.cuda.is_available())  # channels_last is ~1.5x faster on these CPUs too
    if not (IN_NOTEBOOK or sys.stdout.isatty()):
        learn.remove_cb(ProgressCallback); learn.logger = print_row
    return learn


def fit_recipe(learn, epochs, lr_min, lr_max, cbs=None, start_epoch=0):
    """fit_one_cycle: LRMIN -> LRMAX at 5/24 of the steps -> back to LRMIN (div_final = div: no annihilation).
    `start_epoch` continues a resumed run at its place in the schedule (fastai skips the epochs before it)."""
    if learn.logger is print_row: print_row(TABLE_HEADER)
    learn.fit_one_cycle(epochs, lr_max, div=lr_max/lr_min, div_final=lr_max/lr_min, pct_start=PEAK_AT, cbs=cbs,
                        start_epoch=start_epoch)


class StopOnNaN(Callback):
    "A loss that is NaN or infinite stops the run with a message; the last checkpoint stays as it was"
    order = -5
    def after_loss(self):
        if self.training and not torch.isfinite(self.loss):
            raise RecipeError(f"the training loss became {self.loss.item()} in epoch {self.epoch + 1} (batch {self.iter + 1}): "
                              f"training diverged; try a lower --lr-max than {self.opt.hypers[-1]['lr']:.2e} (the LR at that step)")


def train(data=None,      # folder in fastai's CIFAR layout; default $RECIPE_DATA, else fastai's download
          epochs=EPOCHS,  # epochs of fit_one_cycle
          bs=BS,          # batch size
          width=WIDTH,    # channels of the model's first layer (64: the original; 6,573,130 parameters)
          lr_min=None,    # LR at the start and end of the cycle; default from lr_find
          lr_max=None,    # LR at the peak (5/24 of training); default from lr_find
          seed=None,      # makes a CPU run repeatable (fastai, albumentations and DataLoader workers)
          out=None,       # run folder for metrics, weights and plots; default runs/<timestamp>
          wd=WD,          # decoupled weight decay of fastai's Adam
          skip_bad=False, # skip (and count) unreadable images and bad folders instead of stopping
          num_workers=None,  # DataLoader worker processes; default 0 on CPU (the in-memory loader keeps up)
          record_to=(),   # extra JSON files that get the run record after every epoch (the benchmark harness)
          info=None,      # extra fields for the run record
          resume=None,    # run folder to continue from its last checkpoint (its own settings; the others are ignored)
         ) -> Learner:
    "Train the custom ResNet on CIFAR-10 and save what happened to `out`; returns the fitted `Learner`"
    t0, commit = time.perf_counter(), git_commit()  # the code as it was when the run started
    start_epoch = 0
    if resume is not None:  # the run's own settings; lr_find is not run again
        ckpt, out = load_checkpoint(resume), Path(resume)
        start_epoch, cfg = ckpt['epoch'], ckpt['config']
        data, epochs, bs, width, lr_min, lr_max, seed, wd, skip_bad = (cfg[k] for k in CONFIG_KEYS)
        if start_epoch >= epochs: raise RecipeError(f"{out} finished all {epochs} epochs: nothing to resume")
        record = json.loads((out/'results.json').read_text())
        record_to = record.get('record_to', [])  # a benchmark run goes on updating its bench/results/ file
    else:
        check_options(epochs, bs, width, lr_min, lr_max, seed)
        out = check_out(out)
    if seed is not None: set_seed(seed, reproducible=True)
    if num_workers is None: num_workers = 4 if torch.cuda.is_available() else 0
    dls = cifar_dls(data, bs=bs, seed=seed, num_workers=num_workers, device=default_device(), skip_bad=skip_bad)
    make_out(out)
    learn = make_learner(dls, width, wd, path=out)

    if resume is not None:
        restore(learn, ckpt)
        record['resumed_after_epoch'] = record.get('resumed_after_epoch', []) + [start_epoch]
        print(f'resuming {out} after epoch {start_epoch} of {epochs}: LRMIN {lr_min:.2e}  LRMAX {lr_max:.2e}', flush=True)
    else:
        suggestions = {}
        if lr_min is None and lr_max is None:
            suggestions = find_lrs(learn)
            print('lr_find suggestions: ' + ', '.join(f'{k} {v:.2e}' for k, v in suggestions.items()), flush=True)
        lr_min, lr_max = choose_lrs(suggestions, lr_min, lr_max)
        if suggestions: plot_lr_find(learn.recorder, suggestions, lr_min, lr_max); save_fig(out/'lr_find.png')
        print(f'LRMIN {lr_min:.2e}  LRMAX {lr_max:.2e}', flush=True)
        record = dict(info or {}, epochs=epochs, bs=bs, width=width, seed=seed, wd=wd, lr_min=lr_min, lr_max=lr_max,
                      lr_find=suggestions, device=str(dls.device), git_commit=commit, machine=machine_info(),
                      versions=versions(), data=data_info(dls), out=str(out), record_to=[str(p) for p in record_to])

    config = dict(zip(CONFIG_KEYS, (str(dls.path), epochs, bs, width, lr_min, lr_max, seed, wd, skip_bad)))
    run_record = RunRecord(record, out/'metrics.csv', [out/'results.json', *record_to], t0, start_epoch)
    checkpoint = Checkpoint(out/CHECKPOINT, config, ckpt if resume is not None else None)
    try:
        fit_recipe(learn, epochs, lr_min, lr_max, start_epoch=start_epoch, cbs=[StopOnNaN(), checkpoint, run_record])
    except (KeyboardInterrupt, RecipeError) as e:
        why, done = 'interrupted' if isinstance(e, KeyboardInterrupt) else str(e), checkpoint.saved_epoch
        run_record.save(stopped=why)
        raise RecipeError(f"stopped ({why}). " + (f"The checkpoint after epoch {done} of {epochs} is kept in {out}; "
                          f"resume with: python -m recipe train --resume {out}" if done else "No checkpoint was saved.")) from None

    save_weights(learn.model, out/'model', dict(classes=list(dls.vocab), width=width, n_out=len(dls.vocab),
                                                 mean=CIFAR_MEAN, std=CIFAR_STD))
    save_run_plots(learn, out)
    run_record.save(complete=True, stopped=None)
    print(f"test accuracy {record['test_accuracy']:.4f}  ({record['wall_seconds']:.0f} s)  run folder: {out}", flush=True)
    return learn
