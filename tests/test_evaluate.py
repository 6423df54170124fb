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


def test_another_folder_of_the_same_name_does_not_replace_the_scores_of_the_first(quick_run, tiny, tmp_path):
    recipe.evaluate(quick_run)  # the run's own test set: eval/test
    own = (quick_run/'eval'/'test'/'metrics.json').read_text()
    other = shutil.copytree(tiny/'test', tmp_path/'elsewhere'/'test')  # also called test, one image fewer
    next((other/'cat').iterdir()).unlink()
    assert recipe.evaluate(quick_run, other)['images'] == 49
    assert json.loads((quick_run/'eval'/'test-2'/'metrics.json').read_text())['folder'] == str(other.resolve())
    assert (quick_run/'eval'/'test'/'metrics.json').read_text() == own  # kept
    recipe.evaluate(quick_run, other)  # the same folder again: its own scores replaced, no test-3
    assert not (quick_run/'eval'/'test-3').exists()
