"""Test accuracy against training arithmetic, for every training setting of the fast net at width 64 with at least
`--min-runs` finished trainings in bench/results/ (issue 23: 94% for at most 7 full-size epochs' arithmetic). A run's
arithmetic is its epochs' multiply-adds per image (the net's convolutions and head, at each epoch's image size and the
run's widths and depth), in epochs of the 64/256/256 net at 32 pixels: the fast profile's 8 epochs are 8.0. Counted by
multiply-adds, 24-pixel epochs cost 0.52 of a full one (by pixel count 0.56). Runs that skip part of their backward
passes or images (`freeze_at`, `prune_easy`) are left out: their arithmetic is not their epochs'. A training recorded
twice (the same seed and the same losses epoch by epoch, e.g. one run's JSON under two names) counts once. Prints a
table and plots each setting's mean with its standard error.

    python bench/arithmetic_curve.py [--results bench/results] [--min-runs 5] [--png docs/arithmetic.png]
"""
import json
from collections import Counter, defaultdict
from functools import cache
from statistics import mean, stdev

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastcore.script import call_parse

from recipe.bench import TIME_ONLY, as_run, load_results, profile_label, value
from recipe.config import group_depths
from recipe.model import make_model
from recipe.settings import small_stages
from width_speed import conv_macs


@cache
def macs(widths, depth, size) -> int: return conv_macs(make_model('fast', 10, widths[0], widths=widths, depth=depth), size)


def widths_of(s) -> tuple: return tuple(s['widths'] or (s['width'], 4 * s['width'], 4 * s['width']))


def epoch_sizes(s) -> list:
    "Each epoch's image size (settings `s` as `as_run` gives them): the small_early stages', then the run's size"
    sizes = [px for px, n in small_stages(s['small_early']) for _ in range(n)]
    return sizes + [s['size']] * (s['epochs'] - len(sizes))


def training(r) -> str:
    """What a run trained with: its settings but those that change only its time or its test passes (tta_below: the same
    accuracy to 0.01 points, docs/results.md; test_every); act None as the net's own, the widths and the small epochs
    as they act; bf16 autocast or fp32 as the run had it"""
    s = as_run(r)
    kept = {k: value(s, k) for k in s if k not in (*TIME_ONLY, 'tta_below', 'precision', 'widths', 'small_early')}
    return json.dumps(kept | dict(widths=widths_of(s), sizes=epoch_sizes(s), fp32=r.get('precision', '').startswith('fp32')))


def epochs_of_arithmetic(r) -> float:
    "The run's training multiply-adds per image, in epochs of the 64/256/256 net at 32 pixels"
    s = as_run(r)  # a key the run predates at its default then
    return sum(macs(widths_of(s), group_depths(s['depth']), px) for px in epoch_sizes(s)) / macs((64, 256, 256), 2, 32)


def trainings(runs) -> list:
    "The runs, a training recorded twice (the same seed, the same training loss every epoch) once"
    return list({(r['seed'], tuple(e.get('train_loss') for e in r['per_epoch'])): r for r in runs}.values())


def name(runs) -> str:
    "The label most of the runs have, one without 'then:' (the profile's settings of the day) where any has one"
    counts = Counter(map(profile_label, runs))
    return min(counts, key=lambda label: ('then:' in label, -counts[label]))


def settings(results) -> list:
    "The finished trainings of the fast net at width 64 in `results`, one list per setting (`training`)"
    groups = defaultdict(list)
    for r in load_results(results):
        if (r.get('arch') == 'fast' and r.get('width') == 64 and r.get('complete') and 'test_accuracy' in r
                and not r.get('freeze_at') and not r.get('prune_easy')):
            groups[training(r)].append(r)
    return [trainings(rs) for rs in groups.values()]


@call_parse
def main(results: str = 'bench/results',  # folder of the runs' JSON files
         min_runs: int = 5,                # settings with fewer finished trainings are left out
         png: str = 'docs/arithmetic.png'):  # where the plot goes
    rows = sorted((name(rs), rs[0]['epochs'], epochs_of_arithmetic(rs[0]), [100 * r['test_accuracy'] for r in rs])
                  for rs in settings(results) if len(rs) >= max(min_runs, 2))
    print('| setting | epochs | arithmetic (full-size epochs) | runs | test accuracy (TTA), mean | sd | standard error |')
    print('|---|---|---|---|---|---|---|')
    fig, ax = plt.subplots(figsize=(11, 5.5))
    near = Counter(round(arith, 1) for _, _, arith, _ in rows)  # settings at about the same arithmetic: side by side
    drawn = Counter()
    for i, (label, epochs, arith, accs) in enumerate(rows):
        sd = stdev(accs); se = sd / len(accs) ** 0.5
        print(f'| {label} | {epochs} | {arith:.2f} | {len(accs)} | {mean(accs):.2f}% | {sd:.2f} | {se:.3f} |')
        k = round(arith, 1); x = arith + 0.012 * (drawn[k] - (near[k] - 1) / 2); drawn[k] += 1
        ax.errorbar(x, mean(accs), yerr=se, fmt='os^Dv<>ph'[i % 9], color=plt.cm.tab20(i % 20), capsize=3,
                    label=f'{label}, {epochs} epochs ({len(accs)} trainings)')
    ax.axhline(94.0, color='grey', ls='--', lw=1); ax.axvline(7.0, color='grey', ls=':', lw=1)
    ax.set_xlabel('training arithmetic (epochs of the 64/256/256 net at 32 pixels, by multiply-adds)')
    ax.set_ylabel('test accuracy with TTA, % (mean, +- 1 standard error)')
    ax.set_title('The fast net: accuracy against arithmetic\n(dashed: 94.0%; dotted: 7 epochs; '
                 'settings at about the same arithmetic drawn side by side)', fontsize=9)
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout(); fig.savefig(png, dpi=110)
    print(f'plot: {png}')
