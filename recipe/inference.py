"""Using trained weights: load them without unpickling anything, predict the classes of image files, rebuild a fastai
`Learner`, export to ONNX."""
import json, os, warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.basics import CategoryBlock, CrossEntropyLossFlat, DataBlock, FuncSplitter, Learner, Normalize, ToTensor, accuracy, parent_label
import fastai.callback.all  # the Learner of `load_learner` fine-tunes as any fastai Learner: fit_one_cycle, lr_find, progress bars
from fastai.vision.data import ImageBlock
from safetensors.torch import load_file

from .config import CROP
from .data import CachedImage, ImageCache, RecipeError, decode, image_dls, named_by_strings_too
from .folders import folder_images, image_files
from .model import make_model
from .record import MODEL_FORMAT, check_new_file, model_files

__all__ = ['load', 'image_files', 'tta_logits', 'predict', 'TTAModel', 'load_learner', 'Normalized', 'export_onnx']


def load(path) -> torch.nn.Module:
    """The model saved by a run (a run folder, or its model.safetensors), in eval mode, with `classes`, `size`, `mean`,
    `std`, `tta` and `tta_below` (the test-time augmentation its reported accuracy used).
    Reads safetensors and JSON only: a pickle-based file (.pth, .pkl, learn.export) is refused, never unpickled."""
    path, meta_path = model_files(path)
    try: state = load_file(str(path))
    except Exception as e:
        raise RecipeError(f"{path} is not a safetensors file ({e}); recipe.load reads only safetensors, "
                          "never pickle-based files, which can run code when loaded") from None
    try: meta = json.loads(meta_path.read_text())
    except Exception as e: raise RecipeError(f"{meta_path} is not JSON: {e}") from None
    version = meta.get('format', 1) if isinstance(meta, dict) else None
    if version not in range(1, MODEL_FORMAT + 1):
        raise RecipeError(f"{meta_path} has model format {version!r}; this recipe reads formats 1 to {MODEL_FORMAT} "
                          "(a newer recipe wrote it? update recipe)")
    try:
        model = make_model(meta.get('arch', 'resnet'), meta['n_out'], meta['width'],  # what a model.json lacks: the net's own
                           **{k: meta.get(k) for k in ('act', 'widths', 'depth')})
        model.load_state_dict(state)
    except Exception as e: raise RecipeError(f"{path} does not hold this recipe's model as {meta_path} describes it: {e}") from None
    model.classes, model.mean, model.std, model.tta = meta['classes'], meta['mean'], meta['std'], meta.get('tta', 0)
    model.tta_below = meta.get('tta_below')  # runs before it: TTA on every image
    model.size = meta.get('size', CROP)  # runs before --size were all 32x32
    model.meta = meta
    return model.eval()


def tta_logits(model, x, level=0, below=None, plain=None):
    """Logits averaged over test-time augmentations of the (normalized) batch x, as airbench94 does: level 0 none,
    1 the image and its mirror, 2 half that plus a quarter each for both translated by one pixel (reflect) up-left
    and down-right (and mirrored). `plain`: the logits of x itself, if already computed (they are not computed again).
    `below`: only the images whose top class has a probability below it without TTA get the other views; the others
    keep their plain logits (after Hiverge's cifar10-speedrun, which runs TTA on its low-confidence images only)."""
    plain = model(x).float() if plain is None else plain.float()
    if level == 0: return plain
    if below is not None:
        out, unsure = plain.clone(), plain.softmax(1).amax(1) < below
        if unsure.any(): out[unsure] = tta_logits(model, x[unsure], level, plain=plain[unsure])
        return out
    mirror = lambda x, p=None: 0.5 * ((model(x).float() if p is None else p) + model(x.flip(-1)).float())
    if level == 1: return mirror(x, plain)
    H, W = x.shape[-2:]
    padded = F.pad(x, (1,) * 4, mode='reflect')
    return 0.5 * mirror(x, plain) + 0.25 * (mirror(padded[..., :H, :W]) + mirror(padded[..., 2:, 2:]))


