"""Training-step time of the fast net at other widths: on a CPU time follows arithmetic, so a narrower net might reach
94% for less time in more epochs (issue 23, part 2; ablation `widths-192`). The forward and backward passes only,
the whitening bias frozen (as after its epochs), bf16 autocast where the CPU has it, channels_last, random images
(32 pixels, or `--size`); the widths alternate `--reps` times and the fastest counts.

    python bench/width_speed.py [--bs 1536] [--steps 2] [--reps 2] [--size 32] [--widths "64,256,256 64,256,384"] [--json FILE]
"""
import shlex, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F
from fastcore.script import call_parse

from recipe.model import make_model, shift_weight_grads
from recipe.record import git_commit, machine_info, write_json
from recipe.run import choose_precision, keep_freed_memory, shifts_pay

WIDTHS = [(64, 256, 256), (64, 192, 192), (48, 192, 192), (64, 224, 224), (64, 256, 192)]  # the first: the fast net's


def conv_macs(net, size=32) -> int:
    "Multiply-adds of the net's convolutions and linear head for one image of size x size, from their output shapes"
    total = []
    def count(m, i, o): total.append(o[0].numel() * (m.in_features if isinstance(m, torch.nn.Linear) else m.weight[0].numel()))
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad(): net.eval()(torch.zeros(1, 3, size, size))
    for h in hooks: h.remove()
    net.train()
    return sum(total)


@call_parse
def main(bs: int = 1536,   # batch size (fast7's and fast-progressive's)
         steps: int = 2,   # timed steps each time (after one untimed)
         reps: int = 2,    # times each width, in turn; the fastest counts
         size: int = 32,   # pixels of the images (24: the progressive profiles' small epochs)
         widths: str = None,  # the widths to time, e.g. "64,256,256 64,256,384" (the first is the baseline); None: WIDTHS
         json: str = None):  # also write the result to this JSON file
    "Print milliseconds per training image at each of the widths, and each against the first"
    all_widths = [tuple(int(c) for c in w.split(',')) for w in widths.split()] if widths else WIDTHS
    keep_freed_memory()
    torch.manual_seed(0)
    precision, _ = choose_precision('auto')
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16')
    x = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    best, macs = {}, {}
    for _ in range(reps):
        for w in all_widths:
            net = make_model('fast', 10, w[0], widths=w).to(memory_format=torch.channels_last)
            net[0].bias.requires_grad_(False)
            if shifts_pay(): shift_weight_grads(net)  # as the recipe trains (make_learner; bf16 autocast only)
            macs[w] = conv_macs(net, size)
            def step():
                with autocast: loss = F.cross_entropy(net(x).float(), y)
                loss.backward()
                net.zero_grad(set_to_none=True)
            step()
            t = time.perf_counter()
            for _ in range(steps): step()
            ms = (time.perf_counter() - t) / (steps * bs) * 1e3
            best[w] = min(best.get(w, ms), ms)
    base = best[all_widths[0]]
    print(f"{precision}, {torch.get_num_threads()} threads, batch {bs}, {size}-pixel images, the fastest of {reps}:")
    for w, ms in best.items():
        print(f"widths {'/'.join(map(str, w))}: {ms:.3f} ms an image, {ms / base:.2f}x; {macs[w] / 1e6:.1f}M multiply-adds "
              f"a forward pass, {macs[w] / macs[all_widths[0]]:.2f}x", flush=True)
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        write_json(json, dict(command=shlex.join(['python'] + sys.argv), bs=bs, steps=steps, reps=reps, size=size, precision=precision,
                              threads=torch.get_num_threads(), git_commit=git_commit(), machine=machine_info(),
                              ms_per_image={'/'.join(map(str, w)): round(ms, 4) for w, ms in best.items()},
                              forward_macs={'/'.join(map(str, w)): n for w, n in macs.items()}))
