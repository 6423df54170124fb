"""A fastai user's day: their callbacks and loggers, a Learner back from a run, ONNX export, the model card, the device,
and an install that leaves their torch alone."""
import csv, glob, json, os, re, shutil, struct, subprocess, sys

import numpy as np
import pytest
import torch
from fastai.vision.all import Callback, ClassificationInterpretation, EarlyStoppingCallback, SaveModelCallback

import recipe
from recipe import RecipeError
from conftest import ROOT, make_subset

SEED_KW = dict(epochs=2, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)


class EpochsSeen(Callback):
    "A user's callback: notes every epoch it sees and the metrics fastai's Recorder had then"
    def before_fit(self): self.epochs, self.seen = [], []
    def after_epoch(self): self.epochs.append(self.epoch); self.seen.append([float(v) for v in self.recorder.log[1:4]])


@pytest.fixture(scope='module')
def seed_run(tiny, tmp_path_factory):
    "A seed-profile run with a user's callback and TensorBoard"
    out, seen = tmp_path_factory.mktemp('runs')/'seed', EpochsSeen()
    return out, recipe.train(tiny, out=out, cbs=[seen], log='tensorboard', **SEED_KW), seen


@pytest.fixture(scope='module')
def fast_run(tiny, tmp_path_factory):
    "A fast-profile (Muon) run: its model is used with TTA level 2"
    out = tmp_path_factory.mktemp('runs')/'fast'
    return out, recipe.train(tiny, out=out, profile='fast', epochs=2, bs=50, width=8, seed=0)


def metrics_csv(out):
    with open(out/'metrics.csv') as f: return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_a_users_callback_sees_every_epoch_with_the_recorded_metrics(seed_run):
    out, _, seen = seed_run
    assert seen.epochs == [0, 1]
    rows = metrics_csv(out)
    assert np.allclose(seen.seen, [[r['train_loss'], r['test_loss'], r['test_accuracy']] for r in rows])


def test_tensorboard_scalars_read_back_equal_metrics_csv(seed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, _, _ = seed_run
    events = EventAccumulator(str(out/'tensorboard')).Reload()
    rows = metrics_csv(out)
    assert [e.value for e in events.Scalars('valid_loss')] == pytest.approx([r['test_loss'] for r in rows], rel=1e-6)
    assert [e.value for e in events.Scalars('accuracy')] == pytest.approx([r['test_accuracy'] for r in rows], rel=1e-6)
    assert len(events.Scalars('lr_0')) >= 2 * 6  # the LR at every training step (6 batches an epoch)


class FirstEpochsWeights(SaveModelCallback):
    "fastai's SaveModelCallback keeping epoch 1's weights as the best, and loading them at the end of the fit"
    def __init__(self): super().__init__(monitor='valid_loss', comp=lambda val, best: best == -float('inf'), fname='first')  # best starts at -inf for a comp of its own


def test_weights_a_callback_loads_at_the_end_of_the_fit_are_those_reported_and_saved(tiny, tmp_path):
    out = tmp_path/'run'
    learn = recipe.train(tiny, out=out, cbs=[FirstEpochsWeights()], **SEED_KW)
    record = json.loads((out/'results.json').read_text())
    loss, acc = learn.validate()  # the weights the Learner has now: epoch 1's
    assert record['per_epoch'][0]['test_loss'] == pytest.approx(loss, rel=1e-5) != record['per_epoch'][1]['test_loss']
    assert record['test_accuracy'] == pytest.approx(acc, abs=1e-6) and record['test_loss'] == pytest.approx(loss, rel=1e-5)
    saved = recipe.load(out)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), learn.model.state_dict().values()))
    assert json.loads((out/'model.json').read_text())['test_accuracy'] == record['test_accuracy']


class SeenEarlyStopping(EarlyStoppingCallback):
    "fastai's EarlyStoppingCallback, noting the epochs and values it tracked"
    def before_fit(self): super().before_fit(); self.seen = []
    def after_epoch(self): super().after_epoch(); self.seen.append((self.epoch, float(self.recorder.values[-1][self.idx])))


def test_early_stopping_on_a_resumed_run_tracks_the_epochs_it_trains(killed_run):
    "fastai's loop would give it epoch 1 again, with an empty row of metrics (an IndexError at 3a47237)"
    stop = SeenEarlyStopping(monitor='valid_loss', patience=5)
    recipe.train(resume=killed_run, cbs=[stop])
    losses = [r['test_loss'] for r in json.loads((killed_run/'results.json').read_text())['per_epoch']]
    assert len(losses) == 2 and stop.seen == [(1, pytest.approx(losses[1], rel=1e-6))] and stop.best == pytest.approx(losses[1], rel=1e-6)


