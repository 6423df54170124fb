"""Variants of the fast profile, each a setting: the candidates of issue 23 (after Hiverge's cifar10-speedrun: the
net's activation, brightness/contrast jitter, the whitening bias for a fraction of an epoch; progressive resizing), bench's
combined ablations, and the wider nets of the fast95 and fast96 profiles (after airbench95 and airbench96)."""
import json
import re
import types

import numpy as np

import pytest
import torch
import torch.nn.functional as F

import recipe
from recipe.augment import ColorJitter
from recipe.bench import run_profile
from recipe.callbacks import PruneEasy, SmallEarly
from recipe.data import RecipeError
from recipe.settings import small_stages
from fastai.vision.all import CancelFitException, TensorImage


def test_the_activation_setting_builds_the_net_with_it_and_a_loaded_run_rebuilds_it(tiny, tmp_path):
    net = recipe.make_model('fast', 10, 8, 'silu')
    acts = [type(m) for m in net.modules() if isinstance(m, (torch.nn.GELU, torch.nn.SiLU, torch.nn.ReLU))]
    assert acts == [torch.nn.GELU] + [torch.nn.SiLU] * 6  # the whitening's GELU, then every group's
    assert [type(m) for m in recipe.make_model('fast', 10, 8).modules() if isinstance(m, torch.nn.SiLU)] == []
    assert any(isinstance(m, torch.nn.SiLU) for m in recipe.make_model('resnet', 10, 8, 'silu').modules())
    with pytest.raises(ValueError, match="act must be one of relu, gelu, silu, got 'tanh'"): recipe.make_model('fast', 10, 8, 'tanh')
    out = tmp_path/'run'
    recipe.train(tiny, out=out, profile='quick', settings=recipe.ABLATIONS['silu'], epochs=1, bs=50, width=8, seed=0)
    assert json.loads((out/'model.json').read_text())['act'] == 'silu'
    assert 'silu activation' in (out/'README.md').read_text()
    model = recipe.load(out)
    assert sum(isinstance(m, torch.nn.SiLU) for m in model.modules()) == 6
    images = sorted((tiny/'test').rglob('*.png'))[:8]
    assert all(isinstance(p, list) for p in recipe.predict(model, images))  # the rebuilt net holds the weights and predicts


def test_jitter_shifts_then_scales_each_training_image_by_one_draw_within_its_ranges():
    torch.manual_seed(0)
    x = TensorImage(torch.randn(4000, 3, 4, 4))
    y = ColorJitter(0.14, 0.13)(x, split_idx=0)
    # per image: y = (x + b) c, so y is an affine map of x with one slope c and one intercept b c for every pixel
    xf, yf = x.flatten(1), y.flatten(1)
    c = ((yf - yf.mean(1, keepdim=True)) * (xf - xf.mean(1, keepdim=True))).sum(1) / ((xf - xf.mean(1, keepdim=True))**2).sum(1)
    b = (yf.mean(1) / c) - xf.mean(1)
    assert torch.allclose(yf, (xf + b[:, None]) * c[:, None], atol=1e-4)
    assert c.min() >= 0.87 - 1e-4 and c.max() <= 1.13 + 1e-4 and b.abs().max() <= 0.14 + 1e-4
    assert c.min() < 0.88 and c.max() > 1.12 and b.abs().max() > 0.13  # the whole range is drawn, not a constant
    assert torch.equal(ColorJitter(0.14, 0.13)(x, split_idx=1), x)  # test batches untouched


def test_jitter_reaches_the_training_batches_only_and_needs_the_batch_path(tiny):
    plain = recipe.image_dls(tiny, bs=16, augment='batch', seed=0)
    jittered = recipe.image_dls(tiny, bs=16, augment='batch', seed=0, jitter=(0.5, 0.5))
    assert any(isinstance(t, ColorJitter) for t in jittered.train.after_batch.fs)
    assert not any(isinstance(t, ColorJitter) for t in plain.train.after_batch.fs)
    assert torch.equal(plain.valid.one_batch()[0], jittered.valid.one_batch()[0])
    with pytest.raises(RecipeError, match="jitter must be .* with augment 'batch'; got \\(0.1, 0.1\\) with augment 'albumentations'"):
        recipe.image_dls(tiny, bs=16, augment='albumentations', jitter=(0.1, 0.1))
    with pytest.raises(RecipeError, match='jitter must be'): recipe.image_dls(tiny, bs=16, augment='batch', jitter=(-0.1, 0.1))


