"""The fast profiles: the airbench94-style net, Muon and its other training pieces, the precision chosen, and the
same run folder as the seed recipe."""
import collections, json, math

import numpy as np
import pytest
import torch
from fastai.vision.all import parent_label

import recipe, recipe.run
from recipe import RecipeError
from recipe.config import FAST, TRIANGLE
from recipe.callbacks import Lookahead
from recipe.fast import MuonSGD, muon_groups, orthogonalize
from recipe.run import choose_precision, training_images, whiten_sample
from recipe.settings import settings_for
from recipe.model import FastNet, SmallMapConv, init_whitening

FAST_KW = dict(profile='fast', epochs=4, bs=50, width=8, seed=0)  # 4 batches an epoch on `tiny`


@pytest.fixture(scope='module')
def fast_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'fast'
    return out, recipe.train(tiny, out=out, **FAST_KW)


@pytest.fixture(scope='module')
def fast_sgd_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'fast-sgd'
    return out, recipe.train(tiny, out=out, **FAST_KW | dict(profile='fast-sgd'))


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


def test_the_whitening_sample_holds_every_class(tiny):
    "tiny's 200 training images are sorted by class (20 each): the first 30 would be airplanes and automobiles only"
    dls = recipe.image_dls(tiny, bs=50, augment='batch')
    x = training_images(dls, n=30)
    every = training_images(dls, n=len(dls.train_ds))  # all of them, in the dataset's order
    picked = [int((every - row).abs().flatten(1).amax(1).argmin()) for row in x]
    assert len(x) == 30 and torch.equal(every[picked], x)
    assert {parent_label(dls.train_ds.items[i]) for i in picked} == set(dls.vocab)


def test_whiten_sample_draws_each_class_in_proportion_the_same_every_time():
    labels = ['a'] * 5000 + ['b'] * 4000 + ['c'] * 3 + ['d'] * 40_997
    idx = whiten_sample(labels, 5000)
    counts = collections.Counter(labels[i] for i in idx.tolist())
    assert counts == {'a': 500, 'b': 400, 'c': 1, 'd': 4100} and torch.equal(idx, whiten_sample(labels, 5000))
    assert len(set(idx.tolist())) == len(idx) and torch.equal(idx, idx.sort().values)
    assert not torch.equal(idx, whiten_sample(labels, 5000, seed=1))
    assert torch.equal(whiten_sample(['a', 'b', 'a'], 5000), torch.arange(3))  # fewer than n: all


def test_fast_run_writes_the_whole_run_folder_with_and_without_tta(fast_run):
    out, learn = fast_run
    for f in ['metrics.csv', 'results.json', 'checkpoint.pt', 'model.safetensors', 'model.json', 'lr_schedule.png',
              'loss.png', 'accuracy.png', 'confusion_matrix.png', 'top_losses.png', 'README.md']:
        assert (out/f).stat().st_size > 0, f
    res = json.loads((out/'results.json').read_text())
    assert res['complete'] and res['profile'] == 'fast' and res['arch'] == 'fast' and res['tta'] == 2
    logits, targets = recipe.run.test_logits(learn, level=2)  # the returned Learner: the same weights and precision
    assert res['test_accuracy'] == float((logits.argmax(1) == targets).float().mean())
    assert res['test_accuracy_no_tta'] == res['per_epoch'][-1]['test_accuracy']
    assert res['lr_find'] == {} and res['lr_max'] == FAST['lr_max'] and res['opt'] == 'muon'
    precision, reason = choose_precision('auto', cuda=torch.cuda.is_available())  # this machine's: bf16 where the CPU has it
    assert res['precision'] == {'bf16': 'bf16 autocast (CPU)', 'fp32': 'fp32'}[precision] and res['precision_reason'].startswith(reason)
    meta = json.loads((out/'model.json').read_text())
    assert meta['arch'] == 'fast' and meta['width'] == 8 and meta['tta'] == 2


