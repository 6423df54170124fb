"""Benchmarks: named profiles trained on the full data through `recipe.train`, one JSON per run in bench/results/,
and BENCHMARKS.md (table + plots) generated from those files.

    python -m recipe bench seed-w32 --seed 0 --data DIR   # ~85 min on 2 CPU cores (width 32, 24 epochs)
    python -m recipe report                               # BENCHMARKS.md from bench/results/
"""
import inspect, json, math, os
from datetime import datetime
from statistics import mean
from pathlib import Path

import matplotlib.pyplot as plt

from .config import ABLATIONS, PROFILES, SEED_PROFILE
from .data import RecipeError
from .model import ARCHS
from .record import last_test_accuracy
from .settings import check_bench_names, widths_at

CIFAR_TEST = 10_000  # images in CIFAR-10's test set

__all__ = ['run_profile', 'load_results', 'time_to', 'write_report']


def run_profile(profile, seed=0, data=None, width=None, epochs=None, bs=None, results='bench/results', runs='runs',
                ablation=None, augment=None, precision=None, compile=None, command=None):
    """Train `profile` (with optional width/epochs/bs/augment/precision/compile overrides, and one of ABLATIONS), writing
    bench JSON after every epoch; returns its path. `command`: the command line, for the record"""
    if profile == 'list':
        for k, v in PROFILES.items(): print(f"{k:16} width {v['width']}, {v['epochs']} epochs, bs {v['bs']}: {v['doc']}")
        return None
    check_bench_names(profile, ablation)
    from .run import train
    cfg = {k: v for k, v in dict(width=width, epochs=epochs, bs=bs, augment=augment, compile=compile).items() if v is not None}  # overrides
    name = (f"{profile}{'-' + ablation.replace(',', '+') if ablation else ''}-w{cfg.get('width', PROFILES[profile]['width'])}"
            f"-e{cfg.get('epochs', PROFILES[profile]['epochs'])}-s{seed}-{datetime.now():%Y%m%d-%H%M%S}")
    results = Path(results); results.mkdir(parents=True, exist_ok=True)
    path = results/f'{name}.json'
    settings = {k: v for a in (ablation or '').split(',') if a for k, v in ABLATIONS[a].items()} | ({'precision': precision} if precision else {})
    if settings.get('widths') and 'width' in cfg:  # an ablation's widths are at the profile's width, as `changes` reads them
        settings['widths'] = widths_at(settings['widths'], cfg['width'], PROFILES[profile]['width'])
    train(data=data, seed=seed, out=Path(runs)/name, record_to=[path], profile=profile, settings=settings or None,
          info={k: v for k, v in dict(ablation=ablation, command=command).items() if v} or None, **cfg)
    return path


# A run's options, not its profile's: shown in the table (width, epochs) or as the machine chose (precision)
RUN_OPTIONS = ('width', 'epochs', 'bs', 'augment', 'precision', 'compile')
TIME_ONLY = ('test_every',)  # settings that change a run's time only: not its weights, nor its reported accuracy


def as_json(v): return [as_json(x) for x in v] if isinstance(v, (tuple, list)) else v


def same(a, b) -> bool:
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)): return math.isclose(a, b, rel_tol=1e-9)
    return as_json(a) == as_json(b)


def as_run(r) -> dict:
    """Result `r`'s settings; a key the run predates at the value that kept the code of then: the seed profile's default
    (each new setting's default is the old behaviour), except `whiten`: the fast net always whitened before it"""
    s = {k: r.get(k, SEED_PROFILE[k]) for k in SEED_PROFILE}
    if 'whiten' not in r and s['arch'] == 'fast': s['whiten'] = True
    return s


def value(s, k):
    "A setting as it acts: act None is the net's own activation"
    return (s[k] or inspect.signature(ARCHS[s['arch']]).parameters['act'].default) if k == 'act' else s[k]


def changes(run, settings) -> list:
    """The keys in which a run's settings differ from `settings`: the run's options, the time-only settings and LRs that lr_find chose aside;
    the groups' widths as `settings` has them at the run's width"""
    found_lr = {k for k in ('lr_min', 'lr_max') if settings[k] is None}
    settings = settings | {'widths': widths_at(settings['widths'], run['width'], settings['width'])}
    return [k for k in SEED_PROFILE if k not in (*RUN_OPTIONS, *TIME_ONLY, *found_lr) and not same(value(run, k), value(settings, k))]


