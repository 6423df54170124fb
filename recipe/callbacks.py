"""Every callback of a run, side by side with its `order` (fastai calls them in this order at each event):

| callback | order | what |
|---|---|---|
| `AlternatingFlip` | -10 | tells the loader the epoch's flip parity (fast profiles) |
| `CleanLast` | -9 | the last epochs' training batches without translation, cutout or jitter |
| `StopOnNaN` | -5 | stops the run on a NaN or infinite training loss, naming the batch |
| `ExpectedDuration`, `WhitenBias`, `FreezeGroup` | 0 | prints the expected duration; trains the whitening bias (a conv group) for its first epochs only |
| `CPUAutocast` | 10 | bf16 autocast of the forward pass on a CPU |
| `PlainTensors` | 11 | training batches as plain tensors (after the autocast and channels_last callbacks) |
| `SmallEarly` | 12 | the first epochs' training batches at a smaller size (progressive resizing) |
| `PruneEasy` | 13 | leaves out of each epoch part of the images it learned (InfoBatch), weighing the rest up |
| `SelfDistill` | 13 | mixes each image's target with the net's own prediction for it an epoch before (PS-KD) |
| `Lookahead` | 15 | pulls the net towards slow weights, after the optimizer step |
| `KeepTestLogits` | 20 | keeps the last epoch's test logits for the final stage |
| `RunRecord` | Recorder + 1 | metrics.csv and results.json after every epoch |
| `Checkpoint` | Recorder + 2 | checkpoint.pt after every epoch, after the record |
| `SkipTestPasses` | 90 | skips the test pass of the epochs between every n-th and the last |
"""
import math, time
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.basics import Callback, CancelValidException, Recorder
from fastai.callback.schedule import LRFinder
from fastai.callback.tracker import TrackerCallback

from .augment import BatchAugment, ColorJitter, windows
from .checkpoint import rng_states, save_checkpoint
from .config import SMALL_BY
from .data import RecipeError
from .distributed import first_bad, gather, rank0, unwrap
from .record import write_csv, write_json

__all__ = ['AlternatingFlip', 'CleanLast', 'StopOnNaN', 'ExpectedDuration', 'FreezeAfter', 'WhitenBias', 'FreezeGroup', 'CPUAutocast', 'PlainTensors', 'SmallEarly', 'PruneEasy', 'SelfDistill', 'Lookahead',
           'KeepTestLogits', 'RunRecord', 'Checkpoint', 'SkipTestPasses', 'tested', 'check_trackers']


class AlternatingFlip(Callback):
    """airbench's alternating flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", section 3.6):
    each training image is flipped at random once, then every other epoch all are mirrored, so consecutive epochs see
    both sides of every image. The loader (`InMemoryDL`, flip='alternate') flips; this tells it the epoch's parity."""
    order = -10  # before the epoch's batches are drawn
    def before_train(self):
        dl = self.dls.train
        getattr(dl, 'dl', dl).flip_parity = self.epoch % 2  # a DistributedDL draws its batches from the DataLoader it wraps


class CleanLast(Callback):
    """The last `epochs` epochs train on images as the test sees them: `BatchAugment` translates none and cuts no hole,
    `ColorJitter` shifts none (He et al. 2019, "Data Augmentation Revisited: Rethinking the Distribution Gap between
    Clean and Augmented Data": a model trained on augmented images, then on clean ones, fits the clean images'
    distribution). The flip stays: it is a symmetry of the data, and the test's TTA mirrors too. Set at each epoch from
    the epoch's number, so a resumed run gets the same. Each transform keeps its own settings while it is clean, so a
    fit stopped in a clean epoch (no `after_fit`) leaves them for the next fit's first epoch to put back."""
    order = -9  # before the epoch's batches are drawn
    strengths = ((BatchAugment, ('pad', 'cutout')), (ColorJitter, ('brightness', 'contrast')))  # each set to 0 while clean
    def __init__(self, epochs): self.epochs = epochs
    def before_train(self): self.set(self.epoch >= self.n_epoch - self.epochs and not finding_lr(self.learn))
    def after_fit(self): self.set(False)  # the loaders as they came: a later fit or `show_batch` augments again
    def set(self, clean):
        dl = self.dls.train
        for t in getattr(dl, 'dl', dl).after_batch.fs:  # a DistributedDL runs the transforms of the DataLoader it wraps
            names = next((n for cls, n in self.strengths if isinstance(t, cls)), None)
            if names is None: continue
            if clean:
                t.__dict__.setdefault('unclean', tuple(getattr(t, n) for n in names))
                for n in names: setattr(t, n, 0)
            elif 'unclean' in t.__dict__:
                for n, v in zip(names, t.__dict__.pop('unclean')): setattr(t, n, v)


