"""Data: a folder of images (CIFAR-10, or anyone's, in one of the layouts of `LAYOUTS`, recipe/folders.py) -> fastai `DataLoaders`.

Each image is decoded once, resized to `size`, and kept in memory as uint8 (CIFAR-10's 50,000 x 32 x 32 x 3 is
150 MB): fastai's default per-item pipeline decodes every file with PIL every epoch and managed ~1,000 img/s on
one core here. When that cache would exceed the memory budget, images are decoded per item by worker processes.
"""
import json, mmap, os, random, re, signal, warnings
import numpy as np
import torch
from fastai.basics import (CategoryBlock, DataBlock, DataLoaders, FuncSplitter, Normalize, Path, TensorCategory, TensorImage,
                           TfmdDL, ToTensor, Transform, URLs, default_device, parent_label, untar_data)
from fastai.vision.data import ImageBlock

from .augment import BatchAugment, ColorJitter
from .errors import RecipeError
from .folders import data_folder, find_layout, given_data, scan_split
from .image_store import ImageStore
from .settings import check_augment, check_flip, check_jitter, check_size
from .space_app import decode as decode_image
from .config import (BS, CIFAR_CLASSES, CIFAR_MEAN, CIFAR_STD, CROP, CUTOUT, MEMORY_FRACTION, PAD_TO,
                     PEAK_COPIES, SPLIT_SEED, STATS_SAMPLE, VALID_PCT)

__all__ = ['RecipeError', 'find_data', 'load_images', 'decode', 'PARALLEL_FROM', 'decode_all', 'decoded', 'ImageCache',
           'CachedImage', 'mean_uint8', 'scaled', 'train_augs', 'AlbumentationsTransform', 'InMemoryDL', 'image_stats',
           'parse_bytes', 'memory_budget', 'random_split', 'image_dls']


def find_data(data=None) -> Path:
    "The data folder: `data`, else $RECIPE_DATA, else fastai's CIFAR-10 download; checked for one of `LAYOUTS`"
    given = given_data(data)
    return data_folder(given if given is not None else untar_data(URLs.CIFAR), from_env=data is None and given is not None)  # '' is the current folder, as Path('') is


def decode(fn, size=CROP) -> np.ndarray:
    """Decode an image file to a (size, size, 3) uint8 array: any mode (grayscale, RGBA) is converted to RGB, any size
    resized. The demo's own decoding (space_app.decode, which an exported Space runs without recipe), so both agree"""
    try: return decode_image(fn, size)
    except Exception as e:
        empty = os.path.isfile(fn) and os.path.getsize(fn) == 0
        raise RecipeError(f"cannot read image {fn}: " + ('the file is empty (0 bytes)' if empty else str(e))) from None


def decode_or_error(args):
    "decode(fn, size) or, for a file that cannot be read, the error's message (picklable, for a worker process)"
    try: return decode(*args)
    except RecipeError as e: return str(e)


def check_or_error(args):
    "None if the file decodes whole (the per-item path keeps nothing), else the error's message"
    res = decode_or_error(args)
    return res if isinstance(res, str) else None


PARALLEL_FROM = 4000  # files: below this, decoding in one process is about as fast as starting more


