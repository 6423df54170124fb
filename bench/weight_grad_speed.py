"""Where the shifted products pay: the weight gradient of each conv of the fast net, by oneDNN's kernel and by
`weight_grad_by_shifts` (recipe/model.py), at batch `--bs`, bf16, channels_last, random tensors, the two alternating
`--reps` times (the fastest counts). The forward and the input gradient (oneDNN's either way) for scale.
`--bs 4 --widths 8,16,12 --reps 1`: the suite's tiny mode.

    python bench/weight_grad_speed.py [--bs 1536] [--widths 64,192,256] [--sizes 32,24] [--reps 5] [--json FILE]

Prints one row per conv and image size: its map, ms each way, and shifted / oneDNN. SmallMapConv.MAX_MAP (7) is
where the products were faster on an AMX CPU; elsewhere oneDNN's kernel is used.
"""
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fastcore.script import call_parse

from recipe.model import FastNet, SmallMapConv, onednn_conv_backward, weight_grad_by_shifts
from recipe.record import git_commit, machine_info, write_json
from recipe.run import keep_freed_memory


def fast_net_convs(widths, size):
    "(c_in, c_out, map, whether it is a SmallMapConv) of each 3x3 conv of the fast net at `size` pixels, read off the net"
    net, convs = FastNet(10, widths[0], widths=widths), []
    hooks = [m.register_forward_hook(lambda m, i, o: convs.append((i[0].shape[1], o.shape[1], i[0].shape[-1], isinstance(m, SmallMapConv))))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    with torch.no_grad(): net.eval()(torch.zeros(1, 3, size, size))
    for h in hooks: h.remove()
    return convs


@call_parse
def main(bs: int = 1536,  # batch size (fast-progressive's)
         widths: str = '64,192,256',  # the three groups' channels (fast-progressive's)
         sizes: str = '32,24',  # image sizes (fast-progressive's: 24 for its first 2 epochs, then 32)
         reps: int = 5,  # times each way, alternating; the fastest counts
         json: str = None):  # also write the result to this JSON file
    "Print ms of each conv's weight gradient by oneDNN and by the shifted products"
    keep_freed_memory()
    torch.manual_seed(0)
    widths, sizes = tuple(int(w) for w in widths.split(',')), [int(s) for s in sizes.split(',')]
    rows = []
    print(f"batch {bs:,}, widths {widths}, bf16, channels_last, {torch.get_num_threads()} threads, {machine_info()['cpu']}; ms, the fastest of {reps}")
    print(f"{'size':>4} {'conv':>12} {'map':>5} {'forward':>8} {'input grad':>10} {'weight grad: oneDNN':>20} {'shifted':>8} {'ratio':>6}")
    for size in sizes:
        for c_in, c_out, m, small in fast_net_convs(widths, size):
            cl = dict(memory_format=torch.channels_last)
            x, g = torch.randn(bs, c_in, m, m).bfloat16().contiguous(**cl), torch.randn(bs, c_out, m, m).bfloat16().contiguous(**cl)
            w = torch.randn(c_out, c_in, 3, 3).bfloat16().contiguous(**cl)
            ways = dict(forward=lambda: F.conv2d(x, w, padding=1), input_grad=lambda: onednn_conv_backward(g, x, w, [True, False, False]),
                        onednn=lambda: onednn_conv_backward(g, x, w, [False, True, False]), shifted=lambda: weight_grad_by_shifts(x, g))
            best = {k: float('inf') for k in ways}
            for k, fn in ways.items(): fn()  # warm-up
            for _ in range(reps):
                for k, fn in ways.items():
                    t = time.perf_counter(); fn(); best[k] = min(best[k], time.perf_counter() - t)
            ms, ratio = {k: round(1000 * v, 4) for k, v in best.items()}, best['shifted'] / best['onednn']
            rows.append(dict(size=size, c_in=c_in, c_out=c_out, map=m, ms=ms, shifted_over_onednn=round(ratio, 3),
                             takes_shifts=small and m <= SmallMapConv.MAX_MAP))
            print(f"{size:>4} {f'{c_in}->{c_out}':>12} {f'{m}x{m}':>5} {ms['forward']:>8.2f} {ms['input_grad']:>10.2f} {ms['onednn']:>20.2f} "
                  f"{ms['shifted']:>8.2f} {ratio:>6.2f}" + ('  <- shifted in training' if rows[-1]['takes_shifts'] else ''), flush=True)
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        write_json(json, dict(bs=bs, widths=widths, sizes=sizes, reps=reps, threads=torch.get_num_threads(), rows=rows, machine=machine_info(),
                              git_commit=git_commit(), command=f"python bench/weight_grad_speed.py --bs {bs} --widths {','.join(map(str, widths))} "
                                                              f"--sizes {','.join(map(str, sizes))} --reps {reps}"))
