"""Scoring a run's model on labelled images: `recipe evaluate RUN [FOLDER]`, `recipe.evaluate(run, folder)`.

Without FOLDER it scores the run's own test set (the folder its record names, or `data` when it moved) with the run's
TTA, precision and test batches, so that its accuracy is the run's reported one. With FOLDER it scores any labelled
folder in a layout of recipe.folders.LAYOUTS (its test split; a folder of class folders: every image) holding the
run's classes. It writes metrics.json, per_class.csv, confusion_matrix.png (counts, and normalised by row),
reliability.png, top_losses.png and top_losses.csv into RUN/eval/<name>/ (or `out`) and prints a short table.
The metrics come from scikit-learn (per class, the confusion matrix) and torchmetrics (calibration): docs/choices.md.
"""
import json, warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, precision_recall_fscore_support

from .data import ImageCache, RecipeError
from .folders import find_layout, labelled_root, scan_split
from .inference import load, tta_logits
from .config import ECE_BINS
from .fonts import drawing
from .plots import plot_reliability, save_fig
from .record import check_eval_data, check_eval_out, file_list_sha256, finished_run, tta_words, write_csv, write_json

__all__ = ['evaluate', 'class_metrics']

TOP = 100      # rows of top_losses.csv (the 9 worst are drawn)


def evaluate(run, folder=None, data=None, out=None, skip_bad=False, device=None) -> dict:
    """The metrics of `run`'s model on `folder` (default: the run's own test set, in `data` if it moved), written to
    `out` (default RUN/eval/<folder's name, or 'test'>, -2, -3, ... for another folder of that name) and returned as a
    dict. `skip_bad`: unreadable images are skipped and counted instead of stopping. `device`: where the model runs
    (default cpu)"""
    run = Path(run)
    record = finished_run(run)
    if out is not None: check_eval_out(out)
    check_eval_data(folder, data)
    model = load(run)
    skipped = []
    def problem(msg):  # a bad image, or a folder where images belong, as training says it
        if not skip_bad: raise RecipeError(msg + " (pass --skip-bad to skip bad files)")
        skipped.append(msg)
    files, root = (labelled_files(Path(folder), model.classes, problem) if folder is not None else
                   own_test_files(run, record, data, model.classes, problem))
    name = 'test' if folder is None else Path(folder).resolve().name or 'folder'  # `..` names the folder it means
    out = Path(out) if out is not None else run/'eval'/'test' if folder is None else eval_folder(run, name, root)
    try: out.mkdir(parents=True, exist_ok=True)  # before the work
    except OSError as e: raise RecipeError(f"cannot write {out}: {e.strerror or e}") from None
    cache = ImageCache(files, model.size, problem)
    if not cache.files: raise RecipeError(f"no image in {root} could be read")
    if skipped: warnings.warn(f"skipped {len(skipped)} bad file(s) or folder(s) in {root}:\n  " + "\n  ".join(skipped[:20]))
    if folder is None: check_own_test_set(run, record, data, cache.files)
    targets = torch.tensor([model.classes.index(f.parent.name) for f in cache.files])
    plain, logits = run_logits(model, cache.arrays, record, device)
    smoothing = record.get('label_smoothing', 0.0)
    metrics = dict(run=str(run.resolve()), folder=str(root.resolve()), images=len(cache.files), skipped=len(skipped),
                   tta=model.tta, tta_below=model.tta_below, precision=precision_of(record, device),
                   **scores(plain, targets, smoothing, '_no_tta'), **scores(logits, targets, smoothing),
                   **class_metrics(logits, targets, model.classes))
    names = [str(f.relative_to(root)) for f in cache.files]
    write_json(out/'metrics.json', metrics)
    write_csv(out/'per_class.csv', ['class', 'precision', 'recall', 'f1', 'support'],
              [[r['class'], r['precision'], r['recall'], r['f1'], r['support']] for r in metrics['per_class']])
    save_plots(out, model.classes, logits, targets, cache, names)
    print_summary(metrics, out)
    return metrics


def eval_folder(run: Path, name: str, root: Path) -> Path:
    """RUN/eval/<name> for a labelled folder, or <name>-2, -3, ... when that one holds another folder's scores:
    evaluating the same folder again replaces its own. eval/test is the run's own test set's (its report and
    demo read it), so a folder called test starts at test-2"""
    for n in range(1, 1000):
        out = run/'eval'/(name if n == 1 else f'{name}-{n}')
        try: scored = json.loads((out/'metrics.json').read_text())['folder']
        except (OSError, ValueError, KeyError, TypeError): scored = None  # new, or no scores of any folder
        if scored == str(root.resolve()) or scored is None and out.name != 'test': return out
    raise RecipeError(f"{run/'eval'} holds 999 evaluations of folders named {name}: give --out")


