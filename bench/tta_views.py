"""Test accuracy of finished runs under other test-time augmentations, from their saved weights (no training): the
plain view, the run's own TTA (level 2: the image and its mirror, half the weight; the mirrored 1-pixel translates
up-left and down-right, a quarter each), and more translates (the 4 diagonal ones; the 4 diagonal and 4 axis ones).
Also TTA for the least confident images only (`tta_below`: the images under a top probability). Prints one table.

    python bench/tta_views.py --runs "runs/A runs/B" --data ../shared/cifar10 [--below "0.7 0.8"]
"""
import torch
import torch.nn.functional as F
from fastcore.script import call_parse

import recipe
from recipe.data import decode, find_data
from recipe.folders import folder_images

SHIFTS = {'diagonal 2': [(-1, -1), (1, 1)], 'diagonal 4': [(-1, -1), (1, 1), (-1, 1), (1, -1)],
          'all 8': [(-1, -1), (1, 1), (-1, 1), (1, -1), (-1, 0), (1, 0), (0, -1), (0, 1)]}


def shifted(x, dy, dx):
    "x moved by (dy, dx) pixels, the edge reflected (as tta_logits does at level 2)"
    H, W = x.shape[-2:]
    return F.pad(x, (1,) * 4, mode='reflect')[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]


@torch.no_grad()
def view_logits(model, x, bs=1000):
    "logits of every view any TTA here uses: {(dy, dx, mirrored): (N, classes)}"
    views = {}
    for dy, dx in [(0, 0)] + SHIFTS['all 8']:
        for m in (False, True):
            outs = []
            for b in x.split(bs):
                v = shifted(b, dy, dx) if (dy, dx) != (0, 0) else b
                with torch.autocast('cpu', dtype=torch.bfloat16): outs.append(model((v.flip(-1) if m else v).contiguous(memory_format=torch.channels_last)).float())
            views[(dy, dx, m)] = torch.cat(outs)
    return views


def tta(views, shifts):
    "half the weight on the image and its mirror, half spread over the mirrored translates (level 2 with 'diagonal 2')"
    mirror = lambda dy, dx: 0.5 * (views[(dy, dx, False)] + views[(dy, dx, True)])
    if not shifts: return mirror(0, 0)
    return 0.5 * mirror(0, 0) + 0.5 * torch.stack([mirror(dy, dx) for dy, dx in shifts]).mean(0)


@call_parse
def main(runs: str = None,  # run folders, separated by spaces
         data: str = None,  # the test set's folder (fastai's CIFAR layout); default $RECIPE_DATA
         below: str = '0.8'):  # top probabilities under which an image gets level 2 (`tta_below`), separated by spaces
    files = folder_images(find_data(data)/'test')  # listed once for every run
    for run in runs.split():
        model = recipe.load(run)
        y = torch.tensor([model.classes.index(f.parent.name) for f in files])
        x = torch.stack([torch.from_numpy(decode(f, model.size)).permute(2, 0, 1) for f in files]).float().div_(255)
        x = (x - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
        v = view_logits(model.float(), x)
        plain = v[(0, 0, False)]
        acc = lambda logits: (logits.argmax(1) == y).float().mean().item()
        row = {'plain': acc(plain), 'mirror': acc(tta(v, []))} | {f'+ {k}': acc(tta(v, s)) for k, s in SHIFTS.items()}
        confidence, shares = plain.softmax(1).amax(1), []
        for p in map(float, below.split()):
            unsure = confidence < p
            row[f'diagonal 2, below {p}'] = acc(torch.where(unsure[:, None], tta(v, SHIFTS['diagonal 2']), plain))
            shares.append(f"below {p}: {100 * unsure.float().mean():.1f}%")
        print(f"{run}: {len(y)} images; " + '; '.join(f'{k} {100 * a:.2f}%' for k, a in row.items()) +
              f"; of the images {', '.join(shares)}", flush=True)
