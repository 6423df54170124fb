"""Failures that used to lose a run, hang or end in a traceback (issue 17): each works now, or stops with one message
naming its cause, and nothing already written is lost. Each test here failed on main at e81376e."""
import datetime as dt, errno, json, os, shutil, signal, socket, subprocess, sys, time, zipfile
from pathlib import Path

import pytest
import torch
from fastai.vision.all import Callback

import recipe
from conftest import as_if_killed_after_epoch, kill_tree
from recipe import RecipeError
from recipe.checkpoint import CHECKPOINT, load_checkpoint
from recipe.record import save_weights, write_json

KW = dict(epochs=2, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)
QUICK = dict(profile='quick', epochs=2, bs=50, width=8, seed=0)

# The command line with a step of the final stage (argv[1]: a function recipe/run.py calls there) replaced by a SIGKILL
KILL_IN_FINAL_STAGE = """
import os, signal, sys
import recipe
import recipe.run
setattr(recipe.run, sys.argv.pop(1), lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
import runpy; runpy.run_module('recipe', run_name='__main__', alter_sys=True)  # as `python -m recipe`
"""


def killed_in_final_stage(data, out, step):
    "A quick run on `data` killed in its final stage at `step` (test_logits: its first; write_model_card: after the record)"
    args = ['train', '--data', data, '--out', out, '--profile', 'quick', '--epochs', '2', '--bs', '50', '--width', '8', '--seed', '0']
    r = subprocess.run([sys.executable, '-c', KILL_IN_FINAL_STAGE, step, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr
    return out


def test_a_kill_during_the_final_stage_then_resume_completes_the_run(tiny, tmp_path):
    out = killed_in_final_stage(tiny, tmp_path/'run', 'test_logits')
    assert not (out/'model.safetensors').exists() and not json.loads((out/'results.json').read_text())['complete']
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--resume', out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f'resuming {out} after epoch 2 of 2: the final stage' in r.stdout and 'with TTA (level 2, images below 0.8 confidence)' in r.stdout  # quick's gate
    record = json.loads((out/'results.json').read_text())
    assert record['complete'] and len(record['per_epoch']) == 2 and 'test_accuracy_no_tta' in record
    for f in ('model.safetensors', 'model.json', 'README.md', 'loss.png', 'confusion_matrix.png', 'top_losses.png'): assert (out/f).exists(), f
    with pytest.raises(RecipeError, match='is complete .* nothing to resume'): recipe.train(resume=out)


def test_resume_refuses_a_changed_data_folder_naming_the_change_before_decoding(killed_run, tiny_copy, monkeypatch):
    import recipe.data
    out, cat = killed_run, tiny_copy/'train'/'cat'
    shutil.copy(next(cat.iterdir()), cat/'added.png')
    with monkeypatch.context() as m:  # refused by the files found: not one image decoded (a folder of 60,000 takes minutes)
        m.setattr(recipe.data, 'ImageCache', lambda *a, **k: pytest.fail('images decoded before the file list was checked'))
        with pytest.raises(RecipeError, match=rf'the images in {tiny_copy} are not those {out} started with \(250 images -> 251'):
            recipe.train(resume=out, data=tiny_copy)
    (cat/'added.png').unlink()
    moved = out.rename(out.parent/'moved')  # the run folder moved too
    recipe.train(resume=moved, data=tiny_copy)  # the same images again (moved): it resumes
    record = json.loads((moved/'results.json').read_text())
    assert record['complete'] and record['out'] == str(moved) and record['data']['folder'] == str(tiny_copy.resolve())  # where they are now


def test_a_skip_bad_run_checks_its_images_on_resume_after_decoding(tiny_copy, tmp_path):
    "Its file list left out the files it skipped, so the files found cannot be checked before decoding: after, they are"
    (tiny_copy/'train'/'cat'/'broken.png').write_bytes(b'not an image')
    with pytest.warns(UserWarning, match='skipped 1 bad'): recipe.train(tiny_copy, out=tmp_path/'run', skip_bad=True, **KW)
    as_if_killed_after_epoch(tmp_path/'run', 1)
    shutil.copy(tiny_copy/'train'/'cat'/sorted(os.listdir(tiny_copy/'train'/'cat'))[0], tiny_copy/'train'/'cat'/'added.png')
    with pytest.warns(UserWarning, match='skipped 1 bad'), pytest.raises(RecipeError, match=r'are not those .* started with \(n_train 200 -> 201'):
        recipe.train(resume=tmp_path/'run')
    (tiny_copy/'train'/'cat'/'added.png').unlink()
    with pytest.warns(UserWarning, match='skipped 1 bad'): recipe.train(resume=tmp_path/'run')  # the broken file is still there
    assert json.loads((tmp_path/'run'/'results.json').read_text())['complete']


def test_resume_works_from_another_working_directory(tiny, tmp_path, monkeypatch):
    (tmp_path/'a').mkdir(); (tmp_path/'b').mkdir()
    shutil.copytree(tiny, tmp_path/'a'/'data')
    monkeypatch.chdir(tmp_path/'a')
    recipe.train('data', out='run', **KW)  # relative paths, as a user types them
    run = tmp_path/'a'/'run'
    assert json.loads((run/'results.json').read_text())['out'] == str(run)  # stored absolute, as the card gives it
    assert f"recipe.load('{run}')" in (run/'README.md').read_text()
    as_if_killed_after_epoch(tmp_path/'a'/'run', 1)
    monkeypatch.chdir(tmp_path/'b')
    recipe.train(resume=tmp_path/'a'/'run')
    assert json.loads((tmp_path/'a'/'run'/'results.json').read_text())['complete']


def test_resume_without_a_run_record_is_named(killed_run):
    out = killed_run
    (out/'results.json').unlink()
    with pytest.raises(RecipeError, match=rf"cannot read {out/'results.json'}.*the run record is needed to resume"):
        recipe.train(resume=out)


def test_options_given_with_resume_are_refused_not_ignored(killed_run):
    out = killed_run
    with pytest.raises(RecipeError, match=f"--resume continues {out} with its own settings; leave out 'epochs', 'bs'"):
        recipe.train(resume=out, epochs=5, bs=16)
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--resume', out, '--width', '16'], capture_output=True, text=True)
    assert r.returncode == 1 and "leave out 'width'" in r.stderr and 'Traceback' not in r.stderr
    with pytest.raises(RecipeError, match="leave out 'profile'"): recipe.train(resume=out, profile='seed')  # the default's name too


def test_a_run_folder_in_use_by_another_process_is_not_resumed(killed_run, spawn):
    "Another process holds the folder (its run still training, or another --resume of it): refused before anything is read"
    holder = spawn([sys.executable, '-c', "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)", str(killed_run)],
                   stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    before = (killed_run/'results.json').read_text()
    with pytest.raises(RecipeError, match=f"{killed_run} is in use by another process"): recipe.train(resume=killed_run)
    assert (killed_run/'results.json').read_text() == before
    holder.kill(); holder.wait()  # as a crash would end it: the kernel frees its lock
    recipe.train(resume=killed_run)
    assert json.loads((killed_run/'results.json').read_text())['complete']


def test_a_run_whose_data_moved_says_to_give_data_on_resume(tiny_copy, tmp_path):
    class CtrlCAfterEpoch1(Callback):
        order = 100
        def after_epoch(self):
            if self.epoch == 0: raise KeyboardInterrupt
    out = tmp_path/'run'
    with pytest.raises(RecipeError, match='The checkpoint after epoch 1 of 2 is kept'):
        recipe.train(tiny_copy, out=out, epochs=2, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[CtrlCAfterEpoch1()])
    moved = tiny_copy.rename(tmp_path/'moved')
    with pytest.raises(RecipeError, match=rf"{out} was trained on {tiny_copy}, which is not there now: if its images moved, resume with --data"):
        recipe.train(resume=out)
    recipe.train(resume=out, data=moved)
    assert json.loads((out/'results.json').read_text())['complete']


def test_a_folder_looked_at_for_an_instant_is_still_taken(tmp_path):
    "`recipe runs` tells a training run from a killed one by a shared lock for an instant: a resume then waits, not refused"
    import fcntl, threading
    import recipe.run_folder
    glance = os.open(tmp_path, os.O_RDONLY); fcntl.flock(glance, fcntl.LOCK_SH)
    threading.Timer(0.05, os.close, [glance]).start()
    os.close(recipe.run_folder.lock_folder(tmp_path))


def test_a_training_run_holds_its_folder_until_it_returns(tiny, tmp_path):
    "While a run trains, its folder cannot be taken by a resume; once train() returns it can (in this process too)"
    import recipe.run_folder
    seen = []
    class TryToTake(Callback):
        def after_epoch(self):
            try: recipe.run_folder.lock_folder(tmp_path/'run')
            except RecipeError as e: seen.append(str(e))
    recipe.train(tiny, out=tmp_path/'run', epochs=1, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[TryToTake()])
    assert len(seen) == 1 and 'is in use by another process' in seen[0]
    os.close(recipe.run_folder.lock_folder(tmp_path/'run'))


def test_autocast_is_left_when_a_step_stops_with_an_exception(tiny, tmp_path):
    class StopInStep(Callback):  # as StopOnNaN does when the loss is NaN: an exception between the forward pass and backward
        def after_loss(self):
            if self.training and self.iter == 1: raise RecipeError('stopped in a step')
    with pytest.raises(RecipeError, match='stopped in a step'):
        recipe.train(tiny, out=tmp_path/'run', precision='bf16', cbs=[StopInStep()], **QUICK)
    assert not torch.is_autocast_enabled('cpu')


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None): return cls(2026, 11, 30, 12, 0, 0)
    training = recipe.run_folder
    monkeypatch.setattr(training, 'datetime', Frozen)
    monkeypatch.chdir(tmp_path)
    first, second = training.check_out(), training.check_out()
    assert (first, second) == (Path('runs/20261130-120000'), Path('runs/20261130-120000-2'))
    assert first.is_dir() and second.is_dir()


class Decoding(Exception): "raised where a run would start decoding its images"


def test_a_given_out_is_claimed_before_decoding_so_a_second_run_cannot_share_it(tiny, tmp_path, monkeypatch):
    out, seen = tmp_path/'new'/'run', []
    def image_dls(*a, **k):  # the first run, about to decode, meets a second run given the same --out
        seen.append(json.loads((out/'results.json').read_text()))
        with pytest.raises(RecipeError, match=f'output folder {out} already exists and is not empty'): recipe.train(tiny, out=out, **KW)
        raise Decoding
    monkeypatch.setattr(recipe.run, 'image_dls', image_dls)
    with pytest.raises(Decoding): recipe.train(tiny, out=out, **KW)
    assert seen and seen[0]['out'] == str(out) and seen[0]['complete'] is False
    # two claims of one folder (a race of two runs both finding it empty): only the first holds
    (tmp_path/'empty').mkdir()
    assert recipe.run_folder.claim(tmp_path/'empty') and not recipe.run_folder.claim(tmp_path/'empty')


def test_an_unwritable_out_is_refused_before_decoding(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe.run, 'image_dls', lambda *a, **k: (_ for _ in ()).throw(Decoding()))
    (tmp_path/'file').write_text('not a folder')
    with pytest.raises(RecipeError, match=f"cannot write to output folder {tmp_path/'file'/'run'}"):
        recipe.train(tiny, out=tmp_path/'file'/'run', **KW)


def test_a_run_stopped_while_set_up_leaves_no_folder_and_its_out_can_be_used_again(tiny, tmp_path, monkeypatch):
    empty = tmp_path/'no-images'; (empty/'train'/'cat').mkdir(parents=True); (empty/'test'/'cat').mkdir(parents=True)
    out = tmp_path/'run'
    with pytest.raises(RecipeError, match='empty class folder'): recipe.train(empty, out=out, **KW)
    assert not out.exists()
    mine = tmp_path/'mine'; mine.mkdir()  # an empty --out that was there stays, empty
    with pytest.raises(RecipeError, match='empty class folder'): recipe.train(empty, out=mine, **KW)
    assert mine.is_dir() and not any(mine.iterdir())
    nested = tmp_path/'new'/'parents'/'run'  # --out's parents that the run made go too
    with pytest.raises(RecipeError, match='empty class folder'): recipe.train(empty, out=nested, **KW)
    assert not (tmp_path/'new').exists()
    monkeypatch.chdir(tmp_path)  # the default folder, runs/<timestamp>, is given back too, and runs/ if the run made it
    with pytest.raises(RecipeError, match='empty class folder'): recipe.train(empty, **KW)
    assert not (tmp_path/'runs').exists()
    (tmp_path/'runs'/'other').mkdir(parents=True)  # runs/ that was there stays
    with pytest.raises(RecipeError, match='empty class folder'): recipe.train(empty, **KW)
    assert [f.name for f in (tmp_path/'runs').iterdir()] == ['other']
    # lr_find stopped by Ctrl-C: the same (its weights' temporary folder, fastai's, in the run folder until it ends, too)
    from fastai.callback.schedule import LRFinder
    with monkeypatch.context() as m:
        m.setattr(LRFinder, 'before_batch', lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt): recipe.train(tiny, out=out, **dict(KW, lr_min=None, lr_max=None))
    assert not out.exists()
    assert not torch.is_autocast_enabled('cpu')  # bf16 CPUs: entered in CPUAutocast's before_batch, left though a later one stopped
    recipe.train(tiny, out=out, **dict(KW, epochs=1))  # the same --out again
    assert json.loads((out/'results.json').read_text())['complete']


def test_a_batch_larger_than_the_training_set_says_what_to_choose(tiny, tmp_path, monkeypatch):
    "the fast profile's batch of 2,000 on 200 images: refused with the most that fits, and no runs/ left behind"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=rf"batch size 2000 is larger than the 200 training images in {tiny/'train'}: choose a smaller one \(--bs; bs= from Python\): the fast profiles' own batches"):
        recipe.train(tiny, profile='fast', epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_hidden_folders_are_not_classes(tiny_copy):
    for junk in ('.ipynb_checkpoints', '__MACOSX'):
        (tiny_copy/'train'/junk).mkdir()
        shutil.copy(next((tiny_copy/'train'/'cat').iterdir()), tiny_copy/'train'/junk/'x.png')
    (tiny_copy/'train'/'cat'/'._copy.png').write_bytes(b'\0\5\26\7')  # macOS's AppleDouble file: not an image
    dls = recipe.image_dls(tiny_copy, bs=32)
    assert len(dls.vocab) == 10 and len(dls.train_ds) == 200
    for split in ('train', 'test'):  # but a class may be named __background__
        (tiny_copy/split/'__background__').mkdir(); shutil.copy(next((tiny_copy/split/'cat').iterdir()), tiny_copy/split/'__background__')
    assert '__background__' in recipe.image_dls(tiny_copy, bs=32).vocab


def test_predict_lists_each_image_once_through_a_symlink_loop(tiny_run, tmp_path):
    d = tmp_path/'images'; d.mkdir()
    shutil.copy(tiny_run[1].dls.valid_ds.items[0], d/'a.png')
    (d/'loop').symlink_to(d, target_is_directory=True)
    assert recipe.inference.image_files([d]) == [d/'a.png']


def test_a_non_recipe_error_on_rank_0_ends_both_processes_within_60_s(tiny, tmp_path):
    script = tmp_path/'boom.py'
    script.write_text("import os, sys\nimport recipe\nimport recipe.seed\n"
                      "def boom(learn): raise ValueError('boom on rank ' + os.environ['RANK'])\n"
                      "recipe.seed.find_lrs = boom\n"
                      f"recipe.train({str(tiny)!r}, epochs=1, bs=40, width=8, seed=0, out={str(tmp_path/'run')!r})\n")
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONUNBUFFERED='1')
    t = time.time()
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', script],
                       capture_output=True, text=True, env=env, timeout=180)
    assert time.time() - t < 60 + 30  # + torchrun's and two imports' start-up
    assert r.returncode != 0 and 'ValueError: boom on rank 0' in r.stdout + r.stderr
    assert 'rank 0 stopped: ValueError: boom on rank 0' in r.stdout + r.stderr  # rank 1 got rank 0's error


