"""More than one process: 2 CPU processes launched by torchrun train one model with DDP over gloo (recipe/distributed.py)."""
import csv, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from fastai.callback.schedule import combined_cos
from safetensors.torch import load_file

import recipe
from recipe.config import PEAK_AT
from conftest import kill_tree, make_subset

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
ENV = dict(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')  # CPU processes over gloo, also on a machine with one GPU


def launch(*args, timeout=180, **kw):
    "torchrun with 2 processes; its output (both ranks') and exit status"
    env = dict(os.environ, **ENV, PYTHONUNBUFFERED='1')
    job = subprocess.Popen([*TORCHRUN, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)
    try: out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(job)  # torchrun's workers too: they are not in its process group
        try: out, err = job.communicate(timeout=30)
        except subprocess.TimeoutExpired: out, err = '', '(its output is held by a process out of reach)'
        pytest.fail(f"torchrun {' '.join(map(str, args))} ran past {timeout} s: {(out + err)[-3000:]}")
    finally: kill_tree(job)
    return job.returncode, out + err


@pytest.fixture(scope='module')
def odd(tmp_path_factory):
    "20 training images per class and 99 test images: the test set does not divide by 2"
    d = make_subset(tmp_path_factory.mktemp('odd'), 20, 10)
    sorted((d/'test'/'airplane').iterdir())[0].unlink()
    return d


@pytest.fixture(scope='module')
def launched(odd, tmp_path_factory):
    "`recipe.train()` (lr_find, 2 epochs, global batch 40) in 2 processes launched by torchrun"
    out = tmp_path_factory.mktemp('dist')/'run'
    rc, log = launch(HERE/'launched_train.py', odd, out)
    return out, rc, log, [json.loads(Path(f'{out}.rank{r}.json').read_text()) if rc == 0 else None for r in (0, 1)]


def test_two_processes_write_one_run_folder(launched):
    out, rc, log, ranks = launched
    assert rc == 0, log
    rows = list(csv.DictReader(open(out/'metrics.csv')))
    assert [r['epoch'] for r in rows] == ['1', '2']                        # one row per epoch, not one per rank
    res = json.loads((out/'results.json').read_text())
    assert res['complete'] and res['world_size'] == 2 and res['backend'] == 'gloo' and res['bs'] == 40
    assert log.count('test accuracy ') == 1 and log.count('lr_find suggestions') == 1  # rank 0 speaks for the run
    assert [p.name for p in out.parent.iterdir() if p.is_dir()] == ['run']


def test_saved_keys_have_no_ddp_prefix(launched):
    out = launched[0]
    keys = list(load_file(out/'model.safetensors')) + list(torch.load(out/'checkpoint.pt', weights_only=True)['model'])
    assert keys and not [k for k in keys if k.startswith('module.')]


def test_reported_test_metrics_equal_a_single_process_evaluation_of_the_saved_weights(launched, odd):
    "Each of the 99 test images counted once (fastai's DistributedDL would count one twice), with rank 0's BN statistics"
    out = launched[0]
    res = json.loads((out/'results.json').read_text())
    model = recipe.load(out)
    dls = recipe.image_dls(odd, bs=64, augment='batch', device='cpu')
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in dls.valid]); y = dls.valid.labels
    assert len(y) == 99
    assert res['test_accuracy'] == pytest.approx(int((logits.argmax(1) == y).sum()) / 99, abs=1e-12)
    assert res['test_loss'] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-4)


def test_lr_find_runs_once_and_the_schedule_ends_as_in_one_process(launched):
    "fastai sets each step's LR at the start of the step: the last of the 10 steps (200 images / 40, 2 epochs) is at 9/10"
    out, _, _, (rank0, rank1) = launched
    assert (rank0['lr_find_calls'], rank1['lr_find_calls']) == (1, 0) and (out/'lr_find.png').exists()
    res = json.loads((out/'results.json').read_text())
    lr_min, lr_max = res['lr_min'], res['lr_max']
    assert rank0['steps'] == 10 and rank0['first_lr'] == pytest.approx(lr_min)
    assert rank0['last_lr'] == pytest.approx(combined_cos(PEAK_AT, lr_min, lr_max, lr_min)(9 / 10))


def test_each_rank_augments_with_its_own_seed(launched):
    rank0, rank1 = launched[3]
    assert (rank0['torch_seed'], rank1['torch_seed']) == (0, 1)  # seed + rank
    assert rank0['next_augmented'] != rank1['next_augmented']  # albumentations too: the same draws would give the same image


