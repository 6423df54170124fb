"""`recipe evaluate`: a run scored again on its own test set gives its reported numbers; any labelled folder with the
run's classes is scored; bad input is named. And every run's record and card have per-class results and calibration."""
import csv, json, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

import recipe
from recipe import RecipeError


def record_of(run): return json.loads((run/'results.json').read_text())


@pytest.mark.parametrize('which', ['quick_run', 'tiny_run'])
def test_evaluate_on_the_runs_own_test_set_gives_its_reported_numbers(which, request, tmp_path):
    run = request.getfixturevalue(which)
    run = run[0] if isinstance(run, tuple) else run
    record = record_of(run)
    m = recipe.evaluate(run, out=tmp_path/'eval')
    assert m['images'] == record['data']['n_test'] == 50
    assert m['accuracy'] == pytest.approx(record['test_accuracy'], abs=1e-6)  # the same TTA, precision and batches
    assert m['loss'] == pytest.approx(record['test_loss'], rel=1e-6)
    if record['tta']: assert m['accuracy_no_tta'] == pytest.approx(record['test_accuracy_no_tta'], abs=1e-6)
    assert [r['class'] for r in m['per_class']] == record['data']['classes'] and sum(r['support'] for r in m['per_class']) == 50
    assert sum(r['recall'] * r['support'] for r in m['per_class']) == pytest.approx(50 * m['accuracy'])
    assert m['ece'] == pytest.approx(record['ece'], abs=1e-6) and record['per_class'] == m['per_class']
    cm = torch.tensor(m['confusion_matrix'])
    assert cm.sum() == 50 and int(cm.trace()) == round(50 * m['accuracy'])
    for f in ('metrics.json', 'per_class.csv', 'confusion_matrix.png', 'reliability.png', 'top_losses.png', 'top_losses.csv'):
        assert (tmp_path/'eval'/f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(tmp_path/'eval'/'top_losses.csv')))
    assert len(rows) == 50 and all((tiny_test(run)/r['file']).is_file() for r in rows)
    assert [float(r['loss']) for r in rows] == sorted((float(r['loss']) for r in rows), reverse=True)


def tiny_test(run): return Path(record_of(run)['data']['folder'])/'test'


def test_every_run_records_per_class_results_and_calibration_in_its_card(quick_run):
    record, card = record_of(quick_run), (quick_run/'README.md').read_text()
    assert len(record['per_class']) == 10 and 0 < record['ece'] < 1 and (quick_run/'reliability.png').stat().st_size > 0
    assert f"airplane {record['per_class'][0]['recall']:.1%}" in card and f"expected calibration error {record['ece']:.4f}" in card
    # quick's TTA gate, named where its accuracy is and kept in model.json for predict and evaluate
    assert f"{record['test_accuracy']:.2%} with TTA (level 2, images below 0.8 confidence)" in card
    assert recipe.load(quick_run).tta_below == 0.8


def test_evaluate_a_labelled_folder_of_the_runs_classes_and_refuse_others(quick_run, tiny, tmp_path):
    folder = shutil.copytree(tiny/'test', tmp_path/'photos')  # class folders only
    m = recipe.evaluate(quick_run, folder)
    assert m['images'] == 50 and (quick_run/'eval'/'photos'/'metrics.json').is_file()
    shutil.copytree(folder/'cat', folder/'tiger')
    with pytest.raises(RecipeError, match='has classes the run does not know: tiger'): recipe.evaluate(quick_run, folder)
    shutil.rmtree(folder/'tiger'); shutil.rmtree(folder/'cat')
    with pytest.raises(RecipeError, match="has no images of the run's classes cat"): recipe.evaluate(quick_run, folder)


def test_evaluate_finds_moved_data_with_data(quick_run, tiny, tmp_path):
    moved = shutil.copytree(tiny, tmp_path/'moved')
    assert recipe.evaluate(quick_run, data=moved, out=tmp_path/'eval')['accuracy'] == pytest.approx(record_of(quick_run)['test_accuracy'], abs=1e-6)
    with pytest.raises(RecipeError, match=f'--data {tmp_path/"gone"} is not a folder'):
        recipe.evaluate(quick_run, data=tmp_path/'gone')
    plots = {p.name: p.stat().st_mtime_ns for p in quick_run.glob('*.png')}
    with pytest.raises(RecipeError, match='holds files that are not an earlier evaluation'): recipe.evaluate(quick_run, out=quick_run)
    assert {p.name: p.stat().st_mtime_ns for p in quick_run.glob('*.png')} == plots  # the run's own plots kept
    (tmp_path/'finder').mkdir(); (tmp_path/'finder'/'.DS_Store').write_text('')  # a hidden file is no one's results
    assert (Path(recipe.evaluate(quick_run, out=tmp_path/'finder')['run']) == quick_run.resolve()) and (tmp_path/'finder'/'metrics.json').is_file()