def test_the_whitening_bias_learns_for_a_fraction_of_an_epoch_only(tiny, tmp_path):
    """0.5 epoch of 4 steps: the bias moves in steps 1-2 and never after. On fast-sgd (no lookahead), where nothing
    else stops it: its LR does not decay to 0 there, as Muon's schedule does"""
    seen = []
    class Watch(recipe.callbacks.Callback):
        order = 50
        def before_fit(self): seen.append(self.learn.model[0].bias.detach().clone())
        def after_step(self): seen.append(self.learn.model[0].bias.detach().clone())
    recipe.train(tiny, out=tmp_path/'run', profile='fast-sgd', settings=dict(whiten_bias_epochs=0.5, lookahead=False), epochs=2,
                 bs=50, width=8, seed=0, cbs=[Watch()])
    moved = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]  # moved[i]: step i + 1 changed it
    assert len(moved) == 8 and moved[:2] == [True, True] and not any(moved[2:])


def test_a_frozen_whitening_bias_has_its_gradient_switched_off_for_the_same_weights(tiny, tmp_path, monkeypatch):
    """In one process, after its epochs the bias's gradient is off (as in airbench94): the backward pass no longer
    reaches the first group's input, and the weights come out bit-identical to dropping its gradient at each step"""
    graph = []  # per training batch: does the whitening's output (the first group's input) take part in the backward?
    class Watch(recipe.callbacks.Callback):
        order = 50
        def before_fit(self): self.hook = self.learn.model[1].register_forward_hook(lambda m, i, o: graph.append(o.requires_grad) if m.training else None)
        def after_fit(self): self.hook.remove()
    kw = dict(profile='quick', settings=dict(whiten_bias_epochs=0.5), epochs=2, bs=50, width=8, seed=0)
    off = recipe.train(tiny, out=tmp_path/'off', cbs=[Watch()], **kw)
    assert graph == [True, True, False, False, False, False, False, False]  # 4 steps an epoch: 2 with the bias learning
    assert off.model[0].bias.requires_grad  # given back as it was
    monkeypatch.setattr(recipe.callbacks.WhitenBias, 'before_batch', lambda self: None)  # the gradient only dropped
    dropped = recipe.train(tiny, out=tmp_path/'dropped', **kw)
    assert all(torch.equal(a, b) for a, b in zip(off.model.state_dict().values(), dropped.model.state_dict().values()))
    def metrics(run): return [line.split(',')[:4] for line in (tmp_path/run/'metrics.csv').read_text().splitlines()]  # not the seconds
    assert metrics('off') == metrics('dropped')


def test_the_whitening_bias_switch_is_for_a_plain_net_in_one_process_only():
    """DDP needs the same trained parameters throughout (the gradient is only dropped there), and a compiled net
    would compile its step again at the switch"""
    from types import SimpleNamespace
    net, cb = recipe.FastNet(10, 8), recipe.callbacks.WhitenBias(0.5)
    cb.learn = SimpleNamespace(model=net)
    assert cb.switchable()
    cb.learn = SimpleNamespace(model=SimpleNamespace(module=net))  # as DDP wraps it
    assert not cb.switchable()
    cb.learn = SimpleNamespace(model=net); net.compile()  # in place, as --compile does (nothing compiled until called)
    assert not cb.switchable()
    net[0].bias.requires_grad_(False); cb.before_fit()  # a fit that failed after the switch: the next one learns again
    assert net[0].bias.requires_grad


