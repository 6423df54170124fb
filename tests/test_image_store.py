"""The decoded images kept on disk for the next run (recipe/image_store.py): read back only when every file is as it
was, never half-written, and a store that cannot be written costs a warning, not the run."""
import shutil, warnings

import numpy as np
import pytest

import recipe.data
import recipe.image_store
from recipe.data import decode, decoded, load_images, scan_split


@pytest.fixture
def store(tmp_path, monkeypatch):
    "A store of its own that keeps folders of any size (STORE_FROM is 4,000 files)"
    monkeypatch.setenv('RECIPE_CACHE', str(tmp_path/'store'))
    monkeypatch.setattr(recipe.image_store, 'STORE_FROM', 1)
    return tmp_path/'store'


def files_of(folder):
    return [f for split in ('train', 'test') for f in scan_split(folder/split, print)]


def decoding_counted(monkeypatch) -> list:
    "Each call of decode_all appends its number of files"
    calls, decode_all = [], recipe.data.decode_all
    monkeypatch.setattr(recipe.data, 'decode_all', lambda files, *a, **k: calls.append(len(files)) or decode_all(files, *a, **k))
    return calls


def entries(store) -> list:
    return sorted(p.name for p in store.iterdir())


def test_the_next_load_reads_the_images_back_instead_of_decoding(tiny, store, monkeypatch):
    files, calls = files_of(tiny), decoding_counted(monkeypatch)
    images, errors = decoded(files)
    assert calls == [len(files)] and errors == {} and images.shape == (len(files), 32, 32, 3)
    assert [p.rsplit('.', 1)[1] for p in entries(store)] == ['json', 'npy']  # one entry, nothing half-written left
    again, errors = decoded(files)
    assert calls == [len(files)] and errors == {}  # not decoded again
    assert np.array_equal(again, images) and np.array_equal(again[7], decode(files[7]))


def test_a_changed_file_is_decoded_again_and_the_folders_old_entry_goes(tiny_copy, store, monkeypatch):
    files = files_of(tiny_copy)
    first, _ = decoded(files)
    shutil.copy(files[1], files[0])  # another picture under the same name
    calls = decoding_counted(monkeypatch)
    images, _ = decoded(files)
    assert calls == [len(files)] and np.array_equal(images[0], first[1]) and not np.array_equal(images[0], first[0])
    assert len(entries(store)) == 2  # the new entry's .npy and .json; the old one removed


@pytest.mark.parametrize('damage', ['no list of errors', 'truncated images'])
def test_an_entry_half_written_is_not_read(damage, tiny, store, monkeypatch):
    files = files_of(tiny)
    images, _ = decoded(files)
    npy, = store.glob('*.npy')
    if damage == 'no list of errors': npy.with_suffix('.json').unlink()  # killed between the two files
    else: npy.write_bytes(npy.read_bytes()[:len(npy.read_bytes()) // 2])
    calls = decoding_counted(monkeypatch)
    again, _ = decoded(files)
    assert calls == [len(files)] and np.array_equal(again, images)
    assert len(entries(store)) == 2  # written whole again


def test_off_keeps_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe.image_store, 'STORE_FROM', 1)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'cache'))
    monkeypatch.setenv('RECIPE_CACHE', 'off')
    decoded(files_of(tiny))
    assert not (tmp_path/'cache').exists()
    monkeypatch.delenv('RECIPE_CACHE')  # the default place: $XDG_CACHE_HOME/recipe
    decoded(files_of(tiny))
    assert len(list((tmp_path/'cache'/'recipe').glob('images-*.npy'))) == 1


def test_a_folder_of_few_images_is_not_kept(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv('RECIPE_CACHE', str(tmp_path/'store'))
    assert len(files_of(tiny)) < recipe.image_store.STORE_FROM
    decoded(files_of(tiny))
    assert not (tmp_path/'store').exists()


def test_a_store_that_cannot_be_written_warns_and_the_images_still_come(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe.image_store, 'STORE_FROM', 1)
    (tmp_path/'a-file').write_text('not a folder')
    monkeypatch.setenv('RECIPE_CACHE', str(tmp_path/'a-file'/'store'))
    files = files_of(tiny)
    with pytest.warns(UserWarning, match=r"the decoded images were not kept in .*a-file/store .*the next run decodes them again"):
        images, errors = decoded(files)
    assert errors == {} and np.array_equal(images[3], decode(files[3]))


def test_a_bad_file_is_reported_again_when_the_images_are_read_back(tiny_copy, store, monkeypatch):
    bad = files_of(tiny_copy)[4]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    calls = decoding_counted(monkeypatch)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter('always')
            cache = load_images(tiny_copy, skip_bad=True)
        assert bad not in cache.files and len(cache.files) == len(files_of(tiny_copy)) - 1
        assert any(f'skipped 1 bad file or folder in {tiny_copy}' in str(w.message) and bad.name in str(w.message) for w in seen)
    assert len(calls) == 1  # the second time read back, and the bad file named all the same
    with pytest.raises(recipe.data.RecipeError, match=f'cannot read image {bad}'):
        load_images(tiny_copy)
