"""Checkpoints and resume: a killed run continues where its last complete epoch left it."""
import csv, errno, json, os, signal, subprocess, sys, time

import numpy as np, pytest, torch

import recipe
from conftest import default_sigint
from recipe import RecipeError
from recipe.checkpoint import CHECKPOINT, load_checkpoint

ARGS = ['--epochs', 4, '--bs', 64, '--width', 8, '--lr-min', 1e-3, '--lr-max', 1e-2, '--seed', 0]


def train_args(data, out, *extra): return ['train', '--data', str(data), '--out', str(out), *map(str, extra)]


def start(spawn, data, out, *extra):
    return spawn([sys.executable, '-m', 'recipe', *train_args(data, out, *extra)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


# The command line with one extra callback that SIGKILLs the process half-way through epoch 3's training batches:
# the same place every time, whatever the machine's speed (a timer-based kill once overshot to the end of the run on CI)
KILL_IN_EPOCH_3 = """
import os, signal, sys
from fastai.vision.all import Callback
import recipe
import recipe.seed as seed
class KillMidEpoch3(Callback):
    def after_batch(self):
        if self.training and self.epoch == 2 and self.iter == self.n_iter // 2: os.kill(os.getpid(), signal.SIGKILL)
fit_recipe = seed.fit_recipe
seed.fit_recipe = lambda learn, *a, cbs=None, **k: fit_recipe(learn, *a, cbs=cbs + [KillMidEpoch3()], **k)
import runpy; runpy.run_module('recipe', run_name='__main__', alter_sys=True)  # as `python -m recipe`
"""


def start_and_kill_in_epoch_3(data, out, *extra):
    return subprocess.run([sys.executable, '-c', KILL_IN_EPOCH_3, *train_args(data, out, *extra)],
                          capture_output=True, text=True, timeout=600)


def wait_for_epochs(out, n, proc, timeout=300):
    "Block until metrics.csv holds n epochs and a checkpoint exists (it follows each row at once)"
    t = time.time()
    while time.time() - t < timeout:
        f = out/'metrics.csv'
        if f.exists() and len(f.read_text().splitlines()) > n and (out/CHECKPOINT).exists(): return
        if proc.poll() is not None: pytest.fail(f'run ended early: {proc.communicate()}')
        time.sleep(0.05)
    pytest.fail('timed out')


def metrics(out):
    "Per-epoch metrics without the timings"
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in csv.DictReader(open(out/'metrics.csv'))]


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_run(tiny, tmp_path, spawn):
    "On `tiny` (3 batches an epoch): what is tested is the resume, not the learning"
    killed, whole = tmp_path/'killed', tmp_path/'whole'
    p_whole = start(spawn, tiny, whole, *ARGS)
    assert start_and_kill_in_epoch_3(tiny, killed, *ARGS).returncode == -signal.SIGKILL
    ckpt = load_checkpoint(killed)
    assert ckpt['epoch'] == 2 and len(metrics(killed)) == 2  # epochs 1-2 kept, epoch 3's half lost
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--resume', killed], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming {killed} after epoch {ckpt['epoch']} of 4" in r.stdout and 'lr_find' not in r.stdout
    whole_err = p_whole.communicate(timeout=600)[1]  # read, not wait(): a full pipe would block the run
    assert p_whole.returncode == 0, whole_err[-3000:]
    assert metrics(killed) == metrics(whole)  # identical, not just close
    res = json.loads((killed/'results.json').read_text())
    assert res['complete'] and res['resumed_after_epoch'] == [ckpt['epoch']] and len(res['per_epoch']) == 4
    assert (killed/'model.safetensors').exists() and (killed/'accuracy.png').exists()


def test_lr_after_resume_equals_the_uninterrupted_schedule(tiny, tmp_path, monkeypatch):
    import recipe.run
    plotted, save_run_plots = [], recipe.run.save_run_plots  # what the plots are drawn from
    monkeypatch.setattr(recipe.run, 'save_run_plots', lambda learn, *a: plotted.append(
        ([float(v) for v in learn.recorder.losses], list(learn.recorder.iters))) or save_run_plots(learn, *a))
    kw = dict(epochs=3, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)
    whole = recipe.train(tiny, out=tmp_path/'whole', **kw)
    recipe.train(tiny, out=tmp_path/'part', **kw | dict(epochs=3))
    ckpt = tmp_path/'part'/CHECKPOINT
    state = torch.load(ckpt, weights_only=True); state['epoch'] = 1; torch.save(state, ckpt)  # as if killed in epoch 2
    resumed = recipe.train(resume=tmp_path/'part')
    # the plots of the resumed run show the whole run: its LR schedule and train losses from the first step
    assert len(resumed.recorder.hps['lr']) == len(whole.recorder.hps['lr']) == 18  # 6 steps an epoch
    assert np.allclose(resumed.recorder.hps['lr'], whole.recorder.hps['lr'], rtol=1e-12)
    (whole_losses, whole_iters), _, (losses, iters) = plotted
    # epoch 1's train losses come from the checkpoint's history (the weights resumed here are epoch 3's, relabelled)
    assert len(losses) == 18 and np.allclose(losses[:6], whole_losses[:6], rtol=1e-6) and iters == whole_iters == [6, 12, 18]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_the_checkpoint_and_says_how_to_resume(small, tmp_path, sig, spawn):
    out = tmp_path/'run'
    p = start(spawn, small, out, *ARGS)
    wait_for_epochs(out, 1, p)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode != 0 and 'Traceback' not in stderr
    assert f'resume with: python -m recipe train --resume {out}' in stderr
    assert load_checkpoint(out)['epoch'] >= 1
    assert json.loads((out/'results.json').read_text())['stopped'] == 'interrupted'


def test_nan_loss_stops_with_advice_and_keeps_no_broken_checkpoint(tiny, tmp_path):
    from fastai.vision.all import Callback
    class NaNInEpoch2(Callback):  # the loss of epoch 2's third batch becomes NaN, as a diverging run's does
        order = -10  # before StopOnNaN looks at it
        def after_loss(self):
            if self.training and self.epoch == 1 and self.iter == 2: self.learn.loss = self.loss * float('nan')
    with pytest.raises(RecipeError, match=r'(?s)loss became nan in epoch 2 \(batch 3\).*lower --lr-max'):
        recipe.train(tiny, out=tmp_path/'run', epochs=3, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[NaNInEpoch2()])
    assert json.loads((tmp_path/'run'/'results.json').read_text())['complete'] is False
    ckpt = load_checkpoint(tmp_path/'run')  # epoch 1's, whole: it loads, and every weight in it is finite
    assert ckpt['epoch'] == 1 and all(torch.isfinite(t).all() for t in ckpt['model'].values() if t.is_floating_point())


def test_full_disk_leaves_the_previous_checkpoint_whole(tiny, tmp_path, monkeypatch):
    "The disk fills while the second checkpoint is written: the file's writes fail with ENOSPC (torch's zip writer, given"
    "the file, turned that into a RuntimeError that named no cause)"
    import recipe.record
    real_fdopen, opened = os.fdopen, []
    class Full:  # a file on a disk that is full after a few bytes
        def __init__(self, f): self.f = f
        def write(self, data): self.f.write(b'partial'); raise OSError(errno.ENOSPC, 'No space left on device')
        def __getattr__(self, name): return getattr(self.f, name)
        def __enter__(self): return self
        def __exit__(self, *exc): return self.f.__exit__(*exc)
    def fdopen(fd, mode='r', *a, **k):
        f = real_fdopen(fd, mode, *a, **k)
        if 'b' in mode: opened.append(fd)  # the checkpoints: the only binary files written during the fit
        return Full(f) if 'b' in mode and len(opened) == 2 else f
    monkeypatch.setattr(recipe.record.os, 'fdopen', fdopen)
    with pytest.raises(RecipeError, match=r'(?s)No space left on device.*previous checkpoint is intact.*after epoch 1 of 3'):
        recipe.train(tiny, out=tmp_path/'run', epochs=3, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)
    assert load_checkpoint(tmp_path/'run')['epoch'] == 1
    assert [p.name for p in (tmp_path/'run').glob('.*tmp')] == []
    record = json.loads((tmp_path/'run'/'results.json').read_text())  # epoch 2's metrics were measured: kept
    assert len(record['per_epoch']) == 2 and 'No space left on device' in record['stopped'] and not record['complete']


def test_unwritable_output_folder_is_named(tiny, tmp_path):
    blocker = tmp_path/'file'; blocker.write_text('x')
    with pytest.raises(RecipeError, match=f'cannot write to output folder {blocker}/run'):
        recipe.train(tiny, out=blocker/'run', epochs=1, bs=32, width=8, lr_min=1e-3, lr_max=1e-2)


class Evil:
    def __init__(self, target): self.target = target
    def __reduce__(self): return (open, (str(self.target), 'w'))


def test_malicious_checkpoint_is_not_executed_on_resume(tmp_path):
    run = tmp_path/'run'; run.mkdir()
    torch.save({'epoch': 1, 'config': Evil(tmp_path/'pwned')}, run/CHECKPOINT)
    with pytest.raises(RecipeError, match='cannot load checkpoint'): recipe.train(resume=run)
    assert not (tmp_path/'pwned').exists()


def test_resume_without_checkpoint_is_named(tmp_path):
    with pytest.raises(RecipeError, match=str(tmp_path/CHECKPOINT)): recipe.train(resume=tmp_path)


def test_nan_read_every_few_steps_still_names_the_batch_it_happened_in(tiny, tmp_path, monkeypatch):
    "On a GPU StopOnNaN reads the device only every 16 steps (no wait each step); the same logic, here every 4"
    from recipe.callbacks import StopOnNaN
    init, check = StopOnNaN.__init__, StopOnNaN.after_loss
    monkeypatch.setattr(StopOnNaN, '__init__', lambda self, process=None, every=None: init(self, process, 4))
    seen = []
    def poisoned(self):
        if self.training and self.epoch == 1 and self.iter == 1: self.learn.loss = self.learn.loss * float('nan')
        if self.training: seen.append((self.epoch, self.iter))
        check(self)
    monkeypatch.setattr(StopOnNaN, 'after_loss', poisoned)
    with pytest.raises(RecipeError, match=r'loss became nan in epoch 2 \(batch 2\)'):
        recipe.train(tiny, out=tmp_path/'run', epochs=3, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)
    assert seen[-1] == (1, 3)  # noticed at the 4th batch of epoch 2, where the device was read
    assert load_checkpoint(tmp_path/'run')['epoch'] == 1  # epoch 2's weights (NaN since batch 2) never saved


def test_ctrl_c_in_the_first_epoch_gives_the_folder_back(tiny, tmp_path):
    "No checkpoint yet, so nothing to resume: the folder is given back, and the same --out works again"
    from fastai.vision.all import Callback
    class CtrlCInEpoch1(Callback):
        def after_batch(self):
            if self.training and self.epoch == 0 and self.iter == 1: raise KeyboardInterrupt
    out = tmp_path/'new'/'run'
    with pytest.raises(RecipeError, match=r'stopped \(interrupted\)\. No checkpoint was saved; the run folder is given back'):
        recipe.train(tiny, out=out, epochs=2, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[CtrlCInEpoch1()])
    assert not (tmp_path/'new').exists()
    recipe.train(tiny, out=out, epochs=1, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0)
    assert json.loads((out/'results.json').read_text())['complete']


def test_an_interrupt_right_after_a_checkpoint_is_written_names_that_checkpoint(tiny, tmp_path, monkeypatch):
    "Ctrl-C lands after epoch 2's checkpoint is renamed into place, before the run notes it: the message names epoch 2"
    import recipe.callbacks
    real = recipe.callbacks.save_checkpoint
    def save_then_ctrl_c(path, learn, epoch, *a, **k):
        real(path, learn, epoch, *a, **k)
        if epoch == 2: raise KeyboardInterrupt
    monkeypatch.setattr(recipe.callbacks, 'save_checkpoint', save_then_ctrl_c)
    with pytest.raises(RecipeError, match=r'stopped \(interrupted\)\. The checkpoint after epoch 2 of 3 is kept'):
        recipe.train(tiny, out=tmp_path/'run', epochs=3, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0)
    assert load_checkpoint(tmp_path/'run')['epoch'] == 2


def test_a_checkpoint_that_cannot_be_read_back_keeps_the_folder(tmp_path):
    "A stop whose checkpoint file is there but unreadable here: not taken for 'no checkpoint', so nothing is given back"
    from types import SimpleNamespace
    from recipe.run import Run, stop_message
    (tmp_path/'run').mkdir(); (tmp_path/'run'/CHECKPOINT).write_bytes(b'not a zip'); (tmp_path/'run'/'results.json').write_text('{}')
    message = stop_message(Run(dict(epochs=3), tmp_path/'run'), SimpleNamespace(saved_epoch=0), 'interrupted')
    assert message == f"stopped (interrupted). {tmp_path/'run'/CHECKPOINT} cannot be read back: try --resume {tmp_path/'run'}, else start the run again"
    assert (tmp_path/'run'/'results.json').exists()


def test_a_second_interrupt_while_a_stop_is_noted_does_not_cut_its_message_off(tmp_path, monkeypatch):
    "torchrun's SIGTERM to rank 0 once rank 1 stopped landed while rank 0 noted why, and the resume command was never said"
    from types import SimpleNamespace
    import recipe.run
    from recipe.run import Run, stopped
    (tmp_path/'run').mkdir(); (tmp_path/'run'/'results.json').write_text('{}')
    saves, gone = [], []
    def save(**k):
        saves.append(k)
        if len(saves) == 1: raise KeyboardInterrupt  # the signal after the first
    release = recipe.run.release
    def release_then_signal(*a):
        release(*a)
        if not gone: gone.append(1); raise KeyboardInterrupt  # after the folder is given back: the note must not be written again
    monkeypatch.setattr(recipe.run, 'release', release_then_signal)
    message = stopped(Run(dict(epochs=3), tmp_path/'run', made=tmp_path/'run'), SimpleNamespace(saved_epoch=0),
                      SimpleNamespace(save=save), KeyboardInterrupt())
    assert message == 'stopped (interrupted). No checkpoint was saved; the run folder is given back.'
    assert saves == [dict(stopped='interrupted')] * 2 and not (tmp_path/'run').exists()
