"""The decoded images kept on disk for the next run (recipe/image_store.py): read back only when every file is as it
was, never half-written, and a store that cannot be written costs a warning, not the run."""
import os, shutil, time, warnings

import numpy as np
import pytest

import recipe.data
import recipe.image_store
from recipe.data import RecipeError, decode, decoded, load_images
from recipe.folders import scan_split
from recipe.image_store import ImageStore


@pytest.fixture
def store(tmp_path, monkeypatch):
    "A store of its own that keeps sets of any size (STORE_FROM is 4,000 files)"
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
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def test_the_next_load_reads_the_images_back_instead_of_decoding(tiny, store, monkeypatch):
    files, calls = files_of(tiny), decoding_counted(monkeypatch)
    images, errors = decoded(files)
    assert calls == [len(files)] and errors == {} and images.shape == (len(files), 32, 32, 3)
    assert len(entries(store)) == 1 and entries(store)[0].endswith('.npz')  # nothing half-written left beside it
    again, errors = decoded(files)
    assert calls == [len(files)] and errors == {}  # not decoded again
    assert np.array_equal(again, images) and np.array_equal(again[7], decode(files[7]))


def test_a_changed_file_is_decoded_again_and_the_sets_old_entry_goes(tiny_copy, store, monkeypatch):
    files = files_of(tiny_copy)
    first, _ = decoded(files)
    shutil.copy(files[1], files[0])  # another picture under the same name
    calls = decoding_counted(monkeypatch)
    images, _ = decoded(files)
    assert calls == [len(files)] and np.array_equal(images[0], first[1]) and not np.array_equal(images[0], first[0])
    assert len(entries(store)) == 1  # the old one removed


def test_a_file_rewritten_with_its_old_size_and_mtime_is_a_new_entry(tiny_copy, store):
    files = files_of(tiny_copy)
    before, st = ImageStore(files, 32, store).path, os.stat(files[0])
    time.sleep(0.05)  # past the timestamp granularity of older kernels
    files[0].write_bytes(files[0].read_bytes())  # as a copy that keeps the mtime (cp -p, shutil.copy2) would
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(files[0])
    assert (after.st_mtime_ns, after.st_size) == (st.st_mtime_ns, st.st_size) and after.st_ctime_ns != st.st_ctime_ns
    assert ImageStore(files, 32, store).path != before


@pytest.mark.parametrize('cwd', ['parent', 'folder'])
def test_a_subset_and_the_whole_set_keep_their_own_entries_and_a_relative_path_finds_them(cwd, tiny, store, monkeypatch):
    files = files_of(tiny)
    decoded(files); decoded(files[::2])
    calls = decoding_counted(monkeypatch)
    here = tiny.parent if cwd == 'parent' else tiny  # `--data tiny0/` or `--data .`
    monkeypatch.chdir(here)
    again, _ = decoded([f.relative_to(here) for f in files])
    assert calls == [] and len(entries(store)) == 2 and np.array_equal(again[3], decode(files[3]))


def test_the_least_recently_used_entries_go_beyond_store_keep(tiny, store, monkeypatch):
    monkeypatch.setattr(recipe.image_store, 'STORE_KEEP', 2)
    files = files_of(tiny)
    decoded(files); time.sleep(0.05); decoded(files[::2]); time.sleep(0.05)
    decoded(files)  # read: the most recently used now
    time.sleep(0.05); decoded(files[1::2])
    calls = decoding_counted(monkeypatch)
    decoded(files); decoded(files[1::2])
    assert calls == [] and len(entries(store)) == 2  # files[::2] went


