"""A run's settings: a profile's (recipe/config.py) with the caller's changes, each checked before any work and named
with its value in the error"""
from .config import ABLATIONS, ACTIVATIONS, AUGMENTS, group_depths, PRECISIONS, PROFILES, SEED_PROFILE, SMALL_BY
from .errors import RecipeError

__all__ = ['settings_for', 'check_bench_names', 'widths_at', 'check_net_settings', 'check_options', 'check_seed', 'small_stages', 'is_number',
           'pair', 'check_augment', 'check_size', 'check_flip', 'check_jitter']


def settings_for(profile=None, settings=None, **overrides) -> dict:
    """A profile's settings (recipe/config.py; None: the seed profile), then `settings` (a dict: every value counts,
    None too), then the keyword overrides (None: the profile's), checked"""
    if profile is None: profile = 'seed'
    if profile not in PROFILES: raise RecipeError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    s = ({k: v for k, v in PROFILES[profile].items() if k != 'doc'} | (settings or {}) |
         {k: v for k, v in overrides.items() if v is not None})
    if 'widths' not in (settings or {}): s['widths'] = widths_at(s['widths'], s['width'], PROFILES[profile]['width'])
    unknown = set(s) - set(SEED_PROFILE)
    if unknown: raise RecipeError(f"unknown settings: {', '.join(sorted(unknown))}")
    if s['opt'] != 'adam' and overrides.get('lr_min') is not None:
        raise RecipeError(f"profile {profile!r} has no LRMIN (its LRs follow a fixed schedule from lr_max): give --lr-max only")
    if s['precision'] not in PRECISIONS: raise RecipeError(f"precision must be one of {', '.join(PRECISIONS)}, got {s['precision']!r}")
    check_augment(s['augment'])
    if s['flip'] == 'alternate' and s['augment'] != 'batch' and PROFILES[profile]['augment'] == 'batch':
        raise RecipeError(f"flip 'alternate' needs augment 'batch' (the whole split in memory), got augment {s['augment']!r}: "
                          f"profile {profile!r} augments by batch (leave --augment out)")
    check_flip(s['flip'], s['augment'])
    if s['arch'] != 'fast':  # these need the fast net (its whitening conv, net[0].bias; its groups)
        fast_only = [f"{k} {s[k]!r}" for k, on in (('opt', s['opt'] == 'muon'), ('whiten', s['whiten']),
                                                     ('whiten_bias_epochs', s['whiten_bias_epochs']), ('widths', s['widths']),
                                                     ('freeze_at', s['freeze_at']),
                                                     ('depth', s['depth'] != SEED_PROFILE['depth']),
                                                     ('bn_mom', s['bn_mom'] != SEED_PROFILE['bn_mom'])) if on]
        if fast_only: raise RecipeError(f"settings that do not go together: arch {s['arch']!r} with {', '.join(fast_only)} "
                                        "(the fast net's whitening layer or conv groups): use arch 'fast', or a seed profile's settings")
    check_options(s['epochs'], s['bs'], s['width'], s['lr_min'], s['lr_max'], None)
    check_net_settings(s)
    return dict(s, profile=profile)


def check_bench_names(profile, ablation=None):
    "A benchmark's profile and its ablations ('a,b': both changes; recipe/config.py), by name"
    if profile not in PROFILES: raise RecipeError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    unknown = [a for a in (ablation or '').split(',') if ablation and a not in ABLATIONS]
    if unknown: raise RecipeError(f"unknown ablation {', '.join(map(repr, unknown))}: choose from {', '.join(ABLATIONS)}")


def widths_at(widths, width, base_width):
    "A profile's group widths for the net `width` wide instead of its `base_width`: the profile's net, wider or narrower"
    return tuple(max(1, round(w * width / base_width)) for w in widths) if widths and width != base_width else widths


