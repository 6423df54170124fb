import json
import numpy as np, pytest
import recipe
from recipe.config import PEAK_AT
from recipe.seed import choose_lrs


@pytest.fixture(scope='module')
def fitted(small, tmp_path_factory):
    "A short real fit on a small subset (3,000 training images), with given LRs"
    out = tmp_path_factory.mktemp('runs')/'fit'
    return recipe.train(small, epochs=4, bs=64, width=8, lr_min=1e-3, lr_max=1e-2, seed=0, out=out), out


def test_schedule_starts_peaks_and_ends_where_the_recipe_says(fitted):
    learn, _ = fitted
    lrs = np.array(learn.recorder.hps['lr'])  # the LR of every training step
    n = len(lrs)
    assert lrs[0] == pytest.approx(1e-3, rel=1e-6)
    assert lrs.max() == pytest.approx(1e-2, rel=1e-3)
    assert abs(lrs.argmax() - PEAK_AT * n) <= 1
    assert lrs[-1] == pytest.approx(1e-3, rel=1e-2)  # no annihilation: it ends at LRMIN


def test_short_fit_beats_chance_clearly(fitted):
    _, out = fitted
    res = json.loads((out/'results.json').read_text())
    assert res['complete'] and len(res['per_epoch']) == 4
    assert res['test_accuracy'] > 0.3  # chance is 0.1


def test_same_seed_same_run(tiny, tmp_path, finished_run):
    """The run of conftest's `finished_run` again, with its seed: the same metrics every epoch. A short run (12 steps);
    longer ones repeat too: tests/test_shape.py, and the resumed runs of tests/test_checkpoint.py"""
    recipe.train(tiny, epochs=2, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0, out=tmp_path/'again')
    first, again = (json.loads((o/'results.json').read_text())['per_epoch'] for o in (finished_run, tmp_path/'again'))
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]
    assert strip(first) == strip(again)


def test_lr_choice_from_suggestions():
    s = dict(minimum=3e-3, steep=1e-3, valley=2e-4, slide=3e-2)
    assert choose_lrs(s) == pytest.approx((9e-4, 9e-3))  # 3 x minimum, and a tenth of that
    assert choose_lrs(s, lr_max=1e-2) == (1e-3, 1e-2)
    assert choose_lrs(s, lr_min=1e-3) == (1e-3, 1e-2)
    assert choose_lrs(s, 1e-4, 1e-2) == (1e-4, 1e-2)


def test_recipe_learner_calls_the_callbacks_fastai_would_in_its_order(tiny):
    "RecipeLearner keeps a list of callbacks per event: the same calls as fastai's Learner, with callbacks added by fit"
    import torch
    from fastai.vision.all import Callback, Learner, CrossEntropyLossFlat
    from recipe.run import RecipeLearner
    log = []
    class Log(Callback):
        def __init__(self, name, order): self.name_, self.order = name, order
        def before_batch(self): log.append(('before_batch', self.name_, self.training))
        def after_loss(self): log.append(('after_loss', self.name_))
    class Ends(Callback):
        order = 5
        def after_fit(self): log.append(('after_fit', 'ends'))
    class Skipped(Callback):
        run_valid = False
        def after_pred(self): log.append(('after_pred', 'skipped', self.training))
    logs = {}
    for cls in (Learner, RecipeLearner):
        log.clear()
        dls = recipe.image_dls(tiny, bs=50, seed=0, augment='batch')
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        learn = cls(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[Log('late', 50), Log('early', 1), Skipped()])
        learn.fit(1, 1e-3, cbs=[Ends(), Log('added', 20)])
        learn.fit(1, 1e-3)  # the added ones are gone again
        logs[cls.__name__] = list(log)
    assert logs['RecipeLearner'] == logs['Learner']
    assert logs['Learner'][:2] == [('before_batch', 'early', True), ('before_batch', 'added', True)]
    assert ('after_pred', 'skipped', False) not in logs['Learner'] and logs['Learner'].count(('after_fit', 'ends')) == 1


@pytest.mark.parametrize('profile, advised', [('seed', True), ('quick', False)])
def test_a_long_cpu_fit_of_the_seed_recipe_points_to_the_fast_profiles(profile, advised, tiny, tmp_path, monkeypatch, capsys):
    "A clock that jumps 10,000 s at each reading: the expected duration is hours, and only the seed recipe adds its advice"
    import itertools, types
    import recipe.callbacks
    clock = itertools.count(0, 10_000)
    monkeypatch.setattr(recipe.callbacks, 'time', types.SimpleNamespace(perf_counter=lambda: next(clock)))
    recipe.train(tiny, out=tmp_path/'run', profile=profile, epochs=1, bs=16, width=8, lr_max=1e-2, seed=0)
    expected = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('expected duration'))
    assert ('--profile fast reaches 94%' in expected) == advised, expected