def test_fast_sgd_schedule_is_the_triangle_with_bn_biases_faster(fast_sgd_run):
    _, learn = fast_sgd_run
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
    top = recipe.predict(model, files, k=10)
    x = torch.stack([torch.from_numpy(recipe.data.decode(f)).permute(2, 0, 1) for f in files]).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
    with torch.no_grad():
        tta = recipe.inference.tta_logits(model, (x - mean) / std, 2).softmax(1)
        plain = model((x - mean) / std).softmax(1)
    got = torch.tensor([[p for _, p in sorted(t, key=lambda cp: model.classes.index(cp[0]))] for t in top])
    assert torch.allclose(got, tta, atol=1e-5)  # the run's TTA (level 2), not the plain model
    assert (got - plain).abs().max() > 1e-3


def test_fast_run_stopped_after_epoch_2_resumes_to_the_same_metrics(tiny, tmp_path, fast_run, monkeypatch):
    from recipe.callbacks import Checkpoint
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
    la.pull(0.5)  # halfway back to the slow weights, which follow the net halfway
    assert torch.allclose(net.weight, before - 0.5)
    with torch.no_grad(): net.weight.add_(2.0)  # the net moves on from the slow weights (before - 0.5)
    la.pull(1.0)  # decay 1: the net becomes the slow weights, wherever it was
    assert torch.allclose(net.weight, before - 0.5)


def test_fast_profile_refuses_lr_min(tiny, tmp_path):
    with pytest.raises(RecipeError, match="profile 'fast' has no LRMIN"):
        recipe.train(tiny, out=tmp_path/'x', profile='fast', lr_min=0.1)
    with pytest.raises(RecipeError, match="unknown profile 'fastest': choose one of seed, seed-w32, fast, quick, fast-sgd"):
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


def test_muon_schedule_decays_each_group_linearly_to_zero(fast_run):
    _, learn = fast_run
    assert len(learn.opt.hypers) == 4  # whitening bias, BatchNorm biases, head, filters
    lrs = np.array(learn.recorder.hps['lr'])  # the last group: the conv filters (Muon)
    n = len(lrs)
    assert n == 16 and lrs[0] == pytest.approx(FAST['lr_max']) and lrs[-1] == pytest.approx(FAST['lr_max'] / n)
    assert np.allclose(np.diff(lrs), -FAST['lr_max'] / n)
    whiten, biases, head, filters = learn.opt.hypers  # after the fit: at the last step's LR, 1/16 of the way from 0
    assert whiten['lr'] == 0 and biases['lr'] == pytest.approx(FAST['sgd_lr'] / n) and head['lr'] == pytest.approx(FAST['head_lr'] / n)
    assert [h['mom'] for h in learn.opt.hypers] == [FAST['sgd_mom']] * 3 + [FAST['mom']]
    assert filters['wd'] == 0 and whiten['wd'] * FAST['sgd_lr'] == pytest.approx(FAST['wd']) and head['wd'] * FAST['head_lr'] == pytest.approx(FAST['wd'])


def test_muon_groups_split_every_trained_param_once():
    net = FastNet(width=8)
    groups = muon_groups(net)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in net.parameters())
    whiten, biases, head, filters = groups
    assert whiten == [net[0].bias] and all(p.ndim == 1 for p in biases) and [p.ndim for p in head] == [2]
    assert len(filters) == 6 and all(p.ndim == 4 for p in filters)


