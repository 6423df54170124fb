"""Showing a run to someone: `recipe serve RUN` (a Gradio page around the run's model, on this machine) and
`recipe export RUN --space DIR` (a folder to push as a Hugging Face Space: app.py, the model as ONNX, its card; no
pickle, no recipe package). Both pages are recipe/space_app.py's `page`; gradio is the `demo` extra."""
import csv, json, shutil
from pathlib import Path

from .data import RecipeError
from .evaluation import own_test_files, run_record
from .inference import export_onnx, load, predict
from .record import card_rows, write_json, write_text
from .space_app import MAX_FILE_SIZE, TOP, page

__all__ = ['serve', 'export_space', 'card', 'example_images']

EXAMPLE_LOSSES = 4  # of the top losses `recipe evaluate` wrote, as examples beside one test image per class
GRADIO = 'gradio==6.31.0'  # the version the suite drives in a browser (constraints.txt); a Space installs it too


def need_gradio():
    try: import gradio  # noqa: F401
    except ImportError: raise RecipeError('this needs gradio, the demo extra: pip install -e ".[demo]"') from None


def serve(run, host='127.0.0.1', port=None, block=True):
    """Serve `run`'s page on host:port (default port: gradio's, the first free from 7860). The run and gradio are checked
    before anything listens; the weights are loaded once. `block=False`: return the running gradio app (`.close()`)"""
    run = Path(run)
    record = run_record(run)
    need_gradio()
    model = load(run)
    examples = example_images(run, record, model.classes)
    demo = page(lambda paths: predict(model, paths, TOP), card(run, record, model.meta), examples, title=f"{run.name}: {title_of(model.meta)}")
    try: demo.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, prevent_thread_lock=not block,
                     allowed_paths=sorted({str(Path(p).parent) for p in examples}))
    except OSError as e: raise RecipeError(f"cannot serve on {host}:{port or 'a port from 7860'}: {e}") from None
    return demo


def title_of(meta) -> str: return f"{len(meta['classes'])} classes, {meta['test_accuracy']:.2%} test accuracy"


def card(run, record, meta) -> str:
    "The page's card, in Markdown: what the model knows, how well it did, on what data, when"
    rows = dict(card_rows(record, meta))
    keep = [(k, rows[k]) for k in ('Classes', 'Test accuracy', 'Per class', 'Data', 'Model', 'Training') if k in rows]
    keep.append(('Date', (record.get('started') or '?').replace('T', ' ')))
    return f"## The model: {Path(run).name}\n\n| | |\n|---|---|\n" + '\n'.join(f'| {k} | {v} |' for k, v in keep)


def example_images(run, record, classes) -> list:
    """The run's own test images when its data is there: the top losses `recipe evaluate RUN` wrote (its
    eval/test/top_losses.csv), then the first test image of each class. [] when the data has moved"""
    try: files, root = own_test_files(run, record, None, classes)
    except RecipeError: return []
    worst = []
    losses = Path(run)/'eval'/'test'/'top_losses.csv'
    if losses.is_file():
        with open(losses) as f: worst = [root/r['file'] for r in csv.DictReader(f)][:EXAMPLE_LOSSES]
    first = {}
    for f in files: first.setdefault(f.parent.name, f)
    return [str(f) for f in worst + [first[c] for c in classes if c in first] if f.is_file()]


def export_space(run, folder, examples=True) -> dict:
    """A folder to push as a Hugging Face Space: app.py (recipe/space_app.py), model.onnx (`export_onnx`: normalisation
    and TTA inside), model.json (classes, size), card.md (the page's card), README.md (the Space's YAML header and
    the run's model card), requirements.txt and examples/ (`example_images`). Returns export_onnx's check on the
    examples ({'images', 'same_top1', 'max_prob_diff'})"""
    run, folder = Path(run), Path(folder)
    record = run_record(run)
    model = load(run)
    if folder.exists() and any(folder.iterdir()): raise RecipeError(f"{folder} already exists and is not empty: give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name('space_app.py'), folder/'app.py')
    pictures = example_images(run, record, model.classes) if examples else []
    if pictures:
        (folder/'examples').mkdir()
        for i, p in enumerate(pictures): shutil.copyfile(p, folder/'examples'/f"{i:02d}_{Path(p).parent.name}{Path(p).suffix}")
    check = export_onnx(run, folder/'model.onnx', [str(folder/'examples')] if pictures else None)
    write_json(folder/'model.json', dict(classes=model.classes, size=model.size, title=f"{run.name}: {title_of(model.meta)}",
                                         test_accuracy=model.meta['test_accuracy']))
    write_text(folder/'card.md', card(run, record, model.meta))
    write_text(folder/'requirements.txt', f"{GRADIO}\nonnxruntime\nnumpy\npillow\n")
    header = (f"---\ntitle: {json.dumps(run.name)}\nemoji: 🖼️\ncolorFrom: blue\ncolorTo: gray\nsdk: gradio\n"
              f"sdk_version: {GRADIO.split('==')[1]}\napp_file: app.py\npinned: false\nlicense: apache-2.0\n---\n\n")
    model_card = (run/'README.md').read_text() if (run/'README.md').is_file() else card(run, record, model.meta)
    write_text(folder/'README.md', header + model_card)
    return check