def run_label(r, seed=True):
    "Profile, ablation and seed of a result, for tables and legends"
    return profile_label(r) + (f" w{r['width']} seed {r['seed']}" if seed else '')


def profile_label(r) -> str:
    """A result's profile and ablations as the run had them. A profile whose settings have changed since says so: the
    keys that differ ("then: lookahead False"), or the profile it then matched ("then: the fast profile"). An ablation
    that changed nothing in the profile as the run had it (one the profile has taken in since) is left out. A run with
    ablations or other epochs that ran exactly another profile's settings (made a profile since) is that profile."""
    profile, names = r['profile'], [a for a in (r.get('ablation') or '').split(',') if a]
    if profile not in PROFILES or any(a not in ABLATIONS for a in names): return profile + (f" ({r['ablation']})" if names else '')
    run, change = as_run(r), {k: v for a in names for k, v in ABLATIONS[a].items()}
    matched = ('epochs', 'bs', 'width')  # the run options compared; an ablation of another (fp32) keeps the usual label
    if ((changes(run, PROFILES[profile]) or r['epochs'] != PROFILES[profile]['epochs'])
            and not any(k in RUN_OPTIONS and k not in matched for k in change)):
        ran = next((p for p, s in PROFILES.items() if p != profile and all(r[k] == s[k] for k in matched) and not changes(run, s)), None)
        if ran: return ran
    base, then = PROFILES[profile], changes(run, PROFILES[profile] | change)
    if then:
        other = len(then) > 2 and next((p for p in PROFILES if p != profile and not changes(run, PROFILES[p] | change)), None)
        base = PROFILES[other] if other else None
        listed = ', '.join(f'{k} {as_json(run[k])}' for k in then[:3]) + (f' and {len(then) - 3} more' if len(then) > 3 else '')
        profile += f' (then: the {other} profile)' if other else f' (then: {listed})'
    def acts(i, a):  # changes a key of the base that no later ablation sets again
        return base is None or any(not same(value(base | {k: v}, k), value(base, k)) and not any(k in ABLATIONS[b] for b in names[i + 1:])
                                   for k, v in ABLATIONS[a].items())
    kept = [a for i, a in enumerate(names) if acts(i, a)]
    return profile + (f" ({','.join(kept)})" if kept else '')


def load_results(results='bench/results') -> list:
    "The result JSONs in `results`, by file name; a missing folder or one without any is refused"
    if not Path(results).is_dir(): raise RecipeError(f"no such folder of results: {results}")
    found = sorted(Path(results).glob('*.json'))
    if not found: raise RecipeError(f"no result JSON in {results}")
    return sorted((json.loads(p.read_text()) | {'file': p.name} for p in found),
                  key=lambda r: r['file'])


def epoch_walls(r) -> list:
    """Wall seconds from the start of run `r` to the end of each epoch. Runs recorded before `per_epoch_wall`
    existed: the run's wall time less the epochs after that one."""
    pe = r['per_epoch']
    return r.get('per_epoch_wall') or [r['wall_seconds'] - sum(e['seconds'] for e in pe[i+1:]) for i in range(len(pe))]


def time_to(r, target) -> float:
    """Wall seconds from the start of run `r` until its test accuracy first reached `target`: at the end of an
    epoch, or at the end of the run when only its final accuracy (with TTA) reaches it. None if never."""
    for e, wall in zip(r['per_epoch'], epoch_walls(r)):
        if e['test_accuracy'] is not None and e['test_accuracy'] >= target: return wall  # None: an epoch not tested
    return r['wall_seconds'] if r['complete'] and r['test_accuracy'] >= target else None


def last_tested(r) -> str: return f"{100*last_test_accuracy(r):.2f}%" if 'test_accuracy' in r else 'not tested yet'


def minutes(seconds): return '-' if seconds is None else f'{seconds/60:.1f} min'


