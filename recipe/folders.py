"""Where the images are: the layouts a data folder may have (`LAYOUTS`), its image files, and the images named to
`recipe predict`, found with the standard library only, so that `recipe train --data WRONG` or `recipe predict RUN
MISSING.png` fails before torch and fastai load (~7 s here, 15 s on a slow machine), as a bad option does."""
import mimetypes, os, shlex, stat
from pathlib import Path

from .config import DATA_ENV
from .errors import RecipeError

__all__ = ['LAYOUTS', 'IMAGE_EXTENSIONS', 'given_data', 'data_folder', 'find_layout', 'hidden', 'scan_split', 'labelled_root', 'image_files', 'folder_images']


LAYOUTS = {  # where the training and the test (validation) images are, in the order they are looked for
    "train/ + test/ (fastai's CIFAR layout)": ('train', 'test'),
    'train/ + valid/ (ImageNet-style)': ('train', 'valid'),
    'train/ + val/ (ImageNet-style)': ('train', 'val'),
    'one folder per class, split at random (--valid-pct)': (None, None),
}
if not mimetypes.inited: mimetypes.init()  # the system's types too (.webp, .jfif, ...), as fastai reads them first
IMAGE_EXTENSIONS = {ext for ext, kind in mimetypes.types_map.items() if kind.startswith('image/')}  # fastai's set, in any import order


def given_data(data=None):
    "The data folder the user named: `data`, else $RECIPE_DATA; None for neither (then CIFAR-10's download, recipe/data.py)"
    return data if data is not None else os.environ.get(DATA_ENV) or None


def data_folder(data, from_env=False) -> Path:
    "`data` as a folder, checked: it exists and has one of `LAYOUTS`. `from_env`: it came from $RECIPE_DATA (the errors say so)"
    path = Path(data).expanduser()
    named = f" (named by ${DATA_ENV})" if from_env else ''
    if path.is_file(): raise RecipeError(f"the data folder {path}{named} is a file, not a folder")
    if not path.is_dir(): raise RecipeError(f"data folder not found: {path}{named}")
    find_layout(path)
    return path


def find_layout(path: Path, need_train=True) -> tuple:
    """The (training, test) folder names of the first of `LAYOUTS` that `path` has; (None, None): class folders to split.
    A subfolder that cannot be read is no class folder here (`scan_split` names it); `path` itself: an error naming it"""
    try:
        if (found := split_layout(path, need_train)): return found
        entries = sorted(d for d in path.iterdir() if not hidden(d))
    except OSError as e: raise RecipeError(f"cannot read data folder {e.filename or path}: {e.strerror}") from None
    train = (path/'train').is_dir()  # never a class: a flat train/ beside a flat test/ (Kaggle's) is no pair of classes
    if not train and any(readable(holds_images, d) for d in entries): return None, None  # class folders
    inside = [d for d in entries if readable(split_layout, d)]
    unlabelled = [t for _, t in LAYOUTS.values() if t and (path/t).is_dir() and not readable(has_class_folders, path/t)]
    why = ''
    if readable(holds_images, path/'train'):  # a class named train, or images whose labels are in a file
        why = (" (train/ holds images itself: if train is one of your classes, rename its folder; if the images' labels are in a "
               "file, put each image in a folder named after its class)")
    elif train and not any((path/t).is_dir() for _, t in LAYOUTS.values() if t): why = " (it has train/ but no test/, valid/ or val/)"
    elif train:
        bare = ([] if readable(has_class_folders, path/'train') else ['train']) + unlabelled
        lead = 'its ' if bare[0] == 'train' else 'it has train/, but '
        why = f" ({lead}{' and '.join(t + '/' for t in bare)} {'holds' if len(bare) == 1 else 'hold'} no class folders)"
    raise RecipeError(f"data folder {path} has none of the layouts looked for: {'; '.join(LAYOUTS)}{why}"
                      + (f" (inside it, {' and '.join(map(str, inside[:3]))} {'has' if len(inside) == 1 else 'have'} one: did you mean "
                         f"--data {shlex.quote(str(inside[0]))}?)" if inside else ""))