@pytest.mark.parametrize('bad, message', [
    (dict(act='tanh'), "act must be one of relu, gelu, silu"), (dict(jitter=0.1), 'jitter must be'),
    (dict(small_early=(24, True)), 'small_early must be'), (dict(widths=(8, 8)), 'widths must be 3 positive integers'),
    (dict(depth=4), 'depth must be 2 or 3, or one of them for each of the 3 groups, got 4'),
    (dict(depth=(2, 3)), 'depth must be 2 or 3, or one of them'), (dict(depth=(2, 2, 4)), 'depth must be'), (dict(depth=[3]), 'depth must be'), (dict(schedule=(0.2, 1.5, 0.1)), 'schedule must be'),
    (dict(bn_mom=0.0), 'bn_mom must be'), (dict(tta_below=1.5), 'tta_below must be a probability in (0, 1], or None, got 1.5'),
    (dict(tta_below=True), 'tta_below must be'), (dict(schedule=(True, 0.5, 0.1)), 'schedule must be'),
    (dict(flip=1), "flip must be True, False or 'alternate', got 1"), (dict(flip='sometimes'), 'flip must be'),
    (dict(flip='alternate', augment='albumentations'), "flip 'alternate' needs augment 'batch'"),
    (dict(lr_max=True), 'lr_max must be a positive number, got True'),
    (dict(test_every=-1), 'test_every must be a whole number of epochs >= 0 (0: the test pass after the last epoch only), got -1'),
    (dict(test_every=True), 'test_every must be'), (dict(test_every=1.5), 'test_every must be'),
    (dict(freeze_at=(True,)), 'freeze_at must be'), (dict(freeze_at=(1, 0.5)), 'freeze_at must be'),
    (dict(freeze_at=(2,)), 'freeze_at must be None or 1 to 3 epochs, each in (0, epochs 2), in order'),
    (dict(prune_easy=1.5), 'prune_easy must be a share in (0, 1), or None, got 1.5'), (dict(prune_easy=True), 'prune_easy must be'),
    (dict(prune_easy=0.5, augment='albumentations', flip=True, jitter=None), "prune_easy must be None with augment 'albumentations'"),
    (dict(freeze_at=5), 'freeze_at must be'), (dict(freeze_at=(1,), arch='resnet', opt='adam'), 'freeze_at (1,)')])
def test_the_new_settings_are_checked_before_any_work(bad, message, tmp_path):
    with pytest.raises(RecipeError, match=re.escape(message)):
        recipe.train(tmp_path/'no-data-needed', out=tmp_path/'x', profile='quick', settings=bad)
    assert not (tmp_path/'x').exists()


def test_a_nesterov_run_of_a_profile_without_a_schedule_gets_the_triangle():
    assert recipe.settings_for('seed', dict(opt='nesterov', lr_max=1.0))['schedule'] == recipe.TRIANGLE
    assert recipe.settings_for('fast-sgd')['act'] is None and recipe.settings_for('seed')['act'] is None  # the net's own


def test_bench_joins_ablations_given_with_commas_and_names_an_unknown_one(tiny, tmp_path):
    path = run_profile('quick', data=tiny, epochs=1, bs=50, width=8, ablation='silu,whiten-bias-0.19',
                                    results=tmp_path/'results', runs=tmp_path/'runs')
    r = json.loads(path.read_text())
    assert recipe.PROFILES['quick']['act'] != 'silu' and recipe.PROFILES['quick']['whiten_bias_epochs'] != 0.19  # each one shows
    assert (r['act'], r['whiten_bias_epochs'], r['ablation']) == ('silu', 0.19, 'silu,whiten-bias-0.19') and 'silu+whiten-bias-0.19' in path.name
    with pytest.raises(RecipeError, match="unknown ablation 'nope'"):
        run_profile('quick', data=tiny, ablation='silu,nope', results=tmp_path/'results', runs=tmp_path/'runs')