@torch.no_grad()
def predict(model, files, k=3, bs=256, device=None) -> list:
    """For each file: [(class, probability)] * k, most likely first; or, for a file that cannot be read, the reason
    (a str), and the others are still predicted. Any size or mode is converted as the training data was.
    `model`: from `load`, or a run folder (loaded here); `files`: a list of files, or one file or folder (its images).
    `device` (default: the model's): where the batches of `bs` images go."""
    if isinstance(model, (str, Path)): model = load(model)
    if isinstance(files, (str, Path)): files = folder_images(Path(files)) if Path(files).is_dir() else [files]
    if device is not None: model = model.to(device)
    device = next(model.parameters()).device
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (model.mean, model.std))
    k = min(k, len(model.classes))
    results = []
    for i in range(0, len(files), bs):
        images, rows = [], []
        for f in files[i:i+bs]:
            if isinstance(f, (str, os.PathLike)) and os.path.isdir(f):  # a row per item of the list: its images would not be the caller's rows
                rows.append(f"{f} is a folder: give predict the folder alone, or recipe.image_files([...]) to list the images "
                            "of folders and files together"); continue
            try: images.append(torch.from_numpy(decode(f, getattr(model, 'size', CROP))).permute(2, 0, 1)); rows.append(None)
            except RecipeError as e: rows.append(str(e))
        if images:
            x = torch.stack(images).to(device).float().div_(255)
            logits = tta_logits(model, (x - mean) / std, getattr(model, 'tta', 0), getattr(model, 'tta_below', None))
            top = logits.softmax(1).cpu().topk(k, dim=1)  # (B, k)
            found = iter([[(model.classes[j], float(p)) for p, j in zip(ps, js)] for ps, js in zip(top.values, top.indices)])
            rows = [next(found) if r is None else r for r in rows]
        results += rows
    return results


class TTAModel(torch.nn.Module):
    """A run's net which, in eval mode, returns `tta_logits` at the run's TTA level: what its reported accuracy and
    `predict` use. In training mode it is the net itself, so a `Learner` fine-tunes it as usual."""
    def __init__(self, net, level=0, below=None): super().__init__(); self.net, self.level, self.below = net, level, below
    def forward(self, x): return self.net(x) if self.training else tta_logits(self.net, x, self.level, self.below)


def load_learner(run, data=None, bs=64, tta=True, device=None) -> Learner:
    """A fastai `Learner` for a run's model, rebuilt from model.safetensors and model.json (no pickle): its
    `predict`, `get_preds`, `dls.test_dl(files, with_labels=True)` (for `ClassificationInterpretation`) decode and
    normalise images as the run did, and with `tta` (the default) apply the run's TTA, so they agree with
    `recipe.predict`. `data`: a folder (in a layout of recipe.folders.LAYOUTS) with the run's classes, to fine-tune on
    (`learn.fit_one_cycle`): augmented as the seed profile does, normalised with the run's statistics. Without `data`
    the loaders hold no images, like those of fastai's `load_learner`."""
    # fastai's image plots for the Learner it gives (`plot_top_losses`, `show_results`): fastai.vision.learner imports
    # most of fastai.vision and torchvision (~3 s), so here and in the run's plots, not at the top
    import fastai.vision.learner
    model = load(run)
    net = TTAModel(model, model.tta if tta else 0, model.tta_below)
    classes, size, stats = model.classes, model.size, (model.mean, model.std)
    if data is not None:
        def same_classes(path, files):  # before decoding, and before a batch size that does not fit is the first complaint
            if (found := {f.parent.name for f in files}) != set(classes):
                raise RecipeError(f"{data} has the classes {', '.join(sorted(found))}; the model {run} knows {', '.join(classes)}: "
                                  "fine-tuning needs the same classes")
        dls = image_dls(data, bs=bs, size=size, stats=stats, device=device, check_files=same_classes)
        if list(dls.vocab) != list(classes):
            raise RecipeError(f"{data} has the classes {', '.join(dls.vocab)}; the model {run} knows {', '.join(classes)}: "
                              "fine-tuning needs the same classes")
    else:
        # one blank image per class (never decoded): fastai sets up its transforms on real items, then they are dropped
        cache, blanks = ImageCache([], size), [Path(c)/'blank' for c in classes]
        cache.index, cache.arrays = {f: 0 for f in blanks}, np.zeros((1, size, size, 3), np.uint8)
        dblock = DataBlock(blocks=(ImageBlock(cls=CachedImage), CategoryBlock(vocab=classes, sort=False)), get_x=cache,
                           get_y=parent_label, splitter=FuncSplitter(lambda f: False), batch_tfms=[Normalize.from_stats(*stats)])
        dblock.item_tfms = [t for t in dblock.item_tfms if not isinstance(t, ToTensor)]
        dls = named_by_strings_too(dblock.dataloaders(blanks, bs=bs, num_workers=0, device=device).new_empty())
    return Learner(dls, net, loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=Path(run), model_dir='.')


