"""A setting's runs paired by seed with a baseline's (issue 23): each run against the mean of the baseline's runs of
the same seed, then the mean difference, its standard deviation and standard error. Seeds move the accuracy by more
than most changes do (the profile's runs: sd 0.13 points), and the same seed draws the same images' order and
augmentations in both, so pairing takes out part of that. Settings are named and grouped as bench/arithmetic_curve.py
names and groups them (its table's first column); a name two settings share (other epochs) needs `--epochs` (or
`--baseline-epochs`). A seed the baseline has no run of is left out.

    python bench/paired_by_seed.py "fast-progressive (whiten-bias-8)" [--baseline fast-progressive] [--epochs N] [--results bench/results]
    python bench/paired_by_seed.py fast-progressive --epochs 10 --baseline "fast7 (small-early-3)" --baseline-epochs 8  # the profile now and then
"""
from collections import defaultdict
from statistics import mean, stdev

from fastcore.script import call_parse

from arithmetic_curve import name, settings
from recipe.errors import RecipeError


def runs_of(label, epochs, groups, results) -> list:
    "The runs of the setting named `label` (and trained for `epochs`, if given): exactly one setting, or a clear refusal"
    found = [rs for rs in groups if name(rs) == label and epochs in (None, rs[0]['epochs'])]
    if not found:
        raise RecipeError(f"no setting {label!r}{f' of {epochs} epochs' if epochs else ''} in {results}: choose from "
                          f"{', '.join(sorted({name(rs) for rs in groups}))}")
    if len(found) > 1:
        raise RecipeError(f"{len(found)} settings are named {label!r}, of {', '.join(str(rs[0]['epochs']) for rs in found)} epochs: "
                          "say which with --epochs (--baseline-epochs for the baseline); settings of the same epochs differ in "
                          "another (precision, batch size): give --results a folder holding one of them")
    return found[0]


def paired(setting, baseline, results, epochs=None, baseline_epochs=None) -> list:
    "[(seed, the setting's accuracy, the baseline's mean for the seed, its runs)], in %, by seed"
    groups = settings(results)
    base = defaultdict(list)
    for r in runs_of(baseline, baseline_epochs, groups, results): base[r['seed']].append(100 * r['test_accuracy'])
    return sorted((r['seed'], 100 * r['test_accuracy'], mean(base[r['seed']]), len(base[r['seed']]))
                  for r in runs_of(setting, epochs, groups, results) if r['seed'] in base)


@call_parse
def main(setting: str,                      # as bench/arithmetic_curve.py names it, e.g. "fast-progressive (whiten-bias-8)"
         baseline: str = 'fast-progressive',
         epochs: int = None,                # the setting's epochs, where two settings share its name
         baseline_epochs: int = None,       # the same for the baseline
         results: str = 'bench/results'):   # folder of the runs' JSON files
    try: rows = paired(setting, baseline, results, epochs, baseline_epochs)
    except RecipeError as e: raise SystemExit(str(e)) from None
    print(f'| seed | {setting} | {baseline} (mean of its runs of the seed) | difference |')
    print('|---|---|---|---|')
    for seed, acc, base, n in rows: print(f'| {seed} | {acc:.2f}% | {base:.2f}% ({n}) | {acc - base:+.2f} |')
    d = [acc - base for _, acc, base, _ in rows]
    if not d: raise SystemExit(f'no seed of {setting!r} has a run of {baseline!r}')
    spread = f' (sd {stdev(d):.2f}, standard error {stdev(d) / len(d) ** 0.5:.3f})' if len(d) > 1 else ''
    print(f'| mean of {len(d)} | {mean(a for _, a, _, _ in rows):.2f}% | {mean(b for _, _, b, _ in rows):.2f}% | **{mean(d):+.3f}**{spread} |')
