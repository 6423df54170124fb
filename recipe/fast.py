"""The fast recipe, after airbench94 and airbench94_muon: the fast net (recipe/model.py: FastNet, its whitening
init), Muon for the conv filters with Nesterov SGD for the rest (or Nesterov SGD alone), and their fixed LR
schedules; its callbacks (lookahead, the whitening bias, the alternating flip) are in recipe/callbacks.py and TTA in
recipe/inference.py. All are fastai optimizer steps and schedulers around an ordinary `Learner.fit`.

Its interface, the same as recipe/seed.py's: `optimizer(s)`, `pick_lrs(learn, s, out)`, `lr_text(s)`, `fit(learn, s, cbs, start_epoch)`,
`CPU_ADVICE`.
"""
import math
from functools import partial

import numpy as np
import torch
from fastai.basics import Optimizer, average_grad, l2_reg, step_stat
from fastai.callback.schedule import ParamScheduler, SchedLin, combine_scheds

from .distributed import unwrap
from .record import TABLE_HEADER, print_row

CPU_ADVICE = None  # the fast recipe is the advice: nothing to add to its expected duration

__all__ = ['CPU_ADVICE', 'nesterov_step', 'NesterovSGD', 'param_groups', 'triangle', 'orthogonalize', 'muon_step', 'MuonSGD',
           'muon_groups', 'linear_decay', 'optimizer', 'pick_lrs', 'lr_text', 'fit_muon', 'fit_fast', 'fit']


def nesterov_step(p, lr, mom, grad_avg, **kwargs):
    "PyTorch's Nesterov form, p -= lr (g + mom v) with v = mom v + g: fastai's SGD has no Nesterov step"
    p.data.add_(p.grad.data + mom * grad_avg, alpha=-lr)


def NesterovSGD(params, lr, mom=0.9, wd=0.):
    "SGD with Nesterov momentum and L2 (coupled) weight decay, from fastai's optimizer steps"
    return Optimizer(params, [l2_reg, average_grad, nesterov_step], lr=lr, mom=mom, wd=wd)


def param_groups(model):
    """Splitter: [BatchNorm biases, everything else]; the BN biases get a higher LR (airbench's bias_scaler). The
    main group is last: fastai's Recorder (and so the LR plot) follows the last group."""
    bn_biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ids = {id(p) for p in bn_biases}
    return [bn_biases, [p for p in model.parameters() if id(p) not in ids]]


def triangle(lrs, start, peak_at, end):
    """ParamScheduler for the LR of each param group: linear from start x lr up to lr at `peak_at` (a fraction of
    training), then linear down to end x lr. Schedules are data: `triangle(...)['lr'](pct)` can be plotted."""
    lrs = np.array(lrs)
    return ParamScheduler({'lr': combine_scheds([peak_at, 1 - peak_at], [SchedLin(start * lrs, lrs), SchedLin(lrs, end * lrs)])})


# Muon (Keller Jordan et al. 2024, "Muon: an optimizer for hidden layers", and airbench94_muon.py in cifar10-airbench):
# the momentum of each conv filter bank's gradient is replaced by the nearest semi-orthogonal matrix before the step.