def decode_all(files, size=CROP, keep=True) -> list:
    """Each file decoded (an array; `keep=False`: None) or its error message, in order. From PARALLEL_FROM files they
    are shared among forked processes, one per core, each decoding a contiguous slice into one block of shared memory:
    decoding the 60,000 CIFAR-10 PNGs took 15 s on one core here. Processes, not threads: PIL holds the GIL for most of
    the work on a small image (10,000 PNGs: 2.5 s in one thread, 2.6 s in 2 threads, 1.2 s in 2 processes, Xeon with
    AMX). And nothing shared but that memory and a pipe per worker: no queue, no lock, no feeder thread that a worker
    killed (by Ctrl-C, SIGTERM, the kernel) could leave half-written or held. multiprocessing.Pool waited for ever on
    such a lock (issue 22), and so did ProcessPoolExecutor on a result half-sent by a killed worker."""
    fn, procs = decode_or_error if keep else check_or_error, min(os.cpu_count() or 1, len(files) // (PARALLEL_FROM // 2))
    if procs < 2: return [fn((f, size)) for f in files]
    shape = (len(files), size, size, 3)
    shared = mmap.mmap(-1, int(np.prod(shape)) if keep else 1)  # anonymous and shared: the workers write, this process reads
    images = np.frombuffer(shared, np.uint8, count=int(np.prod(shape))).reshape(shape) if keep else None
    bounds, workers, errors = np.linspace(0, len(files), procs + 1).astype(int), [], {}
    try:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0: decode_slice(fn, files, size, images, lo, hi, r, w)  # never returns
            os.close(w); workers.append([pid, r])
        for worker in workers:
            pid, r = worker
            with os.fdopen(r) as f: report = f.read()  # the worker's errors, sent as it ends
            worker[1] = None
            status = os.waitpid(pid, 0)[1]; worker[0] = None
            if status or not report: raise RecipeError(f"a process decoding the images of {files[0].parent.parent} died "
                                                       "(out of memory?): try --max-memory with less, or decode fewer or smaller images")
            errors.update({int(i): msg for i, msg in json.loads(report).items()})
    finally:  # stopped (Ctrl-C, SIGTERM, an error): the workers end now, and are reaped
        for pid, r in workers:
            if r is not None:
                try: os.close(r)
                except OSError: pass  # closed as its read was interrupted
            if pid is not None:
                try: os.kill(pid, signal.SIGKILL)
                except ProcessLookupError: pass
                os.waitpid(pid, 0)
    return [errors.get(i, images[i] if keep else None) for i in range(len(files))]


def decode_slice(fn, files, size, images, lo, hi, r, w):
    "In a forked worker: decode files[lo:hi] into `images`, send the errors ({index: message}) down `w`, and exit"
    code = 1
    try:
        os.close(r)
        worker_signals()
        errors = {}
        for i in range(lo, hi):
            res = fn((files[i], size))
            if isinstance(res, str): errors[i] = res
            elif images is not None: images[i] = res
        with os.fdopen(w, 'w') as f: json.dump(errors, f)
        code = 0
    finally: os._exit(code)  # not the parent's exit handlers: this process only decodes


def worker_signals():
    """A decoding process leaves stopping to the run: it ignores Ctrl-C (the terminal sends it to every process of the
    command) and does not run the handlers it inherited (the command line's SIGTERM -> KeyboardInterrupt): a SIGTERM
    ends it at once, whatever it holds"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def put(images, results: dict) -> dict:
    "Each decoded array of `results` ({index: array or error message}) into `images`; the error messages, by index"
    for i, r in results.items():
        if not isinstance(r, str): images[i] = r
    return {i: r for i, r in results.items() if isinstance(r, str)}


def decoded(files, size=CROP) -> tuple:
    """(images: (N, size, size, 3) uint8, {index: error message} of the files that cannot be read) of `files`: read
    back from an earlier run's entry in the image store (recipe/image_store.py), else decoded and kept there. The files
    that could not be read are tried again: the error may have been the machine's (too many open files), not the file's"""
    store = ImageStore.of(files, size)
    kept = store.read() if store is not None else None
    if kept is None:
        images = np.zeros((len(files), size, size, 3), np.uint8)
        errors = put(images, dict(enumerate(decode_all(files, size))))
    else:
        images, errors = kept
        if not errors: return kept
        still = put(images, dict(zip(errors, decode_all([files[i] for i in errors], size))))
        if len(still) == len(errors): return images, still  # this run's messages; the entry stays as it is
        errors = still
    if store is not None: store.write(images, errors)
    return images, errors


class ImageCache:
    """Maps an image path to its decoded (size, size, 3) array. `cache=True`: every file is decoded once up front
    (or read back from the disk, `decoded`); `cache=False` (the per-item path): every file is decoded once up front to
    check it, whole (a truncated file is found before training, not in the middle of an epoch), then decoded again on
    every call. A file that cannot be read is an error, or with `on_error` reported to it and left out."""
    def __init__(self, files, size=CROP, on_error=None, cache=True):
        self.size, self.cached = size, cache
        if cache: images, errors = decoded(files, size)
        else: images, errors = None, {i: r for i, r in enumerate(decode_all(files, size, keep=False)) if r is not None}
        for i in sorted(errors):
            if on_error is None: raise RecipeError(errors[i])
            on_error(errors[i])
        good = [i for i in range(len(files)) if i not in errors]
        self.files = [files[i] for i in good]
        self.index = {f: i for i, f in enumerate(self.files)} if cache else {}
        self.arrays = (images[good] if errors else images) if cache else np.zeros((0, size, size, 3), np.uint8)
    def __call__(self, fn):
        i = self.index.get(fn)
        return decode(fn, self.size) if i is None else self.arrays[i]
    # An exported `Learner` keeps only the decoding, not 150 MB of training images
    def __getstate__(self): return {'files': [], 'index': {}, 'arrays': self.arrays[:0], 'size': self.size, 'cached': False}


def parse_bytes(v) -> int:
    "A memory size: a number of bytes, or with a unit: '2GB', '512MB', '1.5GiB'"
    m = re.fullmatch(r'([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?', str(v).strip().lower())
    units = {None: 1, 'k': 1e3, 'm': 1e6, 'g': 1e9, 't': 1e12, 'ki': 2**10, 'mi': 2**20, 'gi': 2**30, 'ti': 2**40}
    if not m or float(m[1]) <= 0: raise RecipeError(f"max_memory must be a positive size such as 2GB or 512MB, got {v!r}")
    return int(float(m[1]) * units[m[2]])


def memory_budget(max_memory=None) -> int:
    """Bytes the decoded images may take in this process: `max_memory`, else MEMORY_FRACTION of the memory available
    now, shared among the processes of a distributed run on this machine (each decodes its own copy)"""
    if max_memory is not None: return parse_bytes(max_memory)
    try: avail = next(int(l.split()[1]) * 1024 for l in open('/proc/meminfo') if l.startswith('MemAvailable:'))
    except (OSError, StopIteration): avail = 8 * 2**30  # not Linux: assume 8 GiB
    return int(MEMORY_FRACTION * avail / int(os.environ.get('LOCAL_WORLD_SIZE', 1)))


def load_images(path: Path, skip_bad=False, size=CROP, max_memory=None, check_files=None) -> ImageCache:
    """All images of the layout's folders, checked: each split has images, every test class is a training class,
    at least 2 classes. Decoded once into memory when they fit `memory_budget`, else (with a warning) per item.
    A bad file or folder is an error naming it; with `skip_bad` it is skipped, counted and warned about.
    `check_files(path, files)`: called with the files found, before any is decoded (a resume's check of its images)."""
    skipped = []
    def problem(msg):
        if not skip_bad: raise RecipeError(msg + " (pass --skip-bad to skip bad files)")
        skipped.append(msg)
    train, test = find_layout(path)
    files = [f for split in ((train, test) if train else ('.',)) for f in scan_split(path/split, problem)]
    if check_files: check_files(path, files)
    need, budget = PEAK_COPIES * len(files) * size * size * 3, memory_budget(max_memory)
    if need > budget:
        warnings.warn(f"the {len(files):,} images at {size}x{size} would take {need/1e6:,.1f} MB in memory while loading "
                      f"({PEAK_COPIES} copies at the peak), more than the budget of {budget/1e6:,.1f} MB (--max-memory): "
                      "decoding them per item with worker processes instead (slower)")
    cache = ImageCache(files, size, problem, cache=need <= budget)
    cache.layout = train, test
    if skipped: warnings.warn(f"skipped {len(skipped)} bad {'file or folder' if len(skipped) == 1 else 'files or folders'} in {path}:\n  " + "\n  ".join(skipped[:20]))
    if train:
        for split in (train, test):
            if not any(f.parent.parent.name == split for f in cache.files): raise RecipeError(f"no images in {path/split}")
        classes = {split: {f.parent.name for f in cache.files if f.parent.parent.name == split} for split in (train, test)}
        unknown = classes[test] - classes[train]
        if unknown: raise RecipeError(f"test classes not among the training classes in {path/train}: {', '.join(sorted(unknown))}")
    n_classes = len({f.parent.name for f in cache.files})
    if n_classes < 2: raise RecipeError(f"{path} has images of {n_classes} class: at least 2 class folders are needed")
    return cache


def random_split(files, valid_pct=VALID_PCT, seed=None) -> set:
    """The files held out for validation: `valid_pct` of each class's, at least 1 and never all (stratified: every
    class with 2 images or more is in both splits), drawn with `seed` (default SPLIT_SEED): the same every time"""
    rng, by_class, valid = random.Random(SPLIT_SEED if seed is None else seed), {}, set()
    for f in sorted(files): by_class.setdefault(f.parent.name, []).append(f)
    for c, fs in sorted(by_class.items()):
        valid |= set(rng.sample(fs, min(len(fs) - 1, max(1, round(valid_pct * len(fs))))))
    return valid


def image_stats(cache: ImageCache, files, classes) -> tuple:
    """Per-channel mean and std in [0, 1]: CIFAR-10's published ones for its 10 classes at 32x32 (so CIFAR results
    are as before), else computed from the training images (up to STATS_SAMPLE of them, drawn at random)"""
    if sorted(classes) == sorted(CIFAR_CLASSES) and cache.size == CROP: return CIFAR_MEAN, CIFAR_STD
    files = sorted(files)
    if len(files) > STATS_SAMPLE: files = random.Random(SPLIT_SEED).sample(files, STATS_SAMPLE)
    total, total_sq, n = np.zeros(3), np.zeros(3), 0
    for i in range(0, len(files), 1000):
        x = np.stack([cache(f) for f in files[i:i + 1000]]).reshape(-1, 3).astype(np.float64) / 255
        total += x.sum(0); total_sq += (x * x).sum(0); n += len(x)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-12))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


