"""Data: CIFAR-10 in fastai's folder layout -> fastai `DataLoaders`, with albumentations on the training split.

Each image is decoded once and kept in memory as uint8 (50,000 x 32 x 32 x 3 is 150 MB): fastai's default
per-item pipeline decodes every file with PIL every epoch and managed ~1,000 img/s on one core here.
"""
import os, stat, warnings
import albumentations as A
import cv2
import numpy as np
import torch
from fastai.vision.all import (CategoryBlock, DataBlock, DataLoaders, GrandparentSplitter, ImageBlock, IntToFloatTensor,
                               Normalize, Path, TensorCategory, TensorImage, TfmdDL, ToTensor, Transform, URLs,
                               default_device, image_extensions, parent_label, untar_data)
from fastcore.script import CliError
from PIL import Image

from .augment import BatchAugment
from .config import AUGMENTS, BS, CIFAR_MEAN, CIFAR_STD, CROP, CUTOUT, DATA_ENV, PAD_TO

__all__ = ['RecipeError', 'find_data', 'scan_split', 'load_images', 'decode', 'ImageCache', 'CachedImage', 'mean_uint8', 'train_augs',
           'AlbumentationsTransform', 'InMemoryDL', 'cifar_dls']


class RecipeError(CliError):
    "Bad input: the message names the path or value. The CLI prints it and exits 1; Python callers get the exception."


def find_data(data=None) -> Path:
    "The data folder: `data`, else $RECIPE_DATA, else fastai's CIFAR-10 download. Checked for train/ and test/."
    if data is None: data = os.environ.get(DATA_ENV) or untar_data(URLs.CIFAR)
    path = Path(data).expanduser()
    if not path.is_dir(): raise RecipeError(f"data folder not found: {path}")
    for split in ('train', 'test'):
        if not (path/split).is_dir(): raise RecipeError(f"data folder {path} has no '{split}/' folder (expected fastai's CIFAR layout: train/<class>/*, test/<class>/*)")
    return path


def scan_split(split_dir: Path, problem) -> list:
    """Image files in <split>/<class>/. Only one level down, as in fastai's CIFAR layout: fastai's `get_image_files`
    follows symlinked folders, so a symlink loop would list every image again at each level."""
    files = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        found = 0
        for f in sorted(class_dir.iterdir()):
            try: st = f.stat()  # follows symlinks: a loop or a dangling link fails here
            except OSError as e: problem(f"{f}: {e.strerror}"); continue
            if stat.S_ISDIR(st.st_mode): problem(f"{f}: a folder inside a class folder (expected {split_dir.name}/<class>/<image>)"); continue
            if f.suffix.lower() in image_extensions: files.append(f); found += 1
        if not found: problem(f"{class_dir}: empty class folder (no PNG or JPEG images)")
    return files


def decode(fn, size=CROP) -> np.ndarray:
    "Decode an image file to a (size, size, 3) uint8 array: any mode is converted to RGB, any size resized."
    try:
        with Image.open(fn) as im:
            im = im.convert('RGB')
            if im.size != (size, size): im = im.resize((size, size), Image.BICUBIC)
            return np.array(im, dtype=np.uint8)
    except Exception as e: raise RecipeError(f"cannot read image {fn}: {e}") from None


class ImageCache:
    "Maps an image path to its decoded array, decoding every file once up front; unknown paths are decoded on call."
    def __init__(self, files, on_error=None):
        arrays, self.files = [], []
        for f in files:
            try: arrays.append(decode(f)); self.files.append(f)
            except RecipeError as e:
                if on_error is None: raise
                on_error(str(e))
        self.index = {f: i for i, f in enumerate(self.files)}
        self.arrays = np.stack(arrays) if arrays else np.zeros((0, CROP, CROP, 3), np.uint8)
    def __call__(self, fn):
        i = self.index.get(fn)
        return decode(fn) if i is None else self.arrays[i]
    # An exported `Learner` keeps only the decoding, not 150 MB of training images
    def __getstate__(self): return {'files': [], 'index': {}, 'arrays': self.arrays[:0]}


def load_images(path: Path, skip_bad=False) -> ImageCache:
    """All images of train/ and test/, decoded and checked: each split has images, every test class is a training
    class. A bad file or folder is an error naming it; with `skip_bad` it is skipped, counted and warned about."""
    skipped = []
    def problem(msg):
        if not skip_bad: raise RecipeError(msg + " (pass --skip-bad to skip bad files)")
        skipped.append(msg)
    cache = ImageCache([f for split in ('train', 'test') for f in scan_split(path/split, problem)], problem)
    if skipped: warnings.warn(f"skipped {len(skipped)} bad {'file or folder' if len(skipped) == 1 else 'files or folders'} in {path}:\n  " + "\n  ".join(skipped[:20]))
    classes = {}
    for split in ('train', 'test'):
        classes[split] = {f.parent.name for f in cache.files if f.parent.parent.name == split}
        if not classes[split]: raise RecipeError(f"no images (PNG or JPEG) in {path/split}")
    unknown = classes['test'] - classes['train']
    if unknown: raise RecipeError(f"test classes not among the training classes in {path/'train'}: {', '.join(sorted(unknown))}")
    return cache


class CachedImage(TensorImage):
    "`ImageBlock(cls=CachedImage)`: an image made from a decoded HWC uint8 array, with no PIL round trip"
    @classmethod
    def create(cls, a: np.ndarray): return torch.from_numpy(a).permute(2, 0, 1).as_subclass(TensorImage)  # (3, H, W) view


def mean_uint8() -> tuple:
    "The dataset mean per channel in 0..255: the cutout fill of both augmentation paths"
    return tuple(round(255*m) for m in CIFAR_MEAN)


