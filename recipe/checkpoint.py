"""Checkpoints: after every epoch, everything needed to continue the run after a kill, written atomically."""
import io, random
from pathlib import Path

import numpy as np
import torch
from fastai.basics import L

from .data import AlbumentationsTransform, RecipeError
from .distributed import unwrap
from .record import atomic_write

__all__ = ['CHECKPOINT', 'save_checkpoint', 'load_checkpoint', 'checkpoint_epoch', 'known_hypers', 'restore']

CHECKPOINT = 'checkpoint.pt'


def train_dl(dls):
    "The training loader itself: inside DDP fastai wraps it in a DistributedDL, which keeps it as `.dl`"
    return getattr(dls.train, 'dl', dls.train)


def augment_rngs(dls) -> list:
    "The albumentations pipelines and each of their transforms: seeding gives every transform its own generators"
    return [o for t in train_dl(dls).after_item.fs if isinstance(t, AlbumentationsTransform) for o in (t.pipeline, *t.pipeline.transforms)]


def rng_states(dls) -> dict:
    """Every random stream a run draws from: Python, NumPy, torch (and the GPU's, where the batch augmentation draws
    on a GPU), the loader's shuffling, albumentations"""
    return dict(python=random.getstate(), torch=torch.get_rng_state(), loader=train_dl(dls).rng.getstate(),
                numpy=[x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
                augment=[(o.random_generator.bit_generator.state, o.py_random.getstate()) for o in augment_rngs(dls)],
                cuda=torch.cuda.get_rng_state() if torch.device(dls.device).type == 'cuda' else None)


def plain(o):
    "NumPy scalars (in fastai's hyper-parameters) as Python numbers, fastai tensors as torch's: for weights_only loading"
    if isinstance(o, np.generic): return o.item()
    if isinstance(o, torch.Tensor): return o.as_subclass(torch.Tensor)
    if isinstance(o, dict): return {k: plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, L)): return type(o)(plain(v) for v in o) if not isinstance(o, L) else [plain(v) for v in o]
    return o


def save_checkpoint(path, learn, epoch: int, config: dict, rng=None, history=()):
    """torch.save to a temporary file, then rename: a kill at any instant leaves the old checkpoint or the new one.
    `rng`: the random streams (default this process's; a list of every rank's in a distributed run). `history`: each
    epoch's per-step train losses and LRs, for the plots of a resumed run"""
    path = Path(path)
    opt = learn.opt.state_dict()
    smooth = learn.recorder.smooth_loss  # the reported train_loss: a moving average that runs across epochs
    state = plain(dict(epoch=epoch, config=config, model=unwrap(learn.model).state_dict(), rng=rng or rng_states(learn.dls),
                       opt={'state': opt['state'], 'hypers': opt['hypers']},
                       smooth_loss={'val': smooth.val, 'count': smooth.count}, history=list(history)))
    serialised = io.BytesIO()  # in memory first: torch's zip writer turns a full disk into a RuntimeError naming no cause
    torch.save(state, serialised)
    try: atomic_write(path, lambda f: f.write(serialised.getbuffer()), 'wb')  # a full disk: an OSError, named
    except RecipeError as e: raise RecipeError(f"{e}; the previous checkpoint is intact") from None


def load_checkpoint(run) -> dict:
    """A run folder's checkpoint, loaded with weights_only=True (tensors and plain values only, no code) into host memory:
    a GPU run's checkpoint loads on a machine without one, and `restore` puts each tensor where the run now trains"""
    path = Path(run)/CHECKPOINT
    if not Path(run).is_dir(): raise RecipeError(f"no such run folder to resume: {run}")
    if not path.is_file(): raise RecipeError(f"no checkpoint to resume from: {path} does not exist")
    try: return torch.load(path, weights_only=True, map_location='cpu')
    except Exception as e: raise RecipeError(f"cannot load checkpoint {path}: {e}") from None


def checkpoint_epoch(run) -> int:
    """The epoch of the checkpoint in a run folder, read from the file (its tensors mapped, not read); 0 for none, None
    for one that cannot be read. What a stopped run reports: an interrupt can land after the file is renamed into place
    and before the run notes it"""
    try: return torch.load(Path(run)/CHECKPOINT, weights_only=True, map_location='cpu', mmap=True)['epoch']
    except FileNotFoundError: return 0
    except Exception: return None  # unreadable here: the caller goes by its own count


def known_hypers(saved, opt) -> list:
    """A checkpoint's hyper-parameters, each group's cut to those `opt` has: one the code no longer keeps there (49cd79b's
    `bf16`, now bound to Muon's step) must not reach the step, where fastai's keyword arguments would win"""
    return [{k: v for k, v in old.items() if k in now} for old, now in zip(saved, opt.hypers)]


def restore(learn, ckpt: dict, rank=0):
    """Model, optimizer and random streams (this rank's, in a distributed run) as they were at the end of the checkpoint's
    epoch, on the devices of this run's model"""
    learn.model.to(learn.dls.device)  # first: fastai moves it only when the fit starts, and the optimizer state follows it now
    learn.model.load_state_dict(ckpt['model'])
    if learn.opt is None: learn.create_opt()
    learn.opt.load_state_dict({'state': ckpt['opt']['state'], 'hypers': L(known_hypers(ckpt['opt']['hypers'], learn.opt))})
    for p, state in learn.opt.state.items():  # fastai keeps the loaded tensors where they are: beside their parameter
        for k, v in state.items():
            if isinstance(v, torch.Tensor): state[k] = v.to(p.device)
    rng = ckpt['rng'][rank] if isinstance(ckpt['rng'], list) else ckpt['rng']
    random.setstate(rng['python']); torch.set_rng_state(rng['torch']); learn.dls.train.rng.setstate(rng['loader'])
    if rng.get('cuda') is not None and torch.cuda.is_available(): torch.cuda.set_rng_state(rng['cuda'])
    np.random.set_state((rng['numpy'][0], np.array(rng['numpy'][1], dtype=np.uint32), *rng['numpy'][2:]))
    for o, (gen, py) in zip(augment_rngs(learn.dls), rng['augment'], strict=True):
        o.random_generator.bit_generator.state = gen; o.py_random.setstate(py)