def test_small_early_trains_the_first_epochs_on_smaller_images_stage_by_stage_and_tests_at_full_size(tiny, tmp_path):
    sizes = []
    class Watch(recipe.callbacks.Callback):
        order = 50
        def after_pred(self): sizes.append((self.training, self.epoch, tuple(self.xb[0].shape[2:])))
    learn = recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=dict(small_early=((24, 1), (28, 1)), small_by='crop'),
                         epochs=3, bs=50, width=8, seed=0, cbs=[Watch()])
    assert {s for s in sizes if s[0]} == {(True, 0, (24, 24)), (True, 1, (28, 28)), (True, 2, (32, 32))}
    assert {s for s in sizes if not s[0]} == {(False, e, (32, 32)) for e in range(3)}
    assert [cb.by for cb in learn.cbs if isinstance(cb, SmallEarly)] == ['crop']
    assert [SmallEarly(*small_stages((24, 3))).size_at(e) for e in range(5)] == [24, 24, 24, None, None]  # fast-progressive's 8-epoch setting
    assert [SmallEarly((24, 3), (28, 2)).size_at(e) for e in range(7)] == [24, 24, 24, 28, 28, None, None]
    sizes.clear()  # a stage at the full size first: the small epochs after it
    recipe.train(tiny, out=tmp_path/'later', profile='quick', settings=dict(small_early=((32, 1), (24, 1))), epochs=3, bs=50, width=8,
                 seed=0, cbs=[Watch()])
    assert {s for s in sizes if s[0]} == {(True, 0, (32, 32)), (True, 1, (24, 24)), (True, 2, (32, 32))}
    with pytest.raises(RecipeError, match=r"or = size for the first stage only.*got \(\(24, 1\), \(32, 1\)\)"):
        recipe.settings_for('fast-progressive', dict(small_early=((24, 1), (32, 1))))  # a full-size stage after a small one
    # every epoch small, not smaller, too small, not a pair, every epoch small over the stages, a stage not a pair, only full size
    for bad in [(24, 2), (32, 1), (12, 1), 24, ((24, 1), (28, 1)), ((24, 1), 28), ((32, 1),)]:
        with pytest.raises(RecipeError, match=r"small_early must be \(pixels, epochs\).*got " + re.escape(repr(bad))):
            recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(small_early=bad), epochs=2)


def test_clean_last_trains_the_last_epochs_on_the_images_untranslated_and_unjittered(tiny, tmp_path):
    seen = []
    class Watch(recipe.callbacks.Callback):
        order = 50
        def before_batch(self):
            if not self.training: return
            dl = self.dls.train
            mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.dls.stats)
            plain = (dl.images[dl.batch_idxs].float() / 255 - mean) / std  # the loader's images, normalized, unaugmented
            x = self.xb[0].float()
            as_stored = [min((x[i] - p).abs().max().item() for p in (plain[i], plain[i].flip(-1))) for i in range(len(x))]
            seen.append((self.epoch, max(as_stored) < 1e-4))
    learn = recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=dict(clean_last=1), epochs=3, bs=50, width=8,
                         seed=0, cbs=[Watch()])
    # epochs 0-1 translate and jitter every batch; the last trains on the images as stored (mirrored or not)
    assert {e for e, _ in seen} == {0, 1, 2} and all(clean == (e == 2) for e, clean in seen)
    tfms = learn.dls.train.after_batch.fs
    augments = lambda: ([(t.pad, t.cutout) for t in tfms if hasattr(t, 'pad')], [(t.brightness, t.contrast) for t in tfms if hasattr(t, 'contrast')])
    assert augments() == ([(2, 0)], [(0.14, 0.13)])  # put back after the fit
    assert recipe.bench.as_run(json.loads((tmp_path/'run'/'results.json').read_text()))['clean_last'] == 1
    # a fit stopped in its clean epoch (no after_fit) leaves them clean; the next fit's first epoch puts them back
    class Stop(recipe.callbacks.Callback):
        def before_batch(self):
            if self.training and self.epoch == 1: raise RuntimeError('stopped')
    with pytest.raises(RuntimeError, match='stopped'): learn.fit(2, cbs=[Stop()])
    assert augments() == ([(0, 0)], [(0, 0)])
    seen.clear(); learn.fit(2, cbs=[Watch()])
    assert {e for e, _ in seen} == {0, 1} and all(clean == (e == 1) for e, clean in seen) and augments() == ([(2, 0)], [(0.14, 0.13)])
    seen.clear()
    with learn.added_cbs(Watch()): learn.lr_find(num_it=14, show_plot=False)  # epochs of 4 batches: 4 epochs, the last cut short
    assert {e for e, _ in seen} == {0, 1, 2, 3} and not any(clean for _, clean in seen)  # lr_find's last epoch not made clean
    for bad in [-1, 4, 1.5, True]:
        with pytest.raises(RecipeError, match=rf"clean_last must be a whole number of epochs from 0 to epochs 3, got {re.escape(repr(bad))}"):
            recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(clean_last=bad), epochs=3)
    with pytest.raises(RecipeError, match=r"clean_last must be 0 with augment 'albumentations' \(it needs the batch path\), got 1"):
        recipe.train(tiny, out=tmp_path/'x', profile='seed', settings=dict(clean_last=1), epochs=3)  # the seed's per-image path


