"""The test pass after every n-th epoch and after the last only (`test_every`, recipe/callbacks.py SkipTestPasses): which
epochs are tested, that the weights are those of a run tested every epoch, and that every output copes with an
epoch without test metrics."""
import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
from fastai.vision.all import CancelFitException, EarlyStoppingCallback, SaveModelCallback
from safetensors.torch import load_file

import recipe
from recipe.callbacks import SkipTestPasses, check_trackers
from recipe.data import RecipeError
from recipe.record import print_row

RUN = dict(profile='fast', epochs=3, bs=50, width=8, seed=0)  # 4 batches an epoch on `tiny`


def epochs_tested(tiny, out, test_every):
    "A run's epochs (from 0) with a test pass, its learner and its record"
    seen = set()
    class Watch(recipe.callbacks.Callback):
        def after_pred(self):
            if not self.training: seen.add(self.epoch)
    learn = recipe.train(tiny, out=out, test_every=test_every, cbs=[Watch()], **RUN)
    return seen, learn, json.loads((out/'results.json').read_text())


def test_every_nth_epoch_and_the_last_are_tested_with_the_weights_of_a_run_tested_every_epoch(tiny, tmp_path):
    every, learn_every, rec_every = epochs_tested(tiny, tmp_path/'every', 1)
    some, learn, rec = epochs_tested(tiny, tmp_path/'some', 2)
    assert every == {0, 1, 2} and some == {1, 2}  # the 2nd, and the last
    a, b = load_file(tmp_path/'every'/'model.safetensors'), load_file(tmp_path/'some'/'model.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the test pass changes nothing of the training
    assert [e['test_accuracy'] for e in rec['per_epoch']] == [None] + [e['test_accuracy'] for e in rec_every['per_epoch'][1:]]
    assert [e['train_loss'] for e in rec['per_epoch']] == [e['train_loss'] for e in rec_every['per_epoch']]
    assert rec['test_accuracy'] == rec_every['test_accuracy'] and rec['complete'] and rec['test_every'] == 2
    assert rec['per_epoch_test_seconds'][0] == 0  # no pass
    rows = list(csv.DictReader(open(tmp_path/'some'/'metrics.csv')))
    assert rows[0]['test_accuracy'] == rows[0]['test_loss'] == '' and float(rows[1]['test_accuracy']) > 0
    page = (tmp_path/'some'/'report.html').read_text()
    assert '<td class="n">-</td><td class="n">-</td>' in page  # the epoch without a test pass
    assert all((tmp_path/'some'/f'{p}.png').is_file() for p in ('loss', 'accuracy', 'confusion_matrix'))
    assert len(learn.validate()) == 2  # outside a fit, fastai's validate tests: loss and accuracy


def test_test_every_0_tests_after_the_last_epoch_only():
    def tests(n, epoch, n_epoch=8):
        cb = SkipTestPasses(n); cb.learn = SimpleNamespace(epoch=epoch, n_epoch=n_epoch)
        cb.after_train()
        try: cb.before_validate(); return True
        except recipe.callbacks.CancelValidException: return False
    assert [e for e in range(8) if tests(0, e)] == [7]
    assert [e for e in range(8) if tests(3, e)] == [2, 5, 7]
    cb = SkipTestPasses(0); cb.learn = SimpleNamespace(epoch=0, n_epoch=8, cbs=[])
    cb.before_fit(); cb.before_validate()  # no training before it (learn.validate()): tested


def test_a_row_without_test_metrics_prints_in_its_columns_and_epochs_count_from_1(capsys):
    print_row([0, 0.5, 1.0, 0.9, '0:01']); print_row([1, 0.4, float('nan'), float('nan'), '0:01'])  # fastai's rows: epoch 0, 1
    first, second = capsys.readouterr().out.splitlines()
    assert len(first) == len(second) and first.split()[0] == '1' and second.split() == ['2', '0.400000', '-', '-', '0:01']


def test_an_untested_epoch_keeps_every_column_and_a_fit_stopped_after_one_still_finishes(tiny, tmp_path):
    rows = []
    class StopAfterFirst(recipe.callbacks.Callback):
        order = 60  # after the Recorder's row
        def after_epoch(self):
            rows.append(list(self.recorder.log)); raise CancelFitException()
    recipe.train(tiny, out=tmp_path/'run', test_every=0, cbs=[StopAfterFirst()], **RUN)
    (epoch, train_loss, test_loss, acc, time), = rows  # a logger reading the row by position (wandb) finds its columns
    assert epoch == 0 and train_loss > 0 and math.isnan(test_loss) and math.isnan(acc)
    rec = json.loads((tmp_path/'run'/'results.json').read_text())
    assert rec['complete'] and rec['per_epoch'][0]['test_accuracy'] is None and 0 <= rec['test_accuracy'] <= 1  # tested at the end
    assert (tmp_path/'run'/'accuracy.png').is_file()


def test_a_tracker_of_a_test_metric_is_refused_before_any_work_when_epochs_go_untested(tmp_path):
    message = (r"EarlyStoppingCallback\(monitor='valid_loss'\) watches a test metric, and test_every 0 leaves epochs of the 3 "
               r"untested: test every epoch \(test_every 1, --test-every 1\) or watch monitor='train_loss'")
    with pytest.raises(RecipeError, match=message):  # no data needed: refused before it is read
        recipe.train(tmp_path/'no-data', out=tmp_path/'run', test_every=0, cbs=[EarlyStoppingCallback()], **RUN)
    assert not (tmp_path/'run').exists()
    check_trackers([EarlyStoppingCallback()], 1, 0)  # one epoch: tested
    check_trackers([EarlyStoppingCallback()], 4, 1)  # tested every epoch
    for fine in [EarlyStoppingCallback(monitor='train_loss'), SaveModelCallback(every_epoch=True)]:
        check_trackers([fine], 3, 0)
    with pytest.raises(RecipeError, match=r"SaveModelCallback\(monitor='accuracy'\) watches a test metric, and test_every 2"):
        check_trackers([SaveModelCallback(monitor='accuracy')], 4, 2)  # epoch 1 untested


def test_the_expected_duration_counts_the_small_epochs_pixels_and_the_test_passes_that_happen(monkeypatch, capsys):
    import itertools, types
    from recipe.callbacks import ExpectedDuration, SmallEarly
    class Loader(list): bs = 100
    def expected(*cbs):
        cb = ExpectedDuration(n=5)
        cb.learn = SimpleNamespace(training=True, n_iter=10, epoch=0, n_epoch=8, cbs=[cb, *cbs],
                                   dls=SimpleNamespace(train=Loader(range(10)), valid_ds=range(600), size=32, device=torch.device('cpu')))
        cb.before_fit()
        for cb.learn.iter in range(6): cb.after_batch()
        return capsys.readouterr().out
    clock = itertools.count(50, 50)  # 50 s between readings: batches 2-6 of 100 images, 0.1 s an image
    monkeypatch.setattr(recipe.callbacks, 'time', types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert 'about 16 min for 8 epochs' in expected()  # (8 x 1,000 training + 8 x 600 / 3 test images) x 0.1 s
    skip = SkipTestPasses(0); skip.learn = SimpleNamespace(n_epoch=8)
    assert 'about 14 min' in expected(skip)  # one test pass: 8,200 x 0.1 s
    # 0.1 s an image at 24 pixels, (32/24)^2 as much at 32: (3 x 1,000 + 5 x 1,000 x 1.78 + 200 x 1.78) x 0.1 s
    assert 'about 20 min' in expected(SmallEarly((24, 3)), skip)
    # and two stages, 3 epochs at 24 and 2 at 28: (3 x 1,000 + 2 x 1,000 x 1.36 + 3 x 1,000 x 1.78 + 200 x 1.78) x 0.1 s
    assert 'about 19 min' in expected(SmallEarly((24, 3), (28, 2)), skip)