def test_the_other_rank_waits_for_rank_0s_final_stage_and_leaves_when_it_fails(tiny, tmp_path):
    "Rank 1 waits at the end for rank 0 (leave_together); rank 0 failing in its final stage still ends both, quickly"
    script = tmp_path/'final.py'
    script.write_text("import os, time\nimport recipe, recipe.run\n"
                      f"def final(*a, **k): open({str(tmp_path/'started')!r}, 'w').write(str(time.time())); time.sleep(3); raise ValueError('boom in the final stage')\n"
                      "recipe.run.test_logits = final\n"
                      f"recipe.train({str(tiny)!r}, epochs=1, bs=40, width=8, lr_max=1e-2, seed=0, out={str(tmp_path/'run')!r})\n"
                      "print('rank', os.environ['RANK'], 'left at', time.time(), flush=True)\n")
    # The two processes started as torchrun starts them, without its agent: the agent stops the other workers when it
    # sees one fail (every 0.1 s, or --monitor-interval), and so stopped rank 1 before it could say it left (CI, stop 29)
    with socket.socket() as sock: sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONUNBUFFERED='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(port), WORLD_SIZE='2', LOCAL_WORLD_SIZE='2')
    t = time.time()
    logs = [(tmp_path/f'rank{i}.out', tmp_path/f'rank{i}.err') for i in (0, 1)]  # files: no pipe fills and blocks a rank
    ranks = [subprocess.Popen([sys.executable, script], stdout=open(o, 'w'), stderr=open(e, 'w'),
                              env=dict(env, RANK=str(i), LOCAL_RANK=str(i))) for i, (o, e) in enumerate(logs)]
    try:
        for p in ranks: p.wait(timeout=120)  # a rank that waits for ever fails the test here
    finally:
        for p in ranks: kill_tree(p)
    out = [(o.read_text(), e.read_text()) for o, e in logs]
    assert time.time() - t < 60 + 30
    assert ranks[0].returncode != 0 and 'ValueError: boom in the final stage' in out[0][1]
    left = [float(l.split()[-1]) for l in out[1][0].splitlines() if l.startswith('rank 1 left at')]
    assert left and 'rank 0 left at' not in out[0][0], out[1][1][-3000:]
    assert left[0] >= float((tmp_path/'started').read_text()) + 3  # rank 1 waited for rank 0's final stage, then left
    assert json.loads((tmp_path/'run'/'results.json').read_text())['per_epoch']  # the epoch is kept: --resume finishes


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs) where the machine lets us mount one (root); else a folder where a file written by
    recipe.record fails with ENOSPC past 16 kB (a simulation: said so in the test's output)"""
    disk = tmp_path/'disk'; disk.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(disk)], capture_output=True).returncode == 0
    if not mounted: print('no tmpfs (not root): a simulated full disk')
    yield disk, mounted
    if mounted: subprocess.run(['umount', str(disk)])