def test_small_early_by_crop_takes_a_random_window_of_each_image_at_its_scale(tiny, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    def small(epoch, **by):
        cb = SmallEarly((24, 1), (28, 1), **by)
        cb.learn = types.SimpleNamespace(xb=(x,), epoch=epoch)
        cb.before_batch()
        return cb.learn.xb[0]
    crops = small(0, by='crop')
    assert crops.shape == (64, 3, 24, 24) and crops.is_contiguous(memory_format=torch.channels_last)
    where = [[(a, b) for a in range(9) for b in range(9) if torch.equal(crops[i], x[i, :, a:a+24, b:b+24])] for i in range(64)]
    assert all(len(w) == 1 for w in where) and len({w[0] for w in where}) > 32  # each a window of its own image, not one for all
    assert small(1, by='crop').shape[2:] == (28, 28) and small(2, by='crop') is x  # the full size after the stages
    assert torch.equal(small(0), F.interpolate(x, size=24, mode='bilinear', antialias=True, align_corners=False))  # by resize
    with pytest.raises(ValueError, match="SmallEarly takes"): SmallEarly(24, 3)  # the stages are pairs
    for bad, msg in [(dict(small_early=(24, 1), small_by='zoom'), "small_by must be 'resize' or 'crop', got 'zoom'"),
                     (dict(small_by='crop'), "small_by must be 'resize' .its default. without small_early, which it shapes, got 'crop'")]:
        with pytest.raises(RecipeError, match=msg):
            recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=bad, epochs=2)


def test_prune_easy_leaves_out_part_of_the_easy_images_and_weighs_the_easy_ones_kept_up(tiny, tmp_path):
    epochs_seen, starts, batches = {}, {}, []
    class Watch(recipe.callbacks.Callback):
        order, run_valid = 50, False  # after PruneEasy
        def before_train(self):
            cb = next(c for c in self.learn.cbs if isinstance(c, PruneEasy))
            starts[self.epoch] = (cb.losses.clone(), self.dls.train.keep, cb.weights.clone())
        def after_loss(self):
            idx = self.dls.train.batch_idxs.clone()
            epochs_seen.setdefault(self.epoch, []).append(idx)
            batches.append((self.pred.float().detach(), self.yb[0], idx, self.epoch, float(self.learn.loss_grad), float(self.learn.loss)))
    learn = recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=dict(prune_easy=0.5), epochs=4, bs=20,
                         width=8, seed=0, cbs=[Watch()])
    n = 200
    seen = {e: torch.cat(v) for e, v in epochs_seen.items()}
    assert sorted(seen[0].tolist()) == list(range(n)) and sorted(seen[3].tolist()) == list(range(n))  # the first and last: all
    for e in (1, 2):  # pruned: every hard image kept, about half the easy ones out, the easy ones kept weigh 2
        losses, keep, weights = starts[e]
        easy = losses < losses.mean()
        out = torch.ones(n, dtype=torch.bool); out[keep] = False
        assert not (out & ~easy).any() and 0.25 < out[easy].float().mean() < 0.75
        assert set(seen[e].tolist()) <= set(keep.tolist()) and len(seen[e]) < n
        assert torch.equal(weights, torch.where(easy & ~out, 2., 1.))
    for pred, y, idx, e, loss_grad, loss in batches:
        per_image = F.cross_entropy(pred, y, label_smoothing=recipe.PROFILES['quick']['label_smoothing'], reduction='none')
        assert loss_grad == pytest.approx(float((per_image * starts[e][2][idx]).mean()), rel=1e-5)
        if (starts[e][2][idx] > 1).any(): assert loss_grad > loss  # the easy images kept weigh more than in the plain mean
    assert any((starts[e][2][idx] > 1).any() for _, _, idx, e, _, _ in batches)
    cb = next(c for c in learn.cbs if isinstance(c, PruneEasy))
    assert cb.kept[0] == cb.kept[3] == 1 and all(0.5 < k < 1 for k in cb.kept[1:3])
    # a second fit starts afresh (all images in its first epoch, as after lr_find's), and one stopped in a pruned epoch
    # gives the loader all its images back
    class StopInEpoch1(recipe.callbacks.Callback):
        def before_batch(self):
            if self.training and self.epoch == 1:
                assert self.dls.train.keep is not None
                raise CancelFitException()
    learn.fit(3, 1e-4, cbs=[StopInEpoch1()])
    assert cb.kept[0] == 1 and len(cb.kept) == 2 and cb.kept[1] < 1
    assert learn.dls.train.keep is None and len(learn.dls.train) == n // 20
    with pytest.raises(ValueError, match="ratio must be in"): PruneEasy(1)
    with pytest.raises(RecipeError, match=r"prune_easy 0.5 needs the training images in memory"):  # the per-item loader
        recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(prune_easy=0.5), epochs=2, bs=20, width=8, max_memory='1KB')