def finding_lr(learn) -> bool:
    "Whether this fit is fastai's lr_find, which the recipe's per-epoch schedules leave alone"
    return any(isinstance(cb, LRFinder) for cb in learn.cbs)


class StopOnNaN(Callback):
    """A loss that is NaN or infinite stops the run with a message; the last checkpoint stays as it was. The check
    reads the loss on the host, which waits for the GPU: on CUDA the first bad step is noted on the device and read
    every `every` steps and at the end of each epoch's training (before its checkpoint), so the GPU is not held up
    each step; on a CPU every step. In a distributed run every rank sees every rank's loss, so all stop together."""
    order = -5
    def __init__(self, process=None, every=None): self.process, self.every = process, every
    def before_fit(self):
        self.n = self.every or (16 if self.dls.device.type == 'cuda' else 1)
        self.first = torch.full((2,), float('nan'), device=self.dls.device)  # (step, loss) of the first bad loss
    def after_loss(self):
        if not self.training: return
        loss = self.loss.detach().float()
        new = ~torch.isfinite(loss) & torch.isnan(self.first[0])
        step = torch.full((), float(self.epoch * self.n_iter + self.iter), device=self.first.device)  # no host copy
        self.first = torch.where(new, torch.stack([step, loss]), self.first)
        if (self.iter + 1) % self.n == 0: self.check()
    def after_train(self): self.check()
    def check(self):
        bad = first_bad(self.process, self.first)
        if bad:
            where = f" on rank {bad[0]}" if self.process else ""
            epoch, batch = divmod(int(bad[1]), self.n_iter)
            raise RecipeError(f"the training loss became {bad[2]} in epoch {epoch + 1} (batch {batch + 1}){where}: "
                              f"training diverged; try a lower --lr-max than {self.opt.hypers[-1]['lr']:.2e} (the LR at that step)")


class ExpectedDuration(Callback):
    """After the first few training batches, print how long the fit will take, and on a CPU the recipe's `advice` (if
    any) when that is over half an hour. Batch 1 is left out (warm-up); a test image counts as a third of a training
    image; an image's cost goes with its pixels (`SmallEarly`'s small epochs), and untested epochs (`SkipTestPasses`) have no test pass."""
    def __init__(self, advice=None, n=5): self.advice, self.n = advice, n
    def before_fit(self): self.t = None
    def after_batch(self):
        if not self.training or self.t is False or self.n_iter < self.n + 2: return
        if self.iter == 0: self.t = time.perf_counter()
        elif self.iter == self.n and self.t:
            per_pixel = (time.perf_counter() - self.t) / (self.n * self.dls.train.bs * self.pixels(self.epoch))
            skip = next((cb for cb in self.learn.cbs if isinstance(cb, SkipTestPasses)), None)
            test = len(self.dls.valid_ds) / 3 * self.pixels()  # a test pass, at the full size
            pixels = sum(len(self.dls.train) * self.dls.train.bs * self.pixels(e) + (test if skip is None or skip.tests(e) else 0)
                         for e in range(self.epoch, self.n_epoch))
            minutes = per_pixel * pixels / 60
            left = self.n_epoch - self.epoch
            msg = (f"expected duration: {f'about {minutes:.0f} min' if minutes >= 1 else 'under a minute'} for {left} "
                   f"epoch{'s' if left != 1 else ''} (from batches 2-{self.n + 1})")
            if self.dls.device.type == 'cpu' and self.advice and minutes > 30: msg += f"; {self.advice}"
            print(msg, flush=True)
            self.t = False  # once per fit
    def pixels(self, epoch=None):
        "Pixels of a training image in `epoch` (None: a full-size image); 1 for loaders without our `size` (all alike)"
        full = self.dls.__dict__.get('size')  # our loaders' own (DataLoaders pass other attributes on to their loaders)
        if not isinstance(full, int): return 1
        small = next((cb for cb in self.learn.cbs if isinstance(cb, SmallEarly)), None)
        side = (small and epoch is not None and small.size_at(epoch)) or full
        return side * side


