"""Data that is not clean CIFAR-10: converted, or refused naming the file, or skipped with --skip-bad."""
import os

import pytest, torch
from PIL import Image

from recipe import RecipeError, image_dls


def test_gray_rgba_and_other_sizes_are_converted(tiny_copy):
    d = tiny_copy/'train'/'cat'
    Image.new('L', (48, 48), 90).save(d/'gray.png')
    Image.new('RGBA', (32, 32), (1, 2, 3, 4)).save(d/'rgba.png')
    Image.new('RGB', (100, 20), (9, 9, 9)).save(d/'wide.jpg')
    dls = image_dls(tiny_copy, bs=16)
    assert len(dls.train_ds) == 203
    for name in ('gray.png', 'rgba.png', 'wide.jpg'):
        x, _ = dls.train_ds[dls.train_ds.items.index(d/name)]
        assert x.shape == (3, 32, 32) and x.dtype == torch.uint8


def zero_byte(d): (d/'empty.png').touch(); return d/'empty.png'
def truncated(d):
    f = sorted(d.iterdir())[0]; f.write_bytes(f.read_bytes()[:100]); return f
def not_an_image(d): (d/'readme.jpg').write_text('hello'); return d/'readme.jpg'
def empty_class(d):
    (d.parent/'unicorn').mkdir(); return d.parent/'unicorn'
def dir_loop(d): os.symlink(d, d/'loop'); return d/'loop'
def file_loop(d): os.symlink(d/'self.png', d/'self.png'); return d/'self.png'
def dangling_class(d):  # a class folder linked from elsewhere that has gone: its class would be lost unsaid
    os.symlink(d.parent/'moved', d.parent/'unicorn'); return d.parent/'unicorn'

CASES = [zero_byte, truncated, not_an_image, empty_class, dir_loop, file_loop, dangling_class]


@pytest.mark.parametrize('make_bad', CASES, ids=[c.__name__ for c in CASES])
def test_bad_file_is_named(tiny_copy, make_bad):
    bad = make_bad(tiny_copy/'train'/'dog')
    with pytest.raises(RecipeError, match=str(bad)): image_dls(tiny_copy, bs=16)


@pytest.mark.parametrize('make_bad', CASES, ids=[c.__name__ for c in CASES])
def test_bad_file_is_skipped_and_counted_with_skip_bad(tiny_copy, make_bad):
    bad = make_bad(tiny_copy/'train'/'dog')
    with pytest.warns(UserWarning, match=r'skipped 1 bad'):
        dls = image_dls(tiny_copy, bs=16, skip_bad=True)
    assert bad not in dls.train_ds.items
    assert len(dls.train_ds) == (199 if make_bad is truncated else 200)  # no image is listed twice


def test_a_link_to_a_gone_file_beside_the_classes_is_passed_over(tiny_copy):
    "Only a link named as a folder is a lost class; LICENSE.txt linked to nowhere is not data, as any other file there"
    os.symlink(tiny_copy/'gone.txt', tiny_copy/'train'/'LICENSE.txt')
    assert len(image_dls(tiny_copy, bs=16).train_ds) == 200


def test_a_lost_class_folder_with_a_dot_in_its_name_is_named(tiny_copy):
    "Class names may hold dots (CUB-200's 001.Black_footed_Albatross): a link to nowhere named so is a class lost, not a file"
    lost = tiny_copy/'train'/'001.Albatross'
    os.symlink(tiny_copy/'moved', lost)
    with pytest.raises(RecipeError, match=f"{lost}: a link to"): image_dls(tiny_copy, bs=16)
