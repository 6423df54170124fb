"""report.html and runs/index.html, opened in a real browser (headless Chromium from Debian's `chromium` and
`chromium-driver`, driven by selenium; .ci/run installs them): every image decodes, nothing is fetched from the
network, the console stays clean, the page is not blank, and the runs' table sorts."""
import io, json, shutil, subprocess, sys, unicodedata

import numpy as np
import pytest
from PIL import Image

import recipe
from recipe.pages import run_rows, write_run_page, write_runs_page


@pytest.fixture(scope='module')
def runs_folder(tiny, tmp_path_factory):
    "A folder of runs: a complete quick run, and a copy of it stopped after its first epoch"
    folder = tmp_path_factory.mktemp('runs')
    recipe.train(tiny, out=folder/'quick', profile='quick', epochs=2, bs=50, width=8, seed=0)
    stopped = shutil.copytree(folder/'quick', folder/'stopped', ignore=shutil.ignore_patterns('report.html', 'model.*'))  # no final stage
    record = json.loads((stopped/'results.json').read_text())
    record.update(complete=False, stopped='interrupted', per_epoch=record['per_epoch'][:1], test_accuracy=record['per_epoch'][0]['test_accuracy'])
    (stopped/'results.json').write_text(json.dumps(record))
    return folder


def open_page(driver, path):
    "Load a page; its requests and console messages since the last page"
    driver.get_log('performance'); driver.get_log('browser')  # empty both logs
    driver.get(path.resolve().as_uri())
    requests = [json.loads(e['message'])['message'] for e in driver.get_log('performance')]
    urls = [m['params']['request']['url'] for m in requests if m['method'] == 'Network.requestWillBeSent']
    return urls, driver.get_log('browser')


def check_page(driver, path, n_images):
    urls, console = open_page(driver, path)
    assert [u for u in urls if not u.startswith(('data:', path.resolve().as_uri()))] == []  # no network: everything inline
    assert [m for m in console if m['level'] in ('SEVERE', 'WARNING')] == []
    widths = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == n_images and all(w > 0 for w in widths)
    shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('L'))
    assert shot.std() > 20 and len(np.unique(shot)) > 50  # text, tables and plots, not a blank page


def test_a_runs_report_page_in_a_browser(runs_folder, browser):
    page = runs_folder/'quick'/'report.html'  # written by the run's final stage
    html = page.read_text()
    assert '<meta name="viewport"' in html and '@media print' in html and 'src="http' not in html
    for cls in ('airplane', 'truck'): assert f'<td>{cls}</td>' in html  # the per-class table
    assert 'python -m recipe train' not in html and 'recipe.train(' in html  # the command that made it (here from Python)
    check_page(browser, page, n_images=6)  # accuracy, loss, LR schedule, confusion matrix, reliability, top losses (no lr_find: fixed LRs)


def test_the_runs_index_in_a_browser_sorts_and_links(runs_folder, browser):
    rows = run_rows(runs_folder)
    index = write_runs_page(runs_folder, rows)
    assert [r['run'] for r in rows] == ['quick', 'stopped'] and (runs_folder/'stopped'/'report.html').is_file()  # made for it
    check_page(browser, index, n_images=1)  # the accuracy curves
    from selenium.webdriver.common.by import By
    first = lambda: browser.find_element(By.CSS_SELECTOR, 'tbody tr td a').text
    header = [th for th in browser.find_elements(By.TAG_NAME, 'th') if th.text.startswith('epochs')][0]
    header.click(); up = first()
    header.click(); down = first()
    assert (up, down) == ('stopped', 'quick')  # 1 epoch, then 2
    browser.find_element(By.LINK_TEXT, 'stopped').click()
    assert browser.current_url.endswith('stopped/report.html') and 'Not complete: interrupted' in browser.page_source


