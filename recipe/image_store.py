"""Decoded images kept on disk for the next run (issue 23's fixed cost): decoding CIFAR-10's 60,000 PNGs took 15-17 s
on 2 CPU cores and 10-12 s of a 15-25 s run on an H200; reading them back takes about a second.

Where: $RECIPE_CACHE, else $XDG_CACHE_HOME/recipe, else ~/.cache/recipe; `RECIPE_CACHE=off` turns it off. Only sets of
at least STORE_FROM images are kept (fewer decode in about a second anyway), and only when they are decoded into memory.
An entry is one .npz file (the images, and the messages of the files that could not be read), written under a name of
its own and renamed into place whole: a run stopped while writing leaves nothing that is read.
Its name: a digest of the set of files (their folder, their names) and the size, then one of every file's size, mtime
and ctime and of the decoding (DECODE_FORMAT, Pillow's version). A file changed makes a new entry and writing it removes
the set's older one; beyond STORE_KEEP entries the least recently used go.
"""
import hashlib, json, os, re, secrets, shutil, time, warnings
from pathlib import Path

import numpy as np
import PIL

__all__ = ['CACHE_ENV', 'STORE_FROM', 'STORE_KEEP', 'DECODE_FORMAT', 'store_dir', 'ImageStore']

CACHE_ENV = 'RECIPE_CACHE'
STORE_FROM = 4000   # files: below this a folder decodes in about a second, not worth a file on disk
STORE_KEEP = 4      # entries: the least recently used beyond these are removed (CIFAR-10's is 184 MB)
DECODE_FORMAT = 2   # what a file decodes to (recipe/space_app.py, decode): a change to it must change this number
                    # (2: 16-bit grayscale by its range, not clipped to white; float images refused)
LEFT_AFTER = 3600   # seconds: an unfinished write older than this was stopped, its file is removed
ENTRY = re.compile(r'images-[0-9a-f]{24}-[0-9a-f]{24}\.npz')               # an entry's name
TEMP = re.compile(r'\.images-[0-9a-f]{24}-[0-9a-f]{24}\.[0-9]+-[0-9a-f]{8}\.npz')  # a write's, until it is renamed


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
        files = [f if isinstance(f, Path) else Path(f) for f in files]  # not parsed again when they are Paths (~1 s for 60,000)
        where = {d: str(d.resolve()) for d in {f.parent for f in files}}  # the few folders, each resolved once
        root = os.path.commonpath(list(where.values()))
        names = [where[f.parent][len(root):] + '/' + f.name for f in files]  # the same, given relative or not
        self.prefix = f"images-{digest(root, size, names)}-"  # this set of files at this size
        stats = [(st.st_size, st.st_mtime_ns, st.st_ctime_ns) for f in files for st in [os.stat(f)]]
        self.path = folder/f"{self.prefix}{digest(DECODE_FORMAT, PIL.__version__, stats)}.npz"

    @classmethod
    def of(cls, files, size):
        "The store of these files, or None: turned off, too few files to be worth it, or a file that cannot be read"
        folder = store_dir()
        if folder is None or len(files) < STORE_FROM: return None
        try: return cls(files, size, folder)
        except (OSError, ValueError): return None  # gone or unreadable: decoding names it

    def read(self):
        "(images, {index: error message}) of the entry, or None: no entry, or one that does not match"
        try: os.utime(self.path)  # recently used, before a long read: another run's remove_old leaves it
        except OSError: pass  # none, or a store this user may read, not write
        try:
            with np.load(self.path) as entry: images, errors = entry['images'], json.loads(str(entry['errors']))
        except Exception: return None  # none, or not whole (np.load raises OSError, ValueError, zipfile's errors)
        if images.shape != (self.n, self.size, self.size, 3) or images.dtype != np.uint8: return None
        self.remove_old()
        return images, {int(i): msg for i, msg in errors.items()}

    def write(self, images, errors):
        "Keep the entry, or warn and go on (no room, no right to write): the next run decodes again"
        tmp = self.folder/f".{self.path.stem}.{os.getpid()}-{secrets.token_hex(4)}.npz"  # one per writer
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.folder).free < 2 * images.nbytes: raise OSError(f"less than {2 * images.nbytes / 1e6:,.0f} MB free")
            with open(tmp, 'wb') as f: np.savez(f, images=images, errors=np.array(json.dumps({str(i): m for i, m in errors.items()})))
            os.replace(tmp, self.path)
        except OSError as e:
            warnings.warn(f"the decoded images were not kept in {self.folder} ({e}): the next run decodes them again "
                          f"(${CACHE_ENV} names another folder, or 'off')")
            return
        finally:  # stopped (Ctrl-C, SIGTERM) or failed: nothing half-written stays
            try: tmp.unlink(missing_ok=True)
            except OSError: pass  # never made: no folder
        self.remove_old()

    def remove_old(self):
        """This set's older entries, the least recently used beyond STORE_KEEP, and writes stopped long ago (a killed
        run's). Only files named as this store names them: $RECIPE_CACHE may be a folder that holds other things"""
        def mtime(p):
            try: return p.stat().st_mtime
            except OSError: return None  # gone: another run removed it
        ours = [(p, mtime(p)) for p in self.folder.glob('*images-*.npz') if ENTRY.fullmatch(p.name) or TEMP.fullmatch(p.name)]
        entries = sorted(((p, t) for p, t in ours if t is not None and ENTRY.fullmatch(p.name)), key=lambda e: -e[1])
        others = [p for p, _ in entries if not p.name.startswith(self.prefix)]
        mine = [p for p, _ in entries if p.name.startswith(self.prefix)]
        old = ([p for p in mine if p != self.path] + others[STORE_KEEP - 1:] +
               [p for p, t in ours if t is not None and TEMP.fullmatch(p.name) and time.time() - t > LEFT_AFTER])
        for p in old:
            try: p.unlink(missing_ok=True)
            except OSError: pass  # not ours to remove: left as it is