class FreezeAfter(Callback):
    """`params()` are trained for the first `epochs` epochs only (a fraction too), then frozen. In one process their
    gradient is switched off, so the backward pass skips what only they needed; under DDP, which needs the same trained
    parameters throughout, or a compiled net, their gradient is dropped before each step instead. Either way fastai's
    optimizer skips them."""
    def __init__(self, epochs): self.epochs = epochs
    def params(self): raise NotImplementedError
    def frozen(self): return self.epoch + self.iter / self.n_iter >= self.epochs
    def before_fit(self): self.switch(True)  # learning again, whatever a fit that failed left
    def switchable(self):  # not under DDP (wrapped by then), nor compiled (a switch would cost a second compile)
        return self.learn.model is unwrap(self.learn.model) and getattr(self.learn.model, '_compiled_call_impl', None) is None
    def before_batch(self):
        if self.training and self.frozen() and self.switchable(): self.switch(False)
    def before_step(self):
        if self.frozen():
            for p in self.params(): p.grad = None
    def after_fit(self): self.switch(True)  # the net as it was given, for another fit
    def switch(self, on):
        for p in self.params(): p.requires_grad_(on)


class WhitenBias(FreezeAfter):
    """The whitening conv's bias is trained for the first `epochs` epochs only, then frozen (airbench94: 3; Hiverge's
    speedrun: 0.19). Switched off, it also spares the backward pass the first conv group's input gradient (about 4% of
    a step's arithmetic)."""
    def __init__(self, epochs=3): super().__init__(epochs)  # airbench94's 3
    def params(self): return [unwrap(self.learn.model)[0].bias]


class FreezeGroup(FreezeAfter):
    """Conv group `group` (1, 2 or 3) of the fast net stops training at epoch `epochs` (FreezeOut: Brock et al. 2017,
    "FreezeOut: Accelerate Training by Progressively Freezing Layers"): its conv filters and BatchNorm biases keep
    their values, its BatchNorms still normalize by the batch. With the whitening bias frozen too, the backward pass
    then stops at the next group: group 1 frozen spares about a fifth of a 32-pixel step."""
    def __init__(self, group, epochs): super().__init__(epochs); self.group = group
    def params(self):
        net = unwrap(self.learn.model)[1 + self.group]  # net[0] whitens, net[1] is its GELU, net[2:5] the groups
        return ([m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)] +
                [m.bias for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])


class CPUAutocast(Callback):
    "bf16 autocast of the forward pass and loss on the CPU: fastai's MixedPrecision autocasts on CUDA only"
    order = 10
    def before_batch(self): self.autocast = torch.autocast('cpu', dtype=torch.bfloat16); self.autocast.__enter__()
    def after_pred(self): self.learn.pred = self.pred.float()
    def after_loss(self): self.leave()
    def after_cancel_batch(self): self.leave()  # and after any exception in a batch: RecipeLearner.one_batch
    def leave(self):
        if getattr(self, 'autocast', None) is not None: self.autocast.__exit__(None, None, None); self.autocast = None


class PlainTensors(Callback):
    "Training batches as plain tensors: fastai's tensor types cost a Python call for every op of the forward pass"
    order, run_valid = 11, False  # after ChannelsLast and the autocast callbacks; test batches keep their types (plots)
    def before_batch(self):
        self.learn.xb = tuple(x.as_subclass(torch.Tensor) for x in self.xb)
        self.learn.yb = tuple(y.as_subclass(torch.Tensor) for y in self.yb)


