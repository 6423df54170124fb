"""The suite's own promise: a test that hangs fails at the time limit in setup.cfg, and takes its children with it."""
import os, signal, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A test that waits, as many tests here do, on a child that never ends; the child writes its pid first
HANGING_TEST = """
import subprocess, sys
def test_waits_on_a_child_that_never_ends():
    code = "import os, time; open({pid!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    subprocess.run([sys.executable, '-c', code])
"""


def test_the_suite_has_a_time_limit(request):
    assert float(request.config.getini('timeout')) >= 300  # above the slowest test on a slow day (167 s)


def test_a_hanging_child_fails_its_test_at_the_limit_and_is_killed(tmp_path):
    pid_file = tmp_path / 'child.pid'
    (tmp_path / 'test_hang.py').write_text(HANGING_TEST.format(pid=str(pid_file)))
    # the project's own pytest settings (-c setup.cfg), with the limit shortened to 5 s
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-c', str(ROOT / 'setup.cfg'),
                        '--rootdir', str(tmp_path), '-o', 'timeout=5', str(tmp_path / 'test_hang.py')],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    took = time.monotonic() - t0
    pid = int(pid_file.read_text())
    alive = Path(f'/proc/{pid}').exists()
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert r.returncode == 1 and 'Timeout' in r.stdout, r.stdout + r.stderr
    assert took < 60, took
    assert not alive, f'the hung test left its child {pid} running'
