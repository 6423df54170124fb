"""Using trained weights: load them without unpickling anything, and predict the classes of image files."""
import json
from pathlib import Path

import torch
from fastai.vision.all import get_image_files
from safetensors.torch import load_file

from .data import RecipeError, decode
from .model import CustomResNet

__all__ = ['load', 'image_files', 'predict']


def load(path) -> CustomResNet:
    """The model saved by a run (a run folder, or its model.safetensors), in eval mode, with `classes`, `mean`, `std`.
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
        model = CustomResNet(meta['n_out'], meta['width'])
        model.load_state_dict(state)
    except Exception as e: raise RecipeError(f"{path} does not hold this recipe's model as {meta_path} describes it: {e}") from None
    model.classes, model.mean, model.std = meta['classes'], meta['mean'], meta['std']
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


@torch.no_grad()
def predict(model, files, k=3, bs=256) -> list:
    "For each file: [(class, probability)] * k, most likely first. Any size or mode is converted as the training data was"
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
    k = min(k, len(model.classes))
    results = []
    for i in range(0, len(files), bs):
        x = torch.stack([torch.from_numpy(decode(f)).permute(2, 0, 1) for f in files[i:i+bs]]).float().div_(255)
        probs = model((x - mean) / std).softmax(1)                 # (B, n_classes)
        top = probs.topk(k, dim=1)
        results += [[(model.classes[j], float(p)) for p, j in zip(ps, js)] for ps, js in zip(top.values, top.indices)]
    return results
