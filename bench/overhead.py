"""fastai's overhead: the fast profile's net on the same batches, a plain PyTorch loop against `Learner.fit`.

Both start from the same weights and see the same (already augmented) batches, with the same loss, precision and
Nesterov SGD (torch.optim.SGD in the loop, the recipe's fastai `NesterovSGD` in the Learner). Only the training
steps are timed (fastai's validation pass is left out). Each is run `--repeats` times, alternating; the fastest
of each counts.

    python bench/overhead.py --data ../shared/cifar10
"""
import copy, json, time

import torch
import torch.nn.functional as F
from fastai.vision.all import Callback, CrossEntropyLossFlat, DataLoader, DataLoaders, Learner, ProgressCallback, noop
from fastcore.script import call_parse

import recipe
from recipe.callbacks import CPUAutocast
from recipe.fast import NesterovSGD, param_groups
from recipe.model import FastNet, init_whitening
from recipe.run import choose_precision, keep_freed_memory, training_images

LR, MOM, SMOOTH = 0.3, 0.85, 0.2  # a constant LR: the schedule is not what is measured


BF16 = choose_precision('auto', torch.cuda.is_available())[0] == 'bf16' and not torch.cuda.is_available()  # as the fast profiles train here


def autocast(): return torch.autocast('cpu', dtype=torch.bfloat16, enabled=BF16)


def plain_loop(model, batches):
    "Seconds for one pass of a bare PyTorch training loop over `batches`"
    groups = param_groups(model)
    opt = torch.optim.SGD([dict(params=g) for g in groups], lr=LR, momentum=MOM, nesterov=True)
    model.train()
    t = time.perf_counter()
    for x, y in batches:
        with autocast(): loss = F.cross_entropy(model(x), y, label_smoothing=SMOOTH)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


class TrainTimer(Callback):
    "Seconds from the start to the end of the training phase of the epoch"
    def before_train(self): self.t = time.perf_counter()
    def after_train(self): self.seconds = time.perf_counter() - self.t


def fastai_fit(model, batches):
    "Seconds for the training phase of `Learner.fit(1)` over the same `batches`"
    dls = DataLoaders(DataLoader(batches, bs=None), DataLoader(batches[:1], bs=None))
    timer = TrainTimer()
    cbs = [timer] + ([CPUAutocast()] if BF16 else [])
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(label_smoothing=SMOOTH), splitter=param_groups,
                    opt_func=lambda params, lr: NesterovSGD(params, lr, mom=MOM), cbs=cbs)
    learn.remove_cb(ProgressCallback); learn.logger = noop  # no table: only the time counts
    learn.fit(1, LR)
    return timer.seconds


@call_parse
def main(data: str = None,    # data folder; default $RECIPE_DATA
         batches: int = 20,   # batches of 1024 per timed pass
         width: int = 64,     # the fast net's width
         repeats: int = 2,    # timed passes of each, alternating
         json_out: str = None):  # also write the numbers to this JSON file
    "Print the time of a plain PyTorch loop and of Learner.fit on the same batches, and their ratio"
    torch.manual_seed(0)
    dls = recipe.image_dls(data, bs=1024, seed=0, augment='batch', pad=2, cutout=0)
    keep_freed_memory()
    model = FastNet(len(dls.vocab), width).to(memory_format=torch.channels_last)
    init_whitening(model, training_images(dls))
    data_batches = [(x.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last), y.as_subclass(torch.Tensor))
                    for _, (x, y) in zip(range(batches + 1), dls.train)]
    warmup, data_batches = data_batches[:1], data_batches[1:]
    plain_loop(copy.deepcopy(model), warmup)
    times = dict(plain=[], fastai=[])
    for _ in range(repeats):
        times['plain'].append(plain_loop(copy.deepcopy(model), data_batches))
        times['fastai'].append(fastai_fit(copy.deepcopy(model), data_batches))
    best = {k: min(v) for k, v in times.items()}
    ratio = best['fastai'] / best['plain']
    print(f"{batches} batches of 1024, width {width}, {'bf16 autocast' if BF16 else 'fp32'}: "
          f"plain PyTorch {best['plain']:.2f} s, Learner.fit {best['fastai']:.2f} s (fastest of {repeats}); "
          f"ratio {ratio:.3f}", flush=True)
    if json_out: open(json_out, 'w').write(json.dumps(dict(times=times, best=best, ratio=ratio, batches=batches, width=width), indent=1))