class SmallEarly(Callback):
    """Progressive resizing (fastai's DAWNBench ImageNet entry, Howard 2018): the training batches of the first
    epochs are made smaller stage by stage, each `(size, epochs)`: `SmallEarly((24, 3), (28, 2))` trains 3 epochs at
    24 pixels, then 2 at 28, for about (size / full size)^2 of an epoch's arithmetic each; the later epochs and the test
    batches keep the full size. A stage at the full size puts the small ones after it: `SmallEarly((32, 1), (24, 3))`. `by` 'resize' (bilinear, antialiased) or 'crop': each image's own random window, which
    keeps the objects' scale that the test images have (the 24-pixel crops of Krizhevsky's cuda-convnet on CIFAR-10)"""
    order, run_valid = 12, False  # after PlainTensors
    def __init__(self, *stages, by='resize'):
        if not stages or not all(isinstance(st, (tuple, list)) and len(st) == 2 for st in stages) or by not in SMALL_BY:
            raise ValueError(f"SmallEarly takes (size, epochs) stages and by 'resize' or 'crop', got {stages!r} and {by!r}")
        self.stages, self.by = [tuple(st) for st in stages], by
    def size_at(self, epoch):
        "The side of `epoch`'s training images, None for the full size"
        for size, epochs in self.stages:
            if epoch < epochs: return size
            epoch -= epochs
    def before_batch(self):
        size, x = self.size_at(self.epoch), self.xb[0]
        if size is None or size == x.shape[-1]: return  # a stage at the full size: the small ones come after it
        if self.by == 'crop':
            n, _, h, w = x.shape
            top, left = torch.randint(0, h - size + 1, (n,), device=x.device), torch.randint(0, w - size + 1, (n,), device=x.device)
            x = windows(x, size)[torch.arange(n, device=x.device), top, left]
        else: x = F.interpolate(x, size=size, mode='bilinear', antialias=True, align_corners=False)
        self.learn.xb = (x.contiguous(memory_format=torch.channels_last),)


class PruneEasy(Callback):
    """InfoBatch (Qin et al. 2024, "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data Pruning"): each
    training image keeps its last loss; at the start of an epoch every image whose loss is under the mean is left out
    of the epoch with probability `ratio`, and the easy ones that stay weigh 1 / (1 - ratio) in the loss, so the
    gradient's expectation is the full data's. The first epoch (no losses yet) and the last `full_last` of the epochs
    (the annealing: InfoBatch's last 12.5%) train on all images. An epoch costs about (1 - ratio x the easy share)
    of a full one. The losses live in the process: a resumed run starts them afresh (not bit-identical to one that
    was not stopped)."""
    order, run_valid = 13, False  # after SmallEarly: the batch is the one that trains
    def __init__(self, ratio, full_last=0.125):
        if not (0 < ratio < 1): raise ValueError(f"PruneEasy's ratio must be in (0, 1), got {ratio!r}")
        self.ratio, self.full_last = ratio, full_last
    losses = None
    def start(self):
        "At the first epoch a fit trains (not in before_fit, which fastai's get_preds calls too): no losses yet"
        dl = self.dls.train
        if not hasattr(dl, 'train_on'): raise RecipeError("prune_easy needs the in-memory training loader of augment 'batch' in one process")
        self.losses = torch.full((len(dl.images),), math.nan, device=self.dls.device)  # beside the predictions (MPS: images on the host)
        self.weights = torch.ones_like(self.losses)
        self.kept = []  # the share of the images each epoch trained on
    def before_train(self):
        if self.losses is None or self.epoch == 0: self.start()  # epoch 0: a new fit (after lr_find's, say)
        last_pruned = self.n_epoch - math.ceil(self.full_last * self.n_epoch)
        seen = ~self.losses.isnan()
        self.weights.fill_(1.)
        if self.epoch >= last_pruned or not seen.any(): keep = None
        else:
            easy = seen & (self.losses < self.losses[seen].mean())
            out = easy & (torch.rand(len(easy), device=easy.device) < self.ratio)
            self.weights[easy & ~out] = 1 / (1 - self.ratio)
            keep = (~out).nonzero().squeeze(1).to(self.dls.train.images.device)
        self.dls.train.train_on(keep)
        self.kept.append(1. if keep is None else len(keep) / len(self.losses))
    def after_loss(self):
        idx, func = self.dls.train.batch_idxs.to(self.losses.device), self.loss_func.func  # a cross entropy (the recipe's loss)
        losses = F.cross_entropy(self.pred.float(), self.yb[0], label_smoothing=func.label_smoothing, reduction='none')
        self.losses[idx] = losses.detach()
        self.learn.loss_grad = (losses * self.weights[idx]).mean()
    def after_fit(self): self.dls.train.train_on(None)