def fill(disk, mounted, monkeypatch, leave=16_000):
    "Fill the disk up to `leave` bytes"
    if mounted:
        free = shutil.disk_usage(disk).free
        with open(disk/'filler', 'wb') as f: f.write(b'\0' * max(0, free - leave))
    else:
        real_fdopen = os.fdopen
        class Full:  # the file recipe.record writes through: ENOSPC past `leave` bytes
            def __init__(self, f): self.f = f
            def write(self, data):
                if self.f.tell() + len(data) > leave: raise OSError(errno.ENOSPC, 'No space left on device')
                return self.f.write(data)
            def __getattr__(self, name): return getattr(self.f, name)
            def __enter__(self): return self
            def __exit__(self, *exc): return self.f.__exit__(*exc)
        monkeypatch.setattr(os, 'fdopen', lambda *a, **k: Full(real_fdopen(*a, **k)))


def test_a_full_disk_during_write_json_and_save_weights_is_named_and_keeps_the_old_files(small_disk, monkeypatch):
    disk, mounted = small_disk
    write_json(disk/'results.json', {'epoch': 1})
    model = recipe.CustomResNet(10, 8)  # 416 kB of weights
    fill(disk, mounted, monkeypatch)
    with pytest.raises(RecipeError, match=rf"cannot write {disk/'results.json'}: No space left on device"):
        write_json(disk/'results.json', {'epoch': 2, 'rows': list(range(20_000))})
    assert json.loads((disk/'results.json').read_text()) == {'epoch': 1}
    with pytest.raises(RecipeError, match=rf"cannot write {disk/'model.safetensors'}: No space left on device"):
        save_weights(model, disk/'model', {'width': 8})
    assert not (disk/'model.safetensors').exists() and not [p for p in disk.iterdir() if p.name.endswith('.tmp')]


