"""Your own images: the layouts of `recipe.folders.LAYOUTS`, any size and mode, statistics of their own, --size,
the memory budget's per-item path, and predict on many files with a bad one among them."""
import csv, json, shutil, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import recipe
from recipe import RecipeError
from recipe.data import parse_bytes
from recipe.folders import IMAGE_EXTENSIONS, LAYOUTS, data_folder, find_layout

COLOURS = {'red': (200, 40, 40), 'green': (40, 180, 60), 'blue': (50, 60, 210)}  # 3 classes a small net tells apart
FAST = dict(epochs=1, bs=8, width=8, lr_min=1e-3, lr_max=1e-2, seed=0)          # the plumbing, not the accuracy


def make_images(folder: Path, n, mode='RGB', sizes=((32, 32),), start=0):
    "n noisy images per colour class in folder/<class>/, of the given mode and (cycled) sizes"
    rng = np.random.default_rng(start)
    for c, rgb in COLOURS.items():
        (folder/c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            a = np.clip(np.array(rgb) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(a).convert(mode)
            im.save(folder/c/f'{c}_{start + i}.png')


def own(root: Path, layout: str, **kw) -> Path:
    "A small dataset in one of the layouts: 'test', 'valid', 'val' (train/ + that folder) or 'folders'"
    if layout == 'folders': make_images(root, 10, **kw)
    else: make_images(root/'train', 8, **kw); make_images(root/layout, 3, start=100, **kw)
    return root


@pytest.mark.parametrize('layout, mode, size', [('valid', 'RGB', 48), ('val', 'L', 32), ('test', 'RGBA', 64)])
def test_each_layout_trains_with_its_own_size_and_statistics_and_predicts(tmp_path, layout, mode, size):
    data = own(tmp_path/'data', layout, mode=mode, sizes=((20, 30), (50, 50), (64, 40)))  # mixed sizes in each folder
    out = tmp_path/'run'
    learn = recipe.train(data, out=out, size=size, **FAST)
    assert len((out/'metrics.csv').read_text().splitlines()) == 2
    meta = json.loads((out/'model.json').read_text())
    assert meta['size'] == size and sorted(meta['classes']) == sorted(COLOURS)
    assert tuple(meta['mean']) != recipe.CIFAR_MEAN and tuple(meta['mean']) == learn.dls.stats[0]
    x = np.stack([np.asarray(Image.open(f).convert('RGB').resize((size, size), Image.BICUBIC)) for f in learn.dls.train_ds.items]) / 255
    assert np.allclose(meta['mean'], x.reshape(-1, 3).mean(0), atol=2e-3)  # the training images' own statistics
    assert np.allclose(meta['std'], x.reshape(-1, 3).std(0), atol=2e-3)
    if mode == 'L': assert meta['mean'][0] == meta['mean'][1] == meta['mean'][2]  # grayscale, as 3 equal channels
    xb, _ = learn.dls.train.one_batch()
    assert xb.shape[-2:] == (size, size)
    model = recipe.load(out)
    assert model.size == size
    top = recipe.predict(model, sorted((data/layout/'red').iterdir()), k=2)
    assert len(top) == 3 and all(len(t) == 2 and t[0][0] in COLOURS for t in top)


def test_one_folder_of_classes_is_split_at_random_and_the_split_saved(tmp_path):
    data = own(tmp_path/'data', 'folders')
    out = tmp_path/'run'
    learn = recipe.train(data, out=out, valid_pct=0.3, **FAST)
    split = json.loads((out/'split.json').read_text())
    assert split['valid_pct'] == 0.3 and len(split['valid']) == 9  # 30% of 30 images
    assert sorted(str(f.relative_to(data)) for f in learn.dls.valid_ds.items) == sorted(split['valid'])
    assert len(learn.dls.train_ds) == 21 and not set(learn.dls.train_ds.items) & set(learn.dls.valid_ds.items)
    again = recipe.data.image_dls(data, bs=8, valid_pct=0.3)  # seeded: the same split every time (and on resume)
    assert sorted(map(str, again.valid_ds.items)) == sorted(map(str, learn.dls.valid_ds.items))


def test_class_folders_of_one_image_each_are_refused_before_training(tmp_path):
    "No class can be split, so nothing would be held out: refused, not a crash after the first epoch"
    for c in COLOURS: (tmp_path/'data'/c).mkdir(parents=True); Image.new('RGB', (8, 8)).save(tmp_path/'data'/c/'x.png')
    with pytest.raises(RecipeError, match=f"no image of {tmp_path/'data'} can be held out for testing: every class has a single image"):
        recipe.train(tmp_path/'data', out=tmp_path/'run', **FAST | dict(bs=2))
    assert not (tmp_path/'run').exists()


def test_valid_pct_with_a_test_folder_is_ignored_with_a_warning(tmp_path):
    data = own(tmp_path/'data', 'valid')
    with pytest.warns(UserWarning, match=r'valid_pct 0\.3 is ignored: .* has its test images in valid/'):
        dls = recipe.data.image_dls(data, bs=8, valid_pct=0.3)
    assert len(dls.valid_ds) == 9 and dls.valid_files is None


def test_cifar_keeps_its_published_statistics(tiny):
    dls = recipe.data.image_dls(tiny, bs=16)
    assert dls.stats == (recipe.CIFAR_MEAN, recipe.CIFAR_STD) and dls.size == 32


def test_augmentation_scales_with_size(tmp_path):
    data = own(tmp_path/'data', 'valid')
    aug = recipe.data.image_dls(data, bs=8, augment='batch', size=48).train.after_batch.fs[0]
    assert (aug.pad, aug.cutout) == (6, 12)  # 4 and 8 pixels at 32
    pipeline = recipe.data.image_dls(data, bs=8, size=64).train.after_item.fs[0].pipeline
    assert pipeline.transforms[0].min_height == 64 + 2 * 8 and pipeline.transforms[3].hole_height_range == (16, 16)


def test_a_folder_in_no_known_layout_names_the_layouts_looked_for(tmp_path):
    (tmp_path/'train').mkdir()  # train/ alone
    with pytest.raises(RecipeError) as e: recipe.data.image_dls(tmp_path)
    for name in LAYOUTS: assert name in str(e.value)
    assert 'train/ but no test/, valid/ or val/' in str(e.value)


def test_a_flat_train_folder_is_refused_with_what_to_do(tmp_path):
    "train/ holding images itself: a class named train, or Kaggle's train/ + test/ with the labels in a CSV (which would"
    "otherwise train a 'train' against 'test' classifier); either way refused, saying what to change"
    make_images(tmp_path/'data', 2); (tmp_path/'data'/'red').rename(tmp_path/'data'/'train')
    hint = 'train/ holds images itself: if train is one of your classes, rename its folder'
    with pytest.raises(RecipeError, match=hint): find_layout(tmp_path/'data')
    kaggle = tmp_path/'kaggle'
    for split, n in (('train', 4), ('test', 2)):
        (kaggle/split).mkdir(parents=True)
        for i in range(n): Image.new('RGB', (8, 8)).save(kaggle/split/f'{i}.png')
    (kaggle/'train_labels.csv').write_text('id,label\n')
    with pytest.raises(RecipeError, match=hint): find_layout(kaggle)
    shutil.rmtree(kaggle/'test'); make_images(kaggle/'test', 1)  # a flat train/ beside a labelled test/: the same hint
    with pytest.raises(RecipeError, match=rf'split at random \(--valid-pct\) \({hint}'): find_layout(kaggle)  # nothing between
    for f in (kaggle/'train').iterdir(): f.unlink()
    with pytest.raises(RecipeError, match=r'split at random \(--valid-pct\) \(its train/ holds no class folders\)'): find_layout(kaggle)
    assert find_layout(kaggle, need_train=False) == ('train', 'test')  # evaluate scores its test split, whatever train/ holds now
    shutil.rmtree(kaggle/'test'); (kaggle/'test').mkdir()
    with pytest.raises(RecipeError, match=r'\(its train/ and test/ hold no class folders\)'): find_layout(kaggle)  # both said at once


def test_an_unlabelled_test_folder_is_passed_over_for_valid(tmp_path):
    "Kaggle's layout: train/ and valid/ with class folders, test/ with the images to submit predictions for"
    make_images(tmp_path/'data'/'train', 4); make_images(tmp_path/'data'/'valid', 2, start=100)
    make_images(tmp_path/'unlabelled', 1)
    (tmp_path/'data'/'test').mkdir()
    for f in (tmp_path/'unlabelled').rglob('*.png'): f.rename(tmp_path/'data'/'test'/f.name)
    assert find_layout(tmp_path/'data') == ('train', 'valid')
    (tmp_path/'data'/'valid').rename(tmp_path/'data'/'later')
    with pytest.raises(RecipeError, match=r"\(it has train/, but test/ holds no class folders\)"): find_layout(tmp_path/'data')


def test_a_folder_that_holds_the_data_one_level_down_names_it(tmp_path):
    "--data ../shared where ../shared/cifar10 is meant: the error says which folder inside has a layout"
    make_images(tmp_path/'outer'/'cifar'/'train', 2); make_images(tmp_path/'outer'/'cifar'/'test', 1)
    (tmp_path/'outer'/'notes').mkdir()  # another folder beside it, in no layout
    with pytest.raises(RecipeError, match=f"did you mean --data {tmp_path/'outer'/'cifar'}"): data_folder(tmp_path/'outer')


def test_the_hint_leaves_out_a_folder_it_cannot_enter(tmp_path, monkeypatch):
    "Path.is_dir raises PermissionError inside a folder without execute permission (as root, simulated: root enters any)"
    make_images(tmp_path/'outer'/'cifar'/'train', 2); make_images(tmp_path/'outer'/'cifar'/'test', 1)
    (tmp_path/'outer'/'locked').mkdir()
    is_dir = Path.is_dir
    def locked(p):
        if p.parent.name == 'locked': raise PermissionError(13, 'Permission denied', str(p))
        return is_dir(p)
    monkeypatch.setattr(Path, 'is_dir', locked)
    with pytest.raises(RecipeError, match=f"did you mean --data {tmp_path/'outer'/'cifar'}"): data_folder(tmp_path/'outer')


def test_a_class_folder_that_cannot_be_listed_is_named_and_skipped_with_skip_bad(tmp_path, monkeypatch):
    "Path.iterdir raises PermissionError on a folder without read permission (as root, simulated: root reads any)"
    make_images(tmp_path/'data', 2); (tmp_path/'data'/'locked').mkdir()
    iterdir = Path.iterdir
    def locked(p):
        if p.name == 'locked': raise PermissionError(13, 'Permission denied', str(p))
        return iterdir(p)
    monkeypatch.setattr(Path, 'iterdir', locked)
    assert find_layout(tmp_path/'data') == (None, None)  # still class folders
    with pytest.raises(RecipeError, match=f"{tmp_path/'data'/'locked'}: Permission denied"): recipe.data.load_images(tmp_path/'data')
    with pytest.warns(UserWarning, match='skipped 1 bad'): assert len(recipe.data.load_images(tmp_path/'data', skip_bad=True).files) == 6
    with pytest.raises(RecipeError, match=f"cannot read data folder {tmp_path/'data'/'locked'}"): data_folder(tmp_path/'data'/'locked')


def test_image_files_are_the_same_whether_recipe_or_fastai_is_imported_first():
    "fastai reads the system's types (.webp, ...) before its image_extensions; `recipe train` imports recipe.folders first"
    from fastai.vision.all import image_extensions
    assert IMAGE_EXTENSIONS == image_extensions
    r = subprocess.run([sys.executable, '-c', 'from recipe.folders import IMAGE_EXTENSIONS as ours\n'
                        'from fastai.vision.all import image_extensions as fastais\n'
                        'assert ours == fastais, sorted(fastais - ours)'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_an_empty_data_path_is_the_current_folder_not_the_download(tiny, monkeypatch):
    "--data '' meant the current folder (Path('')) before the early check; it still does, and nothing is downloaded"
    monkeypatch.chdir(tiny)
    monkeypatch.setattr(recipe.data, 'untar_data', lambda *a, **k: pytest.fail("CIFAR-10's download was asked for"))
    assert recipe.data.find_data('') == Path('.')


def test_one_class_is_refused(tmp_path):
    make_images(tmp_path/'data', 5)
    for c in ('green', 'blue'):
        for f in (tmp_path/'data'/c).iterdir(): f.unlink()
        (tmp_path/'data'/c).rmdir()
    with pytest.raises(RecipeError, match='at least 2 class folders'): recipe.data.image_dls(tmp_path/'data', bs=2)


def test_data_over_the_memory_budget_trains_per_item_with_a_warning(tmp_path):
    data = own(tmp_path/'data', 'valid')
    with pytest.warns(UserWarning, match=r'would take 0\.3 MB in memory while loading \(3 copies at the peak\), more than the budget of 0\.0 MB'):
        learn = recipe.train(data, out=tmp_path/'run', max_memory='10KB', augment='batch', **FAST)
    # fastai's per-item loader, not the in-memory one (which holds the split as `images`)
    assert type(learn.dls.train).__name__ == 'TfmdDL' and getattr(learn.dls.train, 'images', None) is None
    assert json.loads((tmp_path/'run'/'results.json').read_text())['complete']


@pytest.mark.parametrize('value', ['lots', '-1GB', '0'])
def test_a_bad_memory_budget_is_refused(value):
    with pytest.raises(RecipeError, match='max_memory must be a positive size'): parse_bytes(value)


def test_memory_sizes_read_with_their_units():
    assert [parse_bytes(v) for v in ('2GB', '512MB', '1.5GiB', 1000)] == [2_000_000_000, 512_000_000, 1.5 * 2**30, 1000]


def test_predict_reports_a_bad_file_on_its_own_row_and_exits_non_zero(tiny_run, tiny, tmp_path):
    out, _ = tiny_run
    folder = tmp_path/'many'; folder.mkdir()
    for f in sorted((tiny/'test'/'cat').iterdir()): (folder/f.name).write_bytes(f.read_bytes())
    (folder/'broken.png').write_bytes(b'not an image')
    r = subprocess.run([sys.executable, '-m', 'recipe', 'predict', out, folder, '--top', '2', '--csv', tmp_path/'p.csv'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and '1 of 6 files could not be read' in r.stderr
    lines = r.stdout.splitlines()
    bad = [l for l in lines if 'broken.png' in l]
    assert len(lines) == 6 and len(bad) == 1 and 'error: cannot read image' in bad[0]
    assert all(len(l.split()) == 5 for l in lines if l not in bad)  # file + 2 classes with probabilities
    rows = list(csv.DictReader(open(tmp_path/'p.csv')))
    assert list(rows[0]) == ['file', 'class1', 'prob1', 'class2', 'prob2', 'error']
    assert [bool(r['error']) for r in rows].count(True) == 1 and all(r['class1'] for r in rows if not r['error'])


def test_class_names_in_any_script_an_installed_font_has_are_drawn_and_the_rest_named(cjk_font):
    "Chinese class folders (an audit's): the plots drew boxes for every character, each looking like every other"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from recipe.fonts import drawing, fallback_fonts
    def pixels(text):
        fig = plt.figure(figsize=(1, 1)); fig.text(0.5, 0.5, text, fontsize=40, ha='center', va='center'); fig.canvas.draw()
        a = np.asarray(fig.canvas.buffer_rgba()).copy(); plt.close(fig); return a
    with pytest.warns(UserWarning, match='Glyph 29483'): assert (pixels('猫') == pixels('狗')).all()  # matplotlib's own: two boxes
    assert cjk_font in fallback_fonts(('cat', '猫', '狗'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # not one glyph missing
        with drawing(['cat', '猫', '狗']): assert (pixels('猫') != pixels('狗')).any()
    with pytest.warns(UserWarning, match='no installed font draws \U00013000 .*fonts-noto-cjk'):  # an Egyptian hieroglyph
        with drawing(['cat', '\U00013000']): pixels('\U00013000')