def orthogonalize(G, steps=3, eps=1e-7, bf16=False):
    """(rows, cols) -> roughly U V^T of G's SVD, by `steps` quintic Newton-Schulz iterations with Muon's published
    coefficients (tuned for speed: singular values end near 1, between about 0.5 and 1.5, not exactly 1). In bf16 on a
    GPU, as Muon does, and on a CPU with `bf16` (a run in bf16 autocast: there fp32 took 3-5% of a training step, bf16
    a third of that); else fp32."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda or bf16 else torch.float32)
    X = X / (X.norm() + eps)  # every singular value <= 1, where the iteration converges
    wide = X.size(0) <= X.size(1)
    if not wide: X = X.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X if wide else X.T).to(G.dtype)


def muon_step(p, lr, mom, grad_avg, step=1, renorm_every=1, filter_wd=0., bf16=False, **kwargs):
    """Conv filters (4-d): Muon. The Nesterov momentum g + mom v, flattened to (out, in x k x k), orthogonalized; the
    filters are first rescaled to norm sqrt(out) on every `renorm_every`-th step (airbench94_muon: every step; Hiverge's
    cifar10-speedrun: every 8th, with weight decay), so the LR is the step's size relative to the weights; then they
    shrink by lr x `filter_wd`. `step` counts from 1 (fastai's step_stat); `bf16`: orthogonalize in bf16. Anything
    else: Nesterov SGD."""
    if p.ndim != 4: return nesterov_step(p, lr, mom, grad_avg)
    update = orthogonalize((p.grad.data + mom * grad_avg).flatten(1), bf16=bf16).view_as(p)
    if step % renorm_every == 0: p.data.mul_(math.sqrt(len(p)) / p.data.norm())
    p.data.add_(update, alpha=-lr)
    if filter_wd: p.data.mul_(1 - lr * filter_wd)


def MuonSGD(params, lr, moms, wd=0., renorm_every=1, filter_wd=0., bf16=False):
    """Muon for conv filters, Nesterov SGD (L2) for every other param, from fastai's optimizer steps; `moms` per group.
    `bf16` is bound to the step, not a hyper-parameter: a checkpoint's hypers (fastai restores them whole) must not
    carry the precision of the machine that saved it to the one that resumes it."""
    opt = Optimizer(params, [l2_reg, average_grad, step_stat, partial(muon_step, bf16=bf16)], lr=lr, mom=moms[-1], wd=wd,
                    renorm_every=renorm_every, filter_wd=filter_wd)
    opt.set_hyper('mom', list(moms))
    return opt


def muon_groups(model):
    """Splitter: [whitening bias, BatchNorm biases, head, conv filters] (the groups of airbench94_muon). Frozen params
    (the whitening weights, BatchNorm scales) fall in no group. The filters are last: fastai's Recorder follows them."""
    net = unwrap(model)
    trained = [p for p in net.parameters() if p.requires_grad]
    whiten, head = [net[0].bias], [p for p in trained if p.ndim == 2]
    filters = [p for p in trained if p.ndim == 4]
    ids = {id(p) for p in whiten + head + filters}
    return [whiten, [p for p in trained if id(p) not in ids], head, filters]


def linear_decay(lrs, zero_at):
    """ParamScheduler for the LR of each group: linear from lrs[i] at the start to 0 at `zero_at[i]` (a fraction of
    training), then 0 (airbench94_muon: the whitening bias reaches 0 after 3 epochs, the rest at the end)"""
    lrs, zero_at = np.array(lrs, dtype=float), np.array(zero_at, dtype=float)
    return ParamScheduler({'lr': lambda pct: lrs * np.clip(1 - pct / zero_at, 0, 1)})


def optimizer(s) -> dict:
    """The Learner's optimizer: Muon with its four groups (`muon_groups`), or Nesterov SGD with two; weight decay on
    BatchNorm and biases too (airbench's). `s['precision']`: the one chosen ('bf16': Muon orthogonalizes in bf16)"""
    if s['precision'] not in ('fp32', 'bf16', 'fp16'):
        raise ValueError(f"the optimizer needs the precision chosen for the run (fp32, bf16 or fp16), got {s['precision']!r}")
    if s['opt'] == 'muon':
        return dict(opt_func=lambda params, lr: MuonSGD(params, lr, moms=[s['sgd_mom']] * 3 + [s['mom']], renorm_every=s['renorm_every'],
                                                        filter_wd=s['filter_wd'], bf16=s['precision'] == 'bf16'),
                    splitter=muon_groups, wd_bn_bias=True)
    return dict(opt_func=lambda params, lr: NesterovSGD(params, lr, mom=s['mom']), splitter=param_groups, wd_bn_bias=True)


def pick_lrs(learn, s, out) -> dict:
    "The LRs are the profile's (tuned by airbench): no lr_find"
    return dict(lr_min=s['lr_min'], lr_max=s['lr_max'], lr_find={})


def lr_text(s) -> str:
    if s['opt'] == 'muon': return (f"LR (fixed, decaying linearly to 0): filters {s['lr_max']:.2e} (Muon), biases {s['sgd_lr']:.3g}, "
                                   f"head {s['head_lr']:.3g} (Nesterov SGD)")
    start, _, end = s['schedule']
    return f"LR {start*s['lr_max']:.2e} -> {s['lr_max']:.2e} -> {end*s['lr_max']:.2e} (fixed)"


def fit_muon(learn, epochs, settings, cbs=None, start_epoch=0):
    """The Muon profiles: each group's LR (`muon_groups`: whitening bias, BatchNorm biases, head, filters) decays
    linearly to 0, the whitening bias's by the end of its `whiten_bias_epochs`, the rest by the end of training. The
    SGD groups get coupled L2 of wd / (group's LR); the filters none (Muon rescales them instead)."""
    if learn.logger is print_row: print_row(TABLE_HEADER)
    s = settings
    lrs = [s['sgd_lr'], s['sgd_lr'], s['head_lr'], s['lr_max']]
    zero_at = [min(1, s['whiten_bias_epochs'] / epochs) if s['whiten_bias_epochs'] else 1, 1, 1, 1]
    learn.fit(epochs, lr=lrs, wd=[s['wd'] / lr for lr in lrs[:3]] + [0], cbs=[linear_decay(lrs, zero_at)] + (cbs or []),
              start_epoch=start_epoch)


def fit_fast(learn, epochs, lr_max, settings, cbs=None, start_epoch=0):
    """The fast profiles: their `schedule` (a triangle, TRIANGLE) x lr_max per param group (the BatchNorm biases x bias_lr), coupled L2 of
    wd / (group's peak LR), so every weight shrinks by `wd` per step at the peak."""
    if learn.logger is print_row: print_row(TABLE_HEADER)
    lrs = [lr_max * settings['bias_lr'], lr_max]  # the groups of `param_groups`
    learn.fit(epochs, lr=lrs, wd=[settings['wd'] / lr for lr in lrs], cbs=[triangle(lrs, *settings['schedule'])] + (cbs or []),
              start_epoch=start_epoch)


def fit(learn, s, cbs=None, start_epoch=0):
    if s['opt'] == 'muon': fit_muon(learn, s['epochs'], s, cbs=cbs, start_epoch=start_epoch)
    else: fit_fast(learn, s['epochs'], s['lr_max'], s, cbs=cbs, start_epoch=start_epoch)