def test_a_disk_that_fills_during_training_stops_the_run_naming_the_checkpoint(tiny, small_disk, monkeypatch):
    "The disk fills after epoch 1, so epoch 2's checkpoint cannot be written: torch's zip writer, writing to the full disk"
    "itself, raised a RuntimeError that named no cause, and the run ended in a traceback"
    disk, mounted = small_disk
    from fastai.vision.all import Callback
    class FillAfterEpoch1(Callback):
        order = 100  # after the epoch's record and checkpoint
        def after_epoch(self):
            if self.epoch == 0: fill(disk, mounted, monkeypatch)
    with pytest.raises(RecipeError, match=rf"cannot write {disk/'run'/'checkpoint.pt'}: No space left on device; the previous "
                                          r"checkpoint is intact\)\. The checkpoint after epoch 1 of 3 is kept"):
        recipe.train(tiny, out=disk/'run', epochs=3, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[FillAfterEpoch1()])
    assert load_checkpoint(disk/'run')['epoch'] == 1 and not [p for p in (disk/'run').iterdir() if p.name.endswith('.tmp')]


def test_a_read_only_run_folder_is_named_on_resume(tiny, small_disk, monkeypatch):
    "The disk holding a stopped run is read-only when it is resumed: its first write is refused, named, not a traceback"
    disk, mounted = small_disk
    class CtrlCAfterEpoch1(Callback):
        order = 100
        def after_epoch(self):
            if self.epoch == 0: raise KeyboardInterrupt
    with pytest.raises(RecipeError, match=r'stopped \(interrupted\)\. The checkpoint after epoch 1 of 3 is kept'):
        recipe.train(tiny, out=disk/'run', epochs=3, bs=32, width=4, lr_min=1e-3, lr_max=1e-2, seed=0, cbs=[CtrlCAfterEpoch1()])
    if mounted: subprocess.run(['mount', '-o', 'remount,ro', str(disk)], check=True)
    else:
        import tempfile
        def read_only(*a, **k): raise OSError(errno.EROFS, 'Read-only file system')
        monkeypatch.setattr(tempfile, 'mkstemp', read_only)
    with pytest.raises(RecipeError, match=rf"cannot write {disk/'run'}/\S+: Read-only file system"):
        recipe.train(resume=disk/'run')