class SelfDistill(Callback):
    """Progressive self-knowledge distillation (Kim et al. 2021, "Self-Knowledge Distillation with Progressive
    Refinement of Targets", PS-KD): each training image's target is its label (smoothed as the loss smooths it) mixed
    with the net's own prediction for that image in the epoch before, the prediction's weight growing linearly from 0 at
    the first epoch to `alpha` at the last (0 in lr_find). The reported training loss stays the plain one. Costs no
    arithmetic: the predictions are the training passes' own (an image left out of an epoch's last, partial batch keeps
    the older one). They live in the process: a resumed run starts them afresh."""
    order, run_valid = 13, False  # after SmallEarly: the batch is the one that trains
    def __init__(self, alpha):
        if not (0 < alpha < 1): raise ValueError(f"SelfDistill's alpha must be in (0, 1), got {alpha!r}")
        self.alpha = alpha
    probs = None
    def before_train(self):
        dl = self.dls.train
        if not hasattr(dl, 'batch_idxs'): raise RecipeError("self_distill needs the in-memory training loader of augment 'batch' in one process")
        if self.probs is None or self.epoch == 0:  # a new fit (after lr_find's, say): no predictions yet
            self.probs = torch.zeros(len(dl.images), self.dls.c, device=self.dls.device)
            self.seen = torch.zeros(len(dl.images), dtype=torch.bool, device=self.dls.device)
        self.weight = 0. if finding_lr(self.learn) else self.alpha * self.epoch / max(1, self.n_epoch - 1)
    def after_loss(self):
        idx, smoothing = self.dls.train.batch_idxs.to(self.probs.device), self.loss_func.func.label_smoothing
        log_probs, labels = F.log_softmax(self.pred.float(), dim=1), self.yb[0]
        target = F.one_hot(labels, log_probs.shape[1]).float() * (1 - smoothing) + smoothing / log_probs.shape[1]
        weight = self.weight * self.seen[idx].float().unsqueeze(1)  # images not yet seen: their label only
        target = (1 - weight) * target + weight * self.probs[idx]
        self.learn.loss_grad = -(target * log_probs).sum(1).mean()
        self.probs[idx], self.seen[idx] = log_probs.detach().exp(), True


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
        step = self.epoch * self.n_iter + self.iter + 1  # the step in the whole run, a resumed one too
        if step % self.k == 0: self.pull(self.base ** self.k * self.pct_train ** 3)
    def after_train(self):
        if self.epoch == self.n_epoch - 1: self.pull(1.0)
    def after_epoch(self): self.reset()


class KeepTestLogits(Callback):
    """Keeps the last epoch's test logits, so that the final stage (TTA, the confusion matrix, the top losses) needs no
    second pass over the test set: on 2 CPU cores a pass over CIFAR-10's test set takes 6-8 s, about 6% of a fast-net epoch. They
    are given only while the net still has the weights that made them: a callback that loads other weights at the end
    of the fit (fastai's SaveModelCallback) gets a new pass."""
    order, run_train = 20, False  # after the autocast callbacks' after_pred (fp32 logits)
    def before_validate(self): self.logits = [] if self.epoch == self.n_epoch - 1 else None
    def after_pred(self):
        if self.logits is not None: self.logits.append(self.pred.detach().float())
    def after_validate(self):
        if self.logits is not None: self.weights = weights_of(self.learn.model)
    def result(self, n, model):
        "The logits, if they cover the `n` test images (a distributed run's ranks each see part of them) and `model` has their weights"
        found = torch.cat(self.logits) if getattr(self, 'logits', None) else None
        if found is None or len(found) != n: return None
        return found if all(torch.equal(a, b) for a, b in zip(weights_of(model), self.weights, strict=True)) else None


