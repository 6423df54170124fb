"""Command line: `recipe train|evaluate|show|runs|bench|report|predict|export|serve ...` or `python -m recipe ...` (fastcore's `call_parse`; `--help` on each)."""
import runpy, shlex, signal, sys, warnings
from pathlib import Path

import matplotlib
from fastcore.script import call_parse


__all__ = ['train', 'evaluate', 'show', 'runs', 'bench', 'report', 'predict', 'export', 'serve', 'main', 'run']


@call_parse
def train(data: str = None,     # data folder: train/ + test/ (CIFAR), train/ + valid/ or val/, or class folders only; default $RECIPE_DATA, else CIFAR-10's download
          profile: str = None,  # named settings (recipe/config.py): seed (the default), seed-w32, fast, quick, fast-sgd, fast7, fast-progressive, fast95, fast96
          epochs: int = None,    # epochs (default: the profile's; seed 24)
          bs: int = None,        # batch size (default: the profile's; seed 512)
          width: int = None,     # channels of the model's first layer (default: the profile's; seed 64, the original)
          augment: str = None,   # albumentations (per item) or batch (recipe/augment.py) (default: the profile's; seed albumentations)
          lr_min: float = None,  # LR at the start and end of the one cycle (seed profiles); default from lr_find
          lr_max: float = None,  # LR at the peak; seed profiles: default from lr_find; fast profiles: their fixed LR
          seed: int = None,      # random seed: makes a CPU run repeatable
          out: str = None,       # run folder; default runs/<timestamp>
          skip_bad: bool = False,  # skip unreadable images and bad folders (counted, with a warning) instead of stopping
          size: int = None,      # pixels: images are resized to SIZE x SIZE (default 32); padding and cutout scale with it
          valid_pct: float = None,  # one folder of class folders: the fraction held out for validation (default 0.2)
          max_memory: str = None,   # the most the decoded images may take in memory, e.g. 2GB (default: half the free memory)
          precision: str = None,    # auto (default): bf16/fp16 mixed on CUDA, bf16 autocast on a CPU with bf16 instructions, else fp32; or fp32, bf16, fp16 (CUDA)
          log: str = None,       # tensorboard, wandb, or tensorboard,wandb: log to the run folder (pip install -e ".[tensorboard]" / ".[wandb]")
          device: str = None,    # cpu, cuda, cuda:N or mps (default: fastai's choice: the first GPU if any)
          compile: bool = False, # torch.compile the net: a compile at the start for faster steps (bench/compile_speed.py)
          test_every: int = None,  # a test pass after every N-th epoch and after the last; 0: the last only (default: the profile's: every epoch, fast-progressive the last only)
          resume: str = None):  # run folder to continue from its last checkpoint, with its own settings
    "Train a profile (default: the seed recipe, the custom ResNet) on CIFAR-10 or any image folder; writes metrics, checkpoints, weights and plots to the run folder"
    options = dict(epochs=epochs, bs=bs, width=width, lr_min=lr_min, lr_max=lr_max, augment=augment, size=size,
                   precision=precision, compile=compile or None, test_every=test_every)  # the profile's settings they change
    if resume is None:  # checked first, before torch and fastai load (~7 s here): a bad option or data folder fails at once
        from .settings import check_seed, settings_for
        settings_for(profile, **options); check_seed(seed); check_data(data)
    from .run import train as _train
    _train(data=data, seed=seed, out=out, skip_bad=skip_bad, resume=resume, profile=profile, valid_pct=valid_pct,
           max_memory=max_memory, log=log, device=device, info=dict(command=command_line()), **options)


def check_data(data):
    "The data folder named (--data, else $RECIPE_DATA), if any: missing or in no layout, it is refused before torch loads"
    from .folders import data_folder, given_data
    if given_data(data) is not None: data_folder(given_data(data), from_env=data is None)  # its images: as they are read


def command_line() -> str:
    "The command as typed (main() has put `python -m recipe train` in argv[0])"
    return f"{sys.argv[0]} {shlex.join(sys.argv[1:])}".strip()