def test_a_global_batch_larger_than_each_processs_share_is_refused(tiny, tmp_path):
    "200 training images over 2 processes: 100 each, so a global batch of 300 (150 each) would give no batch at all"
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONUNBUFFERED='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'recipe',
                        'train', '--data', tiny, '--bs', '300', '--width', '8', '--epochs', '1', '--lr-max', '0.01', '--out', tmp_path/'run'],
                       capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode != 0
    assert 'batch size 300 (150 per process) is larger than the 100 training images each of the 2 processes gets' in r.stdout + r.stderr


def test_settings_that_do_not_go_together_are_refused_before_any_work(tiny, tmp_path):
    with pytest.raises(RecipeError, match="arch 'resnet' with opt 'muon', whiten True, whiten_bias_epochs 3"):
        recipe.train(tiny, out=tmp_path/'run', profile='fast', settings={'arch': 'resnet'})
    assert not (tmp_path/'run').exists()


def test_the_fast_profile_trains_on_the_per_item_path(tiny, tmp_path):
    "Over the memory budget the images are decoded per item: the whitening init takes them from the dataset"
    with pytest.warns(UserWarning, match='decoding them per item'):
        learn = recipe.train(tiny, out=tmp_path/'run', max_memory='1kB', **QUICK)
    assert getattr(learn.dls.train, 'images', None) is None and json.loads((tmp_path/'run'/'results.json').read_text())['complete']


