"""More than one process: DDP (gloo on CPU, nccl on GPUs) through fastai's DistributedTrainer, with fastai's fixes.

PyTorch's engine, driven by fastai's DistributedTrainer and accelerate, with what fastai 2.8.12 needs fixed here.

A process launched by `torchrun` (or `accelerate launch`) has WORLD_SIZE, RANK and LOCAL_RANK in its environment;
`start()` joins the run. Every rank trains; rank 0 alone writes the run folder. What fastai does that the recipe
works around, each where it is fixed:
- `DistributedDL._broadcast` moves the shuffled order to CUDA (nccl only): `ShardedDL` keeps it on the backend's device;
- `len(DistributedDL)` counts one batch more than a rank runs with drop_last, so the schedule never ended: `ShardedDL`;
- the test set is padded by repeating items and the metrics count the repeats: `DDPTrainer` gives each rank whole
  batches of the unpadded test set and sums the metrics' totals over the ranks;
- lr_find, get_preds and the plots gather across processes whenever WORLD_SIZE > 1, and deadlock when one rank
  runs them: `alone()`;
- a NaN on one rank leaves the others blocked at the next collective: `first_bad` looks at every rank's loss.
"""
import datetime, os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.basics import to_detach

from .config import DIST_TIMEOUT
from .data import RecipeError

__all__ = ['Process', 'start', 'launch_command', 'stop', 'leave_together', 'rank0', 'from_rank0', 'gather', 'first_bad', 'alone', 'per_rank_bs', 'unwrap',
           'ShardedDL', 'test_shard', 'DDPTrainer', 'on_rank0', 'global_batch', 'lost_process']


@dataclass
class Process:
    "This process's place in a launched run"
    rank: int; size: int; local_rank: int; device: torch.device; backend: str


def start():
    "Join the launched run (init the process group) and return its `Process`; None when not launched with >1 process"
    size = int(os.environ.get('WORLD_SIZE', 1))
    if size <= 1: return None
    rank, local = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0))
    if torch.cuda.is_available():  # one process per GPU, picked by LOCAL_RANK
        torch.cuda.set_device(local); device, backend = torch.device('cuda', local), 'nccl'
    else: device, backend = torch.device('cpu'), 'gloo'
    if not dist.is_initialized():  # a lost process turns into an error after DIST_TIMEOUT instead of a hang
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=DIST_TIMEOUT))
    return Process(rank, size, local, device, backend)


def launch_command(p) -> str:
    "What starts this run's processes again, for the resume command a stopped run gives: torchrun's own options on one machine"
    if p is None: return 'python'
    local = int(os.environ.get('LOCAL_WORLD_SIZE', p.size))
    if local == p.size: return f'torchrun --standalone --nproc_per_node {p.size}'
    return f'torchrun --nnodes {p.size // local} --nproc_per_node {local} (with its rendezvous options, on every machine)'


def stop(p):
    if p is not None and dist.is_initialized(): dist.destroy_process_group()


def leave_together(p):
    """Every rank waits here for rank 0's final stage, so that no process leaves the process group while another may
    still talk to it (a 2-process run whose rank 1 left early once aborted at exit: 'terminate called without an active
    exception', and torchrun then stopped rank 0 in its plots). Best effort: if rank 0 stopped on an error (it says
    so itself) or its final stage outlasts DIST_TIMEOUT, the others leave anyway, as they did before"""
    if p is None: return
    try: dist.barrier()
    except RuntimeError: pass


def rank0(p) -> bool: return p is None or p.rank == 0


def from_rank0(p, obj):
    "Rank 0's `obj` on every rank (a picklable value)"
    if p is None: return obj
    box = [obj]; dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(p, obj) -> list:
    "Every rank's `obj`, in rank order"
    out = [None] * p.size; dist.all_gather_object(out, obj)
    return out


def first_bad(p, first):
    """(rank, step, loss) of the first rank whose (step, loss) pair `first` (from StopOnNaN) holds a bad loss, or
    None: the same answer on every rank. Reads the device, so it waits for it"""
    every = first.detach().float().reshape(1, 2)
    if p is not None:
        gathered = [torch.empty_like(every) for _ in range(p.size)]
        dist.all_gather(gathered, every); every = torch.cat(gathered)
    every = every.cpu()
    bad = (~torch.isnan(every[:, 0])).nonzero()
    return (int(bad[0]), float(every[bad[0], 0]), float(every[bad[0], 1])) if len(bad) else None