@pytest.mark.parametrize('shape', [(64, 576), (576, 64), (10, 10)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    torch.manual_seed(0)
    k = min(shape)
    U, V = torch.linalg.qr(torch.randn(shape[0], k))[0], torch.linalg.qr(torch.randn(shape[1], k))[0]
    G = 5 * U @ torch.diag(torch.logspace(-1, 0, k)) @ V.T  # singular values from 0.5 to 5
    s = torch.linalg.svdvals(orthogonalize(G))
    assert s.min() > 0.6 and s.max() < 1.3  # Muon's 3 quintic steps: near 1, not exactly (its coefficients' choice)
    D = U.T @ orthogonalize(G) @ V  # an odd polynomial of G keeps its singular vectors: D is diagonal
    assert (D - torch.diag(torch.diag(D))).abs().max() < 1e-4 and torch.diag(D).min() > 0.6


def test_orthogonalize_in_bf16_on_the_cpu_is_near_the_fp32_one():
    "bf16 runs on a CPU orthogonalize in bf16 (as Muon does on GPUs): the same map to bf16's rounding, in G's dtype"
    torch.manual_seed(0)
    G = torch.randn(192, 1728)
    fp32, bf16 = orthogonalize(G), orthogonalize(G, bf16=True)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # computed in bf16, returned as G's
    assert (bf16 - fp32).norm() / fp32.norm() < 2e-2
    s = torch.linalg.svdvals(bf16)
    assert s.min() > 0.5 and s.max() < 1.3


@pytest.mark.parametrize('bf16', [False, True])
def test_muon_step_orthogonalizes_in_the_precision_it_is_given(bf16):
    torch.manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    conv.grad = torch.randn_like(conv)
    before = conv.detach().clone()
    old = MuonSGD([[conv]], lr=0.1, moms=[0.6], bf16=not bf16)  # a checkpoint's state from a run in the other precision
    opt = MuonSGD([[conv]], lr=0.1, moms=[0.6], bf16=bf16)
    opt.load_state_dict(old.state_dict())  # fastai restores the hypers whole: the precision is not among them
    assert 'bf16' not in opt.hypers[0]
    opt.step()
    for route in (False, True):
        g = conv.grad + 0.6 * conv.grad  # Nesterov on the first step, as muon_step sums it
        expected = before * math.sqrt(8) / before.norm() - 0.1 * orthogonalize(g.flatten(1), bf16=route).view_as(conv)
        assert torch.allclose(conv, expected, atol=1e-6) == (route == bf16)


def test_a_checkpoint_with_the_bf16_hyper_of_49cd79b_resumes_in_this_runs_precision():
    "49cd79b saved Muon's precision among the hypers: restored whole, fastai would pass it to the step over the bound one"
    from recipe.checkpoint import known_hypers
    torch.manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    conv.grad = torch.randn_like(conv)
    before = conv.detach().clone()
    opt = MuonSGD([[conv]], lr=0.1, moms=[0.6], bf16=False)
    saved = opt.state_dict()
    saved['hypers'] = [dict(h, bf16=True) for h in saved['hypers']]  # as 49cd79b wrote it, from a bf16 run
    opt.load_state_dict(dict(saved, hypers=known_hypers(saved['hypers'], opt)))
    assert 'bf16' not in opt.hypers[0] and opt.hypers[0]['lr'] == 0.1
    opt.step()
    expected = before * math.sqrt(8) / before.norm() - 0.1 * orthogonalize((conv.grad + 0.6 * conv.grad).flatten(1)).view_as(conv)
    assert torch.allclose(conv, expected, atol=1e-6)  # fp32, this run's


def test_muon_step_normalizes_the_filters_then_steps_along_the_orthogonalized_momentum():
    torch.manual_seed(0)
    conv, bias = torch.nn.Parameter(3 * torch.randn(8, 4, 3, 3)), torch.nn.Parameter(torch.randn(8))
    conv.grad, bias.grad = torch.randn_like(conv), torch.randn_like(bias)
    before_conv, before_bias = conv.detach().clone(), bias.detach().clone()
    opt = MuonSGD([[bias], [conv]], lr=0.1, moms=[0.5, 0.6])
    opt.step()
    g = conv.grad * (1 + 0.6)  # Nesterov on the first step: g + mom * (mom * 0 + g)
    expected = before_conv * math.sqrt(8) / before_conv.norm() - 0.1 * orthogonalize(g.flatten(1)).view_as(g)
    assert torch.allclose(conv, expected, atol=1e-6)
    assert torch.allclose(bias, before_bias - 0.1 * bias.grad * 1.5, atol=1e-6)  # Nesterov SGD for the rest


def test_muon_rescales_the_filters_every_nth_step_and_decays_them_between():
    "Hiverge's variant (ABLATIONS 'hiverge-muon'): rescaled on steps 2, 4, ... only; every step shrinks them by lr x filter_wd"
    torch.manual_seed(0)
    conv = torch.nn.Parameter(3 * torch.randn(8, 4, 3, 3))
    opt = MuonSGD([[conv]], lr=0.1, moms=[0.6], renorm_every=2, filter_wd=0.5)
    expected, v = conv.detach().clone(), torch.zeros_like(conv)
    for step in (1, 2, 3):
        conv.grad = torch.randn_like(conv)
        v = 0.6 * v + conv.grad
        if step % 2 == 0: expected = expected * math.sqrt(8) / expected.norm()
        expected = (expected - 0.1 * orthogonalize((conv.grad + 0.6 * v).flatten(1)).view_as(conv)) * (1 - 0.1 * 0.5)
        opt.step()
        assert torch.allclose(conv, expected, atol=1e-5), step
    s = settings_for('fast', settings=recipe.ABLATIONS['hiverge-muon'])  # the settings reach the optimizer
    opt = recipe.fast.optimizer(s | dict(precision='fp32'))['opt_func'](muon_groups(FastNet(width=8)), lr=0.1)
    assert {(h['renorm_every'], h['filter_wd']) for h in opt.hypers} == {(8, 1.0418e-6 * 1536)}


@pytest.mark.parametrize('change, message', [(dict(renorm_every=0), 'renorm_every must be a positive integer'),
                                             (dict(renorm_every=True), 'renorm_every must be a positive integer'),
                                             (dict(filter_wd=-1e-3), 'filter_wd must be a non-negative number'),
                                             (dict(filter_wd='0.001'), 'filter_wd must be a non-negative number'),
                                             (dict(filter_wd=100.), r'filter_wd must be a non-negative number under 1 / lr_max \(0.24\)'),
                                             (dict(opt='nesterov', renorm_every=8), "renorm_every 8 and filter_wd 0.0 are Muon's")])
def test_bad_muon_settings_are_refused_before_any_work(change, message):
    with pytest.raises(RecipeError, match=message):
        settings_for('fast', settings=change)


def test_alternating_flip_shows_each_image_both_ways_over_two_epochs(tiny):
    dls = recipe.image_dls(tiny, bs=200, seed=0, augment='batch', pad=0, cutout=0, flip='alternate')
    dl = dls.train
    first = next(dl.create_batches(range(200)))[0]
    dl.flip_parity = 1
    second = next(dl.create_batches(range(200)))[0]
    assert torch.equal(second, first.flip(-1))  # every image mirrored in the other epoch
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(first, dl.images[:200])])
    assert 0.3 < flipped.float().mean() < 0.7  # a random half starts mirrored
    assert dls.valid.flip_base is None  # test images are never flipped
    with pytest.raises(RecipeError, match="flip 'alternate' needs augment 'batch'"):
        recipe.image_dls(tiny, bs=50, augment='albumentations', flip='alternate')