def test_self_distill_mixes_each_label_with_the_nets_prediction_for_that_image_an_epoch_before(tiny, tmp_path):
    batches = []
    class Watch(recipe.callbacks.Callback):
        order, run_valid = 50, False  # after SelfDistill
        def after_loss(self):
            batches.append((self.epoch, self.dls.train.batch_idxs.clone(), self.pred.float().detach(), self.yb[0],
                            float(self.learn.loss_grad), float(self.learn.loss)))
    learn = recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=dict(self_distill=0.5), epochs=3, bs=20,
                         width=8, seed=0, cbs=[Watch()])
    smoothing, n = recipe.PROFILES['quick']['label_smoothing'], 200
    last = torch.zeros(n, 10)  # each image's prediction at its last training pass, recomputed here
    for epoch, idx, pred, y, loss_grad, loss in batches:
        weight = 0.5 * epoch / 2  # 0, 0.25, 0.5: linear up to alpha at the last epoch
        target = (1 - weight) * (F.one_hot(y, 10) * (1 - smoothing) + smoothing / 10) + weight * last[idx]
        assert loss_grad == pytest.approx(float(-(target * F.log_softmax(pred, 1)).sum(1).mean()), rel=1e-4)
        assert loss == pytest.approx(float(F.cross_entropy(pred, y, label_smoothing=smoothing)), rel=1e-4)  # reported: the plain loss
        if epoch: assert abs(loss_grad - loss) > 1e-4  # the net's own predictions do change the target
        last[idx] = F.softmax(pred, 1)
    assert {e for e, *_ in batches} == {0, 1, 2} and sorted(torch.cat([b[1] for b in batches if b[0] == 2]).tolist()) == list(range(n))
    # a validation in the middle of a fit (fastai runs before_fit/after_fit around it) keeps the predictions
    class ValidateMidway(recipe.callbacks.Callback):
        def after_batch(self):
            if self.training and self.epoch == 1 and self.iter == 0: self.learn.validate()
    batches.clear(); learn.fit(3, cbs=[ValidateMidway(), Watch()])
    assert all(abs(loss_grad - loss) > 1e-4 for epoch, *_, loss_grad, loss in batches if epoch == 2)
    for bad, msg in [(1.5, 'a weight in .0, 1., or None, got 1.5'), (0, 'a weight in .0, 1., or None, got 0')]:
        with pytest.raises(RecipeError, match=f"self_distill must be {msg}"):
            recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(self_distill=bad), epochs=3)
    with pytest.raises(RecipeError, match=r"self_distill must be None with prune_easy \(both set a batch's training loss\), got 0.5"):
        recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(self_distill=0.5, prune_easy=0.5), epochs=3)
    with pytest.raises(RecipeError, match=r"self_distill must be None with augment 'albumentations' \(it needs the batch path\), got 0.5"):
        recipe.train(tiny, out=tmp_path/'x', profile='seed', settings=dict(self_distill=0.5), epochs=3)
    from recipe.run import new_run
    with pytest.raises(RecipeError, match=r"self_distill 0.5 in a distributed run: it keeps one process's predictions"):
        new_run(types.SimpleNamespace(rank=0, size=2), 'quick', dict(self_distill=0.5), {}, out=tmp_path/'y', seed=0, record_to=[])
    assert not (tmp_path/'y').exists()