def test_tensorboard_steps_of_a_resumed_run_go_on_from_where_it_stopped(killed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    recipe.train(resume=killed_run, log='tensorboard')
    events = EventAccumulator(str(killed_run/'tensorboard')).Reload()
    assert sorted({e.step for e in events.Scalars('train_loss')}) == list(range(7, 13))  # epoch 2's steps (6 an epoch)
    assert [e.step for e in events.Scalars('valid_loss')] == [12]


def wandb_records(run_dir) -> list:
    """The records of an offline W&B run, read from its .wandb file: LevelDB-style 32 KiB blocks of records
    (crc32, length, type) after a 7-byte header, each a protobuf `Record`"""
    from wandb.proto import wandb_internal_pb2 as pb
    b = open(glob.glob(f'{run_dir}/run-*.wandb')[0], 'rb').read()
    assert b[:4] == b':W&B'
    pos, part, records = 7, b'', []
    while pos + 7 <= len(b):
        if 32768 - pos % 32768 < 7: pos += 32768 - pos % 32768; continue  # block trailer
        _, n, kind = struct.unpack('<IHB', b[pos:pos + 7]); pos += 7
        if kind == 0 and n == 0: break
        part += b[pos:pos + n]; pos += n
        if kind in (1, 4):  # a whole record, or its last piece
            r = pb.Record(); r.ParseFromString(part); part = b''; records.append(r)
    return records


def test_wandb_offline_writes_its_run_folder_with_the_metrics(tiny, tmp_path):
    """In a process of its own, as a user's run is: wandb keeps its settings and service for the life of a process, and
    in the whole suite's process (CI, not alone) the offline run held no history"""
    out = tmp_path/'run'
    r = subprocess.run([sys.executable, '-c', f'import recipe; recipe.train({str(tiny)!r}, out={str(out)!r}, log="wandb", **{SEED_KW!r})'],
                       env=os.environ | dict(WANDB_MODE='offline', WANDB_SILENT='true'), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    runs = glob.glob(f'{out}/wandb/offline-run-*')
    assert len(runs) == 1
    records = wandb_records(runs[0])
    epochs = [{i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records if r.WhichOneof('record_type') == 'history']
    epochs = [e for e in epochs if 'valid_loss' in e]
    rows = metrics_csv(out)
    assert len(epochs) == len(rows), " ".join(r.WhichOneof('record_type') for r in records) + r.stderr[-3000:]
    assert [r['valid_loss'] for r in epochs] == pytest.approx([r['test_loss'] for r in rows], rel=1e-6)
    assert [r['accuracy'] for r in epochs] == pytest.approx([r['test_accuracy'] for r in rows], rel=1e-6)


@pytest.mark.parametrize('log, package', [('tensorboard', 'tensorboard'), ('wandb', 'wandb')])
def test_a_missing_logger_package_names_its_extra_before_any_work(tiny, tmp_path, monkeypatch, log, package):
    monkeypatch.setitem(sys.modules, package, None)  # what Python does for a package that is not installed: ImportError
    with pytest.raises(RecipeError, match=rf'--log {log} needs the {package} package.*pip install -e "\.\[{log}\]"'):
        recipe.train(tiny, out=tmp_path/'run', log=log, **SEED_KW)
    assert not (tmp_path/'run').exists()


def test_unknown_logger_and_device_are_named(tiny, tmp_path, tiny_run):
    with pytest.raises(RecipeError, match="unknown logger 'mlflow'"): recipe.train(tiny, out=tmp_path/'a', log='mlflow', **SEED_KW)
    with pytest.raises(RecipeError, match="device must be cpu, cuda, cuda:N or mps, got 'gpu'"):
        recipe.train(tiny, out=tmp_path/'b', device='gpu', **SEED_KW)
    with pytest.raises(RecipeError, match="device 'cuda:99'"): recipe.train(tiny, out=tmp_path/'c', device='cuda:99', **SEED_KW)
    r = subprocess.run([sys.executable, '-m', 'recipe', 'predict', tiny_run[0], tiny/'test', '--device', 'cuda:99'], capture_output=True, text=True)
    assert r.returncode == 1 and "device 'cuda:99'" in r.stderr and 'Traceback' not in r.stderr


def test_train_on_the_named_device_records_it(tiny, tmp_path):
    learn = recipe.train(tiny, out=tmp_path/'run', device='cpu', **SEED_KW | dict(epochs=1))
    assert learn.dls.device.type == 'cpu' and json.loads((tmp_path/'run'/'results.json').read_text())['device'] == 'cpu'


def images_of(tiny):
    return sorted((tiny/'test').rglob('*.png'))


@pytest.mark.parametrize('which', ['seed_run', 'fast_run'])
def test_load_learner_predicts_what_recipe_predict_does(which, request, tiny):
    out, *_ = request.getfixturevalue(which)
    learn, model = recipe.load_learner(out), recipe.load(out)
    files = images_of(tiny)
    expected = recipe.predict(model, files, k=len(model.classes))
    assert model.tta == (2 if which == 'fast_run' else 0)
    for i, (f, top) in enumerate(list(zip(files, expected))[:10]):
        cls, idx, probs = learn.predict(str(f) if i % 2 else f)  # a string, as the README and the card write it, or a Path
        assert cls == top[0][0] and float(probs[idx]) == pytest.approx(top[0][1], abs=1e-5)
        assert np.allclose(sorted(probs.tolist(), reverse=True), [p for _, p in top], atol=1e-5)
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    assert [learn.dls.vocab[i] for i in probs.argmax(1)] == [t[0][0] for t in expected]
    if which == 'fast_run':  # TTA counts: without it the probabilities differ
        plain, _ = recipe.load_learner(out, tta=False).get_preds(dl=learn.dls.test_dl(files))
        assert not torch.allclose(plain, probs, atol=1e-4)


def test_load_learner_interprets_new_labelled_data_and_fine_tunes(seed_run, tmp_path):
    out, trained, _ = seed_run
    learn = recipe.load_learner(out)
    files = sorted(map(str, trained.dls.valid_ds.items))  # strings: fastai alone takes only the type of the items it was set up on (Paths)
    interp = ClassificationInterpretation.from_learner(learn, dl=learn.dls.test_dl(files, with_labels=True))
    assert interp.confusion_matrix().sum() == len(files)
    # fine-tuning on another folder of the same classes: other images of CIFAR-10's training set
    other = make_subset(tmp_path/'other', 8, 2)
    learn = recipe.load_learner(out, data=other, bs=16)
    assert len(learn.dls.train_ds) == 80 and list(learn.dls.vocab) == list(trained.dls.vocab)
    before = [w.detach().clone() for w in learn.model.parameters()]
    learn.fit_one_cycle(1, 1e-3)
    assert all(np.isfinite(v) for v in learn.recorder.values[-1])
    assert any(not torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


# The README's "With fastai" calls on a run folder in a process that imports recipe and fastai.interpret only: this
# file imports fastai.vision.all, which would give every fastai method and plot whatever recipe imports
LOAD_LEARNER_ALONE = """
import sys, matplotlib
matplotlib.use('Agg')
import recipe
from fastai.interpret import ClassificationInterpretation
from pathlib import Path
run, data, files = sys.argv[1], sys.argv[2], [Path(f) for f in sys.argv[3:]]
learn = recipe.load_learner(run)
interp = ClassificationInterpretation.from_learner(learn, dl=learn.dls.test_dl(files, with_labels=True))
interp.plot_top_losses(4, nrows=2)
learn = recipe.load_learner(run, data=data, bs=16)
learn.fit_one_cycle(1, 1e-4)
print('fastai.vision.all imported:', 'fastai.vision.all' in sys.modules)
"""


def test_load_learner_alone_interprets_with_fastais_image_plots_and_fine_tunes(tiny_run, tiny):
    files = sorted(map(str, (tiny/'test').glob('*/*.png')))
    r = subprocess.run([sys.executable, '-c', LOAD_LEARNER_ALONE, tiny_run[0], tiny, *files], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == 'fastai.vision.all imported: False', r.stdout[-2000:] + r.stderr[-3000:]


def test_load_learner_refuses_data_with_other_classes(seed_run, tmp_path):
    out, _, _ = seed_run
    other = make_subset(tmp_path/'other', 4, 1, classes=3)
    with pytest.raises(RecipeError, match='fine-tuning needs the same classes'): recipe.load_learner(out, data=other, bs=4)
    with pytest.raises(RecipeError, match='fine-tuning needs the same classes'): recipe.load_learner(out, data=other)  # not the batch first


@pytest.mark.parametrize('which', ['seed_run', 'fast_run'])
def test_onnx_export_matches_torch_on_100_test_images(which, request, small, tmp_path):
    "One export per net: the command line's for the seed net, the function's for the fast one (TTA's net; each export takes 10-20 s here)"
    out, *_ = request.getfixturevalue(which)
    onnx = tmp_path/'m.onnx'
    if which == 'seed_run':
        r = subprocess.run([sys.executable, '-m', 'recipe', 'export', out, '--onnx', onnx, '--check', small/'test', '--n', '100'],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        found = re.search(r'onnxruntime vs torch on 100 images: same top-1 on 100, max difference in probabilities (\S+)', r.stdout)
        assert found and float(found[1]) < 1e-4, r.stdout
    else:  # 10 of each class, and a file that cannot be read: skipped with a warning, as predict skips it
        (tmp_path/'broken.png').write_bytes(b'not an image')
        files = [f for c in sorted((small/'test').iterdir()) for f in sorted(c.iterdir())[:10]] + [tmp_path/'broken.png']
        with pytest.warns(UserWarning, match=r"the check skipped 1 image\(s\) that cannot be read:\n  cannot read image .*broken.png"):
            found = recipe.export_onnx(out, onnx, files, n=101)
        assert found['images'] == 100 and found['same_top1'] == 100 and found['max_prob_diff'] < 1e-4
    import onnxruntime
    session = onnxruntime.InferenceSession(str(onnx))
    for n in (1, 7):  # the batch size is dynamic; the input is RGB in [0, 1]: normalisation is inside
        x = np.random.rand(n, 3, 32, 32).astype(np.float32)
        assert session.run(['logits'], {'image': x})[0].shape == (n, 10)


def test_onnx_export_without_its_packages_names_the_extra(seed_run, tmp_path, monkeypatch):
    out, _, _ = seed_run
    monkeypatch.setitem(sys.modules, 'onnxscript', None)
    with pytest.raises(RecipeError, match=r'onnxscript is missing.*pip install -e "\.\[onnx\]"'):
        recipe.export_onnx(out, tmp_path/'m.onnx')


def test_every_run_folder_has_a_model_card_with_its_accuracy_and_commit(seed_run, fast_run):
    for out, *_ in (seed_run, fast_run):
        record, meta = (json.loads((out/f).read_text()) for f in ('results.json', 'model.json'))
        card = (out/'README.md').read_text()
        assert f"{record['test_accuracy']:.2%}" in card and record['git_commit'] and f"`{record['git_commit']}`" in card
        assert record['data']['file_list_sha256'][:16] in card and f"recipe.load_learner('{out}')" in card
        assert meta['format'] == recipe.record.MODEL_FORMAT and meta['test_accuracy'] == record['test_accuracy']
        assert meta['data_sha256'] == record['data']['file_list_sha256']
    assert 'without' in (fast_run[0]/'README.md').read_text()  # TTA: both accuracies


def test_load_refuses_an_unknown_model_format_naming_it(seed_run, tmp_path):
    out, _, _ = seed_run
    run = tmp_path/'run'; shutil.copytree(out, run)
    meta = json.loads((run/'model.json').read_text())
    (run/'model.json').write_text(json.dumps(meta | {'format': 99}))
    with pytest.raises(RecipeError, match=rf"{run/'model.json'} has model format 99; this recipe reads formats 1 to {recipe.record.MODEL_FORMAT}"):
        recipe.load(run)
    del meta['format']; (run/'model.json').write_text(json.dumps(meta))  # a run from before the format: version 1
    assert recipe.load(run).classes == meta['classes']


def test_the_cli_records_the_command_that_made_the_run(tiny, tmp_path):
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--data', tiny, '--out', tmp_path/'run', '--epochs', '1',
                        '--bs', '32', '--width', '8', '--lr-max', '0.01', '--log', 'tensorboard'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    command = json.loads((tmp_path/'run'/'results.json').read_text())['command']
    assert command == f"python -m recipe train --data {tiny} --out {tmp_path/'run'} --epochs 1 --bs 32 --width 8 --lr-max 0.01 --log tensorboard"
    assert f'`{command}`' in (tmp_path/'run'/'README.md').read_text() and (tmp_path/'run'/'tensorboard').is_dir()


def test_installing_the_project_keeps_the_torch_already_there():
    "pip's resolver, offline, over the installed packages: only the project itself would be installed"
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation', '--quiet',
                        '--report', '-', '-e', str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert [i['metadata']['name'] for i in json.loads(r.stdout)['install']] == ['recipe']
