"""Shared fixtures: small real subsets of CIFAR-10 (copied from $RECIPE_DATA, default ../shared/cifar10)."""
import json, os, shutil, signal, subprocess, time
from pathlib import Path

import matplotlib
import pytest

matplotlib.use('Agg')
ROOT = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get('RECIPE_DATA', ROOT.parent/'shared'/'cifar10'))


def default_sigint():
    "preexec_fn of a child that must stop on Ctrl-C: one of a background job (`nohup pytest &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt"
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children(pid) -> list:
    "The processes forked by pid's threads, from /proc ([] once it is gone)"
    try: return [int(c) for task in Path(f'/proc/{pid}/task').glob('*') for c in (task/'children').read_text().split()]
    except OSError: return []


def process_tree(pid) -> list:
    "pid and every process under it: torchrun starts its workers in sessions of their own, so no group holds them all"
    return [pid] + [p for k in children(pid) for p in process_tree(k)]


def state(pid) -> str:
    "The state letter in /proc/PID/stat, '' if there is no such process (the name before it may itself hold ') ')"
    try: return Path(f'/proc/{pid}/stat').read_text().rpartition(') ')[2][:1]
    except OSError: return ''


def alive(pid) -> bool:
    "pid runs (a zombie, killed and not yet reaped, does not)"
    return state(pid) not in ('Z', 'X', '')


def send(pid, sig):
    try: os.kill(pid, sig)
    except OSError: pass  # gone, or its pid already another user's


def kill_tree(proc):
    """SIGKILL a Popen that still runs and every process under it, reap it, and wait (5 s at most) until the others are
    dead. Each is stopped first, and the tree read again once they have stopped, until it holds no new one: none forks
    unseen. Out of reach: one that ended (its pid may be another's now) and the orphans of one that ended before"""
    if proc.poll() is not None: return
    found = []
    try:
        while new := [pid for pid in process_tree(proc.pid) if pid not in found]:
            for pid in new: send(pid, signal.SIGSTOP)
            found += new
            deadline = time.monotonic() + 2  # a SIGSTOP lands a little later, and a fork under way finishes first
            while any(state(pid) not in ('T', 't', 'Z', 'X', '') for pid in new) and time.monotonic() < deadline: time.sleep(0.01)
    finally:  # killed even if the stopping was interrupted (the suite's time limit, Ctrl-C): none is left stopped
        for pid in reversed(found): send(pid, signal.SIGKILL)  # children first
        proc.wait()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in found[1:]) and time.monotonic() < deadline: time.sleep(0.05)


@pytest.fixture
def spawn():
    "subprocess.Popen for a test: what still runs when the test ends (a failure, the suite's time limit) is killed, all of it"
    started = []
    def popen(*args, **kw):
        started.append(subprocess.Popen(*args, **kw)); return started[-1]
    yield popen
    errors = []
    for proc in started:
        try: kill_tree(proc)
        except BaseException as e: errors.append(e)  # the others are still killed
    if errors: raise errors[0]


PREVIOUS_SIGTERM = pytest.StashKey()


def pytest_configure(config):
    "SIGTERM (`kill`, `pkill -f pytest`, a CI's time limit) stops the suite as Ctrl-C does, so that every teardown runs"
    suite = os.getpid()
    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the suite at once, teardowns or not
        if os.getpid() != suite:  # a process forked from the suite's, not exec'd, that kept this handler: it ends, as by default
            os.kill(os.getpid(), signum); return
        # what catches the exception below (a run turns it into an error) fails only its test: none starts after it
        if session := config.pluginmanager.get_plugin('session'): session.shouldstop = 'stopped by SIGTERM'
        # raised in the test where it is, as Ctrl-C's KeyboardInterrupt is: pytest then tears down what was set up, and the
        # test's `spawn` kills what it started; the default action would end pytest here and leave them all running
        raise pytest.Session.Interrupted('stopped by SIGTERM')
    config.stash[PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, stop)


def pytest_unconfigure(config):
    if PREVIOUS_SIGTERM in config.stash: signal.signal(signal.SIGTERM, config.stash[PREVIOUS_SIGTERM])


