"""The suite's own promise: a test that hangs fails at the time limit in setup.cfg, and takes its children with it."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest
from conftest import alive, send

ROOT = Path(__file__).resolve().parents[1]

# A test that waits, as many tests here do, on a child that never ends; the child writes its pid first
HANGING_TEST = """
import subprocess, sys
def test_waits_on_a_child_that_never_ends():
    code = "import os, time; open({pid!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    subprocess.run([sys.executable, '-c', code])
"""

# A test that waits on a launcher started with the suite's `spawn` fixture; the launcher's worker has a session of its own,
# as torchrun's workers do, so that no process group holds both
HANGING_LAUNCHER_TEST = """
import sys
def test_waits_on_a_launcher_that_never_ends(spawn):
    worker = "import os, time; open({pid!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {{worker!r}}], start_new_session=True); time.sleep(300)"
    spawn([sys.executable, '-c', launcher]).wait()
"""


def test_this_test_runs_under_the_limit():
    # the signal method's timer, armed for this test: what is in force, not only what setup.cfg says
    left = signal.getitimer(signal.ITIMER_REAL)[0]
    assert 600 < left <= 900 and signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None), left


def run_hanging_test(tmp_path, test, *options, pythonpath=(), sigterm=False):
    """Run `test` (its child writes its pid to {pid}) in an inner pytest with the project's settings (-c setup.cfg: its
    method) and the limit shortened to 5 s; it must fail at the limit, within 60 s. With `sigterm`, the limit is 300 s and
    pytest is sent SIGTERM once the child has started; it must stop as interrupted, within 60 s. Whether the child was
    left running, and its pid"""
    pid_file = tmp_path / 'child.pid'
    (tmp_path / 'test_hang.py').write_text(test.format(pid=str(pid_file)))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTEST_TIMEOUT', 'PYTEST_ADDOPTS')}
    env['PYTHONPATH'] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get('PYTHONPATH')])])
    inner = subprocess.Popen([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-c', str(ROOT / 'setup.cfg'),
                              '--rootdir', str(tmp_path), f'--timeout={300 if sigterm else 5}', *options, str(tmp_path / 'test_hang.py')],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env,
                             start_new_session=True)
    t0, pid, child_left = time.monotonic(), None, None
    try:
        while sigterm and not pid_file.exists() and inner.poll() is None and time.monotonic() - t0 < 60: time.sleep(0.05)
        if sigterm: inner.send_signal(signal.SIGTERM)
        out = inner.communicate(timeout=120)[0]
        took = time.monotonic() - t0
    finally:
        written = pid_file.read_text() if pid_file.exists() else ''
        if written.isdigit():
            pid = int(written)
            child_left = alive(pid)  # looked at before the clean-up below (a killed child not yet reaped is not alive)
        try:
            os.killpg(inner.pid, signal.SIGKILL)  # whatever the inner run left, a hung child included
        except ProcessLookupError:
            pass
        if child_left: send(pid, signal.SIGKILL)  # a child in a session of its own is not in that group
        inner.wait()
    if sigterm: assert inner.returncode == pytest.ExitCode.INTERRUPTED and 'stopped by SIGTERM' in out, (inner.returncode, out)
    else: assert inner.returncode == 1 and 'Timeout' in out, out
    assert took < 60 and pid is not None, (took, out)
    return child_left, pid


def test_a_hanging_child_fails_its_test_at_the_limit_and_is_killed(tmp_path):
    child_left, pid = run_hanging_test(tmp_path, HANGING_TEST)
    assert not child_left, f'the hung test left its child {pid} running'


def test_spawn_kills_what_a_test_started_down_to_workers_in_sessions_of_their_own(tmp_path):
    "tests/conftest.py's `spawn`, which the tests of torchrun's runs use: at the limit the launcher and its worker go"
    # the suite's conftest loaded as a plugin (-p): the inner test lives outside tests/
    child_left, pid = run_hanging_test(tmp_path, HANGING_LAUNCHER_TEST, '-p', 'conftest', pythonpath=[ROOT / 'tests'])
    assert not child_left, f"the hung test left its launcher's worker {pid} running"


def test_sigterm_stops_the_suite_as_ctrl_c_does_and_spawn_still_kills_what_a_test_started(tmp_path):
    "`kill`, `pkill -f pytest` or a CI's limit: SIGTERM's default action would end pytest and skip the teardowns"
    child_left, pid = run_hanging_test(tmp_path, HANGING_LAUNCHER_TEST, '-p', 'conftest', pythonpath=[ROOT / 'tests'], sigterm=True)
    assert not child_left, f"SIGTERM to the suite left its test's launcher's worker {pid} running"
