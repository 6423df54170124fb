"""Test accuracy against training arithmetic, for every setting of the fast net (width 64) with at least `--min-runs`
finished runs in bench/results/ (issue 23: 94% for at most 7 full-size epochs' arithmetic). A run's arithmetic is its
epochs' multiply-adds per image (the net's convolutions and head, at each epoch's image size and the run's widths), in
units of one epoch of the 64/256/256 net at 32 pixels: the fast profile's 8 epochs are 8.0. Prints a table and plots
the mean of each setting with its standard error.

    python bench/arithmetic_curve.py [--results bench/results] [--min-runs 5] [--png docs/arithmetic.png]
"""
from collections import Counter, defaultdict
from functools import cache
from statistics import mean, stdev

import json

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastcore.script import call_parse

from recipe.bench import TIME_ONLY, as_run, load_results, profile_label, value
from recipe.model import make_model
from recipe.settings import small_stages
from width_speed import conv_macs


@cache
def macs(widths, size) -> int: return conv_macs(make_model('fast', 10, widths[0], widths=widths), size)


def training(r) -> tuple:
    """What a run trained with: its settings but those that change only its time or its test passes (tta_below: the same
    accuracy to 0.01 points, docs/results.md; test_every; the precision: all of these runs ran bf16 autocast)"""
    s = as_run(r)
    return json.dumps({k: value(s, k) for k in s if k not in (*TIME_ONLY, 'tta_below', 'precision')})  # act None: the net's own


def epochs_of_arithmetic(r) -> float:
    "The run's training multiply-adds per image, in epochs of the 64/256/256 net at 32 pixels"
    widths = tuple(r.get('widths') or (r['width'], 4 * r['width'], 4 * r['width']))
    sizes = [px for px, n in small_stages(r.get('small_early')) for _ in range(n)]
    sizes += [r.get('size', 32)] * (r['epochs'] - len(sizes))
    return sum(macs(widths, s) for s in sizes) / macs((64, 256, 256), 32)


def name(runs) -> str:
    "The label most of the runs have, one without 'then:' (the profile's settings of the day) where any has one"
    counts = Counter(map(profile_label, runs))
    return min(counts, key=lambda label: ('then:' in label, -counts[label]))


@call_parse
def main(results: str = 'bench/results',  # folder of the runs' JSON files
         min_runs: int = 5,                # settings with fewer finished runs are left out
         png: str = 'docs/arithmetic.png'):  # where the plot goes
    groups = defaultdict(list)
    for r in load_results(results):
        if r.get('arch') == 'fast' and r.get('width') == 64 and r.get('complete') and 'test_accuracy' in r and not r.get('freeze_at'):
            groups[training(r)].append(r)
    rows = sorted((name(rs), rs[0]['epochs'], epochs_of_arithmetic(rs[0]),
                   [100 * r['test_accuracy'] for r in rs]) for rs in groups.values() if len(rs) >= min_runs)
    print('| setting | epochs | arithmetic (full-size epochs) | runs | test accuracy (TTA), mean | sd | standard error |')
    print('|---|---|---|---|---|---|---|')
    fig, ax = plt.subplots(figsize=(11, 5.5))
    seen = Counter()  # settings at the same arithmetic are drawn side by side, 0.02 apart
    for label, epochs, arith, accs in rows:
        sd = stdev(accs); se = sd / len(accs) ** 0.5
        print(f'| {label} | {epochs} | {arith:.2f} | {len(accs)} | {mean(accs):.2f}% | {sd:.2f} | {se:.3f} |')
        x = arith + 0.02 * seen[round(arith, 1)]; seen[round(arith, 1)] += 1
        ax.errorbar(x, mean(accs), yerr=se, fmt='os^Dv<>p'[len(seen) % 8], capsize=3, label=f'{label}, {epochs} epochs ({len(accs)} runs)')
    ax.axhline(94.0, color='grey', ls='--', lw=1); ax.axvline(7.0, color='grey', ls=':', lw=1)
    ax.set_xlabel("training arithmetic (epochs of the 64/256/256 net at 32 pixels)")
    ax.set_ylabel('test accuracy with TTA, % (mean, +- 1 standard error)')
    ax.set_title('The fast net: accuracy against arithmetic (dashed: 94.0%; dotted: 7 epochs)', fontsize=10)
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout(); fig.savefig(png, dpi=110)
    print(f'plot: {png}')