def test_prune_easy_is_refused_in_a_distributed_run_before_its_folder(tmp_path):
    # where train() checks a new run's settings with its process group (a real two-process run: tests/test_distributed.py)
    from recipe.run import new_run
    with pytest.raises(RecipeError, match=r"prune_easy 0.5 in a distributed run: it prunes one process's loader"):
        new_run(types.SimpleNamespace(rank=0, size=2), 'quick', dict(prune_easy=0.5), {}, out=tmp_path/'x', seed=0, record_to=[])
    assert not (tmp_path/'x').exists()
    assert new_run(None, 'quick', dict(prune_easy=0.5), {}, out=tmp_path/'y', seed=0, record_to=[]).settings['prune_easy'] == 0.5


def test_fast_progressive_is_what_its_measured_runs_ran():
    # its first results in bench/results/ ran as `bench fast-progressive --ablation group2-192,small-early-2 --epochs 10`:
    # fast7's training for 10 epochs, the first 2 at 24 pixels, group 2 at 192 channels; like them it tests after the last
    # epoch only (the same weights: tests/test_test_every.py) and gives TTA to the images under 0.8 confidence only. Until
    # 2026-12-06 it trained 8 epochs with the first 3 at 24 and the full-width net (docs/results.md)
    ran = recipe.settings_for('fast7', recipe.ABLATIONS['small-early-2'] | recipe.ABLATIONS['group2-192'], epochs=10)
    now = recipe.settings_for('fast-progressive')
    assert now == ran | dict(profile='fast-progressive', tta_below=0.8, test_every=0)
    assert (now['small_early'], now['widths'], now['epochs']) == ((24, 2), (64, 192, 256), 10)


