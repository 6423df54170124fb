"""The pictures of a run, saved as PNG: lr_find, LR schedule, losses, accuracy, confusion matrix, top losses, reliability."""
import matplotlib.pyplot as plt
import torch
from fastai.basics import ClassificationInterpretation

from .config import ECE_BINS
from .fonts import drawing

__all__ = ['save_fig', 'plot_lr_find', 'plot_accuracy', 'plot_reliability', 'TestInterpretation', 'save_run_plots']


def save_fig(path, fig=None):
    "fastai's plot methods return no figure: save the current one and close it"
    fig = fig or plt.gcf()
    fig.savefig(path, dpi=100, bbox_inches='tight'); plt.close(fig)


def plot_lr_find(recorder, suggestions: dict, lr_min, lr_max):
    "fastai's lr_find curve with every suggestion and the chosen LRMIN / LRMAX marked"
    recorder.plot_lr_find()
    ax = plt.gca()
    for (name, lr), color in zip(suggestions.items(), plt.rcParams['axes.prop_cycle'].by_key()['color'][1:]):
        ax.axvline(lr, ls=':', c=color, label=f'{name} {lr:.2e}')
    ax.axvline(lr_min, c='k', ls='--', label=f'LRMIN {lr_min:.2e}')
    ax.axvline(lr_max, c='r', ls='--', label=f'LRMAX {lr_max:.2e}')
    ax.legend(); ax.set_title('lr_find')


def plot_accuracy(recorder):
    fig, ax = plt.subplots()
    acc = [v[2] for v in recorder.values]  # None: an epoch without a test pass (test_every)
    ax.plot(range(1, len(acc) + 1), acc, marker='o')
    ax.set_xlabel('epoch'); ax.set_ylabel('test accuracy'); ax.grid(alpha=.3)
    last = next((a for a in reversed(acc) if a is not None), None)
    ax.set_title('test accuracy per epoch' + (f' (last tested {last:.4f})' if last is not None else ''))


def plot_reliability(logits, targets, ax=None):
    "The reliability diagram: in each of ECE_BINS confidence bins, the accuracy against the mean confidence"
    conf, pred = logits.softmax(1).max(1)
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    centres, accs, counts = [], [], []
    for b in range(ECE_BINS):
        sel = which == b
        if sel.any(): centres.append(float(conf[sel].mean())); accs.append(float((pred[sel] == targets[sel]).float().mean())); counts.append(int(sel.sum()))
    ax.bar(centres, accs, width=1 / ECE_BINS, edgecolor='k', alpha=.7, label='accuracy in the bin')
    ax.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
    ax.set_xlabel('confidence (top probability)'); ax.set_ylabel('accuracy'); ax.set_xlim(0, 1); ax.set_ylim(0, 1)
    ax.legend(loc='upper left'); ax.set_title(f'reliability ({ECE_BINS} bins, {len(targets):,} images)')
    return ax


class TestInterpretation(ClassificationInterpretation):
    """fastai's ClassificationInterpretation of the test set from logits already computed (with the run's TTA, as
    its reported accuracy): fastai's own would run the model over the test set twice more, without TTA"""
    def __init__(self, learn, logits, targets):
        self.probs, self.targets = logits.float().softmax(1).cpu(), targets.as_subclass(torch.Tensor).cpu()
        losses = torch.nn.functional.cross_entropy(logits.float().cpu(), self.targets, reduction='none')
        super().__init__(learn, learn.dls.valid.new(shuffle=False, drop_last=False), losses)
    def confusion_matrix(self):
        n = len(self.vocab)
        return torch.bincount(self.targets * n + self.probs.argmax(1), minlength=n * n).view(n, n).numpy()
    def __getitem__(self, idxs):
        "The inputs from fastai (decoded for showing), the predictions from the logits given"
        inps, _, targs, _, losses = super().__getitem__(idxs)
        idxs = torch.as_tensor(idxs if isinstance(idxs, (list, torch.Tensor)) else [idxs])
        return inps, self.probs[idxs], targs, self.probs[idxs].argmax(1), losses


def save_run_plots(learn, out, logits=None, targets=None):
    """Everything but lr_find (saved as soon as lr_find ran): schedule, losses, accuracy, confusion, top losses; the
    last two from the test `logits` when given (see `TestInterpretation`), and then the reliability diagram too"""
    with drawing(learn.dls.vocab): return draw_run_plots(learn, out, logits, targets)


def draw_run_plots(learn, out, logits, targets):
    learn.recorder.plot_sched(keys=['lr']); save_fig(out/'lr_schedule.png')
    learn.recorder.plot_loss(); ax = plt.gca()
    ax.legend(['train (smoothed, per batch)', 'test (per epoch)']); ax.set_title('loss'); save_fig(out/'loss.png')
    plot_accuracy(learn.recorder); save_fig(out/'accuracy.png')
    interp = ClassificationInterpretation.from_learner(learn) if logits is None else TestInterpretation(learn, logits, targets)
    interp.plot_confusion_matrix(figsize=(7, 7)); save_fig(out/'confusion_matrix.png')
    import fastai.vision.learner  # registers fastai's top-losses plot for images; here, as it imports torchvision (~3 s)
    k = min(9, len(learn.dls.valid_ds))  # a small validation set of your own has fewer than 9 images
    interp.plot_top_losses(k, nrows=-(-k // 3)); save_fig(out/'top_losses.png')
    if logits is not None: plot_reliability(logits.float().cpu(), targets.as_subclass(torch.Tensor).cpu()); save_fig(out/'reliability.png')
    return interp
