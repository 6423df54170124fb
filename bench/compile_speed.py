"""When does `--compile` (torch.compile of the net) pay on this machine? Times training steps of a profile's net (forward,
loss, backward, optimizer step; channels_last; the precision `train` would choose here) eagerly and compiled, and
the compile itself (the first compiled steps), on random images of the profile's batch size.

    python bench/compile_speed.py [--profile fast] [--steps 10] [--bs N] [--json FILE]

Prints ms per step both ways, the compile's seconds and the steps after which compiling has paid for itself; writes
the same as JSON (with the CPU or GPU and versions). `--steps 2 --bs 8 --width 8`: the suite's tiny mode.
"""
import argparse, json, platform, time
from pathlib import Path

import torch
import torch.nn.functional as F

from recipe.config import PROFILES
from recipe.run import choose_precision, shifts_pay
from recipe.model import make_model, shift_weight_grads
from recipe.record import machine_info, versions


def make_step(model, device, precision):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == 'bf16')
    def step(x, y):
        with autocast: loss = F.cross_entropy(model(x).float(), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return step


def timed(step, x, y, n, device) -> float:
    "Seconds per step over n steps"
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sync(); t = time.perf_counter()
    for _ in range(n): step(x, y)
    sync(); return (time.perf_counter() - t) / n


def measure(profile='fast', steps=10, bs=None, width=None, device=None) -> dict:
    s = PROFILES[profile]
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    precision, reason = choose_precision('auto', device.type == 'cuda')
    bs, width = bs or s['bs'], width or s['width']
    x = torch.randn(bs, 3, s['size'], s['size'], device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,), device=device)
    found = {}
    for mode in ('eager', 'compiled'):
        torch.manual_seed(0)
        model = make_model(s['arch'], 10, width).to(device, memory_format=torch.channels_last)
        if mode == 'compiled': model.compile()
        elif device.type == 'cpu' and shifts_pay(): shift_weight_grads(model)  # eager, as the recipe trains (make_learner)
        step = make_step(model, device, precision)
        first = timed(step, x, y, 2, device) * 2  # warm-up; compiled: the compile (forward and backward) happens here
        found[mode] = dict(first_two_steps_s=round(first, 3), ms_per_step=round(1000 * timed(step, x, y, steps, device), 2))
    eager, compiled = found['eager']['ms_per_step'], found['compiled']['ms_per_step']
    compile_s = found['compiled']['first_two_steps_s'] - found['eager']['first_two_steps_s']
    saved = eager - compiled
    return dict(profile=profile, bs=bs, width=width, steps=steps, device=str(device), precision=precision,
                precision_reason=reason, eager_ms_per_step=eager, compiled_ms_per_step=compiled,
                speedup=round(eager / compiled, 3), compile_s=round(compile_s, 2),
                pays_after_steps=round(1000 * compile_s / saved) if saved > 0 else None,
                machine=machine_info(), versions=versions(), python=platform.python_version())


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--profile', default='fast'); ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--bs', type=int); ap.add_argument('--width', type=int); ap.add_argument('--device')
    ap.add_argument('--json', help='write the result here')
    a = ap.parse_args()
    r = measure(a.profile, a.steps, a.bs, a.width, a.device)
    print(f"{r['profile']} net, batch {r['bs']}, {r['precision']} on {r['device']} ({r['machine']['cpu']}, {r['machine']['gpu']}): "
          f"eager {r['eager_ms_per_step']} ms/step, compiled {r['compiled_ms_per_step']} ms/step ({r['speedup']}x); "
          f"compile {r['compile_s']} s; " + (f"pays after {r['pays_after_steps']} steps" if r['pays_after_steps'] else "never pays here"))
    if a.json: Path(a.json).parent.mkdir(parents=True, exist_ok=True); Path(a.json).write_text(json.dumps(r, indent=1))