def class_folders(root, counts):
    "Class folders of CIFAR-10 training images: counts[i] images in the i-th class"
    from conftest import CIFAR
    for c, n in zip(sorted((CIFAR/'train').iterdir()), counts):
        (root/c.name).mkdir(parents=True)
        for f in sorted(c.iterdir())[:n]: shutil.copy(f, root/c.name/f.name)
    return root


def test_the_random_split_keeps_every_class_in_training(tmp_path):
    data = class_folders(tmp_path/'data', [2] * 10)
    dls = recipe.image_dls(data, bs=2, valid_pct=0.5)
    assert {f.parent.name for f in dls.train_ds.items} == {f.parent.name for f in dls.valid_ds.items} == set(dls.vocab)
    assert len(dls.vocab) == 10 and len(dls.train_ds) == len(dls.valid_ds) == 10


def test_resume_keeps_the_split_the_run_saved(tmp_path):
    data, out = class_folders(tmp_path/'data', [10] * 3), tmp_path/'run'
    recipe.train(data, out=out, **KW | dict(bs=8))
    as_if_killed_after_epoch(out, 1)
    split = json.loads((out/'split.json').read_text())
    kept = [f for f in (str(f.relative_to(data)) for f in sorted(data.rglob('*.png'))) if f not in split['valid']]
    split['valid'] = split['valid'][1:] + kept[:1]  # another split than the one the seed would draw
    (out/'split.json').write_text(json.dumps(split))
    learn = recipe.train(resume=out)
    assert sorted(str(f.relative_to(data)) for f in learn.dls.valid_ds.items) == sorted(split['valid'])


