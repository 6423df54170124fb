"""The demo page of a trained run, in one file that needs only gradio, numpy and pillow (and onnxruntime to run an
ONNX model). `recipe serve RUN` builds the page around the run's torch model (`recipe.predict`); `recipe export RUN
--space DIR` copies this file to DIR/app.py, where `python app.py` (or a Hugging Face Space) serves DIR/model.onnx.
Nothing here imports `recipe` or unpickles anything: a Space holds the ONNX graph, JSON and Markdown only."""
import json, os, re, sys
from pathlib import Path

import numpy as np
from PIL import Image

TOP = 3                   # classes shown per image
MAX_PIXELS = 40_000_000   # width x height: a larger upload is refused from its header, before it is decoded
MAX_FILE_SIZE = '20mb'    # a larger upload is refused by gradio itself
BATCH = 256               # images per forward pass


def markdown_text(s) -> str:
    """`s` shown as it is in Markdown (a heading, text): HTML's and Markdown's own characters escaped (a class <b>x). In
    a table, `|` too: recipe.record.cell"""
    return re.sub(r'([\\`*_{}\[\]()#+!~])', r'\\\1', str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;'))


def problem(path) -> str | None:
    "None if `path` looks like an image this page will decode, else what is wrong with it (the file named)"
    name = Path(path).name
    if os.path.getsize(path) == 0: return f"{name}: the file is empty"
    try:
        with Image.open(path) as im: w, h = im.size  # the header only
    except Image.DecompressionBombError: return f"{name}: too large (more than {MAX_PIXELS:,} pixels)"
    except Exception as e: return f"{name}: not an image that can be read ({type(e).__name__})"
    if w * h > MAX_PIXELS: return f"{name}: {w:,} x {h:,} pixels is too large (at most {MAX_PIXELS:,})"
    return None


def page(predict, card: str, examples=(), title='recipe'):
    """A gradio page: one or more images in, their top classes out (the first image and its `gr.Label`, a table for all).
    `predict(paths)` -> for each path [(class, probability), ...] most likely first, or the reason it cannot be read.
    A bad upload gets a message on the page (and its row in the table says why); the server goes on serving."""
    import gradio as gr

    def classify(paths):
        label, rows, first, messages = classified(paths, predict)
        for m in messages: gr.Warning(m)  # a message on the page; the table has it too
        return label, rows, first

    with gr.Blocks(title=title, analytics_enabled=False) as demo:  # nothing sent to gradio's servers
        gr.Markdown(f"# {markdown_text(title)}")
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count='multiple', file_types=['image'], label='Images (one or more)', elem_id='images')
                picture = gr.Image(type='filepath', label='The first image', height=160, interactive=False, elem_id='picture')
                if examples: gr.Examples([[p] for p in examples], inputs=files, label='Examples: test images')
            with gr.Column():
                label = gr.Label(num_top_classes=TOP, label='Top classes (the first image)', elem_id='classes')
                table = gr.Dataframe(headers=['file', 'class', 'probability', 'error'], label='Every image', interactive=False, elem_id='table')
        files.change(classify, files, [label, table, picture], api_name='classify')  # an upload, an example, or the box cleared
        gr.Markdown(card)
    return demo


def classified(paths, predict) -> tuple:
    """The page's answer to the uploads `paths`: the first readable image's {class: probability}, a table row per upload
    (identical uploads are one file to gradio: each is read once and gets as many rows as it was given), that image's
    path, and the messages about the files that cannot be read"""
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    if not paths: return None, [], None, []  # the box was cleared
    found = {p: problem(p) for p in paths}
    good = [p for p in found if found[p] is None]
    if good: found.update(zip(good, predict(good)))
    rows = [[Path(p).name] + (['', '', found[p]] if isinstance(found[p], str) else [found[p][0][0], round(found[p][0][1], 4), ''])
            for p in paths]
    first = next((p for p in paths if not isinstance(found[p], str)), None)
    return ({c: q for c, q in found[first]} if first else None), rows, first, [r for r in found.values() if isinstance(r, str)]


def decode(path, size) -> np.ndarray:
    "Any mode to RGB, resized (bicubic) to size x size, (size, size, 3) uint8: recipe's decoding too (recipe.data.decode)"
    with Image.open(path) as im:
        if im.mode.startswith('I') or im.mode == 'F': im = eight_bits(im)
        im = im.convert('RGB')
        if im.size != (size, size): im = im.resize((size, size), Image.BICUBIC)
        return np.array(im, dtype=np.uint8)


def eight_bits(im) -> Image.Image:
    """A 16-bit grayscale image on 0-255 as 'L', by the 16-bit range, as the PNG format defines it: Pillow opens 16-bit
    PNGs and TIFFs as 'I;16...', 16-bit PGMs (and, before Pillow 10, PNGs) as 'I', and its own convert clips every value
    above 255 to white. Floating-point ('F') and other 32-bit images have no range to go by: refused, with the values found"""
    a = np.asarray(im)
    lo, hi = a.min(), a.max()
    if im.mode == 'F' or lo < 0 or hi > 65535:
        raise ValueError(f"a {'floating-point' if im.mode == 'F' else '32-bit'} image (mode {im.mode}, values {lo:g} to {hi:g}): "
                         "only 8- and 16-bit images are read; save it with 8 or 16 bits per channel")
    return Image.fromarray(((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), 'L')  # x / 257, rounded, in integers


def onnx_predict(model_path, classes, size):
    "`predict` for `page` from an ONNX model made by `recipe export` (RGB in [0, 1] in; normalisation and TTA inside)"
    import onnxruntime
    session = onnxruntime.InferenceSession(str(model_path), providers=['CPUExecutionProvider'])

    def predict(paths):
        found = {}
        for p in paths:
            try: found[p] = decode(p, size)
            except Exception as e: found[p] = f"{Path(p).name}: cannot read image: {e}"
        images = [p for p in paths if not isinstance(found[p], str)]
        for i in range(0, len(images), BATCH):
            batch = images[i:i + BATCH]
            x = np.stack([found[p] for p in batch]).transpose(0, 3, 1, 2).astype(np.float32) / 255
            logits = session.run(['logits'], {'image': x})[0].astype(np.float64)
            probs = np.exp(logits - logits.max(1, keepdims=True)); probs /= probs.sum(1, keepdims=True)
            for p, row in zip(batch, probs):
                found[p] = [(classes[j], float(row[j])) for j in np.argsort(-row, kind='stable')[:TOP]]
        return [found[p] for p in paths]
    return predict


def main():
    """Serve the folder this file is in (model.onnx, model.json, card.md, examples/). Listens where gradio's defaults
    say: 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise (a Hugging Face Space sets 0.0.0.0), on GRADIO_SERVER_PORT
    or the first free port from 7860"""
    here = Path(__file__).resolve().parent
    meta = json.loads((here/'model.json').read_text())
    examples = sorted(str(p) for p in (here/'examples').glob('*')) if (here/'examples').is_dir() else []
    demo = page(onnx_predict(here/'model.onnx', meta['classes'], meta['size']), (here/'card.md').read_text(), examples,
                title=meta.get('title', here.name))
    demo.launch(max_file_size=MAX_FILE_SIZE, allowed_paths=[str(here/'examples')])


if __name__ == '__main__': sys.exit(main())