def write_report(results='bench/results', md='BENCHMARKS.md'):
    """BENCHMARKS.md: one table row per run and two plots (accuracy vs epoch, vs wall-clock time), the plots beside the
    results folder; links are relative to the Markdown file's folder. Checked before anything is written."""
    runs, md = load_results(results), Path(md)
    if not md.parent.is_dir(): raise RecipeError(f"no such folder for {md}: {md.parent}")
    link = lambda path: Path(os.path.relpath(path, md.parent)).as_posix()
    full = lambda r: r.get('data', {}).get('n_test', CIFAR_TEST) == CIFAR_TEST  # `bench --data` on a subset tests on fewer
    fig_dir = Path(results).parent
    figs = {'epoch': fig_dir/'accuracy_vs_epoch.png', 'time': fig_dir/'accuracy_vs_time.png'}
    for x, fn in figs.items():
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in runs:
            pe = r['per_epoch']
            xs = [e['epoch'] for e in pe] if x == 'epoch' else [w/60 for w in epoch_walls(r)]
            ax.plot(xs, [e['test_accuracy'] for e in pe], marker='.', label=run_label(r) + ('' if r['complete'] else ' (incomplete)'))
        ax.axhline(0.9, c='k', ls=':', lw=1); ax.axhline(0.94, c='k', ls=':', lw=1)
        if x == 'time': ax.set_xscale('log')
        ax.set_xlabel('epoch' if x == 'epoch' else 'wall-clock minutes since the run started (log scale; decoding and lr_find included)')
        ax.set_ylabel(f'test accuracy ({CIFAR_TEST:,} images)' if all(map(full, runs)) else 'test accuracy'); ax.set_ylim(0.4, 1); ax.grid(alpha=.3); ax.legend()
        fig.savefig(fn, dpi=100, bbox_inches='tight'); plt.close(fig)
    lines = ['# Benchmarks', '', f'Generated by `python -m recipe report` from `{results}/` (one JSON per run). '
             f'Accuracy is on all {CIFAR_TEST:,} CIFAR-10 test images after the last epoch' +
             ('.' if all(map(full, runs)) else ' where the row does not give another number of test images.'), '',
             'Time to 90% / 94%: wall time from the start of the run to the end of the first epoch whose test accuracy '
             'reached it (or to the end of the run, TTA included, when only the final accuracy did).', '',
             '| profile | width | epochs | seed | test accuracy | wall time | to 90% | to 94% | machine | commit | file |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    complete = {}  # (profile, width, epochs) -> accuracies of its complete runs
    for r in runs:
        m = r['machine']
        if r['complete']: complete.setdefault((run_label(r, seed=False), r['width'], r['epochs']), []).append(100*r['test_accuracy'])
        status = f"{100*r['test_accuracy']:.2f}%" + (f" ({100*r['test_accuracy_no_tta']:.2f}% without TTA)" if 'test_accuracy_no_tta' in r else '') if r['complete'] else f"incomplete: {last_tested(r)} after {len(r['per_epoch'])} of {r['epochs']} epochs"
        if not full(r): status += f" on {r['data']['n_test']:,} test images"
        lines.append(f"| {run_label(r, seed=False)} | {r['width']} | {r['epochs']} | {r['seed']} | {status} | {minutes(r['wall_seconds'])} | "
                     f"{minutes(time_to(r, 0.9))} | {minutes(time_to(r, 0.94))} | "
                     f"{m['cpu']}, {m['cores']} cores, GPU: {m['gpu']} | {(r['git_commit'] or '?')[:12]} | [{r['file']}]({link(Path(results)/r['file'])}) |")
    if complete: lines += ['', 'Complete runs:', '']
    for (profile, width, epochs), accs in complete.items():
        lines.append(f"- {profile}, width {width}, {epochs} epochs: {len(accs)} run{'s' if len(accs) > 1 else ''}, "
                     f"mean {mean(accs):.2f}%, lowest {min(accs):.2f}%, highest {max(accs):.2f}%")
    lines += ['', f'![test accuracy per epoch]({link(figs["epoch"])})', '', f'![test accuracy against training time]({link(figs["time"])})', '']
    md.write_text('\n'.join(lines))
    return md
