"""Decoded images kept on disk for the next run (issue 23's fixed cost): decoding CIFAR-10's 60,000 PNGs took 15-17 s
on 2 CPU cores and 10-12 s of a 15-25 s run on an H200; reading them back takes about a second.

Where: $RECIPE_CACHE, else $XDG_CACHE_HOME/recipe, else ~/.cache/recipe; `RECIPE_CACHE=off` turns it off. Only folders
of at least STORE_FROM images are kept (fewer decode in about a second anyway), and only when they are decoded into
memory. An entry is the decoded array (NAME.npy) and, written after it, the list of files that could not be read
(NAME.json): an entry without its .json is never read, so a run killed while writing leaves nothing that is used.
NAME is a digest of the folder and the size, then of every file's path, size, mtime and ctime and of DECODE_FORMAT: a
file changed, added or removed makes a new entry, and writing it removes the folder's older ones.
"""
import hashlib, json, os, shutil, time, warnings
from pathlib import Path

import numpy as np

__all__ = ['CACHE_ENV', 'STORE_FROM', 'DECODE_FORMAT', 'store_dir', 'ImageStore']

CACHE_ENV = 'RECIPE_CACHE'
STORE_FROM = 4000   # files: below this a folder decodes in about a second, not worth a file on disk
DECODE_FORMAT = 1   # what a file decodes to (recipe/space_app.py, decode): a change to it must change this number


def store_dir():
    "The folder of the entries, or None when $RECIPE_CACHE is 'off'"
    given = os.environ.get(CACHE_ENV)
    if given: return None if given.lower() == 'off' else Path(given).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home()/'.cache')/'recipe'


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class ImageStore:
    "The entry of `files` decoded at `size`: `read()` (None when there is none) and `write(images, errors)`"
    def __init__(self, files, size, folder: Path):
        self.folder, self.n, self.size = folder, len(files), size
        root = os.path.commonpath([str(d.resolve()) for d in {Path(f).parent for f in files}])
        self.prefix = f"images-{digest(root, size)}-"  # one folder at one size: its entries share this
        stats = [(str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns) for f in files for st in [os.stat(f)]]
        self.path = folder/f"{self.prefix}{digest(DECODE_FORMAT, size, stats)}"

    @classmethod
    def of(cls, files, size):
        "The store of these files, or None: turned off, or too few files to be worth it"
        folder = store_dir()
        return cls(files, size, folder) if folder is not None and len(files) >= STORE_FROM else None

    def read(self):
        "(images, {index: error message}) of the entry, or None: no entry, or one that does not match"
        try:
            errors = {int(i): msg for i, msg in json.loads(self.path.with_suffix('.json').read_text()).items()}
            images = np.load(self.path.with_suffix('.npy'))
        except (OSError, ValueError, EOFError): return None
        if images.shape != (self.n, self.size, self.size, 3) or images.dtype != np.uint8: return None
        return images, errors

    def write(self, images, errors):
        "Keep the entry, or warn and go on (no room, no right to write): the next run decodes again"
        tmp = [self.folder/f".{self.path.name}.{os.getpid()}{ext}" for ext in ('.npy', '.json')]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.folder).free < 2 * images.nbytes:
                raise OSError(f"less than {2 * images.nbytes / 1e6:,.0f} MB free")
            np.save(tmp[0], images)
            tmp[1].write_text(json.dumps({str(i): msg for i, msg in errors.items()}))
            os.replace(tmp[0], self.path.with_suffix('.npy'))
            os.replace(tmp[1], self.path.with_suffix('.json'))  # last: the entry exists from here
        except OSError as e:
            warnings.warn(f"the decoded images were not kept in {self.folder} ({e}): the next run decodes them again "
                          f"(${CACHE_ENV} names another folder, or 'off')")
            for t in tmp:
                try: t.unlink(missing_ok=True)
                except OSError: pass  # never made: the folder is not there
            return
        self.remove_older()

    def remove_older(self):
        "The folder's other entries at this size: its images as they were. Another run's unfinished write is left alone"
        for old in self.folder.glob(f"*{self.prefix}*"):
            try:
                unfinished = old.name.startswith('.') and time.time() - old.stat().st_mtime < 3600
                if old.stem != self.path.name and not unfinished: old.unlink()
            except OSError: pass  # gone already: another run removed it
