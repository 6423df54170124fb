import pickle, shutil, subprocess, sys

import numpy as np, pytest, torch
from PIL import Image

import recipe
from recipe import RecipeError


def test_loaded_weights_predict_what_the_learner_predicts(tiny_run):
    "predict runs in fp32: so does the Learner here (its bf16 autocast, where the CPU has bf16, taken out for the call)"
    from recipe.callbacks import CPUAutocast
    out, learn = tiny_run
    model = recipe.load(out)
    files = learn.dls.valid_ds.items[:20]
    with learn.removed_cbs(learn.cbs.filter(lambda cb: isinstance(cb, CPUAutocast))):
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    top = recipe.predict(model, files, k=3)
    assert [t[0][0] for t in top] == [learn.dls.vocab[i] for i in probs.argmax(1)]
    assert np.allclose([t[0][1] for t in top], probs.max(1).values.numpy(), atol=1e-4)
    assert all(len(t) == 3 and t[0][1] >= t[1][1] >= t[2][1] for t in top)


def test_predict_takes_any_size_and_mode(tiny_run, tmp_path):
    out, _ = tiny_run
    Image.new('L', (100, 60), 128).save(tmp_path/'gray.png')
    Image.new('RGBA', (16, 16), (200, 10, 10, 128)).save(tmp_path/'rgba.png')
    Image.new('RGB', (64, 64), (0, 0, 255)).save(tmp_path/'big.jpg')
    Image.new('RGB', (32, 32), (128, 128, 128)).save(tmp_path/'gray_as_trained.png')
    model, files = recipe.load(out), recipe.inference.image_files([tmp_path])
    top = dict(zip((f.name for f in files), recipe.predict(model, files)))
    assert len(top) == 4 and all(0 <= p <= 1 for t in top.values() for _, p in t)
    assert all(sum(p for _, p in t) <= 1 + 1e-4 and t[0][1] >= t[1][1] >= t[2][1] for t in top.values())
    # a 100x60 grayscale image is predicted as the 32x32 RGB image it becomes
    assert [c for c, _ in top['gray.png']] == [c for c, _ in top['gray_as_trained.png']]
    assert np.allclose([p for _, p in top['gray.png']], [p for _, p in top['gray_as_trained.png']], atol=1e-4)


class Evil:
    "Unpickling this creates a file: the proof that something was executed"
    def __init__(self, target): self.target = target
    def __reduce__(self): return (open, (str(self.target), 'w'))


@pytest.mark.parametrize('name', ['model.safetensors', 'model.pth'])
def test_malicious_pickle_is_refused_and_never_executed(tiny_run, tmp_path, name):
    out, _ = tiny_run
    target = tmp_path/'pwned'
    evil = tmp_path/'evil'; evil.mkdir()
    torch.save({'weights': Evil(target)}, evil/name)  # a pickle-based "checkpoint"
    (evil/name).with_suffix('.json').write_text((out/'model.json').read_text())
    with pytest.raises(RecipeError, match='safetensors'): recipe.load(evil/name)
    assert not target.exists()
    r = subprocess.run([sys.executable, '-m', 'recipe', 'predict', evil/name, out.parent], capture_output=True, text=True)
    assert r.returncode != 0 and 'safetensors' in r.stderr and 'Traceback' not in r.stderr
    assert not target.exists()
    pickle.loads(pickle.dumps(Evil(target)))  # the file really is dangerous: unpickling it does create the file
    assert target.exists()


def test_predict_cli_prints_top3_and_writes_csv(tiny_run, tiny, tmp_path):
    out, _ = tiny_run
    r = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'recipe', 'predict', out, tiny/'test'/'cat', '--csv', tmp_path/'p.csv'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all(len(l.split()) == 7 for l in lines)
    rows = (tmp_path/'p.csv').read_text().splitlines()
    assert rows[0] == 'file,class1,prob1,class2,prob2,class3,prob3,error' and len(rows) == 6
    streamed = subprocess.run([sys.executable, '-m', 'recipe', 'predict', out, tiny/'test'/'cat', '--csv', '/dev/stdout'],
                              capture_output=True, text=True)  # a stream, not a file to replace
    assert streamed.returncode == 0 and 'file,class1,prob1' in streamed.stdout, streamed.stderr[-2000:]
    # what predict does not use, it does not import: ~5 s of 12 here, torchvision through fastai.vision.all and torchmetrics
    imported = {line.split('|')[-1].strip() for line in r.stderr.splitlines() if line.startswith('import time:')}
    assert not imported & {'torchvision', 'torchmetrics', 'albumentations', 'fastai.vision.learner'}


def test_predict_takes_one_file_a_folder_or_a_run_folder(tiny_run, tiny, tmp_path):
    out, _ = tiny_run
    cats = sorted((tiny/'test'/'cat').iterdir())
    model = recipe.load(out)
    assert recipe.predict(model, cats[0]) == recipe.predict(model, [cats[0]]) == recipe.predict(out, [str(cats[0])])
    assert recipe.predict(model, str(tiny/'test'/'cat')) == recipe.predict(model, cats)  # not one row per character
    folder_row, file_row = recipe.predict(model, [tiny/'test'/'dog', cats[0]])  # a folder in a list: its row says what to do
    assert folder_row == f"{tiny/'test'/'dog'} is a folder: give predict the folder alone, or recipe.image_files([...]) to list the images of folders and files together"
    assert file_row == recipe.predict(model, cats[0])[0]
    listed = recipe.predict(model, recipe.image_files([tiny/'test'/'dog', cats[0]]))  # a batch of 6: the same to float noise
    assert len(listed) == 6 and [c for c, _ in listed[-1]] == [c for c, _ in file_row]
    assert [p for _, p in listed[-1]] == pytest.approx([p for _, p in file_row], abs=1e-5)
    named = shutil.copytree(out, tmp_path/'v1.pt')  # a run folder named like a pickle is a run folder
    assert recipe.predict(named, [cats[0]]) == recipe.predict(model, [cats[0]])


def test_missing_weights_named(tmp_path):
    with pytest.raises(RecipeError, match=str(tmp_path/'model.safetensors')): recipe.load(tmp_path)


def test_fastai_export_still_works_without_the_training_images(tiny_run, tmp_path):
    from fastai.learner import load_learner
    _, learn = tiny_run
    learn.export(tmp_path/'export.pkl')
    assert (tmp_path/'export.pkl').stat().st_size < 5_000_000  # the in-memory images are not pickled
    f = learn.dls.valid_ds.items[0]
    cls, _, probs = load_learner(tmp_path/'export.pkl').predict(f)
    assert cls in learn.dls.vocab and abs(float(probs.sum()) - 1) < 1e-4