class CachedImage(TensorImage):
    "`ImageBlock(cls=CachedImage)`: an image made from a decoded HWC uint8 array, with no PIL round trip"
    @classmethod
    def create(cls, a: np.ndarray): return torch.from_numpy(a).permute(2, 0, 1).as_subclass(TensorImage)  # (3, H, W) view


def mean_uint8(mean=CIFAR_MEAN) -> tuple:
    "A per-channel mean in 0..255: the cutout fill of both augmentation paths"
    return tuple(round(255*m) for m in mean)


def scaled(pixels, size) -> int:
    "Pixels given for 32x32 images (padding, cutout) in proportion at `size`: 4 and 8 are to 32 as 6 and 12 are to 48"
    return round(pixels * size / CROP)


def train_augs(seed=None, size=CROP, pad=(PAD_TO - CROP) // 2, cutout=CUTOUT, mean=CIFAR_MEAN):
    """An albumentations pipeline: pad by `pad` (reflect) + random crop back to `size`, horizontal flip, one `cutout` x
    `cutout` hole filled with the dataset mean. The seed's at 32: pad to 40, crop 32, one 8x8 cutout."""
    import albumentations as A, cv2  # here: ~1 s to import, that the batch-augmented profiles and `predict` need not pay
    holes = [A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cutout, cutout), hole_width_range=(cutout, cutout),
                             fill=mean_uint8(mean), p=1.0)] if cutout else []
    return A.Compose([
        A.PadIfNeeded(size + 2 * pad, size + 2 * pad, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
        *holes,
    ], seed=seed)


class AlbumentationsTransform(Transform):
    "Runs an albumentations pipeline (`train_augs`) on uint8 (3, H, W) images of the training split only"
    split_idx, order = 0, 2  # split_idx=0: fastai applies it to the training split only
    def __init__(self, pipeline): self.pipeline, self.worker = pipeline, None

    def encodes(self, img: TensorImage):
        info = torch.utils.data.get_worker_info()
        # albumentations keeps its own RNG: forked workers would all replay the parent's stream
        if info is not None and self.worker != info.id:
            self.pipeline.set_random_seed(info.seed % 2**32); self.worker = info.id
        # plain-tensor views and as_subclass: fastai's TensorBase wrapping costs more per image than the augmentation
        out = self.pipeline(image=img.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())['image']  # the cache's HWC layout, no copy
        return CachedImage.create(out)


class InMemoryDL(TfmdDL):
    """A fastai `TfmdDL` whose batches are sliced from whole-split tensors (uint8 images (N, 3, H, W), int64 labels)
    in the main process (no worker processes: they would only slice tensors that are already in memory), so the batch
    transforms (augmentation included) see whole uint8 batches on the device. On a GPU the whole split lives there
    (CIFAR-10 is 150 MB), as airbench keeps it: no copy per batch. `alternate_flip`: each image gets a fixed random
    flip, and every image is mirrored when `flip_parity` (set per epoch by `AlternatingFlip`) is 1.
    Everything else (the dataset's items, vocab, decoding, `show_batch`, `test_dl`) is fastai's own."""
    def __init__(self, dataset=None, images=None, labels=None, alternate_flip=False, **kwargs):
        device = kwargs.get('device')
        if images is not None and device is not None and torch.device(device).type == 'cuda':
            images, labels = images.to(device), labels.to(device)
        self.images, self.labels = images, labels  # before fastai's setup, which draws a batch
        self.flip_base = torch.rand(len(images)) < 0.5 if alternate_flip and images is not None else None
        if self.flip_base is not None: self.flip_base = self.flip_base.to(images.device)
        self.flip_parity = 0
        self.keep, self.batch_idxs = None, None  # `keep`: the images this epoch trains on (PruneEasy), None: all
        super().__init__(dataset, num_workers=0, **{k: v for k, v in kwargs.items() if k != 'num_workers'})

    def train_on(self, keep=None):
        "Train on the images `keep` (their indices) from the next epoch on, in the loader's shuffled order; None: all"
        self.keep, self.n = keep, len(self.images if keep is None else keep)

    def get_idxs(self):
        idxs = super().get_idxs()
        return idxs if self.keep is None else self.keep[torch.as_tensor(idxs, dtype=torch.long)].tolist()

    def create_batches(self, samps):
        if self.images is None: yield from super().create_batches(samps); return  # a new dataset (test_dl): per item
        idxs = torch.tensor(list(samps), dtype=torch.long).to(self.images.device)  # empty when torch's iterator asks again at the end
        for i in range(0, len(idxs) - (self.bs - 1 if self.drop_last else 0), self.bs):
            b = self.batch_idxs = idxs[i:i + self.bs]  # read by PruneEasy while the batch trains (no prefetching here)
            x = self.images[b]
            if self.flip_base is not None:
                flip = self.flip_base[b] ^ bool(self.flip_parity)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            yield TensorImage(x), TensorCategory(self.labels[b])

    def new(self, dataset=None, cls=None, **kwargs):
        res = super().new(dataset, cls, **kwargs)
        if dataset is None or dataset is self.dataset:
            res.images, res.labels, res.flip_base, res.flip_parity = self.images, self.labels, self.flip_base, self.flip_parity
            res.keep, res.batch_idxs = None, None
            if self.images is not None: res.n = len(self.images)  # all of them, whatever this one trains on
        return res


def split_tensors(dset, cache: ImageCache):
    "One split's images (N, 3, H, W) uint8 and labels from the decode-once cache, in the split's item order"
    items, o2i = dset.items, dset.vocab.o2i  # each a fastai attribute lookup: once, not once an image (~5 s for CIFAR-10)
    idx = [cache.index[f] for f in items]
    images = torch.from_numpy(cache.arrays[idx]).permute(0, 3, 1, 2).contiguous()  # NCHW: uint8 reflect pad is ~2x faster
    labels = torch.tensor([o2i[f.parent.name] for f in items], dtype=torch.long)  # parent_label, without a new Path each
    return images, labels


def image_dls(data=None, bs=BS, seed=None, num_workers=0, device=None, skip_bad=False, augment='albumentations',
              pad=(PAD_TO - CROP) // 2, flip=True, cutout=CUTOUT, size=CROP, valid_pct=None, max_memory=None, stats=None,
              valid_files=None, jitter=None, check_files=None):
    """fastai `DataLoaders` over a folder in one of `LAYOUTS`: the training images (augmented) and the test images
    (the validation set), resized to `size`; `pad` and `cutout` are pixels at 32x32, scaled in proportion.
    The test batches are twice as large as the training batches (no gradients are kept for them).
    `augment='albumentations'`: per item, on the CPU, `train_augs`; `augment='batch'`: `BatchAugment` on each
    batch's device, over the split held in memory as one tensor. `valid_pct` (default VALID_PCT): for a folder of
    class folders only. The loaders also carry `size`, `stats` (the normalization's mean and std) and, for a random
    split, `valid_files` and `valid_pct`. `stats`: the normalization's (mean, std), default `image_stats`'s.
    `valid_files`: for a folder of class folders, the held-out files (relative paths, as a run's split.json has them)
    instead of a new random split: a resumed run keeps its own. `jitter`: (brightness, contrast) of `ColorJitter` on
    the normalized training batches (augment='batch' only), or None. `check_files`: `load_images`'s."""
    if not (isinstance(bs, int) and bs > 0): raise RecipeError(f"batch size must be a positive integer, got {bs!r}")
    check_augment(augment); check_flip(flip, augment); check_jitter(jitter, augment); check_size(size)
    if valid_pct is not None and not (isinstance(valid_pct, (int, float)) and 0 < valid_pct < 1):
        raise RecipeError(f"valid_pct must be between 0 and 1, got {valid_pct!r}")
    path = find_data(data)
    device = torch.device(device) if device is not None else default_device()  # as fastai's dataloaders() does
    cache = load_images(path, skip_bad, size, max_memory, check_files)
    files, (train, test) = cache.files, cache.layout
    if flip == 'alternate' and not cache.cached:
        warnings.warn("the alternating flip needs the images in memory: each image is flipped at random instead"); flip = True
    if train and valid_pct is not None: warnings.warn(f"valid_pct {valid_pct} is ignored: {path} has its test images in {test}/")
    if not train: valid_pct = VALID_PCT if valid_pct is None else valid_pct
    if train: valid = {f for f in files if f.parent.parent.name == test}
    elif valid_files is not None:
        valid = {path/f for f in valid_files}
        if not valid <= set(files): raise RecipeError(f"the saved split names files that are not in {path}: {', '.join(sorted(map(str, valid - set(files))))[:300]}")
    else: valid = random_split(files, valid_pct)
    if not valid: raise RecipeError(f"no image of {path} can be held out for testing: every class has a single image, and a "
                                    "class is split only from 2 images; add images, or put test images in test/ beside train/")
    n_train = len(files) - len(valid)
    if bs > n_train: raise RecipeError(f"batch size {bs} is larger than the {n_train} training images in {path/(train or '')}: "
                                       "choose a smaller one (--bs; bs= from Python): the fast profiles' own batches are for thousands of images")
    train_files = [f for f in files if f not in valid]
    stats = stats or image_stats(cache, train_files, {f.parent.name for f in files})
    pad, cutout = scaled(pad, size), scaled(cutout, size)
    vocab = sorted({f.parent.name for f in train_files})  # Categorize's own, without a pass over the items
    dblock = DataBlock(blocks=(ImageBlock(cls=CachedImage), CategoryBlock(vocab=vocab)),
                       get_x=cache, get_y=parent_label,
                       splitter=FuncSplitter(valid.__contains__),  # `valid` known: no Path parsed again per image (GrandparentSplitter's)
                       item_tfms=AlbumentationsTransform(train_augs(seed, size, pad, cutout, stats[0])) if augment == 'albumentations' else None,
                       batch_tfms=([BatchAugment(pad, flip is True, cutout, mean_uint8(stats[0]))] if augment == 'batch' else []) +
                                  [Normalize.from_stats(*stats)] + ([ColorJitter(*jitter)] if jitter else []))
    # Items are tensors already (CachedImage, Categorize): the ToTensor every block adds would only cost a
    # type dispatch per item, ~15% of the loader's time on a CPU core
    dblock.item_tfms = [t for t in dblock.item_tfms if not isinstance(t, ToTensor)]
    if augment == 'albumentations' or not cache.cached:  # per item (decoded by worker processes when not cached)
        if not cache.cached: num_workers = num_workers or min(4, os.cpu_count() or 1)
        dls = dblock.dataloaders(files, path=path, bs=bs, val_bs=2 * bs, num_workers=num_workers, device=device)
    else:
        dsets = dblock.datasets(files)
        dls = DataLoaders(*[InMemoryDL(ds, *split_tensors(ds, cache), bs=bs if is_train else 2 * bs, shuffle=is_train, drop_last=is_train,
                                       alternate_flip=is_train and flip == 'alternate',
                                       after_batch=dblock.batch_tfms, device=device)  # IntToFloatTensor, BatchAugment, Normalize[, ColorJitter]
                            for ds, is_train in ((dsets.train, True), (dsets.valid, False))], path=path, device=device)
    dls.size, dls.stats, dls.valid_files, dls.valid_pct = size, stats, None if train else sorted(valid), None if train else valid_pct
    return named_by_strings_too(dls)


def named_by_strings_too(dls):
    """`learn.predict('image.png')` and `dls.test_dl` of strings, as the README and the card write them: fastai takes the
    first item's type (a Path) as the only input of the getters (`TfmdLists.infer_idx`), which read strings as well
    (a getter of our own that says so would cost a type dispatch per item)"""
    for ds in (dls.train_ds, dls.valid_ds):
        for tl in ds.tls:
            if getattr(tl, 'types', None): tl.types[0] = (Path, str)
    return dls

