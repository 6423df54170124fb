"""Training-step time of the fast net with the whitening bias learning and frozen (its gradient off, as `WhitenBias`
switches it after its epochs in one process): with it off the backward pass stops at the first conv group, which
skips that conv's input gradient (the largest feature maps, 31x31 at 32 pixels) and the GELU's backward before it. bf16 autocast,
channels_last, random data: only the forward and backward passes are timed, alternating the two `--reps` times.

    python bench/frozen_bias_speed.py [--bs 1536] [--size 32] [--steps 4] [--reps 3] [--json FILE] [--ops] [--onednn]

`--ops`: then where a step's time goes (the bias frozen), by operator, from `torch.profiler` over 2 steps.
"""
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fastcore.script import call_parse

from recipe.model import make_model, shift_weight_grads
from recipe.record import git_commit, machine_info, write_json
from recipe.run import keep_freed_memory, shifts_pay


@call_parse
def main(bs: int = 1536,   # batch size (fast7's and fast-progressive's)
         steps: int = 4,   # timed steps each time (after one untimed)
         reps: int = 3,    # times each way, alternating; the fastest counts
         json: str = None,  # also write the result to this JSON file
         ops: bool = False,  # also print the operators' share of a step (torch.profiler)
         onednn: bool = False,  # oneDNN's weight gradients for every conv even on an AMX CPU (the recipe's before b40f4b9)
         size: int = 32):  # pixels of the random images (fast-progressive's first epochs: 24)
    "Print seconds per training step with the whitening bias learning and frozen, and their ratio"
    keep_freed_memory()
    torch.manual_seed(0)
    net = make_model('fast', 10, 64).to(memory_format=torch.channels_last)
    shifts = shifts_pay() and not onednn and shift_weight_grads(net)  # as the recipe trains (make_learner)
    x, y = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (bs,))
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16): loss = F.cross_entropy(net(x).float(), y)
        loss.backward(); net.zero_grad(set_to_none=True)
    times = {True: [], False: []}
    for _ in range(reps):
        for learning in times:
            net[0].bias.requires_grad_(learning); step()
            t = time.perf_counter()
            for _ in range(steps): step()
            times[learning].append((time.perf_counter() - t) / steps)
    learning, frozen = min(times[True]), min(times[False])
    print(f"fast net, batch {bs:,}, {size} pixels, bf16 autocast, {torch.get_num_threads()} threads, weight gradients of maps <= 7x7 by "
          f"{'shifted products' if shifts else 'oneDNN'}: bias learning {learning:.3f} s/step, "
          f"frozen {frozen:.3f} s/step: {frozen/learning:.3f}x the time")
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        write_json(json, dict(bs=bs, size=size, steps=steps, reps=reps, threads=torch.get_num_threads(), learning_s_per_step=times[True],
                              frozen_s_per_step=times[False], ratio=frozen/learning, shifted_weight_grads=bool(shifts), machine=machine_info(), git_commit=git_commit(),
                              command=f"python bench/frozen_bias_speed.py --bs {bs} --size {size} --steps {steps} --reps {reps}" + (' --onednn' if onednn else '')))
    if ops:
        from torch.profiler import profile
        with profile() as prof:
            for _ in range(2): step()
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=12))
