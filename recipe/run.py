"""A run, from its settings to its run folder: `train()` checks the options, starts or resumes the run (its folder,
its config, its record), builds the DataLoaders and the `Learner`, fits it with its recipe (recipe/seed.py or
recipe/fast.py, by the optimizer of its settings) and its callbacks (recipe/callbacks.py), then does the final stage:
TTA, weights, plots, the record and the model card.

    import recipe
    learn = recipe.train(data='path/to/cifar10', width=32, seed=0)   # returns the fitted fastai Learner
    learn = recipe.train(data='path/to/cifar10', profile='fast', seed=0)

Launched with more than one process (`torchrun --nproc_per_node N -m recipe train ...`), every rank trains one
model with DDP and rank 0 writes the run folder (recipe/distributed.py).

The file reads in the order of a run: `train()`, then what it calls, each before what that calls; a run's state is
one `Run`, which carries the process group of a distributed run.
"""
import ctypes, importlib, json, os, sys, time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from fastai.basics import (CancelEpochException, CrossEntropyLossFlat, Learner, accuracy, default_device,
                           event, SkipToEpoch, TensorImage, noop, parent_label, set_seed)
from fastai.callback.all import ProgressCallback  # and fastai's Learner methods: lr_find, fit_one_cycle, to_channelslast
from fastcore.imports import IN_NOTEBOOK

from . import fast, seed
from .callbacks import (AlternatingFlip, Checkpoint, CleanLast, CPUAutocast, ExpectedDuration, FreezeGroup, KeepTestLogits, Lookahead, PlainTensors, PruneEasy, SelfDistill, SmallEarly,
                        RunRecord, StopOnNaN, SkipTestPasses, WhitenBias, check_trackers)
from .checkpoint import CHECKPOINT, checkpoint_epoch, load_checkpoint, restore
from .config import PRECISIONS, SEED_PROFILE, SPLIT_SEED, WHITEN_SAMPLE
from .data import RecipeError, image_dls
from .evaluation import class_metrics
from .pages import write_run_page
from .distributed import DDPTrainer, alone, launch_command, leave_together, lost_process, on_rank0, per_rank_bs, rank0, start, stop
from .inference import tta_logits
from .model import make_model, shift_weight_grads
from .plots import save_run_plots
from .settings import check_seed, settings_for, small_stages
from .run_folder import check_out, first_missing, lock_folder, release
from .record import (MODEL_FORMAT, counted, data_info, file_list_sha256, git_commit, machine_info, print_row, save_weights, tta_words, versions, write_json,
                     write_model_card)

__all__ = ['train', 'RECIPES', 'recipe_of', 'RecipeLearner', 'make_learner', 'test_logits',
           'LOGGERS', 'check_loggers', 'logger_cbs', 'check_device', 'BF16_FLAGS', 'cpu_flags',
           'shifts_pay', 'choose_precision', 'Run', 'training_images', 'whiten_sample']


RECIPES = {'adam': seed, 'nesterov': fast, 'muon': fast}  # the recipe of a run, by the optimizer of its settings


def recipe_of(s):
    "The module that builds and fits a run with settings `s`: recipe/seed.py or recipe/fast.py"
    return RECIPES[s['opt']]


def train(data=None,      # folder in fastai's CIFAR layout; default $RECIPE_DATA, else fastai's download
          epochs=None,    # epochs (default: the profile's; the seed's is 24)
          bs=None,        # batch size (seed 512, fast 1024)
          width=None,     # channels of the model's first layer (64: the original; 6,573,130 parameters)
          lr_min=None,    # LR at the start and end of the one cycle; default from lr_find (seed profiles only)
          lr_max=None,    # LR at the peak; seed: default from lr_find; fast: the profile's fixed LR
          seed=None,      # makes a CPU run repeatable (fastai, albumentations, batch augmentation, DataLoader workers)
          out=None,       # run folder for metrics, weights and plots; default runs/<timestamp>
          wd=None,        # weight decay (seed: decoupled, of Adam; fast: L2 x LR, see recipe/config.py)
          skip_bad=False, # skip (and count) unreadable images and bad folders instead of stopping
          num_workers=None,  # DataLoader worker processes; default 0 on CPU (the in-memory loader keeps up)
          record_to=(),   # extra JSON files that get the run record after every epoch (the benchmark harness)
          info=None,      # extra fields for the run record
          resume=None,    # run folder to continue from its last checkpoint, with its own settings (others given are refused)
          profile=None,   # named settings in recipe/config.py: seed (the default), seed-w32, fast, quick, fast-sgd, fast7, fast-progressive, fast95, fast96
          augment=None,   # 'albumentations' (per item, the seed's) or 'batch' (recipe/augment.py; the fast profiles')
          settings=None,  # any other settings of the profile to override, by their names in recipe/config.py
          size=None,      # pixels: images are resized to size x size (default 32); padding and cutout scale with it
          valid_pct=None, # a folder of class folders only: the fraction held out for validation (default VALID_PCT;
                          # ignored, with a warning, when the folder has its own test images)
          max_memory=None,  # the most the decoded images may take in memory ('2GB'; default MEMORY_FRACTION of what is free)
          precision=None, # 'auto' (the profile's), 'fp32', 'bf16', 'fp16' (CUDA): see recipe/config.py
          cbs=None,       # your fastai callbacks, for the fit (every epoch; not lr_find); in a distributed run on every rank
          log=None,       # 'tensorboard', 'wandb' or both ('tensorboard,wandb'): per-step loss and LR, per-epoch metrics
          device=None,    # 'cpu', 'cuda', 'cuda:N', 'mps' (default: fastai's choice; a distributed run: each rank's GPU)
          compile=None,   # torch.compile the net (default: the profile's, off): pays on long runs; bench/compile_speed.py
          test_every=None,  # a test pass after every n-th epoch and after the last; 0: the last only (default: the profile's;
                            # every epoch, except fast-progressive's last only)
         ) -> Learner:
    "Train a profile on CIFAR-10 (or any image folder) and save what happened to `out`; returns the fitted `Learner`"
    given = given_options(locals())  # first, while the arguments are all there is: for the record and the --resume check
    t0, commit, started = time.perf_counter(), git_commit(), datetime.now().isoformat(timespec='seconds')  # the code as it was
    loggers, device = check_loggers(log), check_device(device)
    p = start()  # None unless launched with more than one process (torchrun, accelerate launch)
    if p is not None and device is not None:
        stop(p); raise RecipeError("--device in a distributed run: each process uses the GPU of its LOCAL_RANK; leave --device out")
    run = None
    try:
        run = (resumed_run(resume, given, p, data) if resume is not None else
               new_run(p, profile, settings, given, out=out, data=data, seed=seed, skip_bad=skip_bad, record_to=record_to,
                       valid_pct=valid_pct, max_memory=max_memory))
        with released_on_failure(run):
            check_trackers(cbs, run.settings['epochs'], run.settings['test_every'])
            learn = run_learner(run, num_workers, device)
            if run.record is None: run.record = first_record(learn, run, dict(info or {}, git_commit=commit, started=started, command=command_of(given, info)))
            user_cbs = list(cbs or []) + (logger_cbs(loggers, run) if run.rank0 else [])
        fit_and_save(learn, run, t0, user_cbs)
        return learn
    finally:
        if rank0(p): end_loggers(loggers)
        if run is not None and run.lock is not None: os.close(run.lock)  # the folder is free again, for a resume in this process too
        stop(p)


