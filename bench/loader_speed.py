"""How fast the training DataLoader delivers augmented batches, both paths in one run (num_workers=0: the main
process does all of it), and the batched augmentation alone on one core. On a CPU the allocator is set as CPU
training sets it (`keep_freed_memory`): without it each batch's buffers are mmapped and page-faulted afresh, which
halves batch_augment's speed (56k against 103k img/s in one probe here). The augmentation alone is timed `repeats`
times: the host's speed drifts, so all repeats and their median are printed.

    python bench/loader_speed.py --data ../shared/cifar10 [--json FILE]
"""
import json, statistics, time

import torch
from fastcore.script import call_parse

import recipe
from recipe.augment import batch_augment
from recipe.run import keep_freed_memory


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()  # GPU work is asynchronous: time it finished


def loader_speed(dl, batches):
    "Images per second over `batches` batches, after one warm-up batch"
    it = iter(dl); next(it)
    sync(); t, n = time.perf_counter(), 0
    for _ in range(batches): n += len(next(it)[0])
    sync()
    return n / (time.perf_counter() - t)


def augment_speed(images, bs, batches, threads=1):
    "Images per second of `batch_augment` (the seed's ops: pad 4, flip, 8x8 cutout) on `threads` threads"
    old = torch.get_num_threads(); torch.set_num_threads(threads)
    try:
        batch_augment(images[:bs])  # warm-up
        sync(); t = time.perf_counter()
        for i in range(batches):
            j = (i * bs) % (len(images) - bs)
            batch_augment(images[j:j + bs], fill=(125, 123, 114))
        sync()
        return bs * batches / (time.perf_counter() - t)
    finally: torch.set_num_threads(old)


@call_parse
def main(data: str = None,   # data folder; default $RECIPE_DATA
         bs: int = 512,      # batch size
         batches: int = 90,  # batches to time (after one warm-up batch)
         repeats: int = 5,   # timings of the augmentation alone
         json_out: str = None):  # also write the numbers to this JSON file
    "Print images per second of the augmented training DataLoader, per-item (albumentations) and batched"
    res = dict(bs=bs, batches=batches)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type == 'cpu': keep_freed_memory()
    for augment in ('albumentations', 'batch'):
        t = time.perf_counter()
        dls = recipe.image_dls(data, bs=bs, seed=0, augment=augment, device=device)
        decode = time.perf_counter() - t
        res[augment] = loader_speed(dls.train, batches)
        print(f'{augment:>14}: {res[augment]:>9,.0f} img/s  (training DataLoader, num_workers=0, bs {bs}, on {dls.device}; '
              f'{len(dls.train_ds) + len(dls.valid_ds):,} images decoded in {decode:.1f} s)', flush=True)
    res['device'] = str(dls.device)
    images = dls.train.images.to(dls.device)
    res['batch_augment_one_core_repeats'] = [augment_speed(images, bs, batches) for _ in range(repeats)]
    res['batch_augment_one_core'] = statistics.median(res['batch_augment_one_core_repeats'])
    print(f"batch_augment alone, 1 thread, bs {bs}: {res['batch_augment_one_core']:,.0f} img/s (median of "
          f"{', '.join(f'{v:,.0f}' for v in res['batch_augment_one_core_repeats'])})", flush=True)
    if json_out: open(json_out, 'w').write(json.dumps(res, indent=1))
