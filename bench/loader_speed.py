"""How fast the training DataLoader delivers augmented batches (num_workers=0: the main process does all of it).

    python bench/loader_speed.py --data ../shared/cifar10
"""
import time

from fastcore.script import call_parse

import recipe


@call_parse
def main(data: str = None,   # data folder; default $RECIPE_DATA
         bs: int = 512,      # batch size
         batches: int = 60,  # batches to time (after one warm-up batch)
         num_workers: int = 0):  # DataLoader worker processes
    "Print images per second of the augmented training DataLoader"
    t = time.perf_counter()
    dls = recipe.cifar_dls(data, bs=bs, seed=0, num_workers=num_workers)
    print(f'decoded {len(dls.train_ds) + len(dls.valid_ds):,} images in {time.perf_counter() - t:.1f} s')
    it = iter(dls.train); next(it)
    t, n = time.perf_counter(), 0
    for _ in range(batches): n += len(next(it)[0])
    dt = time.perf_counter() - t
    print(f'training DataLoader, num_workers={num_workers}, bs {bs}: {n/dt:,.0f} img/s ({n:,} images in {dt:.1f} s)')