NOT_OPTIONS = ('record_to', 'info', 'cbs')  # train()'s arguments that are not options of the run


def given_options(args: dict) -> dict:
    "The options a train() call was given (not None, not a default), in the order of its arguments"
    return {k: str(v) if k == 'device' else v for k, v in args.items()
            if k not in NOT_OPTIONS and v is not None and v is not False}  # a profile named, even 'seed', is given: --resume refuses it


def command_of(given, info=None) -> str:
    "The call that made a run, for its record and card: the command line as typed (info['command']), else recipe.train(...)"
    return (info or {}).get('command') or 'recipe.train(' + ', '.join(f'{k}={v!r}' for k, v in given.items()) + ')'


LOGGERS = {'tensorboard': 'tensorboard', 'wandb': 'wandb'}  # --log NAME: the package it needs (the extra of the same name)


def check_loggers(log) -> list:
    "The logger names in `log` ('tensorboard', 'wandb', both comma-separated, or a list), each with its package importable"
    names = [n.strip() for n in log.split(',') if n.strip()] if isinstance(log, str) else list(log or [])
    for n in names:
        if n not in LOGGERS: raise RecipeError(f"unknown logger {n!r}: choose from {', '.join(LOGGERS)}")
        try: importlib.import_module(LOGGERS[n])
        except ImportError: raise RecipeError(f"--log {n} needs the {LOGGERS[n]} package, which is not installed: "
                                              f'pip install -e ".[{n}]" (or pip install {LOGGERS[n]})') from None
    return names


def check_device(device):
    "The torch.device for --device (cpu, cuda, cuda:N, mps), refused with the reason when this machine has no such device"
    if device is None: return None
    try: d = torch.device(device)
    except (RuntimeError, TypeError): raise RecipeError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}") from None
    if d.type == 'cuda' and not torch.cuda.is_available(): raise RecipeError(f"device {device!r}: this machine has no CUDA GPU that torch can use")
    if d.type == 'cuda' and d.index is not None and d.index >= torch.cuda.device_count():
        raise RecipeError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if d.type == 'mps' and not torch.backends.mps.is_available(): raise RecipeError(f"device {device!r}: MPS is not available here")
    if d.type not in ('cpu', 'cuda', 'mps'): raise RecipeError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    return d


@dataclass
class Run:
    "A run's state from its start to its final stage: what `new_run` checked, or what `resumed_run` read from its folder"
    settings: dict          # the profile's settings, checked (`settings_for`); the LRs once chosen
    out: Path               # the run folder, claimed
    data: object = None     # the data folder as given (None: $RECIPE_DATA, else CIFAR-10's download)
    seed: int = None
    skip_bad: bool = False
    valid_pct: float = None
    max_memory: str = None
    record_to: list = ()    # extra JSON files for the record (the benchmark harness), absolute
    process: object = None  # the process group of a distributed run (recipe/distributed.py); None for one process
    start_epoch: int = 0    # epochs done before this process started (a resumed run)
    ckpt: dict = None       # the checkpoint resumed from; None for a new run
    made: Path = None       # a new run's topmost folder that it created (runs/, the parents of --out): given back with it
    record: dict = None     # the record (results.json); a new run gets its first once its LRs are chosen
    phases: dict = field(default_factory=dict)  # seconds of this process's parts outside the epochs (`timed`)
    lock: int = None        # (rank 0) the run folder, open and locked while this process runs it (`lock_folder`)
    @property
    def rank0(self) -> bool: return rank0(self.process)