def own_test_files(run: Path, record: dict, data, classes, problem) -> tuple:
    """(files, root): the test images the run was scored on, in its order, from `data` or the folder its record names,
    checked by their fingerprint before they are decoded (`check_own_test_set`; a run with --skip-bad: after)"""
    root = Path(data or record['data']['folder'])
    if data is not None and not root.is_dir(): raise RecipeError(f"--data {root} is not a folder")
    if not root.is_dir(): raise RecipeError(f"{run} was trained on {root}, which is not there: give the folder it moved to (--data)")
    train, test = find_layout(root, need_train=False)
    if train: files = scan_split(root/test, problem)
    else:
        split = run/'split.json'
        if not split.is_file(): raise RecipeError(f"{run} has no split.json: its held-out images of {root} are not known")
        files = sorted(root/f for f in json.loads(split.read_text())['valid'])
    check_classes(files, classes, root, missing_ok=True)  # a random split may hold out no image of a small class
    if not record['data'].get('skip_bad', True): check_own_test_set(run, record, data, files)
    return files, root/test if train else root


def check_own_test_set(run: Path, record: dict, data, files):
    """The run's own test images, `files`, are those it was tested on: the same list (the record's `test_list_sha256`;
    runs recorded before it: the same number). Listed, for a run without --skip-bad; else decoded, its skipped ones out"""
    was, root = record['data'], Path(data or record['data']['folder'])
    if 'test_list_sha256' not in was:
        if len(files) != was['n_test']: raise RecipeError(f"{root} has {len(files)} readable test images; {run} was tested on {was['n_test']}: not the same data")
    elif file_list_sha256(root, files) != was['test_list_sha256']:
        raise RecipeError(f"the test images in {root} are not those {run} was tested on (their file list's fingerprint differs): "
                          "give --data the run's own images; `evaluate RUN FOLDER` scores any labelled folder")


def labelled_files(folder: Path, classes, problem) -> tuple:
    "(files, root): a labelled folder's test split (train/ + test/, valid/ or val/) or, class folders only, all its images"
    root = labelled_root(folder)
    files = scan_split(root, problem)
    if not files: raise RecipeError(f"no images in {root}")
    check_classes(files, classes, root)
    return files, root


def check_classes(files, classes, root, missing_ok=False):
    "Every class folder in `root` is one of the run's, and (unless `missing_ok`) every class of the run has images there"
    found = {f.parent.name for f in files}
    unknown, missing = sorted(found - set(classes)), sorted(set(classes) - found)
    if unknown: raise RecipeError(f"{root} has classes the run does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    if missing and not missing_ok: raise RecipeError(f"{root} has no images of the run's classes {', '.join(missing)}")


def precision_of(record, device) -> str:
    "The run's autocast: bf16 where the run had it (CPU or CUDA), fp16 where it had it and this is a CUDA GPU, else fp32"
    precision = record.get('precision', 'fp32')
    if precision.startswith('bf16'): return 'bf16'
    return 'fp16' if precision.startswith('fp16') and torch.device(device or 'cpu').type == 'cuda' else 'fp32'


@torch.no_grad()
def run_logits(model, images: np.ndarray, record: dict, device=None) -> tuple:
    """(plain, TTA) logits of `images` (N, H, W, 3) uint8 as the run's final stage computes them: its test batches (twice
    its training batch per process), channels_last weights, its precision, x / 255 then normalised"""
    device = torch.device(device or 'cpu')
    model = model.to(device).to(memory_format=torch.channels_last)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (model.mean, model.std))
    bs = 2 * record.get('bs', 256) // record.get('world_size', 1)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision_of(record, device))
    plain, tta = [], []
    for i in range(0, len(images), bs):
        x = torch.from_numpy(images[i:i + bs]).permute(0, 3, 1, 2).contiguous().to(device).float().div_(255)
        x = (x - mean) / std
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            p = model(x).float()
            tta.append(tta_logits(model, x, model.tta, model.tta_below, p).float().cpu()); plain.append(p.cpu())
    return torch.cat(plain), torch.cat(tta)


