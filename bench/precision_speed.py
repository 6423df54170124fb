"""Training-step time of a net in fp32 and with bf16 autocast, on this CPU (channels_last, random data: only the
arithmetic is timed): the fast net with Nesterov SGD at batch 1,024, or (--arch resnet) the seed recipe's custom
ResNet-9 with Adam at batch 512. bf16 pays on CPUs with bf16 instructions (AMX, AVX512_BF16); on others oneDNN
emulates it. On AMX CPUs the fast net's small maps take the shifted products in bf16, as the recipe trains there.

    python bench/precision_speed.py [--steps 6] [--arch resnet] [--bs N] [--width 64] [--json FILE]
"""
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fastcore.script import call_parse

from recipe.model import make_model, shift_weight_grads
from recipe.record import git_commit, machine_info, write_json
from recipe.run import BF16_FLAGS, choose_precision, cpu_flags, keep_freed_memory, shifts_pay


def step_seconds(arch, bf16, steps, bs, width=64):
    torch.manual_seed(0)
    model = make_model(arch, 10, width).to(memory_format=torch.channels_last)
    if shifts_pay(): shift_weight_grads(model)  # as the recipe trains (make_learner; bf16 autocast only)
    opt = (torch.optim.Adam(model.parameters(), lr=1e-3) if arch == 'resnet' else
           torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True))
    x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = F.cross_entropy(model(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step(); step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps): step()
    return (time.perf_counter() - t) / steps


@call_parse
def main(steps: int = 6,    # timed steps of each (after two warm-up steps)
         arch: str = 'fast',  # 'fast' (the fast net, batch 1,024) or 'resnet' (the seed recipe's net, batch 512)
         bs: int = None,    # batch size (default: 1,024 for fast, 512 for resnet)
         width: int = 64,   # the net's width (64: the profiles')
         json: str = None):  # also write the result to this JSON file
    "Print seconds per training step in fp32 and in bf16 autocast, and their ratio"
    keep_freed_memory()
    bs = bs or (512 if arch == 'resnet' else 1024)
    fp32, bf16 = step_seconds(arch, False, steps, bs, width), step_seconds(arch, True, steps, bs, width)
    flags = ', '.join(f for f in BF16_FLAGS if f in cpu_flags()) or 'none'
    print(f"{arch} net, width {width}, batch {bs:,}, {torch.get_num_threads()} threads, bf16 flags: {flags} (auto picks "
          f"{choose_precision('auto', False)[0]}): fp32 {fp32:.2f} s/step, "
          f"bf16 autocast {bf16:.2f} s/step: bf16 is {fp32/bf16:.2f}x as fast")
    if json:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        write_json(json, dict(arch=arch, width=width, bs=bs, steps=steps, threads=torch.get_num_threads(), fp32_s_per_step=fp32,
                              bf16_s_per_step=bf16, bf16_speedup=fp32/bf16, bf16_flags=flags, machine=machine_info(),
                              git_commit=git_commit(), command=f"python bench/precision_speed.py --steps {steps} --arch {arch} --bs {bs} --width {width}"))