def make_subset(dest, n_train, n_test, classes=None):
    "Copy the first n images per class of each split into dest (fastai's CIFAR layout)"
    if not (CIFAR/'train').is_dir(): pytest.fail(f"CIFAR-10 not found at {CIFAR}: set RECIPE_DATA")
    for split, n in (('train', n_train), ('test', n_test)):
        for c in sorted((CIFAR/split).iterdir())[:classes]:
            (dest/split/c.name).mkdir(parents=True)
            for f in sorted(c.iterdir())[:n]: shutil.copy(f, dest/split/c.name/f.name)
    return dest


@pytest.fixture(scope='session', autouse=True)
def image_store(tmp_path_factory):
    "The decoded-image store of every test (and every process a test starts) in a folder of its own, not ~/.cache"
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp('image-store')
        mp.setenv('RECIPE_CACHE', str(folder))
        yield folder


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    "20 training and 5 test images per class: for runs where only the plumbing matters"
    return make_subset(tmp_path_factory.mktemp('tiny'), 20, 5)


@pytest.fixture(scope='session')
def small(tmp_path_factory):
    "300 training and 50 test images per class: enough to learn something in a few epochs"
    return make_subset(tmp_path_factory.mktemp('small'), 300, 50)


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    "A private copy of `tiny` that a test may damage"
    return Path(shutil.copytree(tiny, tmp_path/'data'))


@pytest.fixture(scope='session')
def tiny_run(tiny, tmp_path_factory):
    "A run folder from one quick epoch on `tiny` (LRs given, so no lr_find), and its Learner"
    import recipe
    out = tmp_path_factory.mktemp('runs')/'tiny'
    return out, recipe.train(tiny, epochs=1, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0, out=out)


@pytest.fixture(scope='session')
def quick_run(tiny, tmp_path_factory):
    "The quick profile (TTA level 2 for the images under 0.8 confidence, bf16 where the CPU has it) on `tiny`; `recipe evaluate` writes its eval/ into it"
    import recipe
    out = tmp_path_factory.mktemp('runs')/'quick'
    recipe.train(tiny, out=out, profile='quick', epochs=2, bs=50, width=8, seed=0)
    return out


def as_if_killed_after_epoch(out, epoch):
    "A finished run's folder turned into one killed after `epoch` (its checkpoint says so, its record is not complete)"
    import torch
    ckpt = torch.load(out/'checkpoint.pt', weights_only=True); ckpt['epoch'] = epoch; torch.save(ckpt, out/'checkpoint.pt')
    record = json.loads((out/'results.json').read_text()); record['complete'] = False
    (out/'results.json').write_text(json.dumps(record))


@pytest.fixture(scope='session')
def finished_run(tiny, tmp_path_factory):
    "One run of 2 epochs on `tiny` for the resume tests (each takes a copy: `killed_run`) and the same-seed test"
    import recipe
    out = tmp_path_factory.mktemp('runs')/'finished'
    recipe.train(tiny, out=out, epochs=2, bs=32, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)
    return out


@pytest.fixture
def killed_run(finished_run, tmp_path):
    "A copy of `finished_run` as if killed after its first epoch"
    out = Path(shutil.copytree(finished_run, tmp_path/'run'))
    as_if_killed_after_epoch(out, 1)
    return out


@pytest.fixture(scope='session')
def cjk_font():
    "The family of an installed font with Chinese characters; CI must have one (.ci/run installs Debian's fonts-droid-fallback)"
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font
    for font in font_manager.fontManager.ttflist:
        try:
            if ord('猫') in FT2Font(font.fname).get_charmap() and not font.name.startswith('Last Resort'): return font.name  # matplotlib's boxes
        except (OSError, RuntimeError): pass
    if os.environ.get('CI'): pytest.fail("no font with Chinese characters: .ci/run installs one (apt-get install fonts-droid-fallback)")
    pytest.skip("needs a font with Chinese characters (apt-get install fonts-droid-fallback), as .ci/run installs")


@pytest.fixture(scope='session')
def browser():
    "Headless Chromium with its console and network logs, for the pages and the demo; CI must have it (.ci/run installs it)"
    if not (shutil.which('chromium') and shutil.which('chromedriver')):
        if os.environ.get('CI'): pytest.fail("chromium and chromedriver are missing: .ci/run installs them (apt-get install chromium chromium-driver)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), as .ci/run installs")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which('chromium')
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--window-size=1000,1400', '--disable-dev-shm-usage'): options.add_argument(a)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL', 'performance': 'ALL'})
    driver = webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()