ICE_LAKE = {'avx512f', 'avx512bw', 'avx512_vnni'}  # AVX-512 without bf16


@pytest.mark.parametrize('flags, expected', [({'amx_bf16', 'avx512_bf16'}, 'bf16'), (ICE_LAKE | {'avx512_bf16'}, 'bf16'),
                                             ({'avx_ne_convert'}, 'bf16'), (ICE_LAKE, 'fp32'), (set(), 'fp32')])
def test_auto_precision_follows_the_cpu_flags(flags, expected):
    chosen, reason = choose_precision('auto', cuda=False, flags=flags)
    assert chosen == expected and (('none of' in reason) == (expected == 'fp32'))
    assert choose_precision('fp32', cuda=False, flags=flags) == ('fp32', 'chosen (--precision)')
    assert choose_precision('bf16', cuda=False, flags=flags)[0] == 'bf16'


@pytest.mark.parametrize('profile', ['fast', 'seed'])
def test_the_learner_uses_bf16_autocast_only_where_the_cpu_has_bf16(profile, tiny, monkeypatch):
    from recipe.callbacks import CPUAutocast
    dls = recipe.image_dls(tiny, bs=50, seed=0, augment='batch', device='cpu')
    s = recipe.settings_for(profile)
    for flags, precision in ((ICE_LAKE, 'fp32'), (ICE_LAKE | {'avx512_bf16'}, 'bf16 autocast (CPU)'),
                             ({'amx_bf16', 'avx512_bf16'}, 'bf16 autocast (CPU)')):
        monkeypatch.setattr(recipe.run, 'cpu_flags', lambda: flags)
        learn = recipe.make_learner(dls, settings=s)
        assert learn.precision == precision and any(isinstance(c, CPUAutocast) for c in learn.cbs) == (precision != 'fp32')
        # groups 2-3's weight gradients by shifted products: on AMX CPUs only, where they were measured faster
        shifted = [m.by_shifts for m in learn.model.modules() if isinstance(m, SmallMapConv)]
        assert shifted == ([] if profile == 'seed' else [flags == {'amx_bf16', 'avx512_bf16'}] * 4)
        assert ('shifted products' in learn.precision_reason) == any(shifted)
        if profile == 'fast':  # Muon orthogonalizes in bf16 where the run trains in bf16
            learn.create_opt()
            assert learn.opt.cbs[-1].keywords == dict(bf16=precision != 'fp32')
            assert ("Muon's orthogonalization in bf16" in learn.precision_reason) == (precision != 'fp32')
    if profile == 'fast':  # not under torch.compile, where they were not measured
        learn = recipe.make_learner(dls, settings=s | dict(compile=True))
        assert not any(m.by_shifts for m in learn.model.modules() if isinstance(m, SmallMapConv))
    learn = recipe.make_learner(dls, settings=s | dict(precision='fp32'))  # --precision fp32 wins
    assert learn.precision == 'fp32'
    with pytest.raises(RecipeError, match='precision fp16 needs a CUDA GPU'):
        recipe.make_learner(dls, settings=s | dict(precision='fp16'))
    with pytest.raises(RecipeError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        recipe.settings_for('fast', dict(precision='fp8'))


def test_a_run_on_an_amx_cpu_trains_the_small_maps_by_shifted_products(tiny, tmp_path, monkeypatch):
    """With amx_bf16 among the CPU's flags a whole run goes through WeightGradByShifts and says so: at 24 pixels for
    the three convs on maps of 7x7 or less (groups 2-3 after group 2's pool): 5x5 and 2x2 at 24 pixels, 7x7 and 3x3 at 32"""
    from recipe.model import WeightGradByShifts
    calls, apply = [], WeightGradByShifts.apply
    monkeypatch.setattr(WeightGradByShifts, 'apply', lambda *a: calls.append(a[0].shape) or apply(*a))
    monkeypatch.setattr(recipe.run, 'cpu_flags', lambda: {'amx_bf16', 'avx512_bf16'})
    learn = recipe.train(tiny, out=tmp_path/'run', profile='fast', epochs=2, bs=50, width=8, seed=0, device='cpu',
                         settings=dict(small_early=(24, 1)))
    res = json.loads((tmp_path/'run'/'results.json').read_text())
    assert res['complete'] and "weight gradients of maps of 7x7 or less by shifted products (AMX)" in res['precision_reason']
    steps = len(learn.dls.train)
    assert [shape[-2:] for shape in calls] == [(5, 5), (5, 5), (2, 2)] * steps + [(7, 7), (7, 7), (3, 3)] * steps


def test_tta_below_a_confidence_gives_the_views_to_the_unsure_images_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 10)).eval()
    x = torch.randn(64, 3, 8, 8)
    plain, full = model(x), recipe.inference.tta_logits(model, x, 2)
    assert not torch.allclose(plain, full)
    confidence = plain.softmax(1).amax(1)
    below = confidence.median()
    gated = recipe.inference.tta_logits(model, x, 2, below=below)
    unsure = confidence < below
    assert 0 < unsure.sum() < 64
    assert torch.allclose(gated[unsure], full[unsure], atol=1e-6) and torch.equal(gated[~unsure], plain[~unsure])
    assert torch.equal(recipe.inference.tta_logits(model, x, 2, below=below, plain=plain), gated)  # given plain logits: the same