def test_a_sets_new_entry_replaces_its_old_one_without_pushing_another_out(tiny_copy, store, monkeypatch):
    monkeypatch.setattr(recipe.image_store, 'STORE_KEEP', 2)
    files = files_of(tiny_copy)
    evens, odds = files[::2], files[1::2]
    decoded(evens); time.sleep(0.05); decoded(odds); time.sleep(0.05)
    shutil.copy(files[2], files[1])  # one of the odds changed
    decoded(odds)
    calls = decoding_counted(monkeypatch)
    decoded(evens); decoded(odds)
    assert calls == [] and len(entries(store)) == 2  # the odds' old entry went, not the evens'


def test_an_entry_not_whole_is_not_read(tiny, store, monkeypatch):
    files = files_of(tiny)
    images, _ = decoded(files)
    entry, = store.glob('*.npz')
    entry.write_bytes(entry.read_bytes()[:len(entry.read_bytes()) // 2])
    calls = decoding_counted(monkeypatch)
    again, _ = decoded(files)
    assert calls == [len(files)] and np.array_equal(again, images) and entry.stat().st_size > 2 * images.nbytes // 3  # whole again


def test_a_write_stopped_by_ctrl_c_leaves_nothing_and_one_stopped_long_ago_is_removed(tiny, store, monkeypatch):
    files, savez = files_of(tiny), np.savez
    def interrupted(f, **arrays): f.write(b'PK half an entry'); raise KeyboardInterrupt
    monkeypatch.setattr(np, 'savez', interrupted)
    with pytest.raises(KeyboardInterrupt): decoded(files)
    assert entries(store) == []
    monkeypatch.setattr(np, 'savez', savez)
    name = f".images-{'a' * 24}-{'b' * 24}"
    old, young = store/f'{name}.1-aaaaaaaa.npz', store/f'{name}.2-bbbbbbbb.npz'  # as a killed run (SIGKILL) leaves them
    foreign = [store/'images-holiday-photos.npz', store/'.images-notes']  # $RECIPE_CACHE may be a folder of other things
    for f in [old, young, *foreign]: f.write_bytes(b'PK'); os.utime(f, (time.time() - 7200,) * 2)
    os.utime(young)
    decoded(files)
    assert not old.exists() and young.exists() and all(f.exists() for f in foreign)  # the young one may be another run's write


def test_off_keeps_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe.image_store, 'STORE_FROM', 1)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'cache'))
    monkeypatch.setenv('RECIPE_CACHE', 'off')
    decoded(files_of(tiny))
    assert not (tmp_path/'cache').exists()
    monkeypatch.delenv('RECIPE_CACHE')  # the default place: $XDG_CACHE_HOME/recipe
    decoded(files_of(tiny))
    assert len(list((tmp_path/'cache'/'recipe').glob('images-*.npz'))) == 1


def test_a_set_of_few_images_is_not_kept(tiny, tmp_path, monkeypatch):
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
    assert calls == [len(files_of(tiny_copy)), 1]  # the second time read back, only the bad file tried again
    with pytest.raises(RecipeError, match=f'cannot read image {bad}'):
        load_images(tiny_copy)


def test_a_file_that_failed_for_a_passing_reason_is_read_next_time(tiny, store, monkeypatch):
    files, decode_ = files_of(tiny), recipe.data.decode
    def out_of_files(fn, size):
        if fn == files[2]: raise RecipeError(f"cannot read image {fn}: [Errno 24] Too many open files")
        return decode_(fn, size)
    monkeypatch.setattr(recipe.data, 'decode', out_of_files)
    assert list(decoded(files)[1]) == [2]
    monkeypatch.setattr(recipe.data, 'decode', decode_)
    images, errors = decoded(files)
    assert errors == {} and np.array_equal(images[2], decode(files[2]))
    calls = decoding_counted(monkeypatch)
    assert decoded(files)[1] == {} and calls == []  # the entry was written again, without the error


def test_a_file_gone_since_the_scan_is_named_not_a_traceback(tiny_copy, store):
    files = files_of(tiny_copy)
    files[5].unlink()
    images, errors = decoded(files)
    assert list(errors) == [5] and f'cannot read image {files[5]}' in errors[5] and entries(store) == []
