"""Training-step time of the fast net in fp32 and with bf16 autocast, on this CPU (channels_last, batch 1,024,
random data: only the arithmetic is timed). bf16 pays on CPUs with bf16 instructions (AMX, AVX512_BF16); on others
oneDNN emulates it.

    python bench/precision_speed.py [--steps 6]
"""
import time

import torch
import torch.nn.functional as F
from fastcore.script import call_parse

from recipe.run import BF16_FLAGS, choose_precision, cpu_flags
from recipe.model import FastNet
from recipe.run import keep_freed_memory


def step_seconds(bf16, steps, bs=1024):
    torch.manual_seed(0)
    model = FastNet().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)
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
def main(steps: int = 6):  # timed steps of each (after two warm-up steps)
    "Print seconds per training step of the fast net (batch 1,024) in fp32 and in bf16 autocast, and their ratio"
    keep_freed_memory()
    fp32, bf16 = step_seconds(False, steps), step_seconds(True, steps)
    flags = ', '.join(f for f in BF16_FLAGS if f in cpu_flags()) or 'none'
    print(f"fast net, batch 1,024, {torch.get_num_threads()} threads, bf16 flags: {flags} (auto picks "
          f"{choose_precision('auto', False)[0]}): fp32 {fp32:.2f} s/step, "
          f"bf16 autocast {bf16:.2f} s/step: bf16 is {fp32/bf16:.1f}x as fast")