@contextmanager
def timed(run, phase):
    "Adds the seconds the block takes to run.phases[phase]: the fixed costs of a run, itemised in its record"
    t = time.perf_counter()
    try: yield
    finally: run.phases[phase] = round(run.phases.get(phase, 0) + time.perf_counter() - t, 2)


# train()'s arguments that override a profile's settings (the rest are about the data, the run folder and the process)
OVERRIDES = ('epochs', 'bs', 'width', 'lr_min', 'lr_max', 'wd', 'augment', 'size', 'precision', 'compile', 'test_every')


def new_run(p, profile, settings, given, out, **data) -> Run:
    "A new run's settings (checked) and folder (chosen by rank 0 for every rank), with its data options"
    s = settings_for(profile, settings, **{k: given[k] for k in OVERRIDES if k in given})
    check_seed(data['seed'])
    if p and s['prune_easy']: raise RecipeError(f"prune_easy {s['prune_easy']} in a distributed run: it prunes one process's loader; run it in one process")
    if p and s['self_distill']: raise RecipeError(f"self_distill {s['self_distill']} in a distributed run: it keeps one process's predictions; run it in one process")
    data['record_to'] = [str(Path(f).resolve()) for f in data['record_to']]  # a resume may start from another folder
    # rank 0's timestamp names the folder of all; absolute, as the record and the card give it: a resume works from anywhere
    def claimed():  # the folder, the topmost folder that making it created (given back if the run stops early), its lock
        made = first_missing(Path('runs') if out is None else Path(out))
        folder = check_out(out).resolve()
        return folder, made or (folder if out is None else None), lock_folder(folder)  # runs/<timestamp> is always new
    folder, made, lock = on_rank0(p, claimed)
    return Run(s, folder, made=made, process=p, lock=lock if rank0(p) else None, **data)


# train()'s options that go with --resume: the run's own data moved elsewhere, and how to watch it
RESUME_OPTIONS = ('resume', 'data', 'log', 'device')


def resumed_run(resume, given=None, p=None, data=None) -> Run:
    """A run folder's checkpoint and record, with the run's own settings; lr_find is not run again. A run whose epochs
    are all done but whose final stage (TTA, weights, plots, card) was cut short goes on to that stage. Other options
    `given` are refused. `data`: the run's data folder, moved (checked against the run's fingerprint). The folder is
    locked before it is read (`lock_folder`): no other process resumes it meanwhile"""
    refused = [k for k in (given or {}) if k not in RESUME_OPTIONS]
    if refused: raise RecipeError(f"--resume continues {resume} with its own settings; leave out {', '.join(map(repr, refused))} "
                                  "(--data may point to the same images moved elsewhere)")
    out = Path(resume).resolve()  # absolute, as a new run's
    lock = on_rank0(p, lambda: lock_folder(out))
    try: return read_run(resume, out, p, data, lock if rank0(p) else None)
    except BaseException:
        if rank0(p) and lock is not None: os.close(lock)
        raise


def read_run(resume, out, p, data, lock) -> Run:
    "The run as its checkpoint and record left it, checked: resumed by as many processes as it began with, not complete"
    ckpt = load_checkpoint(resume)
    cfg = ckpt['config']
    size = p.size if p else 1
    if cfg.get('world_size', 1) != size:
        raise RecipeError(f"{out} was trained by {cfg.get('world_size', 1)} process(es) and this is {size}: "
                          f"resume it with the same number (torchrun --nproc_per_node)")
    s = settings_for(cfg.get('profile', 'seed'), {k: cfg[k] for k in SEED_PROFILE if k in cfg})  # older runs: seed profile
    s['lr_find'] = cfg.get('lr_find', {})
    try: record = json.loads((out/'results.json').read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"cannot read {out/'results.json'} ({getattr(e, 'strerror', None) or e}): the run record is needed to "
                          "resume; the checkpoint alone is not enough") from None
    if ckpt['epoch'] >= s['epochs'] and record.get('complete'): raise RecipeError(f"{out} is complete ({'all ' if s['epochs'] > 1 else ''}{counted(s['epochs'], 'epoch')} and its final stage): nothing to resume")
    if data is None and cfg['data'] is not None and not Path(cfg['data']).expanduser().exists():
        raise RecipeError(f"{out} was trained on {cfg['data']}, which is not there now: if its images moved, resume with "
                          "--data NEW_FOLDER (data= from Python)")
    record['resumed_after_epoch'] = record.get('resumed_after_epoch', []) + [ckpt['epoch']]
    record['out'] = str(out)  # where the folder is now: it may have moved
    # a benchmark run goes on updating its bench/results/ file
    return Run(s, out, data=data or cfg['data'], seed=cfg['seed'], skip_bad=cfg['skip_bad'], valid_pct=cfg.get('valid_pct'),
               max_memory=cfg.get('max_memory'), record_to=record.get('record_to', []), process=p, start_epoch=ckpt['epoch'],
               ckpt=ckpt, record=record, lock=lock)


@contextmanager
def released_on_failure(run):
    "A new run stopped while it is set up (decoding, the Learner, lr_find, the loggers) leaves no folder behind: `release`"
    try: yield
    except BaseException:
        if run.ckpt is None and run.rank0: release(run.out, run.made)
        raise


