"""What a run leaves behind: per-epoch metrics (CSV + JSON written as it goes), weights, and where it ran."""
import csv, hashlib, json, math, os, platform, subprocess, tempfile
from pathlib import Path

from .config import ECE_BINS
from .errors import RecipeError
from .space_app import markdown_text

__all__ = ['MODEL_FORMAT', 'card_rows', 'model_card', 'read_record', 'finished_run', 'model_files', 'check_new_file', 'check_new_folder', 'check_eval_data', 'check_eval_out', 'cell', 'write_model_card', 'atomic_write', 'write_json', 'write_text', 'write_csv', 'machine_info', 'versions', 'git_commit', 'data_info', 'TABLE_HEADER', 'print_row', 'save_weights']

MODEL_FORMAT = 3  # model.json: 1 (no `format` key): before the model card; 2: with format, accuracy, data fingerprint, commit;
                  # 3: with the net's act, widths, depth (a reader of 2 would build another net and load its weights)


def atomic_write(path, write, mode='w'):
    """Write `path` through `write(file)` into a temporary file beside it, then rename: a kill leaves the old file or the
    new one, never half of one. A full disk (or any OSError) is a RecipeError naming the file; nothing partial is left"""
    path, tmp = Path(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')  # a read-only folder fails here
        try: os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it 0600: give it the mode of any new file, as the PNGs beside it
        except OSError: pass  # a file system without modes (vfat, some network mounts)
        with os.fdopen(fd, mode, **({'newline': ''} if 'b' not in mode else {})) as f: write(f); f.flush(); os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp: Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError): raise RecipeError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def umask() -> int:
    "The process's umask: from /proc on Linux, else by setting it and back (which other threads could see for an instant)"
    try:
        with open('/proc/self/status') as status: return int(next(l.split()[1] for l in status if l.startswith('Umask:')), 8)
    except (OSError, StopIteration): mask = os.umask(0o022); os.umask(mask); return mask


def read_record(run) -> dict:
    "A run folder's results.json; a folder without one is not a run folder"
    run = Path(run)
    if not (run/'results.json').is_file(): raise RecipeError(f"{run} is not a run folder: it has no results.json")
    try: return json.loads((run/'results.json').read_text())
    except ValueError as e: raise RecipeError(f"{run/'results.json'} is not JSON: {e}") from None


def finished_run(run) -> dict:
    "The results.json of a run folder that holds its weights: a folder without them is a run that did not finish"
    run = Path(run)
    if not run.is_dir(): raise RecipeError(f"no such run folder: {run}")
    record = read_record(run)
    if not (run/'model.safetensors').is_file():
        raise RecipeError(f"{run} has no model.safetensors: the run did not finish (resume it with --resume {run})")
    return record


PICKLED = ('.pt', '.pth', '.pkl', '.pickle')  # what torch.save and fastai's export write: loading one runs its pickle


def model_files(path) -> tuple:
    "(weights, description) of the model a run saved: a run folder's, or a model.safetensors and the model.json beside it"
    path = Path(path)
    if path.suffix.lower() in PICKLED and not path.is_dir():
        raise RecipeError(f"{path} is a pickle-based file and is never loaded (unpickling can run any code): give the run "
                          f"folder or its model.safetensors")
    if path.is_dir():
        if (path/'results.json').is_file() and not (path/'model.safetensors').is_file(): finished_run(path)  # it did not finish
        path = path/'model.safetensors'
    meta = path.with_suffix('.json')
    for p in (path, meta):
        if not p.is_file(): raise RecipeError(f"no such file: {p} (expected a run folder or its model.safetensors + model.json)")
    return path, meta


def check_new_file(path) -> Path:
    "A file to be written after the work (`predict --csv`): refused before it if it is a folder or its folder is missing"
    path = Path(path)
    if path.is_dir(): raise RecipeError(f"{path} is a folder: give a file name")
    if not path.parent.is_dir(): raise RecipeError(f"no such folder for {path}: {path.parent}")
    return path


def check_new_folder(folder) -> Path:
    "A folder to be made by the work (`export --space`): refused before it if it holds anything or its parent is missing"
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())): raise RecipeError(f"{folder} already exists and is not an empty folder: give a new one")
    if not folder.parent.is_dir(): raise RecipeError(f"no such folder: {folder.parent}")
    return folder


def check_eval_data(folder, data):
    "`evaluate`'s --data moves the run's own test set: with a FOLDER to score it means nothing, so it is refused"
    if folder is not None and data is not None:
        raise RecipeError(f"--data {data} is for the run's own test set, moved; {folder} is scored as it is: give one")


