"""The paths a full-data run takes and the suite's small data sets do not (issue 22): decoding in parallel (from
PARALLEL_FROM files), with the command line's signal handlers; stopping while it decodes; one short run on the
whole of CIFAR-10. Each decoding test hung, or failed, on main at 3a47237."""
import json, math, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CIFAR, alive, children, default_sigint, kill_tree
from recipe.data import PARALLEL_FROM

PARALLEL = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason='decoding goes parallel from 2 cores (CI has 2)')
POOLS = 60  # at 3a47237 about 1 pool in 20 hung here (Xeon, 2 cores), 1 in 8 on an AMD EPYC: 60 catch it 19 times in 20


@pytest.fixture(scope='module')
def many_pngs(tmp_path_factory):
    "PARALLEL_FROM small PNGs of noise: enough to be decoded in parallel"
    d = tmp_path_factory.mktemp('many')
    rng = np.random.default_rng(0)
    for i in range(PARALLEL_FROM): Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d/f'{i:05d}.png')
    return d


def run_script(code, *args, timeout):
    "Python `code` in a process of its own; a hang is a failure after `timeout` seconds, with what it printed"
    try: return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung for {timeout} s: {(e.stdout or b'')[-2000:]!r} {(e.stderr or b'')[-2000:]!r}")


# As the command line decodes: torch and fastai loaded, its SIGTERM handler installed (recipe/cli.py), then many pools
DECODE_MANY_TIMES = """
import signal, sys
from pathlib import Path
import recipe.run
from recipe.cli import stop_on_sigterm
from recipe.data import decode_all
signal.signal(signal.SIGTERM, stop_on_sigterm)
files = sorted(Path(sys.argv[1]).glob('*.png'))
for i in range(int(sys.argv[2])):
    assert len(decode_all(files)) == len(files)
    print(i, end=' ', flush=True)
print('done')
"""


@PARALLEL
def test_parallel_decoding_with_the_command_lines_handlers_never_hangs(many_pngs):
    r = run_script(DECODE_MANY_TIMES, many_pngs, POOLS, timeout=240)
    assert r.returncode == 0 and r.stdout.endswith('done\n'), r.stderr[-3000:]
    assert 'Traceback' not in r.stderr  # no worker ran the command line's handler (at 3a47237 some raised KeyboardInterrupt)


# A decoding process killed (as the kernel's out-of-memory killer would) in the middle of its work
KILL_A_WORKER = """
import os, signal, sys
from pathlib import Path
import recipe.data
from recipe.data import RecipeError, decode_all
decode, parent = recipe.data.decode, os.getpid()
def dies_on_the_500th(fn, size):
    if os.getpid() != parent and fn.name == '00500.png': os.kill(os.getpid(), signal.SIGKILL)
    return decode(fn, size)
recipe.data.decode = dies_on_the_500th  # the workers are forked: they decode with it
try: decode_all(sorted(Path(sys.argv[1]).glob('*.png')))
except RecipeError as e: print('error:', e)
"""


@PARALLEL
def test_a_decoding_process_that_dies_is_an_error_not_a_hang(many_pngs):
    r = run_script(KILL_A_WORKER, many_pngs, timeout=120)
    assert r.returncode == 0 and f'error: a process decoding the images of {many_pngs.parent}' in r.stdout, r.stderr[-3000:]


def forked_children(pid) -> list:
    "The processes forked by `pid` (its command line, not another program's: git, say), from /proc"
    try: return [k for k in children(pid) if Path(f'/proc/{k}/cmdline').read_bytes() == Path(f'/proc/{pid}/cmdline').read_bytes()]
    except OSError: return []


@PARALLEL
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_decoding_stops_within_seconds_and_gives_the_folder_back(sig, tmp_path):
    "The whole CIFAR-10 (60,000 files, several seconds of decoding): the signal comes once the decoding processes run"
    out = tmp_path/'run'
    proc = subprocess.Popen([sys.executable, '-m', 'recipe', 'train', '--data', CIFAR, '--profile', 'quick', '--width', '8',
                             '--out', out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {'RECIPE_CACHE': 'off'},  # decoded, not read back from an earlier test's store
                            preexec_fn=default_sigint)
    try:
        t = time.time()
        # two at once: the decoding processes (a single one can be git's, forked by the run before it becomes git)
        while len(forked_children(proc.pid)) < 2 and proc.poll() is None and time.time() - t < 120: time.sleep(0.05)
        workers = forked_children(proc.pid)
        assert workers, f"no decoding process seen: {proc.poll()} {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}"
        time.sleep(0.5)
        proc.send_signal(sig); t = time.time()
        _, err = proc.communicate(timeout=30)
        assert time.time() - t < 10, f"took {time.time() - t:.1f} s to stop"
    finally:
        kill_tree(proc)  # the decoding processes too
    assert proc.returncode == 1 and 'stopped (interrupted)' in err and 'Traceback' not in err, err[-3000:]
    assert not out.exists()  # given back: the same --out can be used again
    time.sleep(0.5)
    assert not [w for w in workers if alive(w)]  # no decoding process left behind


# The command line with a few training steps in each epoch: the whole data decoded, every stage run
FEW_STEPS = """
import runpy, sys
from fastai.vision.all import Callback, CancelBatchException
import recipe.run
class FewSteps(Callback):  # the other batches are drawn (and augmented) but not trained on
    def before_batch(self):
        if self.training and self.iter >= 3: raise CancelBatchException
train = recipe.run.train
recipe.run.train = lambda *a, **k: train(*a, **dict(k, cbs=[FewSteps()]))
runpy.run_module('recipe', run_name='__main__', alter_sys=True)  # as `python -m recipe`
"""


def test_a_short_run_of_the_fast_profile_on_the_whole_of_cifar10(tmp_path, image_store):
    out = tmp_path/'run'
    r = run_script(FEW_STEPS, 'train', '--data', CIFAR, '--profile', 'fast', '--epochs', '1', '--width', '8', '--seed', '0',
                   '--out', out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((out/'results.json').read_text())
    assert record['complete'] and (record['data']['n_train'], record['data']['n_test']) == (50_000, 10_000)
    assert record['test_accuracy_no_tta'] == record['per_epoch'][-1]['test_accuracy'] and math.isfinite(record['test_loss'])
    for f in ('model.safetensors', 'model.json', 'README.md', 'loss.png', 'confusion_matrix.png', 'top_losses.png'): assert (out/f).exists(), f
    kept = [np.load(f)['images'].shape for f in image_store.glob('images-*.npz')]  # for the next run
    assert (60_000, 32, 32, 3) in kept and len(list(image_store.glob('.*'))) == 0, kept