def test_nan_on_one_rank_stops_both_with_the_message(odd, tmp_path):
    t = time.time()
    rc, log = launch(HERE/'launched_train.py', odd, tmp_path/'run', 1, timeout=120)
    assert rc != 0 and time.time() - t < 120
    message = 'the training loss became nan in epoch 1 (batch 2) on rank 1'
    assert message in log
    # seen by rank 0 too, which gives the folder back: no checkpoint yet, so nothing to resume
    assert any(line.startswith('[rank0]') and message in line and 'No checkpoint was saved; the run folder is given back' in line
               for line in log.splitlines()) and not (tmp_path/'run').exists()


def test_resume_after_sigkill_finishes_a_two_process_run(odd, tmp_path, spawn):
    "SIGKILL the launcher and both workers once the first epoch's checkpoint exists (a crash), then resume (batch path)"
    out = tmp_path/'run'
    cmd = [*TORCHRUN, '-m', 'recipe', 'train', '--data', str(odd), '--out', str(out), '--epochs', '8', '--bs', '40',
           '--width', '8', '--lr-min', '1e-3', '--lr-max', '1e-2', '--seed', '0', '--augment', 'batch']  # the in-memory loader
    job = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                env=dict(os.environ, **ENV))
    deadline = time.time() + 120
    while not (out/'checkpoint.pt').exists() and job.poll() is None and time.time() < deadline: time.sleep(0.05)
    subprocess.run(['pkill', '-KILL', '-f', str(out)])  # torchrun starts its workers in sessions of their own
    job.wait()
    done = torch.load(out/'checkpoint.pt', weights_only=True)['epoch']
    assert 1 <= done < 8
    rc, log = launch('-m', 'recipe', 'train', '--resume', out)
    assert rc == 0, log
    assert f'resuming {out} after epoch {done} of 8' in log
    assert [r['epoch'] for r in csv.DictReader(open(out/'metrics.csv'))] == [str(e) for e in range(1, 9)]
    assert json.loads((out/'results.json').read_text())['complete']


def test_resume_with_another_number_of_processes_is_refused(launched):
    with pytest.raises(recipe.RecipeError, match='was trained by 2 process'):
        recipe.train(resume=launched[0])


def test_a_global_batch_that_does_not_divide_is_refused(odd, tmp_path):
    rc, log = launch('-m', 'recipe', 'train', '--data', odd, '--out', tmp_path/'run', '--bs', 41, '--width', 8,
                     '--epochs', 1, '--lr-max', 1e-2)
    assert rc != 0 and 'batch size 41 does not divide evenly across 2 processes' in log


def test_sigterm_to_one_rank_stops_the_run_with_a_message(odd, tmp_path, spawn):
    "SIGTERM to one worker: it stops as a single process does, torchrun stops the other, rank 0's record says why"
    out = tmp_path/'run'
    job = spawn([*TORCHRUN, '-m', 'recipe', 'train', '--data', str(odd), '--out', str(out), '--epochs', '40',
                 '--bs', '40', '--width', '8', '--lr-min', '1e-3', '--lr-max', '1e-2'],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **ENV))
    deadline = time.time() + 120
    while not (out/'checkpoint.pt').exists() and job.poll() is None and time.time() < deadline: time.sleep(0.05)
    workers = sorted(int(w) for w in subprocess.run(['pgrep', '-P', str(job.pid)], capture_output=True, text=True).stdout.split())
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGTERM)
    log, _ = job.communicate(timeout=120)
    assert job.returncode != 0 and 'stopped (' in log and 'resume with: torchrun --standalone --nproc_per_node 2' in log, log
    assert log.count('is kept in') == 1 and 'stopped (interrupted) on rank 1 of 2; rank 0 says what is kept (resume with: torchrun' in log, log  # once
    res = json.loads((out/'results.json').read_text())
    assert res['stopped'] and not res['complete']


def test_a_seeded_two_process_run_is_repeatable(launched, odd, tmp_path):
    out = tmp_path/'again'
    rc, log = launch(HERE/'launched_train.py', odd, out)
    assert rc == 0, log
    assert (out/'metrics.csv').read_text().splitlines() != []
    metrics = lambda d: [r[:4] for r in csv.reader(open(d/'metrics.csv'))]  # without the seconds
    assert metrics(out) == metrics(launched[0])