def train_augs(seed=None) -> A.Compose:
    "Pad to 40 (reflect) + random crop 32, horizontal flip, one 8x8 cutout filled with the dataset mean."
    mean = mean_uint8()
    return A.Compose([
        A.PadIfNeeded(PAD_TO, PAD_TO, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(CROP, CROP),
        A.HorizontalFlip(p=0.5),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(CUTOUT, CUTOUT),
                        hole_width_range=(CUTOUT, CUTOUT), fill=mean, p=1.0),
    ], seed=seed)


class AlbumentationsTransform(Transform):
    "Runs an albumentations pipeline on uint8 (3, H, W) images of the training split only"
    split_idx, order = 0, 2  # split_idx=0: fastai applies it to the training split only
    def __init__(self, pipeline: A.Compose): self.pipeline, self.worker = pipeline, None

    def encodes(self, img: TensorImage):
        info = torch.utils.data.get_worker_info()
        # albumentations keeps its own RNG: forked workers would all replay the parent's stream
        if info is not None and self.worker != info.id:
            self.pipeline.set_random_seed(info.seed % 2**32); self.worker = info.id
        # plain-tensor views and as_subclass: fastai's TensorBase wrapping costs more per image than the augmentation
        out = self.pipeline(image=img.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())['image']  # the cache's HWC layout, no copy
        return CachedImage.create(out)


class InMemoryDL(TfmdDL):
    """A fastai `TfmdDL` whose batches are sliced from whole-split tensors (uint8 images (N, 3, H, W), int64 labels):
    no per-item work, so the batch transforms (augmentation included) see whole uint8 batches on the device.
    Everything else (the dataset's items, vocab, decoding, `show_batch`, `test_dl`) is fastai's own."""
    def __init__(self, dataset=None, images=None, labels=None, **kwargs):
        self.images, self.labels = images, labels  # before fastai's setup, which draws a batch
        super().__init__(dataset, **kwargs)

    def create_batches(self, samps):
        if self.images is None: yield from super().create_batches(samps); return  # a new dataset (test_dl): per item
        idxs = torch.tensor(list(samps), dtype=torch.long)  # empty when torch's iterator asks again at the end
        for i in range(0, len(idxs) - (self.bs - 1 if self.drop_last else 0), self.bs):
            b = idxs[i:i + self.bs]
            yield TensorImage(self.images[b]), TensorCategory(self.labels[b])

    def new(self, dataset=None, cls=None, **kwargs):
        res = super().new(dataset, cls, **kwargs)
        if dataset is None or dataset is self.dataset: res.images, res.labels = self.images, self.labels
        return res


def split_tensors(dset, cache: ImageCache):
    "One split's images (N, 3, H, W) uint8 and labels from the decode-once cache, in the split's item order"
    idx = [cache.index[f] for f in dset.items]
    images = torch.from_numpy(cache.arrays[idx]).permute(0, 3, 1, 2).contiguous()  # NCHW: uint8 reflect pad is ~2x faster
    labels = torch.tensor([dset.vocab.o2i[parent_label(f)] for f in dset.items], dtype=torch.long)
    return images, labels


def cifar_dls(data=None, bs=BS, seed=None, num_workers=0, device=None, skip_bad=False, augment='albumentations',
              pad=(PAD_TO - CROP) // 2, flip=True, cutout=CUTOUT):
    """fastai `DataLoaders` over train/ (augmented) and test/ (the validation set) of a CIFAR-layout folder.
    `augment='albumentations'`: per item, on the CPU, `train_augs` (pad, flip and cutout as config.py says);
    `augment='batch'`: the whole split as one tensor, `BatchAugment(pad, flip, cutout)` on each batch's device."""
    if not (isinstance(bs, int) and bs > 0): raise RecipeError(f"batch size must be a positive integer, got {bs!r}")
    if augment not in AUGMENTS: raise RecipeError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    path = find_data(data)
    cache = load_images(path, skip_bad)
    files = cache.files
    n_train = sum(f.parent.parent.name == 'train' for f in files)
    if bs > n_train: raise RecipeError(f"batch size {bs} is larger than the {n_train} training images in {path/'train'}")
    dblock = DataBlock(blocks=(ImageBlock(cls=CachedImage), CategoryBlock),
                       get_x=cache, get_y=parent_label,
                       splitter=GrandparentSplitter(train_name='train', valid_name='test'),
                       item_tfms=AlbumentationsTransform(train_augs(seed)),
                       batch_tfms=Normalize.from_stats(CIFAR_MEAN, CIFAR_STD))
    # Items are tensors already (CachedImage, Categorize): the ToTensor every block adds would only cost a
    # type dispatch per item, ~15% of the loader's time on a CPU core
    dblock.item_tfms = [t for t in dblock.item_tfms if not isinstance(t, ToTensor)]
    if augment == 'albumentations':
        return dblock.dataloaders(files, path=path, bs=bs, num_workers=num_workers, device=device)
    dsets = dblock.datasets(files)
    device = device or default_device()  # as fastai's dataloaders() does: Normalize's stats are already there
    after_batch = [BatchAugment(pad, flip, cutout, mean_uint8()), IntToFloatTensor(), Normalize.from_stats(CIFAR_MEAN, CIFAR_STD)]
    dls = [InMemoryDL(ds, *split_tensors(ds, cache), bs=bs, shuffle=train, drop_last=train, after_batch=after_batch,
                      device=device) for ds, train in ((dsets.train, True), (dsets.valid, False))]
    return DataLoaders(*dls, path=path, device=device)