def run_learner(run, num_workers=None, device=None) -> Learner:
    """The run's DataLoaders and Learner, seeded (the same initial weights on every rank, then each rank's own
    augmentation); a resumed run's weights, optimizer state and place in the schedule from its checkpoint"""
    s, seed, p = run.settings, run.seed, run.process
    if seed is not None: set_seed(seed, reproducible=True)
    with timed(run, 'data'): dls = run_dls(run, num_workers, device)  # decoding, or reading the cache
    with timed(run, 'model'): learn = make_learner(dls, path=run.out, settings=s)  # the whitening's sample included
    if p is not None:
        if seed is not None: set_seed(seed + p.rank, reproducible=True)
        if p.rank: learn.remove_cb(ProgressCallback); learn.logger = noop  # rank 0 speaks for the run
    if run.ckpt is not None:
        restore(learn, run.ckpt, p.rank if p else 0)
        left = 'the final stage (TTA, weights, plots)' if run.start_epoch >= s['epochs'] else recipe_of(s).lr_text(s)
        if run.rank0: print(f"resuming {run.out} after epoch {run.start_epoch} of {s['epochs']}: {left}", flush=True)
    return learn


def run_dls(run, num_workers=None, device=None):
    """The run's DataLoaders: this rank's share of the batch, its own augmentation seed, its device (`device`, else
    fastai's choice). Rank 0 saves a new run's random split (split.json) in the run folder"""
    s, seed, p = run.settings, run.seed, run.process
    device = p.device if p else device or default_device()
    if num_workers is None: num_workers = 4 if device.type == 'cuda' else 0
    if device.type == 'cpu': keep_freed_memory()
    resumed = run.record is not None  # it keeps its own split and must find its own images
    split = run.out/'split.json' if resumed else None
    valid_files = json.loads(split.read_text())['valid'] if split is not None and split.is_file() else None
    check_files = (lambda path, files: check_same_files(path, files, run.record, run.out)) if resumed and not run.skip_bad else None
    dls = image_dls(run.data, bs=per_rank_bs(p, s['bs']), seed=seed if p is None or seed is None else seed + p.rank,
                    num_workers=num_workers, device=device, skip_bad=run.skip_bad,
                    augment=s['augment'], pad=s['pad'], flip=s['flip'], cutout=s['cutout'], size=s['size'],
                    valid_pct=run.valid_pct, max_memory=run.max_memory, valid_files=valid_files, jitter=s['jitter'],
                    check_files=check_files)
    if p is not None and len(dls.train_ds) // p.size < dls.train.bs:  # every rank, the same answer: none waits
        raise RecipeError(f"batch size {s['bs']} ({dls.train.bs} per process) is larger than the {len(dls.train_ds) // p.size} "
                          f"training images each of the {p.size} processes gets: choose at most {len(dls.train_ds) // p.size * p.size}")
    if resumed:  # its own images (checked again now that the bad files it skipped are known), found where they are now
        check_same_data(dls, run.record, run.out)
        if run.record.get('data'): run.record['data']['folder'] = str(Path(dls.path).resolve())
    if run.rank0 and dls.valid_files and run.record is None:
        write_json(run.out/'split.json', dict(valid_pct=dls.valid_pct, seed=SPLIT_SEED,
                                              valid=[str(f.relative_to(dls.path)) for f in dls.valid_files]))
    return dls


def keep_freed_memory():
    """glibc returns every freed block over 32 MB to the OS (mmap/munmap), and a CPU training step frees and
    reallocates activations that size: re-faulting them costs ~20% of the fast net's step time here. Heap only, no
    trimming: the process keeps its peak memory until it exits."""
    try: libc = ctypes.CDLL('libc.so.6')
    except OSError: return  # not glibc: nothing to do
    libc.mallopt(-4, 0)         # M_MMAP_MAX = 0: no mmap for large blocks
    libc.mallopt(-1, 2**30)     # M_TRIM_THRESHOLD = 1 GiB: keep freed heap memory


def check_same_files(path, files, record, out):
    """A resumed run's images, by the files found, before any is decoded: a folder of other images is refused at once
    (not with skip_bad, whose run left the files it skipped out of its list: `check_same_data` checks after decoding)"""
    was = record.get('data') or {}
    if was.get('file_list_sha256') in (None, file_list_sha256(path, files)): return
    n_was, classes = was.get('n_train', 0) + was.get('n_test', 0), sorted({Path(f).parent.name for f in files})
    changes = [f"{n_was} images -> {len(files)}"] if 'n_train' in was and n_was != len(files) else []
    changes += [f"classes {was['classes']} -> {classes}"] if was.get('classes') != classes else []
    raise other_images(path, out, changes)


def check_same_data(dls, record, out):
    "A resumed run must see the images it started with: the same file list (its fingerprint), hence the same split"
    was, now = record.get('data') or {}, data_info(dls)
    if was.get('file_list_sha256') in (None, now['file_list_sha256']): return
    changes = [f"{k} {was[k]} -> {now[k]}" for k in ('n_train', 'n_test') if was.get(k) != now[k]]
    changes += [f"classes {was['classes']} -> {now['classes']}"] if was.get('classes') != now['classes'] else []
    raise other_images(dls.path, out, changes)


def other_images(path, out, changes) -> RecipeError:
    return RecipeError(f"the images in {path} are not those {out} started with ({', '.join(changes) or 'the same counts, other files'}; "
                       "file list fingerprint differs): resuming would train on other images. Restore the folder or give --data "
                       "the run's own images, or start a new run")