def test_the_memory_budget_counts_the_peak_of_loading_and_each_processs_share(tiny, monkeypatch):
    "tiny's 250 images take 0.77 MB decoded, and about 3 times that while loading: over a budget of 1 MB"
    with pytest.warns(UserWarning, match=r'would take 2\.3 MB in memory while loading \(3 copies at the peak\)'):
        dls = recipe.image_dls(tiny, bs=16, augment='batch', max_memory='1MB')
    assert getattr(dls.train, 'images', None) is None  # the per-item path
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1'); alone = recipe.data.memory_budget()
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4'); shared = recipe.data.memory_budget()
    assert shared == pytest.approx(alone / 4, rel=0.1)


def test_a_truncated_image_on_the_per_item_path_is_named_before_training(tiny_copy):
    bad = sorted((tiny_copy/'train'/'cat').iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:200])  # its header is whole, its pixels are not
    with pytest.raises(RecipeError, match=f'cannot read image {bad}'):
        recipe.image_dls(tiny_copy, bs=16, max_memory='1kB')


def as_if_saved_on_a_gpu(path):
    "Rewrite a checkpoint as a CUDA run's would be: every tensor's storage located on cuda:0"
    with zipfile.ZipFile(path) as z: entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for info, b in entries:
            if info.filename.endswith('data.pkl'): b = b.replace(b'X\x03\x00\x00\x00cpu', b'X\x06\x00\x00\x00cuda:0')
            z.writestr(info, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason='shows a GPU checkpoint resumed where there is no GPU')
