"""Showing a run to someone: `recipe serve RUN` (a Gradio page around the run's model, on this machine) and
`recipe export RUN --space DIR` (a folder to push as a Hugging Face Space: app.py, the model as ONNX, its card; no
pickle, no recipe package). Both pages are recipe/space_app.py's `page`; gradio is the `demo` extra."""
import csv, json, os, shutil, sys
from pathlib import Path

from .address import free_port
from .data import RecipeError
from .evaluation import own_test_files
from .inference import export_onnx, load, predict
from .record import card_rows, cell, check_new_folder, finished_run, write_json, write_text
from .space_app import MAX_FILE_SIZE, TOP, markdown_text, page

__all__ = ['serve', 'export_space', 'card', 'example_images']

EXAMPLE_LOSSES = 4  # of the top losses `recipe evaluate` wrote, as examples beside one test image per class
GRADIO = 'gradio==6.31.0'  # the version the suite drives in a browser (constraints.txt); a Space installs it too


def need_gradio():
    try: __import__('gradio')
    except ImportError as e:
        if e.name != 'gradio': raise  # gradio is there but broken: its own error says how
        raise RecipeError('this needs gradio, the demo extra: pip install -e ".[demo]"') from None


def serve(run, host='127.0.0.1', port=None, block=True):
    """Serve `run`'s page on host:port (default port: the first free from 7860). The run, gradio and the address are
    checked before anything listens; the weights are loaded once. `block=False`, or at a Python prompt (as gradio's
    launch() does): return the running app (`.close()`); else serve until Ctrl-C"""
    run = Path(run)
    record = finished_run(run)
    need_gradio()
    port = free_port(host, port)
    model = load(run)
    examples = example_images(run, record, model.classes)
    demo = page(lambda paths: named_errors(paths, predict(model, paths, TOP)), card(run, record, model.meta), examples,
                title=title_of(run, model.meta))
    try: demo.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, prevent_thread_lock=True,
                     allowed_paths=examples,  # those files, not their folders
                     quiet=True)  # its own lines would tell a user of the command line to set share=True in launch()
    except OSError as e: raise RecipeError(f"cannot serve on {host}:{port}: {e}") from None  # taken since free_port looked
    block = block and not (hasattr(sys, 'ps1') or sys.flags.interactive)
    address = f'[{host}]' if ':' in host else host  # IPv6
    print(f"serving {run} on http://{address}:{port}/" + (" (Ctrl-C stops it)" if block else ''), flush=True)
    if block: demo.block_thread()
    return demo


def named_errors(paths, results) -> list:
    "recipe.predict's results with each error message naming the uploaded file, not the server's temporary path"
    return [f"{Path(p).name}: {r.replace(f' {p}', '')}" if isinstance(r, str) else r for p, r in zip(paths, results)]


def title_of(run, meta) -> str: return f"{Path(run).resolve().name}: {len(meta['classes'])} classes, {meta['test_accuracy']:.2%} test accuracy"


def card(run, record, meta) -> str:
    "The page's card, in Markdown: what the model knows, how well it did, on what data, when"
    rows, d = dict(card_rows(record, meta, markdown_text)), record['data']
    rows['Data'] = f"`{Path(d['folder']).name}`: {d['n_train']:,} training and {d['n_test']:,} test images"  # no local path
    keep = [(k, rows[k]) for k in ('Classes', 'Test accuracy', 'Per class', 'Data', 'Model', 'Training') if k in rows]
    keep.append(('Date', (record.get('started') or '?').replace('T', ' ')))
    return f"## The model: {markdown_text(Path(run).resolve().name)}\n\n| | |\n|---|---|\n" + '\n'.join(f'| {k} | {cell(v)} |' for k, v in keep)


def example_images(run, record, classes) -> list:
    """The run's own test images when its data is there: the top losses `recipe evaluate RUN` wrote (its
    eval/test/top_losses.csv), then the first test image of each class. [] when the data has moved"""
    try: files, root = own_test_files(run, record, None, classes, lambda msg: None)  # what can be shown
    except RecipeError: return []
    worst = []
    losses = Path(run)/'eval'/'test'/'top_losses.csv'
    if losses.is_file():
        with open(losses) as f: worst = [root/r['file'] for r in csv.DictReader(f)][:EXAMPLE_LOSSES]
    first = {}
    for f in files: first.setdefault(f.parent.name, f)
    return list(dict.fromkeys(str(f) for f in worst + [first[c] for c in classes if c in first] if f.is_file()))  # once each


def export_space(run, folder, examples=True) -> dict:
    """A folder to push as a Hugging Face Space: app.py (recipe/space_app.py), model.onnx (`export_onnx`: normalisation
    and TTA inside), model.json (classes, size), card.md (the page's card), README.md (the Space's YAML header, the
    card, how to use the ONNX model), requirements.txt, .gitattributes (the ONNX model and the examples through Git
    LFS, as the Hub wants binaries) and examples/ (`example_images`). Written beside `folder` and renamed into place
    at the end: an export that fails leaves nothing. Returns export_onnx's check on the examples
    ({'images', 'same_top1', 'max_prob_diff'})"""
    run, folder = Path(run), Path(folder)
    record = finished_run(run)
    model = load(run)
    check_new_folder(folder)
    building = folder.with_name(f'.{folder.name}.{os.getpid()}.part')
    try:
        building.mkdir()
        pictures = example_images(run, record, model.classes) if examples else []
        if pictures:
            (building/'examples').mkdir()
            for i, p in enumerate(pictures): shutil.copyfile(p, building/'examples'/f"{i:02d}_{Path(p).parent.name}{Path(p).suffix}")
        check = export_onnx(run, building/'model.onnx', [str(building/'examples')] if pictures else None)
        shutil.copyfile(Path(__file__).with_name('space_app.py'), building/'app.py')
        write_json(building/'model.json', dict(classes=model.classes, size=model.size, title=title_of(run, model.meta), test_accuracy=model.meta['test_accuracy']))
        write_text(building/'card.md', card(run, record, model.meta))
        write_text(building/'requirements.txt', f"{GRADIO}\nonnxruntime\nnumpy\npillow\n")
        write_text(building/'.gitattributes', "*.onnx filter=lfs diff=lfs merge=lfs -text\nexamples/** filter=lfs diff=lfs merge=lfs -text\n")
        write_text(building/'README.md', space_readme(run, record, model.meta))
        if folder.exists(): folder.rmdir()  # empty, checked above
        building.rename(folder)
    finally: shutil.rmtree(building, ignore_errors=True)
    return check


def space_readme(run, record, meta) -> str:
    "The Space's README: its YAML header (sdk gradio, Python 3.11 as tested), the card, and how to use the model without the page"
    name = Path(run).resolve().name
    return f"""---
title: {json.dumps(name)}
emoji: 🖼️
colorFrom: blue
colorTo: gray
sdk: gradio
sdk_version: {GRADIO.split('==')[1]}
python_version: "3.11"
app_file: app.py
pinned: false
license: apache-2.0
---

# {markdown_text(name)}: an image classifier trained with recipe

{card(run, record, meta)}

## Use it

`python app.py` serves this page on http://127.0.0.1:7860 (`pip install -r requirements.txt`). The model is
`model.onnx`: input `image`, RGB in [0, 1], N x 3 x {meta['size']} x {meta['size']}; output `logits` over the classes of
`model.json`, in that order, with the normalisation and the test-time augmentation inside. `app.py`'s `onnx_predict`
decodes and resizes images as the training did. No pickle: the graph is data.
"""