@call_parse
def bench(profile: str,          # benchmark profile (see recipe/bench.py); 'list' shows them
          seed: int = 0,         # random seed
          data: str = None,      # data folder; default $RECIPE_DATA
          width: int = None,     # override the profile's width
          epochs: int = None,    # override the profile's epochs
          bs: int = None,        # override the profile's batch size
          ablation: str = None,  # one change to the profile, or several joined by commas (ABLATIONS in recipe/config.py)
          augment: str = None,   # override the profile's augmentation path: albumentations or batch
          precision: str = None, # auto, fp32, bf16 or fp16 (CUDA only); default auto (see `train`)
          compile: bool = False, # torch.compile the net
          results: str = 'bench/results',  # folder for the result JSON
          runs: str = 'runs'):   # folder under which the run folder goes
    "Train a named profile (on the full data, for its numbers) and record the result as JSON in bench/results/"
    if profile != 'list':  # `bench list` needs no data; the names and the data are checked before torch loads
        from .settings import check_bench_names
        check_bench_names(profile, ablation); check_data(data)
    from .bench import run_profile
    run_profile(profile, seed=seed, data=data, width=width, epochs=epochs, bs=bs, results=results, runs=runs, ablation=ablation,
                augment=augment, precision=precision, compile=compile or None, command=command_line())


@call_parse
def report(results: str = 'bench/results',  # folder of result JSON files
           md: str = 'BENCHMARKS.md'):     # the Markdown file to write
    "Regenerate BENCHMARKS.md (table and plots) from the result JSON files"
    from .bench import write_report
    print(f'wrote {write_report(results, md)}')


@call_parse(pos=['run'])
def predict(run: str,            # run folder (or its model.safetensors)
            *images: str,        # image files or folders of images (PNG or JPEG, any size or mode)
            top: int = 3,        # how many classes to show per image, most likely first
            csv: str = None,     # also write the predictions to this CSV file
            device: str = None): # cpu, cuda, cuda:N or mps (default: cpu)
    "Print the top classes with probabilities for each image; a file that cannot be read gets a row with the reason, and the exit status is 1"
    from .errors import RecipeError
    from .folders import image_files
    import csv as csvlib
    from .record import check_new_file, model_files
    if isinstance(top, bool) or not isinstance(top, int) or top < 1: raise RecipeError(f"top must be a positive integer, got {top!r}")
    model_files(run); files = image_files(images)  # before torch and fastai load: a wrong path fails at once
    if csv: check_new_file(csv)
    from .inference import load, predict as _predict
    from .run import check_device
    device = check_device(device)
    model = load(run).to(device or 'cpu')
    k = min(top, len(model.classes))
    rows = [[str(f)] + ([x for cp in res for x in (cp[0], f'{cp[1]:.4f}')] + [''] if not isinstance(res, str) else [''] * 2 * k + [res])
            for f, res in zip(files, _predict(model, files, k))]
    for r in rows: print('  '.join(x for x in r if x) if r[-1] == '' else f'{r[0]}  error: {r[-1]}')
    if csv:  # a plain open: --csv /dev/stdout streams
        try:
            with open(csv, 'w', newline='') as f:
                w = csvlib.writer(f)
                w.writerow(['file'] + [x for i in range(1, k + 1) for x in (f'class{i}', f'prob{i}')] + ['error']); w.writerows(rows)
        except OSError as e: raise RecipeError(f"cannot write {csv}: {e.strerror or e}") from None
    failed = sum(r[-1] != '' for r in rows)
    if failed: raise RecipeError(f"{failed} of {len(rows)} files could not be read (their rows say why); the others were predicted")


@call_parse(pos=['run'])
def export(run: str,             # run folder (or its model.safetensors)
           onnx: str = None,     # write the model as ONNX to this file: RGB in [0, 1] in, logits out, normalisation and TTA inside
           check: str = None,    # a folder (or file) of images: compare onnxruntime with torch on up to 100 of them
           n: int = 100,         # how many images of --check to compare
           space: str = None):   # write a Hugging Face Space to this new folder: app.py, model.onnx, README.md, requirements.txt
    "Export a run's model as ONNX (needs pip install -e \".[onnx]\"), or as a Space; with --check, onnxruntime and torch must give the same top-1"
    from .errors import RecipeError
    from .folders import image_files
    from .record import check_new_file, check_new_folder, finished_run, model_files
    if bool(onnx) == bool(space): raise RecipeError("give one of --onnx FILE or --space FOLDER")
    if space and check: raise RecipeError("--check goes with --onnx: --space checks its model on the Space's examples itself")
    if space: finished_run(Path(run)); check_new_folder(space)  # before torch and fastai load: a wrong path fails at once
    else: model_files(run); check_new_file(onnx)
    if check: image_files([check])
    from .inference import export_onnx
    if space:
        from .serve import export_space
        found = export_space(run, space)
        print(f"wrote {space}: python {space}/app.py serves it here; push the folder to a Hugging Face Space (sdk: gradio)")
    else:
        found = export_onnx(run, onnx, [check] if check else None, n)
        print(f"wrote {onnx}")
    if found:
        print(f"onnxruntime vs torch on {found['images']} images: same top-1 on {found['same_top1']}, "
              f"max difference in probabilities {found['max_prob_diff']:.2e}")
        if found['same_top1'] != found['images']: raise RecipeError(f"onnxruntime and torch disagree on {found['images'] - found['same_top1']} image(s)")