def test_bad_input_is_named(quick_run, tiny, tmp_path):
    with pytest.raises(RecipeError, match=f'{tmp_path} is not a run folder: it has no results.json'): recipe.evaluate(tmp_path)
    no_weights = shutil.copytree(quick_run, tmp_path/'no-weights', ignore=shutil.ignore_patterns('eval', 'model.safetensors'))
    with pytest.raises(RecipeError, match=f'{no_weights} has no model.safetensors'): recipe.evaluate(no_weights)
    (tmp_path/'empty').mkdir()
    with pytest.raises(RecipeError, match=f'{tmp_path/"empty"} holds no class folders of images'): recipe.evaluate(quick_run, tmp_path/'empty')
    folder = shutil.copytree(tiny/'test', tmp_path/'bad')
    bad = sorted((folder/'dog').iterdir())[0]; bad.write_bytes(b'not a png')
    with pytest.raises(RecipeError, match=f'cannot read image {bad}'): recipe.evaluate(quick_run, folder)
    with pytest.warns(UserWarning, match='skipped 1 bad file'):
        m = recipe.evaluate(quick_run, folder, skip_bad=True)
    assert (m['images'], m['skipped']) == (49, 1)


def test_other_images_as_the_runs_own_a_folder_where_images_belong_and_an_unwritable_place_are_named(quick_run, tiny, tmp_path):
    "Each used to pass without a word (other images scored as the run's own; images in a subfolder left out) or end in a traceback"
    other = shutil.copytree(tiny, tmp_path/'other')
    first = sorted((other/'train'/'cat').iterdir())[0]; first.rename(first.with_name('renamed.png'))  # its test images are the same
    assert recipe.evaluate(quick_run, data=other, out=tmp_path/'e')['accuracy'] == pytest.approx(record_of(quick_run)['test_accuracy'], abs=1e-6)
    first = sorted((other/'test'/'cat').iterdir())[0]; first.rename(first.with_name('renamed.png'))  # the same classes and counts
    with pytest.raises(RecipeError, match=f"the test images in {other} are not those {quick_run} was tested on"):
        recipe.evaluate(quick_run, data=other)
    with pytest.raises(RecipeError, match=f"--data {other} is for the run's own test set"): recipe.evaluate(quick_run, tiny/'test', data=other)
    folder = shutil.copytree(tiny/'test', tmp_path/'nested')
    (folder/'cat'/'more').mkdir()
    for f in sorted((folder/'cat').glob('*.png'))[:2]: f.rename(folder/'cat'/'more'/f.name)
    with pytest.raises(RecipeError, match=f"{folder/'cat'/'more'}: a folder inside a class folder"): recipe.evaluate(quick_run, folder)
    (folder/'dog'/'gone.png').symlink_to(tmp_path/'nowhere.png')
    with pytest.warns(UserWarning, match='skipped 2 bad'): m = recipe.evaluate(quick_run, folder, skip_bad=True)
    assert (m['images'], m['skipped']) == (48, 2)
    run = shutil.copytree(quick_run, tmp_path/'run', ignore=shutil.ignore_patterns('eval'))
    (run/'eval').write_text('')
    with pytest.raises(RecipeError, match=f"cannot write {run/'eval'/'test'}: Not a directory"): recipe.evaluate(run)


def test_the_command_prints_the_table(quick_run, tmp_path):
    r = subprocess.run([sys.executable, '-m', 'recipe', 'evaluate', quick_run, '--out', tmp_path/'eval'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    acc = record_of(quick_run)['test_accuracy']
    assert f'accuracy {acc:.4f} with TTA (level 2, images below 0.8 confidence)' in r.stdout and len([l for l in r.stdout.splitlines() if l.split()[:1] in (['airplane'], ['truck'])]) == 2
    r = subprocess.run([sys.executable, '-m', 'recipe', 'evaluate', tmp_path/'nowhere'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and f'no such run folder: {tmp_path/"nowhere"}' in r.stderr and 'Traceback' not in r.stderr


def test_another_folder_of_the_same_name_does_not_replace_the_scores_of_the_first(quick_run, tiny, tmp_path):
    "eval/test is the run's own test set's (serve and the Space take their examples from it), whatever came first"
    other = shutil.copytree(tiny/'test', tmp_path/'elsewhere'/'test')  # also called test, one image fewer
    next((other/'cat').iterdir()).unlink()
    shutil.rmtree(quick_run/'eval'/'test', ignore_errors=True)  # another test may have evaluated the run's own set
    assert recipe.evaluate(quick_run, other)['images'] == 49
    assert json.loads((quick_run/'eval'/'test-2'/'metrics.json').read_text())['folder'] == str(other.resolve())
    assert recipe.evaluate(quick_run)['images'] == 50  # the run's own
    own = (quick_run/'eval'/'test'/'metrics.json').read_text()
    assert json.loads(own)['images'] == 50
    recipe.evaluate(quick_run, other)  # the same folder again: its own scores replaced, not the run's, no test-3
    assert (quick_run/'eval'/'test'/'metrics.json').read_text() == own and not (quick_run/'eval'/'test-3').exists()