def weights_of(model) -> list:
    "A copy of every tensor of the net's state (weights, BatchNorm statistics)"
    return [t.detach().clone() for t in model.state_dict().values()]


class RunRecord(Callback):
    "After every epoch: a row in metrics.csv and the whole run record rewritten (atomically) to each JSON file"
    order = Recorder.order + 1  # after the Recorder has the epoch's values, before the checkpoint (resume trims extra rows)
    COLUMNS = ['epoch', 'train_loss', 'test_loss', 'test_accuracy', 'seconds']
    def __init__(self, record: dict, csv_path, json_paths, t0, start_epoch=0):
        self.record, self.csv_path, self.json_paths = record, Path(csv_path), [Path(p) for p in json_paths]
        self.start_epoch, self.t0 = start_epoch, t0 - (record.get('wall_seconds', 0) if start_epoch else 0)

    def before_fit(self):
        "Start the CSV and JSON; on resume, keep the epochs the checkpoint holds and continue after them"
        self.record.update(complete=False, per_epoch=self.record.get('per_epoch', [])[:self.start_epoch],
                           per_epoch_wall=self.record.get('per_epoch_wall', [])[:self.start_epoch],
                           per_epoch_test_seconds=self.record.get('per_epoch_test_seconds', [])[:self.start_epoch])
        write_csv(self.csv_path, self.COLUMNS, [r.values() for r in self.record['per_epoch']])
        self.save()  # a run cut short in its first epoch still leaves its record

    def before_epoch(self): self.t_epoch, self.test_seconds = time.perf_counter(), 0.
    def before_validate(self): self.t_test = time.perf_counter()
    def after_validate(self): self.test_seconds = time.perf_counter() - self.t_test

    def after_epoch(self):
        if self.epoch < self.start_epoch: return  # skipped on resume
        values = [*map(float, self.recorder.values[-1][:3]), math.nan, math.nan][:3]  # short: a callback cancelled the pass
        train_loss, test_loss, acc = (None if math.isnan(v) else v for v in values)  # NaN: untested
        row = dict(epoch=self.epoch + 1, train_loss=train_loss, test_loss=test_loss, test_accuracy=acc,
                   seconds=round(time.perf_counter() - self.t_epoch, 2))
        self.record['per_epoch'].append(row)
        write_csv(self.csv_path, self.COLUMNS, [r.values() for r in self.record['per_epoch']])  # whole: a full disk leaves the old file
        self.record['per_epoch_wall'].append(round(time.perf_counter() - self.t0, 1))  # since the run started: time-to-accuracy
        self.record['per_epoch_test_seconds'].append(round(self.test_seconds, 2))  # of `seconds`: the epoch's test pass
        if acc is not None: self.record.update(test_accuracy=acc, test_loss=test_loss)
        self.save()

    def after_fit(self):
        "The Recorder has nothing for epochs skipped on resume: give it the recorded ones, for the plots"
        self.recorder.values = [[r['train_loss'], r['test_loss'], r['test_accuracy']] for r in self.record['per_epoch']]

    def save(self, **updates):
        "Rewrite the JSON files; `wall_seconds` counts from the start of the run (data loading and lr_find included)"
        self.record.update(updates, wall_seconds=round(time.perf_counter() - self.t0, 1))
        for p in self.json_paths: write_json(p, self.record)