@call_parse(pos=['run', 'folder'])
def evaluate(run: str,           # run folder
             folder: str = None, # a labelled folder with the run's classes (default: the run's own test set)
             data: str = None,   # the run's data folder, if it moved (without FOLDER)
             out: str = None,    # where the results go (default RUN/eval/<FOLDER's name, or test>; -2, -3, ... for another folder of that name)
             skip_bad: bool = False,  # skip unreadable images (counted) instead of stopping
             device: str = None):     # cpu, cuda, cuda:N or mps (default: cpu)
    "Score a run's model on its test set or a labelled folder: accuracy, loss, per class, confusion, calibration, top losses"
    from .folders import labelled_root
    from .record import check_eval_data, check_eval_out, finished_run
    finished_run(Path(run))  # before torch and fastai load: a wrong run folder, FOLDER or --out fails at once
    check_eval_data(folder, data)
    if folder is not None: labelled_root(Path(folder))
    if out is not None: check_eval_out(out)
    from .evaluation import evaluate as _evaluate
    from .run import check_device
    _evaluate(run, folder, data=data, out=out, skip_bad=skip_bad, device=check_device(device))


@call_parse(pos=['run'])
def show(run: str,               # run folder
         no_open: bool = False): # only write the page (by default it opens in the browser, where there is one)
    "Write the run's report.html (card, per-epoch table, plots, per-class table, command; one self-contained file) and open it"
    from .pages import show as _show
    _show(run, open_page=not no_open)


@call_parse(pos=['folder'])
def runs(folder: str = 'runs'):  # the folder holding the run folders
    "Every run in FOLDER side by side (date, profile, epochs, accuracy, wall time, machine, precision, status) and FOLDER/index.html"
    from .pages import runs as _runs
    _runs(folder)


@call_parse(pos=['run'])
def serve(run: str,              # run folder
          port: int = None,      # port (default: the first free one from 7860)
          host: str = '127.0.0.1'):  # address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 to be reached from others
    "A web page to try a run's model: upload images, see their top classes (as recipe predict), the run's card (needs pip install -e \".[demo]\")"
    from .address import free_port
    from .record import finished_run
    finished_run(Path(run)); free_port(host, port)  # checked before torch, fastai and gradio load (15 s on a slow machine);
    # the default port is picked again just before the page listens: another serve may take this one meanwhile
    from .serve import serve as _serve
    _serve(run, host=host, port=port)


COMMANDS = {'train': train, 'evaluate': evaluate, 'show': show, 'runs': runs, 'bench': bench, 'report': report, 'predict': predict, 'export': export, 'serve': serve}


def stop_on_sigterm(signum, frame): raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C


def main():
    matplotlib.use('Agg')  # plots go to files
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    warnings.formatwarning = lambda message, category, *args, **kwargs: f'warning: {message}\n'  # no source lines
    cmd = sys.argv[1] if len(sys.argv) > 1 else None
    if cmd in ('-h', '--help'): print(overview()); sys.exit(0)
    if cmd == '--version': print(f'recipe {version()}'); sys.exit(0)
    if cmd not in COMMANDS: sys.exit((f"unknown command {cmd!r}\n" if cmd else '') + overview())
    sys.argv = [f'{PROG} {cmd}'] + sys.argv[2:]
    return COMMANDS[cmd]


PROG = 'python -m recipe'  # as usage lines name the command


def version() -> str: return sys.modules[__package__].__version__  # recipe/__init__.py's: the package loads before its modules


def overview() -> str:
    "The usage line and what each command does: its docstring up to its first '; ' or '. ' outside parentheses"
    def first(doc, depth=0):
        for i, ch in enumerate(doc):
            depth += (ch == '(') - (ch == ')')
            if depth == 0 and doc[i:i + 2] in ('; ', '. '): return doc[:i]
        return doc.rstrip('.')
    return (f"usage: {PROG} {{{'|'.join(COMMANDS)}}} [options]  (--help after a command lists them)\n\n" +
            '\n'.join(f"  {name:9} {first(f.__doc__ or '')}" for name, f in COMMANDS.items()) + f"\n\n  --version  recipe {version()}")


def run():
    "The `recipe` console command (setup.cfg): runs recipe/__main__.py as a script, as `python -m recipe` does"
    global PROG; PROG = 'recipe'
    runpy.run_module('recipe', run_name='__main__', alter_sys=True)  # call_parse reads sys.argv only in a script's body