def test_a_gpu_runs_checkpoint_resumes_on_a_machine_without_one(killed_run):
    as_if_saved_on_a_gpu(killed_run/CHECKPOINT)
    with pytest.raises(RuntimeError, match='on a CUDA device but torch.cuda.is_available'): torch.load(killed_run/CHECKPOINT, weights_only=True)
    learn = recipe.train(resume=killed_run)
    assert json.loads((killed_run/'results.json').read_text())['complete']
    assert all(v.device == p.device for p, s in learn.opt.state.items() for v in s.values() if isinstance(v, torch.Tensor))


def test_a_resumed_final_stage_records_the_accuracy_without_tta_as_such(tiny, tmp_path):
    "Killed after the final stage recorded the TTA accuracy (before the card): the resume must not take it for the plain one"
    out = killed_in_final_stage(tiny, tmp_path/'run', 'write_model_card')
    before = json.loads((out/'results.json').read_text())
    assert not before['complete'] and before['test_accuracy'] != pytest.approx(before['per_epoch'][-1]['test_accuracy'], abs=1e-6)  # TTA's, recorded
    recipe.train(resume=out)
    record = json.loads((out/'results.json').read_text())
    assert record['complete'] and record['test_accuracy_no_tta'] == pytest.approx(record['per_epoch'][-1]['test_accuracy'], abs=1e-6)  # count/n against fastai's float32 mean
    assert record['test_accuracy'] == before['test_accuracy']


def test_a_logger_that_does_not_start_gives_the_folder_back(tiny, tmp_path):
    """W&B without an account (and not offline): refused after lr_find; nothing is left, and the same --out works.
    In a process of its own: wandb keeps its settings for the life of a process"""
    env = {k: v for k, v in os.environ.items() if k not in ('WANDB_MODE', 'WANDB_API_KEY')} | dict(WANDB_SILENT='true', HOME=str(tmp_path))
    out = tmp_path/'run'
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--data', tiny, '--out', out, '--log', 'wandb', '--epochs', '1',
                        '--bs', '32', '--width', '8', '--seed', '0'], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1 and '--log wandb: ' in r.stderr and 'WANDB_MODE=offline' in r.stderr and 'lr_find suggestions' in r.stdout, r.stderr
    assert not out.exists()
    recipe.train(tiny, out=out, **dict(KW, epochs=1))
    assert json.loads((out/'results.json').read_text())['complete']


def test_every_file_of_a_run_has_the_mode_of_a_new_file(finished_run, tmp_path):
    png = (finished_run/'loss.png').stat().st_mode & 0o777  # written by matplotlib: the umask's mode
    modes = {f.name: f.stat().st_mode & 0o777 for f in finished_run.iterdir() if f.is_file()}
    assert len(modes) >= 10 and modes == dict.fromkeys(modes, png)
    old = os.umask(0o027)
    try: write_json(tmp_path/'x.json', {})
    finally: os.umask(old)
    assert (tmp_path/'x.json').stat().st_mode & 0o777 == 0o640


def test_ctrl_c_in_the_final_stage_keeps_the_run_to_finish_with_resume(tiny, tmp_path, monkeypatch):
    out = tmp_path/'run'
    monkeypatch.setattr(recipe.run, 'save_run_plots', lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(RecipeError, match=f'stopped \\(interrupted\\) in the final stage; .* finish with: python -m recipe train --resume {out}'):
        recipe.train(tiny, out=out, **QUICK)
    assert json.loads((out/'results.json').read_text())['stopped'] == 'interrupted in the final stage'
    monkeypatch.undo()
    recipe.train(resume=out)
    record = json.loads((out/'results.json').read_text())
    assert record['complete'] and record['test_accuracy_no_tta'] == pytest.approx(record['per_epoch'][-1]['test_accuracy'], abs=1e-6)  # count/n against fastai's float32 mean


def test_resume_from_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(RecipeError, match=f'no such run folder to resume: {tmp_path/"nope"}'): recipe.train(resume=tmp_path/'nope')
