"""A small copy of a CIFAR-layout folder (the first N images per class of each split), e.g. to carry to a GPU machine.

    python bench/subset.py --data ../shared/cifar10 --out gpu_data --train 500 --test 100   # ~15 MB
"""
import shutil
from pathlib import Path

from fastcore.script import call_parse

import recipe


@call_parse
def main(data: str = None,   # data folder in fastai's CIFAR layout; default $RECIPE_DATA
         out: str = 'gpu_data',  # the folder to create (must not exist)
         train: int = 500,   # training images per class
         test: int = 100):   # test images per class
    "Copy the first images of each class into a new folder in the same layout"
    src, dest = recipe.data.find_data(data), Path(out)
    if dest.exists(): raise recipe.RecipeError(f"{dest} already exists: choose another --out")
    for split, n in (('train', train), ('test', test)):
        for c in sorted(p for p in (src/split).iterdir() if p.is_dir()):
            (dest/split/c.name).mkdir(parents=True)
            for f in sorted(c.iterdir())[:n]: shutil.copy(f, dest/split/c.name/f.name)
    print(f'{dest}: {sum(1 for _ in dest.rglob("*.png"))} images')