def make_learner(dls, width=None, wd=None, path='.', settings=None) -> Learner:
    """A fastai `Learner` for a profile's `settings` (default: the seed profile's) with the given width and wd:
    the net (initialised by its own `initialize`: the fast net whitens the training images), loss, optimizer and
    callbacks. channels_last always; the precision of `choose_precision` (bf16 or fp16 mixed on CUDA; bf16 autocast on
    CPUs with bf16 instructions)."""
    s = dict(settings or SEED_PROFILE) | {k: v for k, v in dict(width=width, wd=wd).items() if v is not None}
    model = make_model(s['arch'], len(dls.vocab), s['width'], **net_shape(s))
    model.initialize(s, lambda: training_images(dls))
    cbs = [PlainTensors()]
    if s['lookahead']: cbs.append(Lookahead())
    if s['whiten_bias_epochs']: cbs.append(WhitenBias(s['whiten_bias_epochs']))
    cbs += [FreezeGroup(group, epoch) for group, epoch in enumerate(s['freeze_at'] or (), 1)]
    if s['flip'] == 'alternate': cbs.append(AlternatingFlip())
    if s['clean_last']: cbs.append(CleanLast(s['clean_last']))
    if s['small_early']: cbs.append(SmallEarly(*small_stages(s['small_early']), by=s['small_by']))
    for key, cb in (('prune_easy', PruneEasy), ('self_distill', SelfDistill)):  # each keeps a value per training image
        if not s[key]: continue
        if getattr(dls.train, 'images', None) is None:
            raise RecipeError(f"{key} {s[key]} needs the training images in memory (augment 'batch', within max_memory)")
        cbs.append(cb(s[key]))
    if s['test_every'] != 1: cbs.append(SkipTestPasses(s['test_every']))
    cuda = dls.device.type == 'cuda'
    if dls.device.type == 'mps':  # not verified on MPS: fp32 there
        if s['precision'] not in ('auto', 'fp32'): raise RecipeError(f"precision {s['precision']!r} on MPS: the recipe trains in fp32 there (--precision auto or fp32)")
        precision, reason = 'fp32', 'MPS: fp32 (mixed precision not verified there)'
    else:
        try: precision, reason = choose_precision(s['precision'], cuda)
        except ValueError as e: raise RecipeError(str(e)) from None
    if precision == 'bf16' and not cuda:
        cbs.append(CPUAutocast())
        if shifts_pay(s['compile']) and shift_weight_grads(model):
            reason += "; weight gradients of maps of 7x7 or less by shifted products (AMX)"
        if s['opt'] == 'muon': reason += "; Muon's orthogonalization in bf16"
    learn = RecipeLearner(dls, model, loss_func=CrossEntropyLossFlat(label_smoothing=s['label_smoothing']), metrics=accuracy,
                          wd=s['wd'], path=path, model_dir='.', cbs=cbs, **recipe_of(s).optimizer(s | dict(precision=precision)))
    # channels_last is ~1.5x faster on these CPUs too; on CUDA fastai's MixedPrecision autocasts
    learn.to_channelslast(use_amp=cuda and precision != 'fp32', amp_mode=precision if cuda and precision != 'fp32' else 'fp16')
    if cuda: torch.backends.cudnn.benchmark = True  # a few shapes (one per small_early stage, the full size, the test batches): cuDNN picks the fastest convolution once for each
    if s['compile']: model.compile()  # in place: the weights keep their names (checkpoints, safetensors)
    learn.precision = f"{precision} mixed (CUDA)" if cuda and precision != 'fp32' else {'bf16': 'bf16 autocast (CPU)', 'fp32': 'fp32'}[precision]
    learn.precision_reason = reason
    if not (IN_NOTEBOOK or sys.stdout.isatty()):
        learn.remove_cb(ProgressCallback); learn.logger = print_row
    return learn


def net_shape(s) -> dict:
    "What the net is built from besides its arch and width: its activation, and the fast net's widths and depth"
    return dict(act=s['act']) | (dict(widths=s['widths'], depth=s['depth'], bn_mom=s['bn_mom']) if s['arch'] == 'fast' else {})  # act None: the net's own


class RecipeLearner(Learner):
    """fastai's `Learner`, calling at each event only the callbacks that handle it, in the same order: fastai sorts
    every callback and looks up each one's method at every event (about 10 a step), which costs about a millisecond a
    step on a CPU core (bench/step_overhead.py). The lists are kept per event and set of callbacks."""
    def __call__(self, event_name):
        if not isinstance(event_name, str): return super().__call__(event_name)
        key = (event_name, *map(id, self.cbs))  # the lists hold their callbacks, so no id is reused while kept
        cbs = self.__dict__.setdefault('_event_cbs', {}).get(key)
        if cbs is None:
            if not hasattr(event, event_name): raise Exception(f'missing {event_name}')
            if len(self._event_cbs) > 1000: self._event_cbs.clear()
            # after_fit goes to every callback: fastai's Callback resets its `run` flag there
            cbs = self._event_cbs[key] = list(self.cbs.sorted('order')) if event_name == 'after_fit' else self.ordered_cbs(event_name)
        for cb in cbs: cb(event_name)
    def __getstate__(self): return {k: v for k, v in super().__getstate__().items() if k != '_event_cbs'}  # fastai drops its lock
    def one_batch(self, *args):
        try: super().one_batch(*args)
        except BaseException:  # whatever stopped the batch (Ctrl-C in lr_find's before_batch, the NaN check, a Cancel*
            for cb in reversed(self.cbs):  # of fastai's or a callback's): CPUAutocast must not leave autocast on in this process
                if isinstance(cb, CPUAutocast): cb.leave()
            raise
    def _do_fit(self):
        """fastai's, from the first epoch not done (its SkipToEpoch, from `fit(start_epoch=)`): a resumed run's callbacks
        see the epochs it trains. fastai's own loop gives each skipped epoch its events and an empty row of metrics, which
        its TrackerCallbacks (EarlyStoppingCallback, SaveModelCallback) index; they now track the epochs since the resume"""
        start = max((cb._skip_to for cb in self.cbs if isinstance(cb, SkipToEpoch)), default=0)
        for epoch in range(start, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, 'epoch', CancelEpochException)
    def gather_args(self) -> dict:
        """What fastai's WandbCallback logs as the config: nothing more, since `logger_cbs` gives wandb.init the run's
        settings. fastai's own walks the Learner's arguments down to every dataset item, and fails on Python 3.11's Paths"""
        return {}