def scores(logits, targets, smoothing, suffix='') -> dict:
    """Accuracy, the run's loss (cross-entropy with its label smoothing, as its reported test loss) and the NLL"""
    return {f'accuracy{suffix}': float((logits.argmax(1) == targets).float().mean()),
            f'loss{suffix}': float(F.cross_entropy(logits, targets, label_smoothing=smoothing)),
            f'nll{suffix}': float(F.cross_entropy(logits, targets))}


def class_metrics(logits, targets, classes) -> dict:
    """Per class precision, recall (the class's accuracy), F1 and support (scikit-learn); the confusion matrix, as counts
    and normalised by row; the expected calibration error over ECE_BINS confidence bins (torchmetrics)"""
    # here, not at the top: torchmetrics imports all of itself (torchvision and scipy.signal too), ~4 s that `predict`,
    # `serve` and a run stopped early need not pay
    from torchmetrics.functional.classification import multiclass_calibration_error
    n, preds = len(classes), logits.argmax(1).numpy()
    p, r, f1, support = precision_recall_fscore_support(targets.numpy(), preds, labels=range(n), zero_division=0)
    cm = confusion_matrix(targets.numpy(), preds, labels=range(n))
    ece = multiclass_calibration_error(logits.softmax(1), targets, num_classes=n, n_bins=ECE_BINS, norm='l1')
    return dict(ece=float(ece), per_class=[dict(zip(('class', 'precision', 'recall', 'f1', 'support'), (c, float(a), float(b), float(d), int(s))))
                                           for c, a, b, d, s in zip(classes, p, r, f1, support)],
                confusion_matrix=cm.tolist(), confusion_matrix_normalized=(cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(4).tolist())


def save_plots(out, classes, logits, targets, cache, names):
    "confusion_matrix.png (counts | normalised by row), reliability.png, top_losses.png (the 9 worst) and top_losses.csv"
    losses = F.cross_entropy(logits, targets, reduction='none')
    worst = losses.argsort(descending=True)[:TOP].tolist()
    with drawing([*classes, *(names[i] for i in worst[:9])]): draw_plots(out, classes, logits, targets, cache, names, losses, worst)


def draw_plots(out, classes, logits, targets, cache, names, losses, worst):
    cm = confusion_matrix(targets.numpy(), logits.argmax(1).numpy(), labels=range(len(classes)))
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(ax=axes[0], values_format='d', colorbar=False, xticks_rotation=45)
    ConfusionMatrixDisplay((cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(2), display_labels=classes).plot(
        ax=axes[1], values_format='.2f', colorbar=False, xticks_rotation=45)
    axes[0].set_title('counts'); axes[1].set_title('normalised by row (recall on the diagonal)')
    save_fig(out/'confusion_matrix.png', fig)
    plot_reliability(logits, targets); save_fig(out/'reliability.png')
    probs = logits.softmax(1)
    write_csv(out/'top_losses.csv', ['file', 'class', 'predicted', 'probability', 'probability_of_class', 'loss'],
              [[names[i], classes[targets[i]], classes[probs[i].argmax()], round(float(probs[i].max()), 4),
                round(float(probs[i, targets[i]]), 4), round(float(losses[i]), 4)] for i in worst])
    k = min(9, len(worst))
    fig, axes = plt.subplots(-(-k // 3), 3, figsize=(10, 3.6 * -(-k // 3)), squeeze=False)
    for ax in axes.flat: ax.axis('off')
    for ax, i in zip(axes.flat, worst[:k]):
        ax.imshow(cache.arrays[i])
        ax.set_title(f"{classes[targets[i]]} -> {classes[probs[i].argmax()]} {float(probs[i].max()):.2f}\n{names[i]}", fontsize=8)
    fig.suptitle('top losses: class -> predicted, probability; file'); save_fig(out/'top_losses.png', fig)


def print_summary(m: dict, out: Path):
    "The overall scores, then one row per class"
    tta = f" with {tta_words(m['tta'], m['tta_below'])}" if m['tta'] else ''
    print(f"{m['images']:,} images of {m['folder']}" + (f" ({m['skipped']} skipped)" if m['skipped'] else ''))
    print(f"accuracy {m['accuracy']:.4f}{tta}" + (f" (without: {m['accuracy_no_tta']:.4f})" if m['tta'] else '') +
          f"  loss {m['loss']:.4f}  NLL {m['nll']:.4f}  ECE {m['ece']:.4f}")
    print(f"{'class':>14} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}")
    for r in m['per_class']: print(f"{r['class']:>14} {r['precision']:>10.4f} {r['recall']:>10.4f} {r['f1']:>10.4f} {r['support']:>8}")
    print(f"written to {out}")
