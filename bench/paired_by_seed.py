"""A setting's runs paired by seed with a baseline's (issue 23): each run against the mean of the baseline's runs of
the same seed, then the mean difference, its standard deviation and standard error. Seeds move the accuracy by more
than most changes do (the profile's runs: sd 0.13 points), and the same seed draws the same images' order and
augmentations in both, so pairing takes out part of that. Settings are named and grouped as bench/arithmetic_curve.py
names and groups them (its table's first column); a seed the baseline has no run of is left out.

    python bench/paired_by_seed.py "fast-progressive (group3-depth-3)" [--baseline fast-progressive] [--results bench/results]
"""
from collections import defaultdict
from statistics import mean, stdev

from fastcore.script import call_parse

from arithmetic_curve import name, settings
from recipe.errors import RecipeError


def paired(setting, baseline, results) -> list:
    "[(seed, the setting's accuracy, the baseline's mean for the seed, its runs)], in %, by seed"
    named = {name(rs): rs for rs in settings(results)}
    for label in (setting, baseline):
        if label not in named: raise RecipeError(f"no setting {label!r} in {results}: choose from {', '.join(sorted(named))}")
    base = defaultdict(list)
    for r in named[baseline]: base[r['seed']].append(100 * r['test_accuracy'])
    return sorted((r['seed'], 100 * r['test_accuracy'], mean(base[r['seed']]), len(base[r['seed']]))
                  for r in named[setting] if r['seed'] in base)


@call_parse
def main(setting: str,                      # as bench/arithmetic_curve.py names it, e.g. "fast-progressive (group3-depth-3)"
         baseline: str = 'fast-progressive',
         results: str = 'bench/results'):   # folder of the runs' JSON files
    try: rows = paired(setting, baseline, results)
    except RecipeError as e: raise SystemExit(str(e)) from None
    print(f'| seed | {setting} | {baseline} (mean of its runs of the seed) | difference |')
    print('|---|---|---|---|')
    for seed, acc, base, n in rows: print(f'| {seed} | {acc:.2f}% | {base:.2f}% ({n}) | {acc - base:+.2f} |')
    d = [acc - base for _, acc, base, _ in rows]
    if not d: raise SystemExit(f'no seed of {setting!r} has a run of {baseline!r}')
    spread = f' (sd {stdev(d):.2f}, standard error {stdev(d) / len(d) ** 0.5:.3f})' if len(d) > 1 else ''
    print(f'| mean of {len(d)} | {mean(a for _, a, _, _ in rows):.2f}% | {mean(b for _, _, b, _ in rows):.2f}% | **{mean(d):+.3f}**{spread} |')