class Normalized(torch.nn.Module):
    """A run's model for serving: RGB images in [0, 1] of shape (N, 3, size, size) -> logits, with the normalisation and
    the run's TTA inside. The TTA of low-confidence images only (`tta_below`) is computed for every image and chosen
    per image, with no data-dependent shapes, so that it exports."""
    def __init__(self, model):
        super().__init__()
        self.net, self.level, self.below = model, model.tta, model.tta_below
        self.register_buffer('mean', torch.tensor(model.mean).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(model.std).view(1, 3, 1, 1))
    def forward(self, x):
        x = (x - self.mean) / self.std
        plain = self.net(x)
        if not self.level: return plain
        full = tta_logits(self.net, x, self.level, plain=plain)
        if self.below is None: return full
        unsure = plain.softmax(1).amax(1, keepdim=True) < self.below
        return torch.where(unsure, full, plain)


def export_onnx(run, path, check=None, n=100) -> dict:
    """The run's model as ONNX at `path` (`Normalized`: input 'image', RGB in [0, 1], N x 3 x size x size with a dynamic
    batch size; output 'logits'). `check`: image files or folders: up to `n` of their images are run through
    onnxruntime and torch, and their top-1 must agree. Returns {'images', 'same_top1', 'max_prob_diff'} (empty without
    `check`). Needs onnx, onnxscript and onnxruntime: pip install -e ".[onnx]" """
    try: import onnx, onnxscript, onnxruntime  # noqa: F401  (the dynamo exporter needs the first two)
    except ImportError as e:
        raise RecipeError(f"ONNX export needs the onnx, onnxscript and onnxruntime packages ({e.name} is missing): "
                          'pip install -e ".[onnx]"') from None
    path = check_new_file(path)  # before the work
    model = load(run).float().cpu()
    wrapped, size = Normalized(model).eval(), model.size
    x = torch.rand(2, 3, size, size)
    batch = torch.export.Dim('batch', min=1)
    try:
        program = torch.onnx.export(wrapped, (x,), dynamo=True, input_names=['image'], output_names=['logits'],
                                    dynamic_shapes={'x': {0: batch}}, verbose=False)
        program.save(str(path))
    except Exception as e: raise RecipeError(f"ONNX export of {run} failed: {type(e).__name__}: {e}") from None
    if not check: return {}
    images, unreadable = [], []
    for f in image_files(check)[:n]:  # an image that cannot be read is skipped, as predict skips it: the export is written
        try: images.append(torch.from_numpy(decode(f, size)).permute(2, 0, 1))
        except RecipeError as e: unreadable.append(str(e))
    if unreadable: warnings.warn(f"the check skipped {len(unreadable)} image(s) that cannot be read:\n  " + "\n  ".join(unreadable[:20]))
    if not images: raise RecipeError(f"none of the images to check {path} on can be read: {path} is written, unchecked")
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    same, diff = 0, 0.
    for i in range(0, len(images), 256):
        x = torch.stack(images[i:i + 256]).float().div_(255)
        with torch.no_grad(): expected = wrapped(x).softmax(1)
        got = torch.from_numpy(session.run(['logits'], {'image': x.numpy()})[0]).softmax(1)
        same += int((got.argmax(1) == expected.argmax(1)).sum()); diff = max(diff, float((got - expected).abs().max()))
    return dict(images=len(images), same_top1=same, max_prob_diff=diff)