def check_eval_out(out) -> Path:
    """A folder for an evaluation's files: new, empty, or an earlier evaluation's (its files are replaced); a file or
    a folder of other files (a run folder: its own plots have the same names) is refused before any work"""
    out = Path(out)
    if out.exists() and not out.is_dir(): raise RecipeError(f"--out {out} is a file: give a folder")
    if out.is_dir() and any(not f.name.startswith('.') for f in out.iterdir()) and not (out/'metrics.json').is_file():
        raise RecipeError(f"--out {out} holds files that are not an earlier evaluation's: give a new or empty folder")
    return out


def write_json(path, obj):
    "Write `obj` as JSON to `path` atomically"
    atomic_write(path, lambda f: json.dump(obj, f, indent=1))


def write_text(path, text: str):
    "Write `text` to `path` atomically"
    atomic_write(path, lambda f: f.write(text))


def machine_info() -> dict:
    import torch  # here, not at the top: `runs` and `show` read records without torch
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    return {'cpu': cpu, 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'gpu': gpu}


def versions() -> dict:
    import fastai, torch
    from importlib.metadata import PackageNotFoundError, version  # not `import albumentations` (~1 s) only to ask
    try: albumentations = version('albumentations')
    except PackageNotFoundError: albumentations = None  # installed under another name (a fork): as albumentations' own 'unknown'
    return {'python': platform.python_version(), 'torch': torch.__version__, 'fastai': fastai.__version__,
            'albumentations': albumentations}


def git_commit() -> str:
    "HEAD of the repository holding this package, '+dirty' when the package's code differs from it; None outside git"
    here = Path(__file__).parent
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', '.', '../setup.cfg'], cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ('+dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError): return None


def data_info(dls) -> dict:
    "Folder, image counts and fingerprints (`file_list_sha256`) of the data a run used: all its images, its test images"
    root = Path(dls.path)
    return {'folder': str(root.resolve()), 'n_train': len(dls.train_ds), 'n_test': len(dls.valid_ds),
            'classes': list(dls.vocab), 'file_list_sha256': file_list_sha256(root, dls.train_ds.items + dls.valid_ds.items),
            'test_list_sha256': file_list_sha256(root, dls.valid_ds.items)}


def file_list_sha256(root, files) -> str:
    "The fingerprint of a data folder's images: sha256 of their sorted paths relative to it"
    return hashlib.sha256('\n'.join(sorted(str(Path(f).relative_to(root)) for f in files)).encode()).hexdigest()


def write_csv(path, header, rows):
    "Write a CSV atomically"
    def write(f): w = csv.writer(f); w.writerow(header); w.writerows(rows)
    atomic_write(path, write)


TABLE_HEADER = ['epoch', 'train_loss', 'test_loss', 'test_accuracy', 'time']


def print_row(row):
    """One line per epoch, flushed: readable in a log file (no progress bars, no carriage returns). Epochs count from 1,
    as in metrics.csv, results.json and the messages (fastai's row counts from 0)"""
    if len(row) < 3: return  # an epoch skipped on resume has no metrics
    if isinstance(row[0], int): row = [row[0] + 1, *row[1:]]
    cells = ['-' if isinstance(v, float) and math.isnan(v) else f'{v:.6f}' if isinstance(v, float) else str(v) for v in row]  # NaN: no test pass
    print('  '.join(f'{c:>13}' for c in cells), flush=True)


def save_weights(model, path, meta: dict):
    "Weights as safetensors (loading them never unpickles anything) plus a JSON of what is needed to use them"
    from safetensors.torch import save
    path = Path(path)
    state = save({k: v.contiguous() for k, v in model.state_dict().items()})  # bytes: written atomically like the rest
    atomic_write(path.with_suffix('.safetensors'), lambda f: f.write(state), 'wb')
    write_json(path.with_suffix('.json'), meta)


def tta_words(level, below=None) -> str:
    "A run's TTA as its output, card and evaluation name it: 'TTA (level 2, images below 0.8 confidence)'"
    return f"TTA (level {level}" + (f", images below {below} confidence" if below else '') + ')'


def depth_text(depth) -> str: return '/'.join(map(str, depth)) if isinstance(depth, (list, tuple)) else str(depth)  # convs a group


def last_test_accuracy(record):
    "An incomplete run's last test pass's accuracy: without TTA, even when it stopped in its final stage after the TTA"
    return record.get('test_accuracy_no_tta', record.get('test_accuracy'))


def counted(n, one, many=None) -> str: return f"{n} {one if n == 1 else many or one + 's'}"