# CPU flags of bf16 instructions that oneDNN uses for bf16 convolutions and matrix products: AMX (Intel Sapphire
# Rapids and later), AVX512_BF16 (Intel Cooper Lake; AMD Zen 4 and Zen 5), AVX-NE-CONVERT (newer Intel cores).
# Without them (Ice Lake, Skylake, Zen 3) oneDNN emulates bf16 and autocast is slower than fp32.
BF16_FLAGS = ('amx_bf16', 'avx512_bf16', 'avx_ne_convert')


def cpu_flags() -> set:
    "The CPU's feature flags, from /proc/cpuinfo (empty where there is none)"
    try: return {f for l in open('/proc/cpuinfo') if l.startswith('flags') for f in l.split(':', 1)[1].split()}
    except OSError: return set()


def shifts_pay(compiled=False) -> bool:
    """Whether the small maps' weight gradients by shifted products (recipe/model.py, SmallMapConv) pay on this CPU in
    bf16: where they were measured faster, an AMX CPU running the net uncompiled"""
    return 'amx_bf16' in cpu_flags() and not compiled


def choose_precision(precision='auto', cuda=False, flags=None) -> tuple:
    """('bf16'|'fp16'|'fp32', reason). A `precision` other than 'auto' is taken as given (fp16 only on CUDA). 'auto':
    on CUDA, bf16 mixed precision where the GPU has it (no loss scaling, so no host-device synchronisation per step),
    else fp16; on a CPU, bf16 autocast if it has one of BF16_FLAGS, else fp32 (bf16 would be emulated there)."""
    if precision not in PRECISIONS: raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == 'fp16' and not cuda: raise ValueError("precision fp16 needs a CUDA GPU: on a CPU choose bf16 or fp32")
    if precision != 'auto': return precision, 'chosen (--precision)'
    if cuda: return ('bf16', 'CUDA GPU with bf16') if torch.cuda.is_bf16_supported() else ('fp16', 'CUDA GPU without bf16')
    found = [f for f in BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
    if found: return 'bf16', f"the CPU has {', '.join(found)}: bf16 autocast"
    return 'fp32', f"the CPU has none of {', '.join(BF16_FLAGS)}: bf16 would be emulated, slower than fp32"


def training_images(dls, n=WHITEN_SAMPLE):
    """`n` training images as the model sees them (normalized, no augmentation), for the whitening init: `whiten_sample`'s
    draw of every class, from the split held in memory or (the per-item path) decoded from the dataset's items"""
    idx = whiten_sample([parent_label(f) for f in dls.train_ds.items], n)
    images = getattr(dls.train, 'images', None)
    images = images[idx.to(images.device)] if images is not None else torch.stack([dls.train_ds[i][0] for i in idx.tolist()])
    x = TensorImage(images).to(dls.device)
    for t in dls.train.after_batch.fs:
        if t.split_idx != 0: x = t(x)  # IntToFloatTensor, Normalize; not the training-only augmentation
    return x


def whiten_sample(labels, n=WHITEN_SAMPLE, seed=SPLIT_SEED) -> torch.Tensor:
    """Indices of about `n` items (each class's share rounded, at least one) drawn at random with `seed` from each class
    in proportion (all items when there are at most `n`). Not the first `n`: the items are sorted by class, and CIFAR-10's first 5,000 are
    its airplanes; airbench whitens on 5,000 images of every class."""
    if len(labels) <= n: return torch.arange(len(labels))
    g, by_class = torch.Generator().manual_seed(seed), {}
    for i, c in enumerate(labels): by_class.setdefault(c, []).append(i)
    picked = [torch.tensor(idx)[torch.randperm(len(idx), generator=g)[:max(1, round(n * len(idx) / len(labels)))]]
              for c, idx in sorted(by_class.items())]
    return torch.cat(picked).sort().values


def first_record(learn, run, fields) -> dict:
    """A new run's LRs (its recipe's `pick_lrs`: lr_find for the seed recipe, on rank 0 alone) and the record that
    starts its results.json: `fields`, the settings, the precision and why, the machine, the versions and the data"""
    s, p = run.settings, run.process
    s.update(on_rank0(p, lambda: recipe_of(s).pick_lrs(learn, s, run.out)))
    if run.rank0: print(recipe_of(s).lr_text(s), flush=True)
    return dict(fields, **s) | dict(seed=run.seed, device=str(learn.dls.device), precision_asked=s['precision'],
                precision=learn.precision, precision_reason=learn.precision_reason, world_size=p.size if p else 1,
                backend=p.backend if p else None, machine=machine_info(), versions=versions(),
                data=data_info(learn.dls) | dict(skip_bad=run.skip_bad),  # its lists leave out the files it skipped
                out=str(run.out), record_to=run.record_to)


def logger_cbs(names, run) -> list:
    """fastai's logging callback for each logger, writing into the run folder: TensorBoard event files in
    out/tensorboard (no model tracing: it fails under mixed precision), a W&B run under out/wandb
    (WANDB_MODE=offline needs no account). Rank 0 only; fastai's callbacks also log on rank 0 only."""
    cbs, out, record = [], run.out, run.record
    if 'tensorboard' in names:
        from fastai.callback.tensorboard import TensorBoardCallback
        cbs.append(TensorBoardCallback(log_dir=out/'tensorboard', trace_model=False, log_preds=False))
    if 'wandb' in names:
        import wandb
        from fastai.callback.wandb import WandbCallback
        try: wandb.init(project=os.environ.get('WANDB_PROJECT', 'recipe'), name=out.name, dir=out,
                        config={k: v for k, v in record.items() if not isinstance(v, (list, dict))},
                        resume='allow', id=record.get('wandb_id'))
        except wandb.errors.UsageError as e:
            raise RecipeError(f"--log wandb: {e} (or set WANDB_MODE=offline to log to {out/'wandb'} without an account)") from None
        record['wandb_id'] = wandb.run.id  # a resumed run continues the same W&B run
        cbs.append(WandbCallback(log_preds=False, log_model=False))
    return cbs


def fit_and_save(learn, run, t0, user_cbs=()):
    """Fit with checkpoints and the run record after every epoch, then `final_stage`. In a distributed run every rank
    fits; rank 0 alone records and, after the fit, does the final stage. `user_cbs`: the caller's callbacks and the
    loggers', for the fit"""
    s, p, out = run.settings, run.process, run.out
    checkpoint = Checkpoint(out/CHECKPOINT, run_config(run, learn.dls), run.ckpt, p)
    keep = KeepTestLogits()
    cbs = [StopOnNaN(p), checkpoint, keep] + ([DDPTrainer(p)] if p else []) + list(user_cbs)
    if run.rank0:
        run_record = RunRecord(run.record, out/'metrics.csv', [out/'results.json', *run.record['record_to']], t0, run.start_epoch)
        cbs += [run_record, ExpectedDuration(recipe_of(s).CPU_ADVICE)]
    try: recipe_of(s).fit(learn, s, cbs=cbs, start_epoch=run.start_epoch)
    except (KeyboardInterrupt, RecipeError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not lost_process(p, e): raise
        raise RecipeError(said(stopped(run, checkpoint, run_record if run.rank0 else None, e))) from None
    if run.rank0:
        try: final_stage(learn, run, run_record, checkpoint, keep)
        except KeyboardInterrupt:  # every epoch is kept: a resume does the final stage again
            despite_interrupts(lambda: run_record.save(stopped='interrupted in the final stage'))
            raise RecipeError(said(f"stopped (interrupted) in the final stage; the checkpoint after epoch {checkpoint.saved_epoch} of "
                                   f"{s['epochs']} is kept in {out}; finish with: {resume_command(run)}")) from None
    leave_together(p)


def despite_interrupts(f):
    """f() to its end though Ctrl-C or SIGTERM comes again meanwhile (torchrun sends SIGTERM to the other ranks when one
    stops, maybe while they note why): what a stopped run keeps and says is not cut off by the signal after it. `f` must
    bear being run again from its start (an atomic write; `stop_message`)"""
    while True:
        try: return f()
        except KeyboardInterrupt: pass


last_stop = None  # what the last run stopped in this process said: recipe/__main__.py says it again if a signal cuts it off


def said(message: str) -> str:
    "A stopped run's message, kept (`last_stop`) until the process has said it: the teardown after it can be interrupted too"
    global last_stop
    last_stop = message
    return message


def stopped(run, checkpoint, run_record, e) -> str:
    """A run stopped in its fit by `e`: rank 0's record notes why, and the message says what is kept (rank 0, or another
    rank that lost a process, maybe rank 0; the others say only that they stopped)"""
    p, lost = run.process, isinstance(e, RuntimeError)
    why = ('interrupted' if isinstance(e, KeyboardInterrupt) else str(e) if isinstance(e, RecipeError) else
           f"lost another process of the run (this is rank {p.rank} of {p.size}): {str(e).splitlines()[0]}")
    if run_record: despite_interrupts(lambda: run_record.save(stopped=why))
    if not (run.rank0 or lost):  # the command too, in case rank 0 is gone without a word (killed)
        return f"stopped ({why}) on rank {p.rank} of {p.size}; rank 0 says what is kept (resume with: {resume_command(run)})"
    return despite_interrupts(lambda: stop_message(run, checkpoint, why))


def stop_message(run, checkpoint, why) -> str:
    """What a run stopped in its fit says (rank 0; another rank when it lost a process, maybe rank 0): the checkpoint it
    keeps, by the epoch the file holds where this process sees it (an interrupt can land between its rename and
    `saved_epoch`), else by its own count. A new run with none has nothing to resume: rank 0 gives its folder back, as
    for a run stopped in its setup"""
    out, on_disk = run.out, checkpoint_epoch(run.out)  # 0: no file here; None: one that cannot be read back
    if on_disk is None and not checkpoint.saved_epoch:
        return f"stopped ({why}). {out/CHECKPOINT} cannot be read back: try --resume {out}, else start the run again"
    if done := on_disk or checkpoint.saved_epoch:
        return (f"stopped ({why}). The checkpoint after epoch {done} of {run.settings['epochs']} is kept in {out}; "
                f"resume with: {resume_command(run)}")
    if run.ckpt is not None or not run.rank0: return f"stopped ({why}). No checkpoint was saved."
    release(out, run.made)
    try: left = out.exists() and any(out.iterdir())  # what a callback of the user's wrote there is the user's
    except OSError: left = False
    return f"stopped ({why}). No checkpoint was saved; " + (f"the run's own files are removed from {out}, which keeps what "
                                                            "else was written there." if left else "the run folder is given back.")


def resume_command(run) -> str: return f"{launch_command(run.process)} -m recipe train --resume {run.out}"


def run_config(run, dls) -> dict:
    "What a resume needs, kept in the checkpoint: the settings (with the LRs) and the data options, the data as an absolute path"
    return dict(run.settings, data=str(Path(dls.path).resolve()), seed=run.seed, skip_bad=run.skip_bad,
                world_size=run.process.size if run.process else 1, valid_pct=run.valid_pct, max_memory=run.max_memory)


def final_stage(learn, run, run_record, checkpoint, keep):
    """After the fit, on rank 0 alone: the test logits with TTA (part of the reported accuracy and of the wall time),
    the weights, the plots, the record and the model card, then `complete`: a run cut short before it resumes to
    finish this stage; last, report.html"""
    s, record, out = run.settings, run.record, run.out
    with alone():  # rank 0 by itself from here: fastai must not gather
        plain = keep.result(len(learn.dls.valid_ds), learn.model)
        if plain is None:  # other weights than the last epoch's test pass saw (a callback loaded them), or no pass (resumed)
            plain, targets = test_logits(learn)
            record.update(test_loss=float(learn.loss_func(plain, targets)), test_accuracy=accuracy_of(plain, targets))
        with timed(run, 'tta'): logits, targets = test_logits(learn, s['tta'], s['tta_below'], plain)
        with timed(run, 'imports'):  # what only this stage uses (class_metrics, save_run_plots): ~5 s of a CPU, itemised
            import fastai.vision.learner, torchmetrics
        if s['tta']:
            record.update(test_accuracy_no_tta=record['test_accuracy'], test_loss_no_tta=record['test_loss'])
            record['test_loss'] = float(learn.loss_func(logits, targets))
            record['test_accuracy'] = float((logits.argmax(1) == targets).float().mean())
            print(f"with {tta_words(s['tta'], s['tta_below'])}: test accuracy {record['test_accuracy']:.4f} "
                  f"(without: {record['test_accuracy_no_tta']:.4f})", flush=True)
        classes = class_metrics(logits.cpu(), targets.as_subclass(torch.Tensor).cpu(), list(learn.dls.vocab))
        record.update(ece=classes['ece'], per_class=classes['per_class'])  # of the reported accuracy's logits
        mean, std = learn.dls.stats
        meta = dict(format=MODEL_FORMAT, classes=list(learn.dls.vocab), arch=s['arch'], width=s['width'], **net_shape(s), tta=s['tta'],
                    tta_below=s['tta_below'], n_out=len(learn.dls.vocab), size=s['size'], mean=mean, std=std,
                    profile=s['profile'], parameters=sum(w.numel() for w in learn.model.parameters()), test_accuracy=record['test_accuracy'], test_accuracy_no_tta=record.get('test_accuracy_no_tta'),
                    data_sha256=record['data']['file_list_sha256'], git_commit=record['git_commit'])
        with timed(run, 'weights'): save_weights(learn.model, out/'model', meta); checkpoint.whole_history(learn.recorder)
        with timed(run, 'plots'): save_run_plots(learn, out, logits, targets)
    run_record.save(stopped=None)  # the wall time, for the card
    with timed(run, 'card'): write_model_card(out, record, meta)
    record['phases'] = dict(record.get('phases', {}), **run.phases)  # a resumed run: this process's
    run_record.save(complete=True)  # a run cut short before this resumes to finish the stage
    write_run_page(out)  # report.html, from what is on disk; `recipe show` makes it again if this is cut short
    print(f"test accuracy {record['test_accuracy']:.4f}  ({record['wall_seconds']:.0f} s)  run folder: {out}", flush=True)


@torch.no_grad()
def test_logits(learn, level=0, below=None, plain=None) -> tuple:
    """(logits, targets) of the whole test set with `tta_logits` at `level` (and `below`), in the loader's order.
    `plain`: the test set's plain logits if known (`KeepTestLogits`): then only the extra views are computed"""
    learn.model.eval()
    autocast = torch.autocast(learn.dls.device.type, dtype=torch.float16 if learn.precision.startswith('fp16') else torch.bfloat16,
                              enabled=not learn.precision.startswith('fp32'))
    logits, targets, seen = [], [], 0
    for x, y in learn.dls.valid:
        known = None if plain is None else plain[seen:seen + len(y)].to(x.device)
        with autocast: logits.append(tta_logits(learn.model, x.as_subclass(torch.Tensor), level, below, known).float())  # as in
        # training (PlainTensors): through fastai's TensorImage a compiled net lost its first conv in the mirrored view
        targets.append(y); seen += len(y)
    return torch.cat(logits), torch.cat(targets)


def accuracy_of(logits, targets) -> float:
    "The share of right answers, exactly (count / n, as fastai's metric totals give it): not a float32 mean"
    return int((logits.argmax(1) == targets).sum()) / len(targets)


def end_loggers(names):
    if 'wandb' in names:
        import wandb
        if wandb.run is not None: wandb.finish()