def split_layout(folder: Path, need_train=True):
    """The (training, test) folder names of the first of `LAYOUTS` with both that `folder` has, each holding class
    folders (a Kaggle-style test/ of unlabelled images is passed over for valid/), else None. `need_train` False: the
    test folder's class folders are enough (`recipe evaluate` scores a test split whatever train/ holds now)"""
    return next(((train, test) for train, test in LAYOUTS.values() if train and (folder/train).is_dir()
                 and (has_class_folders(folder/train) or not need_train) and has_class_folders(folder/test)), None)


def has_class_folders(folder: Path) -> bool:
    """`folder` holds a subfolder (a class) or a link that leads nowhere (`scan_split` names it). By the directory's own
    entry types, so a flat folder of many images costs no stat per file"""
    if not folder.is_dir(): return False
    with os.scandir(folder) as entries:
        return any((e.is_dir() or e.is_symlink() and lost_folder(Path(e.path))) and not hidden(Path(e.name)) for e in entries)


def lost_folder(p: Path) -> bool:
    "A link to nowhere not named as a file (LICENSE.txt, a.png): a class folder lost. Class names may hold dots (001.Albatross)"
    return p.is_symlink() and not p.exists() and mimetypes.guess_type(p.name)[0] is None


def holds_images(folder: Path) -> bool: return folder.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir())


def readable(f, folder: Path):
    "f(folder), or None where the folder cannot be read (Path.is_dir and iterdir raise PermissionError on one we may not enter)"
    try: return f(folder)
    except OSError: return None


def hidden(p: Path) -> bool:
    "A file or folder no one means as data: .ipynb_checkpoints, .DS_Store, macOS's ._* copies, __MACOSX, __pycache__"
    return p.name.startswith('.') or p.name in ('__MACOSX', '__pycache__')


def scan_split(split_dir: Path, problem) -> list:
    """Image files in <split>/<class>/. Only one level down, as in fastai's CIFAR layout: fastai's `get_image_files`
    follows symlinked folders, so a symlink loop would list every image again at each level."""
    files = []
    for class_dir in sorted(p for p in split_dir.iterdir() if (p.is_dir() or lost_folder(p)) and not hidden(p)):
        if lost_folder(class_dir): problem(f"{class_dir}: a link to {os.readlink(class_dir)}, which does not exist"); continue
        found = 0
        try: names = sorted(f for f in class_dir.iterdir() if not hidden(f))
        except OSError as e: problem(f"{class_dir}: {e.strerror}"); continue
        for f in names:
            try: st = f.stat()  # follows symlinks: a loop or a dangling link fails here
            except OSError as e: problem(f"{f}: {e.strerror}"); continue
            if stat.S_ISDIR(st.st_mode): problem(f"{f}: a folder inside a class folder (expected {split_dir.name}/<class>/<image>)"); continue
            if f.suffix.lower() in IMAGE_EXTENSIONS: files.append(f); found += 1
        if not found: problem(f"{class_dir}: empty class folder (no file with an image extension)")
    return files


def labelled_root(folder: Path) -> Path:
    "Where a labelled folder's class folders are (`recipe evaluate RUN FOLDER`): its test split, or itself (class folders only)"
    if not folder.is_dir(): raise RecipeError(f"no such folder: {folder}")
    try: train, test = find_layout(folder, need_train=False)
    except RecipeError: raise RecipeError(f"{folder} holds no class folders of images (expected {folder}/<class>/<image>, "
                                          "or train/ and test/ with class folders)") from None
    return folder/test if train else folder


def image_files(paths) -> list:
    """Image files named directly, or found (recursively, hidden folders and files left out) in the folders named.
    Symlinked folders are followed once each: a symlink loop does not list the same images again at every level."""
    if not paths: raise RecipeError("no images given: name image files or folders after the run folder")
    files = []
    for p in map(Path, paths):
        if p.is_dir(): files += folder_images(p)
        elif p.is_file(): files.append(p)
        else: raise RecipeError(f"no such file or folder: {p}")
    if not files: raise RecipeError(f"no images found in {', '.join(map(str, paths))}")
    return files


def folder_images(root: Path) -> list:
    "The image files under `root`, in sorted order, hidden folders and files left out; a folder reached twice (a symlink loop) listed once"
    seen, files = set(), []
    for d, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen: dirs[:] = []; continue
        seen.add(real)
        dirs[:] = sorted(n for n in dirs if not hidden(Path(n)))
        files += [Path(d)/n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not hidden(Path(n))]
    return files