def card_rows(record: dict, meta: dict, text=str) -> list:
    """(name, value) rows of what a run's model is, what it was trained on and how, how well it did: for the card and
    report.html. `text`: how the class names are written (`markdown_text` for Markdown; the page escapes its own)"""
    d, acc, no_tta = record['data'], meta['test_accuracy'], meta.get('test_accuracy_no_tta')
    m = record.get('machine', {})
    where = f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores)" + (f", GPU {m['gpu']}" if m.get('gpu', 'none') != 'none' else '')
    lrs = (f"LRMIN {record['lr_min']:.2e}, LRMAX {record['lr_max']:.2e}" if record.get('opt') == 'adam' and record.get('lr_min')
           else f"LR {record['lr_max']:.3g} (fixed schedule)")
    rows = [('Data', f"`{d['folder']}`: {d['n_train']:,} training and {d['n_test']:,} test images; file list sha256 `{d['file_list_sha256'][:16]}...`"),
            ('Classes', f"{len(meta['classes'])}: {', '.join(map(text, meta['classes']))}"),
            ('Input', f"RGB, {meta['size']}x{meta['size']} (other sizes are resized), normalised with mean {list(meta['mean'])} and std {list(meta['std'])}"),
            ('Model', f"{'custom ResNet-9' if meta['arch'] == 'resnet' else 'airbench-style net'} (`{meta['arch']}`), width {meta['width']}, "
                      f"{meta['act'] + ' activation, ' if meta.get('act') else ''}"
                      f"{'groups ' + '/'.join(map(str, meta['widths'])) + ', ' if meta.get('widths') else ''}"
                      f"{depth_text(meta.get('depth', 2)) + ' convs a group, ' if meta.get('depth', 2) != 2 else ''}"
                      f"{meta.get('parameters', 0):,} parameters"),
            ('Training', f"profile `{record['profile']}`: {counted(record['epochs'], 'epoch')}, batch {record['bs']}, optimizer {record['opt']}, "
                         f"{lrs}, precision {record.get('precision')}, " +
                         ('no seed (not repeatable)' if record.get('seed') is None else f"seed {record['seed']}") +
                         f", {counted(record.get('world_size', 1), 'process', 'processes')}"),
            ('Test accuracy', f"{acc:.2%}" + (f" with {tta_words(meta['tta'], meta.get('tta_below'))}, {no_tta:.2%} without" if no_tta is not None else ' (no TTA)')),
            *([('Per class', 'accuracy (recall) of each class: ' + ', '.join(f"{text(r['class'])} {r['recall']:.1%}" for r in record['per_class'])),
               ('Calibration', f"expected calibration error {record['ece']:.4f} ({ECE_BINS} confidence bins; `reliability.png`)")]
              if 'per_class' in record else []),
            ('Wall time', f"{record['wall_seconds']:,.0f} s (data loading and the final stage included)"),
            ('Machine', f"{where}; {record.get('device')}; torch {record.get('versions', {}).get('torch')}, fastai {record.get('versions', {}).get('fastai')}"),
            ('Commit', f"`{record.get('git_commit')}`"),
            ('Command', f"`{record.get('command')}`")]
    return rows


def cell(v) -> str: return str(v).replace('|', r'\|')  # a Markdown table's cell: a | in a name or a code span is not a column


def model_card(record: dict, meta: dict, run: str) -> str:
    "A run's README.md: what the model is, what it was trained on and how, how well it did, and how to load it"
    table = '\n'.join(f'| {k} | {cell(v)} |' for k, v in card_rows(record, meta, markdown_text))
    return f"""# {markdown_text(Path(run).name)}: an image classifier trained with recipe

| | |
|---|---|
{table}

Per-epoch metrics: `metrics.csv`; the whole record: `results.json`; what happened: the PNG plots.

## Use it

```python
import recipe
model = recipe.load('{run}')                 # a torch nn.Module; reads model.safetensors + model.json, never a pickle
recipe.predict(model, ['image.png'])         # [(class, probability)] * 3, TTA as in the accuracy above
learn = recipe.load_learner('{run}')         # a fastai Learner: learn.predict('image.png'), get_preds, fine-tuning
```

```bash
python -m recipe predict {run} image.png                    # top 3 classes per image
python -m recipe evaluate {run} [FOLDER]                     # scores again: per class, confusion, calibration, top losses
python -m recipe export {run} --onnx model.onnx              # ONNX: RGB in [0, 1], normalisation inside
```
"""


def write_model_card(out, record: dict, meta: dict):
    write_text(Path(out)/'README.md', model_card(record, meta, str(out)))
