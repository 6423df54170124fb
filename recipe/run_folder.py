"""A run's folder: claimed by one run only (its results.json created exclusively), locked while a process runs it, and
given back by a new run stopped before its first checkpoint. The standard library only."""
import json, os, shutil, time
from datetime import datetime
from pathlib import Path

from .errors import RecipeError

__all__ = ['check_out', 'first_missing', 'lock_folder', 'in_use', 'release', 'SETUP_FILES', 'SETUP_FOLDERS']


def first_missing(folder: Path):
    "The topmost of `folder` and its parents that does not exist yet (absolute), None if it exists: what making it creates"
    folder, missing = folder.resolve(), None
    while not folder.exists(): folder, missing = folder.parent, folder
    return missing


def check_out(out=None) -> Path:
    """The run folder, claimed before any work (`claim`), so parallel runs never share one: the default is
    runs/<timestamp> (-2, -3, ... when another run took that second); a given folder must be empty or new"""
    if out is None: return new_timestamp_folder(Path('runs'))
    out = Path(out)
    if out.exists() and not out.is_dir(): raise RecipeError(f"output folder {out} is a file: choose another --out")
    if out.exists() and any(out.iterdir()): raise RecipeError(f"output folder {out} already exists and is not empty: choose another --out")
    if not claim(make_out(out)): raise RecipeError(f"output folder {out} was just taken by another run: choose another --out")
    return out


def new_timestamp_folder(parent: Path) -> Path:
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    make_out(parent)
    for n in range(1, 1000):
        out = parent/(stamp if n == 1 else f'{stamp}-{n}')
        try: out.mkdir(parents=True)  # atomic: exactly one process creates it (parents: runs/ again, if a failed run removed it)
        except FileExistsError: continue
        if claim(out): return out
    raise RecipeError(f"cannot find a free run folder name under {parent} for {stamp}: give --out")


def claim(out: Path) -> bool:
    """Take a run folder by creating its results.json, exclusively (only one process can): a first record that the
    run rewrites after every epoch. False if another run holds it"""
    try: fd = os.open(out/'results.json', os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError: return False
    except OSError as e: raise RecipeError(f"cannot write to output folder {out}: {e.strerror}") from None
    with os.fdopen(fd, 'w') as f: json.dump(dict(out=str(out), started=datetime.now().isoformat(timespec='seconds'), complete=False), f)
    return True


def make_out(out: Path) -> Path:
    for attempt in range(3):
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out/'.write_test').touch(); (out/'.write_test').unlink()
            return out
        except FileNotFoundError as e:  # removed meanwhile by a run that failed and gave back the empty folder it made: again
            if attempt == 2: raise RecipeError(f"cannot write to output folder {out}: {e.strerror}") from None
        except OSError as e: raise RecipeError(f"cannot write to output folder {out}: {e.strerror}") from None


def lock_folder(out: Path):
    """The run folder opened and locked (flock, exclusive) for as long as this process runs it: a second process that
    resumes it, or resumes it while its run still trains, is refused. The kernel frees the lock when the process ends,
    even by SIGKILL. None where there is no flock (Windows)"""
    try: import fcntl
    except ImportError: return None
    try: fd = os.open(out, os.O_RDONLY)
    except OSError: return None  # no such folder: what reads it next says so
    for attempt in range(10):  # a moment's patience: `in_use` (recipe runs) may hold it for an instant
        try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); return fd
        except BlockingIOError: time.sleep(0.02)
        except OSError: os.close(fd); return None  # a file system without locks (some network mounts): unguarded, as before
    os.close(fd)
    raise RecipeError(f"{out} is in use by another process (its run training, or another --resume of it): "
                      "let that one finish, or stop it, then resume")


def in_use(out: Path):
    """Whether a process holds the run folder (`lock_folder`): a run not complete and not held was killed, not training.
    None where it cannot be told (no flock). A shared lock for an instant: `lock_folder` waits that out"""
    try: import fcntl
    except ImportError: return None
    try: fd = os.open(out, os.O_RDONLY)
    except OSError: return None
    try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB); return False
    except BlockingIOError: return True
    except OSError: return None
    finally: os.close(fd)


SETUP_FILES = ('results.json', 'split.json', 'lr_find.png', 'metrics.csv')  # what a new run writes before its first checkpoint
SETUP_FOLDERS = ('tensorboard', 'wandb')                     # and what its loggers may have begun


def release(out: Path, made: Path = None):
    """Give back the folder of a new run stopped before its first checkpoint (bad data, lr_find, a logger that does not
    start, Ctrl-C in the first epoch): what it wrote is removed, so the same --out can be used again, and the folders
    the run created, up to `made` (its own, runs/, --out's new parents), if nothing else is in them"""
    for name in SETUP_FILES: (out/name).unlink(missing_ok=True)
    for name in SETUP_FOLDERS: shutil.rmtree(out/name, ignore_errors=True)
    for d in out.glob('tmp????????'):  # fastai's lr_find keeps the weights in a temporary folder (tempfile's name) until it ends
        try:
            if d.is_dir() and [f.name for f in d.iterdir()] == ['_tmp.pth']: shutil.rmtree(d, ignore_errors=True)
        except OSError: pass  # not one to read: not the run's
    if made is None: return  # an empty --out that was there before: it stays
    for folder in (out, *[f for f in out.parents if f == made or made in f.parents]):  # nearest first
        try: folder.rmdir()
        except OSError: break  # something else is in it (another run's folder, say): keep it