@contextmanager
def alone():
    """fastai gathers across processes inside lr_find, get_preds and the plots whenever WORLD_SIZE > 1; rank 0 runs
    them by itself (while the others wait or have finished), so it must look like a single process meanwhile"""
    old = os.environ.get('WORLD_SIZE')
    os.environ['WORLD_SIZE'] = '1'
    try: yield
    finally:
        if old is None: del os.environ['WORLD_SIZE']
        else: os.environ['WORLD_SIZE'] = old


def per_rank_bs(p, bs) -> int:
    "`--bs` is the global batch: each of the p.size processes gets an equal share"
    if p is None: return bs
    if bs % p.size: raise RecipeError(f"batch size {bs} does not divide evenly across {p.size} processes: choose a multiple of {p.size}")
    return bs // p.size


def unwrap(model): return getattr(model, 'module', model)  # DDP's wrapped model: state_dict keys without 'module.'


class ShardedDL(DistributedDL):
    "fastai's DistributedDL (each rank a slice of the shuffled training order) with its CUDA-only broadcast and length fixed"
    def _broadcast(self, t, rank):
        device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'  # fastai: always .cuda()
        t = torch.tensor(t, dtype=torch.long, device=device)
        dist.broadcast(t, rank)
        return t.cpu().tolist()

    def __len__(self):
        "The batches this rank runs: its share of the padded order, in batches (fastai: len(dl) / world size, rounded up)"
        n = -(-self.dl.n // self.world_size)
        return n // self.bs if self.drop_last else -(-n // self.bs)


def test_shard(dl, p):
    """The test loader's batches p.rank, p.rank + p.size, ...: each rank evaluates whole batches, each image once,
    nothing padded. No gathering: `DDPTrainer` sums the metrics' totals instead."""
    n, bs = dl.n, dl.bs
    idxs = [i for b in range(p.rank, -(-n // bs), p.size) for i in range(b * bs, min(n, (b + 1) * bs))]
    shard = dl.new()
    shard.get_idxs, shard.n = (lambda: idxs), len(idxs)
    shard.to_detach = lambda b, cpu=True, gather=True: to_detach(b, cpu, gather=False)
    shard.is_test_shard = True
    return shard


class DDPTrainer(DistributedTrainer):
    """fastai's DistributedTrainer (DDP through accelerate) with the recipe's loaders: `ShardedDL` for training,
    `test_shard` for the test set, evaluated with rank 0's BatchNorm statistics (the ones saved) by the plain model"""
    def __init__(self, p: Process):
        super().__init__(sync_bn=False, cpu=p.device.type == 'cpu')  # SyncBatchNorm is CUDA-only; each rank's own BN
        self.p = p

    def before_fit(self):
        self.test_dl = self.dls.valid
        super().before_fit()

    def _wrap_dl(self, dl):
        if isinstance(dl, ShardedDL) or getattr(dl, 'is_test_shard', False): return dl
        return test_shard(dl, self.p) if dl is self.test_dl else ShardedDL(dl, device=self.p.device)

    def before_validate(self):
        self.ddp = self.learn.model
        for b in self.ddp.module.buffers(): dist.broadcast(b, 0)  # each rank updated its BN statistics on its own batches
        self.learn.model = self.ddp.module  # no collectives in a forward pass: ranks run different numbers of batches

    def after_validate(self):
        "Sum the loss's and metrics' totals and counts over the ranks: the test set's exact mean, each image once"
        for m in self.recorder._valid_mets:
            t = torch.tensor([float(m.total), float(m.count)], dtype=torch.float64, device=self.p.device)
            dist.all_reduce(t)
            m.total, m.count = t.tolist()
        self.learn.model = self.ddp


def on_rank0(p, fn):
    "`fn()` run by rank 0 alone; its result, or the RecipeError it raised, on every rank (so no rank waits for nothing)"
    if p is None: return fn()
    res = err = None
    if p.rank == 0:
        try: res = fn()
        except Exception as e:  # any exception: the other ranks must not wait for a result that never comes
            err, res = e, e if isinstance(e, RecipeError) else RecipeError(f"rank 0 stopped: {type(e).__name__}: {e}")
    res = from_rank0(p, res)
    if isinstance(res, RecipeError): raise err if err is not None else res
    return res


@contextmanager
def global_batch(learn, bs):
    "The training loader with the global batch `bs` meanwhile: lr_find on rank 0 sees what a single process would"
    train = learn.dls.train
    if train.bs != bs: learn.dls.loaders[0] = train.new(bs=bs)
    try: yield
    finally: learn.dls.loaders[0] = train


def lost_process(p, e) -> bool:
    "A collective failed because another process died or stopped answering (gloo or nccl's own errors)"
    return p is not None and (isinstance(e, dist.DistError) or any(w in str(e) for w in ('gloo', 'NCCL', 'Connection closed')))
