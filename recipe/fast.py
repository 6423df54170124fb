"""The fast profiles' training pieces, after airbench94 and airbench94_muon: Muon for the conv filters with Nesterov
SGD for the rest (or Nesterov SGD alone), their LR schedules, lookahead, a whitening bias trained only at first,
the alternating flip, and bf16 autocast on CPUs that have bf16 instructions. All are fastai optimizer steps or
callbacks around an ordinary `Learner.fit`."""
import math
import numpy as np
import torch
from fastai.vision.all import Callback, Optimizer, ParamScheduler, SchedLin, average_grad, combine_scheds, l2_reg

from .config import PRECISIONS
from .distributed import unwrap

__all__ = ['nesterov_step', 'NesterovSGD', 'param_groups', 'triangle', 'orthogonalize', 'muon_step', 'MuonSGD',
           'muon_groups', 'linear_decay', 'Lookahead', 'WhitenBias', 'AlternatingFlip', 'CPUAutocast', 'BF16_FLAGS', 'cpu_flags',
           'choose_precision']


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

def orthogonalize(G, steps=3, eps=1e-7):
    """(rows, cols) -> roughly U V^T of G's SVD, by `steps` quintic Newton-Schulz iterations with Muon's published
    coefficients (tuned for speed: singular values end near 1, between about 0.5 and 1.5, not exactly 1). bf16 on a
    GPU, as Muon does; fp32 on a CPU, where these few small products cost nothing next to a training step."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    X = X / (X.norm() + eps)  # every singular value <= 1, where the iteration converges
    wide = X.size(0) <= X.size(1)
    if not wide: X = X.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X if wide else X.T).to(G.dtype)


def muon_step(p, lr, mom, grad_avg, **kwargs):
    """Conv filters (4-d): Muon. The Nesterov momentum g + mom v, flattened to (out, in x k x k), orthogonalized; the
    filters are first rescaled to norm sqrt(out) (airbench94_muon's weight normalization, which takes the place of
    weight decay), so the LR is the step's size relative to the weights. Anything else: Nesterov SGD."""
    if p.ndim != 4: return nesterov_step(p, lr, mom, grad_avg)
    update = orthogonalize((p.grad.data + mom * grad_avg).flatten(1)).view_as(p)
    p.data.mul_(math.sqrt(len(p)) / p.data.norm())
    p.data.add_(update, alpha=-lr)


def MuonSGD(params, lr, moms, wd=0.):
    "Muon for conv filters, Nesterov SGD (L2) for every other param, from fastai's optimizer steps; `moms` per group"
    opt = Optimizer(params, [l2_reg, average_grad, muon_step], lr=lr, mom=moms[-1], wd=wd)
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


class Lookahead(Callback):
    """Every `k` steps the net is pulled towards slow weights and the slow weights follow it (Zhang et al. 2019,
    "Lookahead Optimizer"; airbench94's schedule): slow = slow + (1 - d)(net - slow), net = slow, with
    d = base**k x (progress)**3, so it only bites late in training. At the end of the last epoch's training the net
    becomes the slow weights. The slow weights restart from the net at each epoch's end, so checkpoints need nothing more."""
    order = 15  # after the optimizer step
    def __init__(self, k=5, base=0.95): self.k, self.base = k, base
    def before_fit(self): self.reset()
    def reset(self): self.slow = [t.detach().clone() for t in self.floats()]
    def floats(self): return [t for t in self.learn.model.state_dict().values() if t.is_floating_point()]
    @torch.no_grad()
    def pull(self, decay):
        for net, slow in zip(self.floats(), self.slow): slow.lerp_(net, 1 - decay); net.copy_(slow)
    def after_step(self):
        step = self.epoch * self.n_iter + self.iter + 1  # not fastai's train_iter: it restarts at 0 on resume
        if step % self.k == 0: self.pull(self.base ** self.k * self.pct_train ** 3)
    def after_train(self):
        if self.epoch == self.n_epoch - 1: self.pull(1.0)
    def after_epoch(self): self.reset()


class WhitenBias(Callback):
    """The whitening conv's bias is trained for the first `epochs` epochs only, then frozen (airbench94: 3). Its
    gradient is dropped before each step rather than switched off: DDP needs the same trained parameters throughout"""
    def __init__(self, epochs=3): self.epochs = epochs
    def before_step(self):
        if self.epoch >= self.epochs: unwrap(self.learn.model)[0].bias.grad = None  # fastai's optimizer skips it


class AlternatingFlip(Callback):
    """airbench's alternating flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", section 3.6):
    each training image is flipped at random once, then every other epoch all are mirrored, so consecutive epochs see
    both sides of every image. The loader (`InMemoryDL`, flip='alternate') flips; this tells it the epoch's parity."""
    order = -10  # before the epoch's batches are drawn
    def before_train(self):
        dl = self.dls.train
        getattr(dl, 'dl', dl).flip_parity = self.epoch % 2  # a DistributedDL draws its batches from the DataLoader it wraps


# CPU flags of bf16 instructions that oneDNN uses for bf16 convolutions and matrix products: AMX (Intel Sapphire
# Rapids and later), AVX512_BF16 (Intel Cooper Lake; AMD Zen 4 and Zen 5), AVX-NE-CONVERT (newer Intel cores).
# Without them (Ice Lake, Skylake, Zen 3) oneDNN emulates bf16 and autocast is slower than fp32.
BF16_FLAGS = ('amx_bf16', 'avx512_bf16', 'avx_ne_convert')


def cpu_flags() -> set:
    "The CPU's feature flags, from /proc/cpuinfo (empty where there is none)"
    try: return {f for l in open('/proc/cpuinfo') if l.startswith('flags') for f in l.split(':', 1)[1].split()}
    except OSError: return set()


def choose_precision(precision='auto', cuda=False, cpu_bf16=True, flags=None) -> tuple:
    """('bf16'|'fp16'|'fp32', reason). A `precision` other than 'auto' is taken as given (fp16 only on CUDA). 'auto':
    on CUDA, bf16 mixed precision where the GPU has it (no loss scaling, so no host-device synchronisation per step),
    else fp16; on a CPU, bf16 autocast if it has one of BF16_FLAGS and the profile allows it (`cpu_bf16`), else fp32."""
    if precision not in PRECISIONS: raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == 'fp16' and not cuda: raise ValueError("precision fp16 needs a CUDA GPU: on a CPU choose bf16 or fp32")
    if precision != 'auto': return precision, 'chosen (--precision)'
    if cuda: return ('bf16', 'CUDA GPU with bf16') if torch.cuda.is_bf16_supported() else ('fp16', 'CUDA GPU without bf16')
    found = [f for f in BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
    if not cpu_bf16: return 'fp32', 'this profile trains in fp32 on a CPU (its accuracy in bf16 is not shown)'
    if found: return 'bf16', f"the CPU has {', '.join(found)}: bf16 autocast"
    return 'fp32', f"the CPU has none of {', '.join(BF16_FLAGS)}: bf16 would be emulated, slower than fp32"


class CPUAutocast(Callback):
    "bf16 autocast of the forward pass and loss on the CPU: fastai's MixedPrecision autocasts on CUDA only"
    order = 10
    def before_batch(self): self.autocast = torch.autocast('cpu', dtype=torch.bfloat16); self.autocast.__enter__()
    def after_pred(self): self.learn.pred = self.pred.float()
    def after_loss(self): self.leave()
    def after_cancel_batch(self): self.leave()  # also after any exception in a step (RecipeLearner._do_one_batch)
    def leave(self):
        if getattr(self, 'autocast', None) is not None: self.autocast.__exit__(None, None, None); self.autocast = None
