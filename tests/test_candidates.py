"""Issue 23's candidate changes to the fast profile (after Hiverge's cifar10-speedrun), each a setting: the net's
activation, brightness/contrast jitter, the whitening bias for a fraction of an epoch, and bench's combined ablations."""
import json
import re

import pytest
import torch

import recipe
from recipe.augment import ColorJitter
from recipe.bench import run_profile
from recipe.data import RecipeError
from fastai.vision.all import TensorImage


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
    "0.5 epoch of 4 steps: the bias moves in steps 1-2 and never after"
    seen = []
    class Watch(recipe.callbacks.Callback):
        order = 50
        def after_step(self): seen.append(self.learn.model[0].bias.detach().clone())
    recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=dict(whiten_bias_epochs=0.5), epochs=2, bs=50, width=8,
                 seed=0, cbs=[Watch()])
    moved = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert len(seen) == 8 and moved[:1] == [True] and not any(moved[2:])


def test_bench_joins_ablations_given_with_commas_and_names_an_unknown_one(tiny, tmp_path):
    path = run_profile('quick', data=tiny, epochs=1, bs=50, width=8, ablation='silu,ls-0.09',
                                    results=tmp_path/'results', runs=tmp_path/'runs')
    r = json.loads(path.read_text())
    assert (r['act'], r['label_smoothing'], r['ablation']) == ('silu', 0.09, 'silu,ls-0.09') and 'silu+ls-0.09' in path.name
    with pytest.raises(RecipeError, match="unknown ablation 'nope'"):
        run_profile('quick', data=tiny, ablation='silu,nope', results=tmp_path/'results', runs=tmp_path/'runs')


def test_small_early_trains_the_first_epochs_on_smaller_images_and_tests_at_full_size(tiny, tmp_path):
    sizes = []
    class Watch(recipe.callbacks.Callback):
        order = 50
        def after_pred(self): sizes.append((self.training, self.epoch, tuple(self.xb[0].shape[2:])))
    recipe.train(tiny, out=tmp_path/'run', profile='quick', settings=recipe.ABLATIONS['small-early'], epochs=2, bs=50,
                 width=8, seed=0, cbs=[Watch()])
    assert {s for s in sizes if s[0]} == {(True, 0, (24, 24)), (True, 1, (32, 32))}
    assert {s for s in sizes if not s[0]} == {(False, 0, (32, 32)), (False, 1, (32, 32))}
    for bad in [(24, 2), (32, 1), (12, 1), 24]:  # every epoch small, not smaller, too small, not a pair
        with pytest.raises(RecipeError, match=r"small_early must be \(pixels, epochs\).*got " + re.escape(repr(bad))):
            recipe.train(tiny, out=tmp_path/'x', profile='quick', settings=dict(small_early=bad), epochs=2)
