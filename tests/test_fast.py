"""The fast profiles: the airbench94-style net, its training pieces, and the same run folder as the seed recipe."""
import json

import numpy as np
import pytest
import torch

import recipe
from recipe import RecipeError
from recipe.config import TRIANGLE
from recipe.fast import Lookahead
from recipe.model import FastNet, init_whitening

FAST_KW = dict(profile='fast', epochs=4, bs=50, width=8, seed=0)  # 4 batches an epoch on `tiny`


@pytest.fixture(scope='module')
def fast_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'fast'
    return out, recipe.train(tiny, out=out, **FAST_KW)


def test_fast_net_size_and_shapes():
    net = FastNet()
    assert sum(p.numel() for p in net.parameters()) == 1_972_792
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 1_971_352  # whitening and BN scales frozen
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_whitening_makes_patch_covariance_the_identity():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum('dc,nchw->ndhw', mix, torch.randn(400, 3, 16, 16)) + 2  # correlated channels
    net = FastNet(width=8)
    init_whitening(net, images, eps=0)
    out = net[0](images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()  # the 12 positive filters
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.double), atol=0.05)


def test_fast_run_writes_the_whole_run_folder_with_and_without_tta(fast_run):
    out, learn = fast_run
    for f in ['metrics.csv', 'results.json', 'checkpoint.pt', 'model.safetensors', 'model.json', 'lr_schedule.png',
              'loss.png', 'accuracy.png', 'confusion_matrix.png', 'top_losses.png']:
        assert (out/f).stat().st_size > 0, f
    res = json.loads((out/'results.json').read_text())
    assert res['complete'] and res['profile'] == 'fast' and res['arch'] == 'fast' and res['tta'] == 2
    assert res['test_accuracy_no_tta'] == res['per_epoch'][-1]['test_accuracy'] and 0 <= res['test_accuracy'] <= 1
    assert res['lr_find'] == {} and res['lr_max'] == 1.5
    meta = json.loads((out/'model.json').read_text())
    assert meta['arch'] == 'fast' and meta['width'] == 8 and meta['tta'] == 2


def test_fast_schedule_is_the_triangle_with_bn_biases_faster(fast_run):
    _, learn = fast_run
    lrs = np.array(learn.recorder.hps['lr'])
    n = len(lrs)
    start, peak_at, end = TRIANGLE
    assert n == 16 and lrs[0] == pytest.approx(start * 1.5) and lrs.max() == pytest.approx(1.5, rel=0.05)
    assert abs(lrs.argmax() - peak_at * n) <= 1
    last = (n - 1) / n  # fastai sets the LR before each step: the last one is one step short of the end
    assert lrs[-1] == pytest.approx(1.5 * (1 + (end - 1) * (last - peak_at) / (1 - peak_at)))
    assert [h['lr'] / learn.opt.hypers[-1]['lr'] for h in learn.opt.hypers] == pytest.approx([64, 1])  # BN biases, the rest
    peaks = [1.5 * 64, 1.5]
    assert [h['wd'] * p for h, p in zip(learn.opt.hypers, peaks)] == pytest.approx([0.002, 0.002])  # same shrink per step at the peak


def test_loaded_fast_model_predicts_with_the_run_tta(fast_run, tiny):
    out, learn = fast_run
    model = recipe.load(out)
    assert isinstance(model, FastNet) and model.tta == 2
    files = sorted((tiny/'test').rglob('*.png'))
    top = recipe.predict(model, files)
    acc = np.mean([t[0][0] == f.parent.name for t, f in zip(top, files)])
    res = json.loads((out/'results.json').read_text())
    assert acc == pytest.approx(res['test_accuracy'], abs=0.021)  # fp32 here, bf16 in training where there is AMX


def test_fast_run_stopped_after_epoch_2_resumes_to_the_same_metrics(tiny, tmp_path, fast_run, monkeypatch):
    from recipe.checkpoint import Checkpoint
    save = Checkpoint.after_epoch
    def stop_after_epoch_2(self):
        save(self)
        if self.epoch == 1: raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoint, 'after_epoch', stop_after_epoch_2)
    with pytest.raises(RecipeError, match='resume with'): recipe.train(tiny, out=tmp_path/'part', **FAST_KW)
    monkeypatch.setattr(Checkpoint, 'after_epoch', save)
    recipe.train(resume=tmp_path/'part')
    whole, resumed = (json.loads((o/'results.json').read_text()) for o in (fast_run[0], tmp_path/'part'))
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]
    assert resumed['resumed_after_epoch'] == [2] and resumed['complete']
    assert strip(resumed['per_epoch']) == strip(whole['per_epoch'])  # lookahead, whitening bias, augmentation RNG
    assert resumed['test_accuracy'] == whole['test_accuracy']


def test_lookahead_pulls_towards_slow_weights_and_ends_on_them():
    net = torch.nn.Linear(2, 1, bias=False)
    class FakeLearn: model = net
    la = Lookahead(k=1, base=0.5); la.learn = FakeLearn()
    la.reset()
    with torch.no_grad(): net.weight.add_(1.0)
    before = net.weight.clone()
    la.pull(0.5)  # halfway back to the slow weights
    assert torch.allclose(net.weight, before - 0.5)
    la.pull(1.0)  # decay 1: the net becomes the slow weights
    assert torch.allclose(net.weight, before - 0.5)


def test_fast_profile_refuses_lr_min(tiny, tmp_path):
    with pytest.raises(RecipeError, match="profile 'fast' has no LRMIN"):
        recipe.train(tiny, out=tmp_path/'x', profile='fast', lr_min=0.1)
    with pytest.raises(RecipeError, match="unknown profile 'fastest': choose one of seed, seed-w32, fast, quick"):
        recipe.train(tiny, out=tmp_path/'x', profile='fastest')


def test_no_identity_init_ablation_resets_the_trained_convs_only():
    from recipe.model import default_init
    model = recipe.FastNet(10, 8)
    conv, whiten = model[2][0], model[0].weight.clone()
    dirac = torch.nn.init.dirac_(torch.empty_like(conv.weight[:24]))
    assert torch.equal(conv.weight[:24], dirac)                  # identity at the start
    default_init(model)
    assert not torch.equal(conv.weight[:24], dirac) and torch.equal(model[0].weight, whiten)  # frozen whitening kept
    assert 'no-identity-init' in recipe.ABLATIONS