def test_final_stage_reuses_the_last_epochs_test_logits_and_plots_from_the_tta_logits(tiny, tmp_path, monkeypatch):
    from recipe.plots import TestInterpretation
    import recipe.run as train_module
    calls, real = [], train_module.test_logits
    monkeypatch.setattr(train_module, 'test_logits', lambda *a: calls.append(a) or real(*a))
    learn = recipe.train(tiny, out=tmp_path/'run', **FAST_KW | dict(epochs=2))
    (_, level, below, plain), = calls  # one call: the final stage's
    assert level == 2 and below == FAST['tta_below'] and plain is not None and len(plain) == 50
    again, targets = real(learn, 0)  # the plain logits computed afresh equal the kept ones
    assert torch.allclose(plain, again, atol=1e-3)
    logits, targets = real(learn, 2, below, plain)
    res = json.loads((tmp_path/'run'/'results.json').read_text())
    assert float((logits.argmax(1) == targets).float().mean()) == pytest.approx(res['test_accuracy'])
    interp = TestInterpretation(learn, logits, targets)
    cm = interp.confusion_matrix()
    assert cm.sum() == len(targets) and np.trace(cm) == int((logits.argmax(1) == targets).sum())
    inps, probs, targs, decoded, losses = interp[[0, 3]]
    assert torch.equal(decoded, logits[[0, 3]].argmax(1)) and torch.allclose(probs, logits[[0, 3]].softmax(1))
    assert (tmp_path/'run'/'top_losses.png').stat().st_size > 0 and (tmp_path/'run'/'confusion_matrix.png').stat().st_size > 0


