"""Using trained weights: load them without unpickling anything, and predict the classes of image files."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.vision.all import get_image_files
from safetensors.torch import load_file

from .config import CROP
from .data import RecipeError, decode
from .model import make_model

__all__ = ['load', 'image_files', 'tta_logits', 'predict']


def load(path) -> torch.nn.Module:
    """The model saved by a run (a run folder, or its model.safetensors), in eval mode, with `classes`, `size`, `mean`,
    `std`, `tta` and `tta_below` (the test-time augmentation its reported accuracy used).
    Reads safetensors and JSON only: a pickle-based file (.pth, .pkl, learn.export) is refused, never unpickled."""
    path = Path(path)
    if path.is_dir(): path = path/'model.safetensors'
    meta_path = path.with_suffix('.json')
    for p in (path, meta_path):
        if not p.is_file(): raise RecipeError(f"no such file: {p} (expected a run folder or its model.safetensors + model.json)")
    try: state = load_file(str(path))
    except Exception as e:
        raise RecipeError(f"{path} is not a safetensors file ({e}); recipe.load reads only safetensors, "
                          "never pickle-based files, which can run code when loaded") from None
    try:
        meta = json.loads(meta_path.read_text())
        model = make_model(meta.get('arch', 'resnet'), meta['n_out'], meta['width'])
        model.load_state_dict(state)
    except Exception as e: raise RecipeError(f"{path} does not hold this recipe's model as {meta_path} describes it: {e}") from None
    model.classes, model.mean, model.std, model.tta = meta['classes'], meta['mean'], meta['std'], meta.get('tta', 0)
    model.tta_below = meta.get('tta_below')  # runs before it: TTA on every image
    model.size = meta.get('size', CROP)  # runs before --size were all 32x32
    return model.eval()


def image_files(paths) -> list:
    "Image files named directly, or found (recursively) in the folders named"
    if not paths: raise RecipeError("no images given: name image files or folders after the run folder")
    files = []
    for p in map(Path, paths):
        if p.is_dir(): files += sorted(get_image_files(p))
        elif p.is_file(): files.append(p)
        else: raise RecipeError(f"no such file or folder: {p}")
    if not files: raise RecipeError(f"no images found in {', '.join(map(str, paths))}")
    return files


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
def predict(model, files, k=3, bs=256) -> list:
    """For each file: [(class, probability)] * k, most likely first; or, for a file that cannot be read, the reason
    (a str), and the others are still predicted. Any size or mode is converted as the training data was."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
    k = min(k, len(model.classes))
    results = []
    for i in range(0, len(files), bs):
        images, rows = [], []
        for f in files[i:i+bs]:
            try: images.append(torch.from_numpy(decode(f, getattr(model, 'size', CROP))).permute(2, 0, 1)); rows.append(None)
            except RecipeError as e: rows.append(str(e))
        if images:
            x = torch.stack(images).float().div_(255)
            logits = tta_logits(model, (x - mean) / std, getattr(model, 'tta', 0), getattr(model, 'tta_below', None))
            top = logits.softmax(1).topk(k, dim=1)  # (B, k)
            found = iter([[(model.classes[j], float(p)) for p, j in zip(ps, js)] for ps, js in zip(top.values, top.indices)])
            rows = [next(found) if r is None else r for r in rows]
        results += rows
    return results