class Checkpoint(Callback):
    """Saves a checkpoint after every epoch (epochs skipped on resume excepted), after the epoch's record. In a
    distributed run (`process`) every rank sends its random streams and rank 0 writes them all"""
    order = Recorder.order + 2
    def __init__(self, path, config: dict, resumed: dict = None, process=None):
        self.path, self.config, self.resumed, self.process = Path(path), config, resumed, process
        self.start_epoch = self.saved_epoch = resumed['epoch'] if resumed else 0

    def before_fit(self):
        """On resume, the Recorder's smoothed train loss continues, and so does fastai's count of training steps (TensorBoard's
        step), as if the run had not stopped"""
        if self.resumed: self.recorder.smooth_loss.val, self.recorder.smooth_loss.count = self.resumed['smooth_loss'].values()
        self.learn.train_iter = self.start_epoch * len(self.dls.train)
        # each epoch's per-step train losses and LRs (the Recorder's), the epochs before a resume included
        self.history = list((self.resumed or {}).get('history', []))[:self.start_epoch]
    def before_epoch(self): self.step = len(self.recorder.losses)
    def after_epoch(self):
        if self.epoch < self.start_epoch: return
        self.history.append(dict(loss=[float(v) for v in self.recorder.losses[self.step:]], lr=[float(v) for v in self.recorder.lrs[self.step:]]))
        rng = gather(self.process, rng_states(self.dls)) if self.process else None
        if rank0(self.process): save_checkpoint(self.path, self.learn, self.epoch + 1, self.config, rng, self.history)
        self.saved_epoch = self.epoch + 1
    def whole_history(self, recorder):
        """After a resumed fit: the Recorder's train losses and LR schedule from the run's first step, for loss.png and
        lr_schedule.png (it holds only the steps since the resume)"""
        if not self.start_epoch or len(self.history) != len(recorder.values): return
        recorder.losses = [torch.tensor(v) for e in self.history for v in e['loss']]
        recorder.hps = {'lr': [v for e in self.history for v in e['lr']]}
        recorder.iters = [sum(len(e['loss']) for e in self.history[:i + 1]) for i in range(len(self.history))]


def tested(epoch, n_epoch, every) -> bool:
    "Whether epoch `epoch` (from 0) of `n_epoch` gets a test pass with `test_every` `every`: every `every`-th and the last (0: the last only)"
    return epoch == n_epoch - 1 or bool(every and (epoch + 1) % every == 0)


def check_trackers(cbs, epochs, every):
    """Refuse, before any work, fastai's trackers (EarlyStoppingCallback, SaveModelCallback, ReduceLROnPlateau) that
    watch a test metric when `test_every` leaves epochs untested: they would see NaN there"""
    if all(tested(e, epochs, every) for e in range(epochs)): return
    watching = [f"{type(cb).__name__}(monitor={cb.monitor!r})" for cb in cbs or [] if isinstance(cb, TrackerCallback)
                and not cb.monitor.startswith('train_') and not getattr(cb, 'every_epoch', False)]
    if watching: raise RecipeError(f"{', '.join(watching)} watches a test metric, and test_every {every} leaves epochs of the {epochs} "
                                   "untested: test every epoch (test_every 1, --test-every 1) or watch monitor='train_loss'")


class SkipTestPasses(Callback):
    """The test pass after every `n`-th epoch of a fit and after its last (n 0: the last only); the other epochs' rows
    have NaN for the test metrics (None in the run record). On a CPU a pass over CIFAR-10's test set costs about 6% of
    a 32-pixel epoch of the fast net; the last epoch's is the one the final stage needs (`KeepTestLogits`).
    `check_trackers` refuses fastai's trackers of a test metric beforehand."""
    order = 90  # after every callback's before_validate (the Recorder's, RunRecord's timer): each sees a pass of nothing
    def __init__(self, n=0): self.n, self.trained, self.skipped = n, False, False
    # the pass after an epoch's training only: fastai's learn.validate() calls before_fit too, and tests
    def before_fit(self): self.trained = self.skipped = False
    def after_train(self): self.trained = True
    def tests(self, epoch): return tested(epoch, self.n_epoch, self.n)
    def before_validate(self):
        self.skipped = self.trained and not self.tests(self.epoch)
        if self.skipped:
            # a pass over a loader takes one draw of torch's random stream (its DataLoader's seed for workers): take it
            # here too, so that the training's draws, and so the weights, are those of a run tested every epoch
            torch.empty((), dtype=torch.int64).random_()
            raise CancelValidException()
    def after_validate(self):
        "NaN in the Recorder's row for each test metric, so that everything reading it by position (loggers, fastai's graphs) finds its column"
        if self.skipped: self.recorder.log += [float('nan')] * ((1 + len(self.recorder.metrics)) if self.recorder.valid_metrics else 0)
    def after_epoch(self): self.trained = self.skipped = False