def test_compile_setting_compiles_the_net_in_place(tiny, monkeypatch):
    "--compile: nn.Module.compile, so the weights keep their names (checkpoints, safetensors)"
    compiled = []
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, *a, **k: compiled.append(type(self).__name__))
    dls = recipe.image_dls(tiny, bs=50, augment='batch')
    recipe.make_learner(dls, settings=recipe.settings_for('quick', compile=True))
    recipe.make_learner(dls, settings=recipe.settings_for('quick'))
    assert compiled == ['FastNet']


def test_a_compiled_run_finishes_its_final_stage(tiny, tmp_path):
    "--compile on a fast-net profile: the final stage's TTA (a mirrored view, through fastai's TensorImage) crashed the run"
    recipe.train(tiny, out=tmp_path/'run', profile='quick', epochs=1, bs=64, width=8, seed=0, compile=True)
    record = json.loads((tmp_path/'run'/'results.json').read_text())
    assert record['complete'] and record['compile'] and (tmp_path/'run'/'model.safetensors').is_file()


def test_the_alternating_flip_without_the_batch_path_says_what_to_do():
    with pytest.raises(RecipeError, match=r"got augment 'albumentations': profile 'fast' augments by batch \(leave --augment out\)"):
        recipe.settings_for('fast', augment='albumentations')
    with pytest.raises(RecipeError, match="flip 'alternate' needs augment 'batch' .* got augment 'albumentations'$"):
        recipe.settings_for('seed', dict(flip='alternate'))  # the seed profile's own augment: no --augment to leave out


def test_a_fit_cancelled_inside_a_batch_gets_no_after_cancel_batch_and_leaves_autocast_off(tiny, monkeypatch):
    "fastai sends after_cancel_batch for CancelBatchException only; any stop inside a batch still leaves CPUAutocast's autocast"
    from fastai.basics import Callback, CancelFitException
    from recipe.callbacks import CPUAutocast
    seen = []
    class StopInPred(Callback):
        order = 50
        def after_pred(self): raise CancelFitException()  # inside CPUAutocast's autocast
        def after_cancel_batch(self): seen.append('after_cancel_batch')
    dls = recipe.image_dls(tiny, bs=50, augment='batch')
    learn = recipe.make_learner(dls, settings=recipe.settings_for('quick'))
    if not any(isinstance(cb, CPUAutocast) for cb in learn.cbs): learn.add_cb(CPUAutocast())  # as on a bf16 CPU
    learn.fit(1, cbs=[StopInPred()])
    assert seen == [] and not torch.is_autocast_enabled('cpu')
