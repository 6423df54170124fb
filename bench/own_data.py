"""An example of one's own data, made from CIFAR-10: a few classes, grayscale, at mixed sizes (24 to 48 pixels), as
one folder of class folders (the layout split at random with --valid-pct). For the README's "Your own data".

    python bench/own_data.py --data ../shared/cifar10 --out own_example
    python -m recipe train --data own_example --width 16 --epochs 8 --seed 0
    python bench/own_data.py --data ../shared/cifar10 --split test --n 100 --out own_more   # other images, to evaluate on
"""
from pathlib import Path

from fastcore.script import call_parse
from PIL import Image

import recipe

SIZES = (24, 28, 40, 48)  # pixels, cycled: every folder holds images of several sizes


@call_parse
def main(data: str = None,      # data folder in fastai's CIFAR layout; default $RECIPE_DATA
         out: str = 'own_example',  # the folder to create (must not exist)
         n: int = 600,          # images per class (the first ones of train/<class>/)
         classes: str = 'airplane,automobile,ship,truck',  # comma-separated CIFAR-10 classes
         split: str = 'train'): # the CIFAR-10 split the images come from: train or test
    "Write grayscale, resized copies of the first `n` images of each class of SPLIT into OUT/<class>/"
    src, dest = recipe.data.find_data(data), Path(out)
    if dest.exists(): raise recipe.RecipeError(f"{dest} already exists: choose another --out")
    for c in classes.split(','):
        (dest/c).mkdir(parents=True)
        for i, f in enumerate(sorted((src/split/c).iterdir())[:n]):
            s = SIZES[i % len(SIZES)]
            Image.open(f).convert('L').resize((s, s), Image.BICUBIC).save(dest/c/f.name)
    print(f'{dest}: {sum(1 for _ in dest.rglob("*.png"))} images')