def check_net_settings(s):
    "The net's and the newer augmentations' settings, checked before any work, each named with its value"
    def need(ok, name, what):
        if not ok: raise RecipeError(f"{name} must be {what}, got {s[name]!r}")
    check_size(s['size'])
    need(s['act'] is None or s['act'] in ACTIVATIONS, 'act', f"one of {', '.join(ACTIVATIONS)} (or None: the net's own)")
    need(s['widths'] is None or (isinstance(s['widths'], (tuple, list)) and len(s['widths']) == 3 and
                                 all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in s['widths'])),
         'widths', '3 positive integers (or None)')
    try: group_depths(s['depth'])
    except ValueError as e: raise RecipeError(str(e)) from None
    need(isinstance(s['bn_mom'], float) and 0 < s['bn_mom'] <= 1, 'bn_mom', 'a number in (0, 1]')
    need(isinstance(s['renorm_every'], int) and not isinstance(s['renorm_every'], bool) and s['renorm_every'] > 0,
         'renorm_every', 'a positive integer (steps)')
    need(is_number(s['filter_wd']) and 0 <= s['filter_wd'] * (s['lr_max'] or 1) < 1, 'filter_wd',
         f"a non-negative number under 1 / lr_max ({s['lr_max']}): the filters shrink by lr x filter_wd a step")
    if s['opt'] != 'muon' and (s['renorm_every'] != 1 or s['filter_wd']):
        raise RecipeError(f"renorm_every {s['renorm_every']!r} and filter_wd {s['filter_wd']!r} are Muon's settings, "
                          f"and opt is {s['opt']!r}: use a Muon profile (fast, fast7, quick) or leave them at 1 and 0")
    sched = s['schedule']
    need(isinstance(sched, (tuple, list)) and len(sched) == 3 and all(map(is_number, sched))
         and 0 < sched[1] < 1, 'schedule', '(start, peak_at, end) with 0 < peak_at < 1')
    check_jitter(s['jitter'], s['augment'])
    need(isinstance(s['clean_last'], int) and not isinstance(s['clean_last'], bool) and 0 <= s['clean_last'] <= s['epochs'],
         'clean_last', f"a whole number of epochs from 0 to epochs {s['epochs']}")
    need(s['clean_last'] == 0 or s['augment'] == 'batch', 'clean_last', f"0 with augment {s['augment']!r} (it needs the batch path)")
    need(isinstance(s['test_every'], int) and not isinstance(s['test_every'], bool) and s['test_every'] >= 0, 'test_every',
         'a whole number of epochs >= 0 (0: the test pass after the last epoch only)')
    need(s['tta_below'] is None or (is_number(s['tta_below']) and 0 < s['tta_below'] <= 1), 'tta_below', 'a probability in (0, 1], or None')
    f = s['freeze_at']
    need(f is None or (isinstance(f, (tuple, list)) and 1 <= len(f) <= 3 and all(map(is_number, f))
                       and all(0 < e < s['epochs'] for e in f) and list(f) == sorted(f)), 'freeze_at',
         f"None or 1 to 3 epochs, each in (0, epochs {s['epochs']}), in order (group 1's first)")
    need(s['prune_easy'] is None or (is_number(s['prune_easy']) and 0 < s['prune_easy'] < 1), 'prune_easy',
         'a share in (0, 1), or None')
    need(s['prune_easy'] is None or s['augment'] == 'batch', 'prune_easy', "None with augment 'albumentations' (it needs the batch path)")
    need(s['self_distill'] is None or (is_number(s['self_distill']) and 0 < s['self_distill'] < 1), 'self_distill',
         'a weight in (0, 1), or None')
    need(s['self_distill'] is None or s['augment'] == 'batch', 'self_distill', f"None with augment {s['augment']!r} (it needs the batch path)")
    need(s['self_distill'] is None or s['prune_easy'] is None, 'self_distill', "None with prune_easy (both set a batch's training loss)")
    need(s['small_by'] in SMALL_BY, 'small_by', ' or '.join(map(repr, SMALL_BY)))
    need(s['small_by'] == 'resize' or s['small_early'], 'small_by', "'resize' (its default) without small_early, which it shapes")
    stages = small_stages(s['small_early'])
    need(s['small_early'] is None or (stages and all(isinstance(px, int) and isinstance(ep, int) and 16 <= px <= s['size'] and ep > 0
                                                     for px, ep in stages) and sum(ep for _, ep in stages) < s['epochs']
                                      and all(px < s['size'] for px, _ in stages[1:]) and (len(stages) > 1 or stages[0][0] < s['size'])),
         'small_early', f"(pixels, epochs), or stages of them in the order they train, with 16 <= pixels < size {s['size']} "
                        f"(or = size for the first stage only: the small ones after it), epochs > 0 and fewer epochs in all than epochs "
                        f"{s['epochs']} (for a profile's small_early, such as fast-progressive's, give more --epochs, or a --size "
                        "above its pixels)")


def small_stages(v) -> list:
    "`small_early` as a list of (pixels, epochs) stages: (24, 3) is [(24, 3)]; [] if it is neither a pair nor pairs"
    if pair(v) != (None, None): return [pair(v)]
    stages = [pair(st) for st in v] if isinstance(v, (tuple, list)) and v else []
    return [] if (None, None) in stages else stages


def check_options(epochs, bs, width, lr_min, lr_max, seed):
    "Reject bad options before any work, naming the value"
    for name, v in dict(epochs=epochs, bs=bs, width=width).items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0: raise RecipeError(f"{name} must be a positive integer, got {v!r}")
    for name, v in dict(lr_min=lr_min, lr_max=lr_max).items():
        if v is not None and not (is_number(v) and 0 < v < float('inf')): raise RecipeError(f"{name} must be a positive number, got {v!r}")
    if lr_min is not None and lr_max is not None and lr_min > lr_max: raise RecipeError(f"lr_min ({lr_min}) must not exceed lr_max ({lr_max})")
    check_seed(seed)


def check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0): raise RecipeError(f"seed must be a non-negative integer, got {seed!r}")


def is_number(x) -> bool:
    "an int or a float, not a bool (True is an int to Python, never a setting's number)"
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def pair(v) -> tuple:
    "(a, b) of a 2-item list or tuple of numbers (not bools), else (None, None)"
    ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(map(is_number, v))
    return tuple(v) if ok else (None, None)


def check_augment(augment):
    if augment not in AUGMENTS: raise RecipeError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")


def check_size(size):
    if isinstance(size, bool) or not isinstance(size, int) or size < 16: raise RecipeError(f"size must be an integer of at least 16 (pixels), got {size!r}")


def check_flip(flip, augment):
    "True (random), False, or 'alternate' (airbench's alternating flip), which works on the batch path only"
    if not (flip is True or flip is False or flip == 'alternate'):  # not `in`: 1 == True
        raise RecipeError(f"flip must be True, False or 'alternate', got {flip!r}")
    if flip == 'alternate' and augment != 'batch':
        raise RecipeError(f"flip 'alternate' needs augment 'batch' (the whole split in memory), got augment {augment!r}")


def check_jitter(jitter, augment):
    "`ColorJitter`'s (brightness, contrast), or None; it works on the batch path only"
    b, c = pair(jitter)
    if jitter is not None and (b is None or b < 0 or c < 0 or augment != 'batch'):
        raise RecipeError(f"jitter must be (brightness, contrast), each >= 0, or None, with augment 'batch'; "
                          f"got {jitter!r} with augment {augment!r}")