def convs(net): return [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


def test_the_fast_net_takes_the_widths_and_depth_of_airbench95_and_airbench96():
    assert convs(recipe.FastNet(10, 8)) == [24, 8, 8, 32, 32, 32, 32]  # (w, 4w, 4w), 2 convs a group
    assert convs(recipe.FastNet(10, 8, widths=(16, 24, 40))) == [24, 16, 16, 24, 24, 40, 40]
    net = recipe.FastNet(10, 8, widths=(16, 24, 40), depth=3, bn_mom=0.1)
    assert convs(net) == [24, 16, 16, 16, 24, 24, 24, 40, 40, 40]
    assert {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    group = net[2]
    block = next(m for m in group.modules() if type(m).__name__ == 'Residual')
    x = torch.randn(2, 24, 8, 8)
    first = group[:4](x)
    assert torch.allclose(group(x), group[-1](first + block.block(first)))  # the last two convs add to the first's output
    with pytest.raises(ValueError, match='widths must be 3 positive integers'): recipe.FastNet(10, 8, widths=(16, 24))
    with pytest.raises(ValueError, match=r'depth must be 2 or 3, or one of them for each of the 3 groups, got 4'): recipe.FastNet(10, 8, depth=4)
    assert convs(recipe.FastNet(10, 8, depth=(2, 2, 3))) == [24, 8, 8, 32, 32, 32, 32, 32]  # a depth for each group
    assert convs(recipe.FastNet(10, 8, depth=[3, 2, 2])) == [24, 8, 8, 8, 32, 32, 32, 32]  # as model.json holds it
    with pytest.raises(ValueError, match=r'got \(2, 2, True\)'): recipe.FastNet(10, 8, depth=(2, 2, True))


def test_fast95_and_fast96_are_airbench95_and_airbench96_in_our_units():
    s95, s96 = recipe.settings_for('fast95'), recipe.settings_for('fast96')
    assert (s95['widths'], s95['epochs'], s95['depth'], s95['flip']) == ((128, 384, 384), 15, 2, 'alternate')
    assert s95['lr_max'] == pytest.approx(10.0 / (1 + 1 / (1 - 0.85))) and s95['wd'] == 0.002
    assert (s96['widths'], s96['depth'], s96['epochs'], s96['pad'], s96['cutout'], s96['bn_mom']) == ((128, 384, 512), 3, 37, 4, 12, 0.1)
    assert s96['schedule'] == (0.2, 0.1, 0.0) and s96['lr_max'] == pytest.approx(9.0 / 7.6667, rel=1e-3)
    assert recipe.settings_for('fast96', width=16)['widths'] == (16, 48, 64)  # --width keeps the proportions
    assert recipe.settings_for('fast96', dict(width=16))['widths'] == (16, 48, 64)
    assert recipe.settings_for('fast96', dict(widths=(64, 64, 64)), width=64)['widths'] == (64, 64, 64)  # given: kept
    with pytest.raises(RecipeError, match="arch 'resnet' with widths"): recipe.settings_for('seed', dict(widths=(8, 8, 8)))


def test_a_fast96_run_trains_on_its_schedule_and_saves_its_net(tiny, tmp_path):
    out = tmp_path/'run'
    learn = recipe.train(tiny, out=out, profile='fast96', epochs=2, width=8, bs=50, seed=0)
    lrs = np.array(learn.recorder.hps['lr'])  # 8 steps: up from 0.2 x over 10% of training, down to 0
    peak = recipe.settings_for('fast96')['lr_max']
    assert lrs[0] == pytest.approx(0.2 * peak) and lrs.max() <= peak and lrs[-1] == pytest.approx(peak / 8 * (1 / 0.9), rel=0.02)
    meta = json.loads((out/'model.json').read_text())
    assert (meta['widths'], meta['depth']) == ([8, 24, 32], 3)
    model = recipe.load(out)
    assert convs(model) == [24, 8, 8, 8, 24, 24, 24, 32, 32, 32]
    images = sorted((tiny/'test').rglob('*.png'))[:4]
    assert all(isinstance(p, list) for p in recipe.predict(model, images))


def test_freeze_at_stops_each_conv_group_at_its_epoch_and_the_backward_pass_with_it(tiny, tmp_path, monkeypatch):
    """FreezeOut (`freeze_at`): group 1's filters and BatchNorm biases stop changing at its epoch, group 2's at its own;
    in one process the backward pass no longer reaches a frozen group (its input needs no gradient), and the weights
    come out bit-identical to only dropping the frozen gradients at each step; the net is given back trainable"""
    from fastai.vision.all import Callback
    snaps, graph = [], []  # each group's trained params at each epoch's end; does group 2's input take part in the backward?
    class Watch(Callback):
        order = 50
        def before_fit(self): self.hook = self.learn.model[3].register_forward_pre_hook(lambda m, i: graph.append(i[0].requires_grad) if m.training else None)
        def after_epoch(self): snaps.append([[p.detach().clone() for p in self.learn.model[g].parameters()] for g in (2, 3, 4)])
        def after_fit(self): self.hook.remove()
    kw = dict(profile='quick', settings=dict(freeze_at=(1, 2), whiten_bias_epochs=0.5), epochs=3, bs=50, width=8, seed=0)
    off = recipe.train(tiny, out=tmp_path/'off', cbs=[Watch()], **kw)
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))
    assert same(snaps[0][0], snaps[1][0]) and same(snaps[1][0], snaps[2][0])  # group 1: frozen from epoch 1
    assert not same(snaps[0][1], snaps[1][1]) and same(snaps[1][1], snaps[2][1])  # group 2: trains in epoch 1, not 2
    assert not same(snaps[1][2], snaps[2][2])  # group 3 trains to the end
    assert graph == [True] * 4 + [False] * 8  # 4 steps an epoch: group 1 learns in epoch 0 only
    assert all(p.requires_grad for g in (2, 3, 4) for p in off.model[g].parameters() if p.ndim == 4)  # given back as it was,
    assert all(m.bias.requires_grad for m in off.model.modules() if isinstance(m, torch.nn.BatchNorm2d))  # BN biases too
    assert not any(m.weight.requires_grad for m in off.model.modules() if isinstance(m, torch.nn.BatchNorm2d))  # scales stay frozen
    monkeypatch.setattr(recipe.callbacks.FreezeAfter, 'before_batch', lambda self: None)  # the gradients only dropped
    dropped = recipe.train(tiny, out=tmp_path/'dropped', **kw)
    assert all(torch.equal(a, b) for a, b in zip(off.model.state_dict().values(), dropped.model.state_dict().values()))