def test_show_and_runs_on_the_command_line(runs_folder, tmp_path):
    (runs_folder/'quick'/'report.html').unlink()
    r = subprocess.run([sys.executable, '-m', 'recipe', 'show', runs_folder/'quick', '--no-open'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (runs_folder/'quick'/'report.html').is_file(), r.stderr
    r = subprocess.run([sys.executable, '-m', 'recipe', 'runs', runs_folder], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:2] == ['quick', record_date(runs_folder/'quick')] and 'complete' in lines[1] and 'stopped: interrupted' in lines[2]
    r = subprocess.run([sys.executable, '-m', 'recipe', 'show', tmp_path, '--no-open'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f'{tmp_path} is not a run folder' in r.stderr and 'Traceback' not in r.stderr
    r = subprocess.run([sys.executable, '-m', 'recipe', 'runs', tmp_path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f'no runs in {tmp_path}' in r.stderr and not (tmp_path/'index.html').exists()  # not a page of nothing


def record_date(run): return json.loads((run/'results.json').read_text())['started'].split('T')[0]


def test_write_run_page_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(recipe.RecipeError, match=f'{tmp_path} is not a run folder'): write_run_page(tmp_path)


def test_odd_names_renamed_killed_and_unreadable_runs_are_each_listed_as_they_are(runs_folder, tmp_path):
    """Each used to go wrong: a '#' in a name broke its link, a renamed run kept its old page, a killed run looked like one
    training, a results.json that is not a record crashed the command"""
    import fcntl, os
    folder = tmp_path/'runs'; folder.mkdir()
    shutil.copytree(runs_folder/'quick', folder/'r#1 50%')
    shutil.copytree(runs_folder/'quick', folder/'renamed')  # its report.html still says 'quick'
    killed = shutil.copytree(runs_folder/'quick', folder/'killed', ignore=shutil.ignore_patterns('report.html', 'model.*'))
    record = json.loads((killed/'results.json').read_text()); record.update(complete=False)
    (killed/'results.json').write_text(json.dumps(record))
    training = shutil.copytree(killed, folder/'training')  # resumed: its record says stopped until it ends
    record.update(stopped='interrupted'); (training/'results.json').write_text(json.dumps(record))
    (folder/'listed').mkdir(); (folder/'listed'/'results.json').write_text('[]')
    held = os.open(training, os.O_RDONLY); fcntl.flock(held, fcntl.LOCK_EX)  # as its run's process holds it
    try: rows = {r['run']: r for r in run_rows(folder)}
    finally: os.close(held)
    assert rows['killed']['status'] == 'not complete: no process holds it (killed?)' and rows['training']['status'] == 'training'
    assert rows['listed']['status'] == 'results.json cannot be read'
    html = write_runs_page(folder, list(rows.values())).read_text()
    assert 'href="r%231%2050%25/report.html"' in html and 'href="renamed/report.html"' in html and 'href="killed' not in html
    assert '<title>renamed: recipe run</title>' in (folder/'renamed'/'report.html').read_text()


def test_the_runs_table_keeps_its_columns_for_wide_names_and_marks_a_stopped_runs_accuracy(runs_folder, tmp_path, capsys):
    """A name wider than its column pushed the rest of its row out of line (CJK characters take two columns, a combining
    accent none); a stopped run's accuracy (its last test pass's, without TTA) read as if it were a finished run's, and a
    run stopped in its final stage showed its TTA accuracy as that"""
    from recipe.pages import runs
    folder = tmp_path/'runs'; folder.mkdir()
    shutil.copytree(runs_folder/'quick', folder/'a run with a name much wider than the column')
    shutil.copytree(runs_folder/'quick', folder/'cafe\u0301 run')  # 'café' with its accent as a combining character
    shutil.copytree(runs_folder/'stopped', folder/'stopped')
    late = shutil.copytree(runs_folder/'quick', folder/'日本語の実行', ignore=shutil.ignore_patterns('report.html', 'model.*'))
    record = json.loads((late/'results.json').read_text())
    record.update(complete=False, stopped='interrupted in the final stage')  # after the TTA: test_accuracy is the TTA's
    (late/'results.json').write_text(json.dumps(record))
    rows = {r['run']: r for r in runs(folder)}
    lines = capsys.readouterr().out.splitlines()
    line = {name: next(l for l in lines if l.startswith(name)) for name in rows}
    date = record_date(runs_folder/'quick')
    columns = lambda l: sum(0 if unicodedata.combining(c) else 1 + (unicodedata.east_asian_width(c) in 'WF') for c in l[:l.index(date)])
    assert {columns(l) for l in line.values()} == {lines[0].index('date')}  # every row's date in the header's column
    stopped = rows['stopped']['accuracy']
    assert f"({100 * stopped:.2f}%)" in line['stopped']
    assert "(accuracy in parentheses: the last test pass's accuracy, without TTA: the run is not complete)" in lines
    finished = f"{100 * rows['a run with a name much wider than the column']['accuracy']:.2f}%"
    assert f" {finished} " in line['a run with a name much wider than the column'] and f"({finished})" not in lines[1]
    assert record['test_accuracy'] != record['test_accuracy_no_tta'] and f"({100 * record['test_accuracy_no_tta']:.2f}%)" in line['日本語の実行']
    html = (folder/'index.html').read_text()
    assert f"({100 * stopped:.2f}%)</td>" in html and "In parentheses: the last test pass&#39;s accuracy" in html
