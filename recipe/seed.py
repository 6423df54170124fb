"""The seed recipe, as the write-up has it: the custom ResNet-9 (recipe/model.py) trained by fastai's Adam with
decoupled weight decay; `lr_find` chooses LRMAX (3 x its `minimum` suggestion) and LRMIN (LRMAX / 10); then
`fit_one_cycle` rises from LRMIN to LRMAX at 5/24 of the steps and returns to LRMIN (no annihilation).

Its interface, the same as recipe/fast.py's: `optimizer(s)`, `pick_lrs(learn, s, out)`, `lr_text(s)`, `fit(learn, s, cbs, start_epoch)`,
`CPU_ADVICE`.
"""
from fastai.basics import Adam
from fastai.callback.schedule import minimum, slide, steep, valley

from .config import LR_RATIO, LRMAX_PER_MINIMUM, PEAK_AT
from .distributed import alone, global_batch
from .plots import plot_lr_find, save_fig
from .record import TABLE_HEADER, print_row

# Printed with the expected duration of a fit on a CPU that will take over half an hour
CPU_ADVICE = "on a CPU, --profile fast reaches 94% and --profile quick 90% in a fraction of that time (README, Headline results)"

__all__ = ['CPU_ADVICE', 'optimizer', 'find_lrs', 'choose_lrs', 'pick_lrs', 'lr_text', 'fit_recipe', 'fit']


def optimizer(s) -> dict:
    "The Learner's optimizer: fastai's Adam over all parameters; no weight decay on BatchNorm and biases (fastai's default)"
    return dict(opt_func=Adam, wd_bn_bias=False)


def find_lrs(learn) -> dict:
    "Run fastai's lr_find (a short run with the LR rising exponentially) and return all four suggestions"
    names = ('minimum', 'steep', 'valley', 'slide')
    found = learn.lr_find(suggest_funcs=(minimum, steep, valley, slide), show_plot=False)
    return {n: float(v) for n, v in zip(names, found)}


def choose_lrs(suggestions: dict, lr_min=None, lr_max=None):
    """LRMAX = 3 x `minimum` (one third of the LR where lr_find's loss was lowest: just below where it stops falling),
    LRMIN = LRMAX / 10. A given value wins; a single given one fixes the other. Why: docs/choices.md."""
    if lr_max is None: lr_max = lr_min * LR_RATIO if lr_min is not None else suggestions['minimum'] * LRMAX_PER_MINIMUM
    if lr_min is None: lr_min = lr_max / LR_RATIO
    return lr_min, lr_max


def pick_lrs(learn, s, out) -> dict:
    """lr_find unless both LRs are given (with the global batch, outside DDP: in a distributed run rank 0 alone runs
    it), then `choose_lrs`, and lr_find.png. Returns lr_min, lr_max and lr_find's suggestions"""
    suggestions, lr_min, lr_max = {}, s['lr_min'], s['lr_max']
    if lr_min is None and lr_max is None:
        with alone(), global_batch(learn, s['bs']): suggestions = find_lrs(learn)
        print('lr_find suggestions: ' + ', '.join(f'{k} {v:.2e}' for k, v in suggestions.items()), flush=True)
    lr_min, lr_max = choose_lrs(suggestions, lr_min, lr_max)
    if suggestions: plot_lr_find(learn.recorder, suggestions, lr_min, lr_max); save_fig(out/'lr_find.png')
    return dict(lr_min=lr_min, lr_max=lr_max, lr_find=suggestions)


def lr_text(s) -> str: return f"LRMIN {s['lr_min']:.2e}  LRMAX {s['lr_max']:.2e}"


def fit_recipe(learn, epochs, lr_min, lr_max, cbs=None, start_epoch=0):
    """fit_one_cycle: LRMIN -> LRMAX at 5/24 of the steps -> back to LRMIN (div_final = div: no annihilation).
    `start_epoch` continues a resumed run at its place in the schedule (fastai skips the epochs before it)."""
    if learn.logger is print_row: print_row(TABLE_HEADER)
    learn.fit_one_cycle(epochs, lr_max, div=lr_max/lr_min, div_final=lr_max/lr_min, pct_start=PEAK_AT, cbs=cbs,
                        start_epoch=start_epoch)


def fit(learn, s, cbs=None, start_epoch=0): fit_recipe(learn, s['epochs'], s['lr_min'], s['lr_max'], cbs=cbs, start_epoch=start_epoch)
