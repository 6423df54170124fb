"""The fast profile's training pieces, after airbench94: Nesterov SGD, a triangular LR schedule, lookahead, a
whitening bias trained only at first, and bf16 autocast on CPUs that have AMX. All are fastai optimizer steps or
callbacks around an ordinary `Learner.fit`."""
import numpy as np
import torch
from fastai.vision.all import Callback, Optimizer, ParamScheduler, SchedLin, average_grad, combine_scheds, l2_reg

from .distributed import unwrap

__all__ = ['nesterov_step', 'NesterovSGD', 'param_groups', 'triangle', 'Lookahead', 'WhitenBias', 'CPUAutocast',
           'cpu_has_amx']


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


def cpu_has_amx() -> bool:
    "Intel AMX (Sapphire Rapids and later): oneDNN runs bf16 convolutions on it (README: 1.8x-3.6x the fp32 speed here)"
    try: return 'amx_bf16' in open('/proc/cpuinfo').read()
    except OSError: return False


class CPUAutocast(Callback):
    "bf16 autocast of the forward pass and loss on the CPU: fastai's MixedPrecision autocasts on CUDA only"
    order = 10
    def before_batch(self): self.autocast = torch.autocast('cpu', dtype=torch.bfloat16); self.autocast.__enter__()
    def after_pred(self): self.learn.pred = self.pred.float()
    def after_loss(self): self.autocast.__exit__(None, None, None)
    def after_cancel_batch(self): self.autocast.__exit__(None, None, None)
