import json, os, subprocess, sys
from pathlib import Path

import pytest

RUN_FILES = ['metrics.csv', 'results.json', 'model.safetensors', 'model.json', 'lr_find.png', 'lr_schedule.png',
             'loss.png', 'accuracy.png', 'confusion_matrix.png', 'top_losses.png', 'reliability.png', 'checkpoint.pt', 'README.md',
             'report.html']


def cli(*args, cwd=None, python=()):
    "`python -m recipe ...` as a user runs it, stdout a pipe (not a terminal); `python`: options of the interpreter"
    env = {k: v for k, v in os.environ.items() if k != 'RECIPE_DATA'}
    return subprocess.run([sys.executable, *python, '-m', 'recipe', *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_end_to_end_writes_every_file(tiny, tmp_path):
    out = tmp_path/'run'
    r = cli('train', '--data', tiny, '--epochs', 2, '--bs', 32, '--width', 8, '--seed', 0, '--out', out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    lines = r.stdout.splitlines()
    assert any(l.startswith('LRMIN') and 'LRMAX' in l for l in lines) and 'lr_find suggestions' in r.stdout
    table = [l.split() for l in lines if l.split() and l.split()[0] in ('epoch', '0', '1', '2')]
    assert [t[0] for t in table] == ['epoch', '1', '2'] and len(table[1]) == 5  # epochs from 1, as in metrics.csv
    assert '\r' not in r.stdout  # no progress-bar spam in a log
    res = json.loads((out/'results.json').read_text())
    for k in ('test_accuracy', 'test_loss', 'epochs', 'lr_min', 'lr_max', 'wall_seconds', 'device'): assert k in res
    assert res['complete'] and res['epochs'] == 2 and res['device'] == 'cpu'
    assert (out/'metrics.csv').read_text().splitlines()[0] == 'epoch,train_loss,test_loss,test_accuracy,seconds'
    assert len((out/'metrics.csv').read_text().splitlines()) == 3
    meta = json.loads((out/'model.json').read_text())
    assert meta['width'] == 8 and len(meta['classes']) == 10
    assert '2 epochs, batch 32,' in (out/'README.md').read_text() and ', seed 0, 1 process |' in (out/'README.md').read_text()


def test_help_lists_options():
    r = cli('train', '--help')
    assert r.returncode == 0
    for opt in ('--data', '--epochs', '--bs', '--width', '--lr-min', '--lr-max', '--seed', '--out'): assert opt in r.stdout


@pytest.mark.parametrize('args', [['train', '--help'], ['runs', '{tmp}'], ['show', '{tmp}', '--no-open'], ['fly'], ['--help']])
def test_commands_that_need_no_model_start_without_torch(tmp_path, args):
    "`recipe runs`, `show`, `--help` and a usage error answer in about a second: torch and fastai (~8 s) stay unimported"
    code = ("import runpy, sys\n"
            "try: runpy.run_module('recipe', run_name='__main__', alter_sys=True)\n"
            "except SystemExit: pass\n"
            "print('heavy:', [m for m in ('torch', 'fastai') if m in sys.modules])")
    (tmp_path/'run').mkdir(); (tmp_path/'run'/'results.json').write_text(json.dumps(dict(profile='seed', epochs=1, per_epoch=[])))
    r = subprocess.run([sys.executable, '-c', code, *(a.format(tmp=tmp_path) for a in args)], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[-1] == 'heavy: []', r.stdout + r.stderr
    if args[0] == 'runs': assert (tmp_path/'index.html').is_file() and 'not complete' in r.stdout  # a row and its page


def test_import_recipe_reaches_every_module_by_name():
    "`import recipe` then `recipe.data.find_data` (as bench/own_data.py does): a module loads on first use, as an export does"
    r = subprocess.run([sys.executable, '-c', 'import recipe; print(recipe.data.find_data.__name__, recipe.train.__module__)'],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ['find_data', 'recipe.run'], r.stderr


def test_the_recipe_console_command_is_installed():
    "setup.cfg's entry point, next to `python -m recipe` (pip install -e . puts it beside this Python)"
    exe = Path(sys.executable).parent/'recipe'
    r = subprocess.run([exe if exe.exists() else 'recipe', 'train', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith('usage: recipe train') and '--profile' in r.stdout


def test_unknown_command_is_named_and_help_lists_every_command():
    from recipe import __version__
    from recipe.cli import COMMANDS
    r = cli('fly')
    assert r.returncode != 0 and r.stderr.startswith("unknown command 'fly'\nusage:"), r.stderr
    for args in (['--help'], ['-h']):
        r = cli(*args)
        assert r.returncode == 0 and r.stdout.startswith('usage:'), r.stdout + r.stderr
        listed = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith('  ')}
        assert set(COMMANDS) < set(listed) and 'on CIFAR-10 or any image folder' in listed['train'] and 'ONNX' in listed['export']
    r = cli('--version')
    assert r.returncode == 0 and r.stdout == f'recipe {__version__}\n'
    r = cli('show', '--help')
    assert r.returncode == 0 and '--no-open' in r.stdout and '(default: False)' in r.stdout and '--open' not in r.stdout


def damage(data: Path, case: str) -> str:
    "Break a copy of the tiny data set in one way; return what the error must name"
    if case == 'missing folder': return str(data/'nope')
    if case == 'no train':
        (data/'train').rename(data/'training'); return f'data folder {data} has none of the layouts looked for'
    if case == 'no test':  # (valid/ or val/ would do: the ImageNet-style layout)
        (data/'test').rename(data/'testing'); return 'has train/ but no test/, valid/ or val/'
    if case == 'empty split':
        for f in (data/'test').rglob('*.png'): f.unlink()
        return str(data/'test')
    if case == 'unknown test class':
        (data/'test'/'cat').rename(data/'test'/'tiger'); return 'tiger'
    if case == 'corrupt image':
        bad = next((data/'train'/'dog').iterdir()); bad.write_bytes(bad.read_bytes()[:40]); return str(bad)
    if case == 'not an image':
        bad = data/'train'/'dog'/'notes.png'; bad.write_text('not a png'); return str(bad)
    raise ValueError(case)


def refused(*args) -> tuple:
    "A command that must fail, run under `python -X importtime`: its exit status, its message and the modules it imported"
    r = cli(*args, python=['-X', 'importtime'])
    imports = [line for line in r.stderr.splitlines() if line.startswith('import time:')]
    message = '\n'.join(line for line in r.stderr.splitlines() if line not in imports)
    return r.returncode, message, [line.rsplit('|', 1)[-1].strip() for line in imports]


LAYOUT_CASES = ('missing folder', 'no train', 'no test')  # found by recipe/folders.py; the others once the images are read


@pytest.mark.parametrize('case', [*LAYOUT_CASES, 'empty split', 'unknown test class', 'corrupt image', 'not an image'])
def test_bad_data_gives_one_clear_error(tiny_copy, tmp_path, case):
    named = damage(tiny_copy, case)
    data = named if case == 'missing folder' else tiny_copy
    status, message, imported = refused('train', '--data', data, '--epochs', 1, '--width', 8, '--out', tmp_path/'run')
    assert status != 0
    assert named in message and 'Traceback' not in message
    assert not (tmp_path/'run').exists()  # nothing started
    if case in LAYOUT_CASES: assert 'torch' not in imported  # at once, not after torch and fastai load (~7 s)


def test_a_data_path_that_is_a_file_or_from_recipe_data_is_named_so(tmp_path):
    (tmp_path/'f').write_text('not a folder')
    status, message, imported = refused('train', '--data', tmp_path/'f')
    assert status == 1 and f"the data folder {tmp_path/'f'} is a file, not a folder" in message and 'torch' not in imported
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train'], capture_output=True, text=True,
                       env=os.environ | {'RECIPE_DATA': str(tmp_path/'nope')})
    assert r.returncode == 1 and f"data folder not found: {tmp_path/'nope'} (named by $RECIPE_DATA)" in r.stderr
    r = subprocess.run([sys.executable, '-m', 'recipe', 'train', '--data', tmp_path/'nope'], capture_output=True, text=True,
                       env=os.environ | {'RECIPE_DATA': str(tmp_path/'nope')})  # the same path, but --data named it
    assert r.returncode == 1 and f"data folder not found: {tmp_path/'nope'}" in r.stderr and 'RECIPE_DATA' not in r.stderr


def test_bench_refuses_a_missing_data_folder_at_once_and_lists_its_profiles_without_one(tmp_path):
    status, message, imported = refused('bench', 'fast', '--data', tmp_path/'nope', '--results', tmp_path/'results')
    assert status != 0 and f"data folder not found: {tmp_path/'nope'}" in message and 'torch' not in imported
    assert not (tmp_path/'results').exists()
    for args, says in [(('quik',), "unknown profile 'quik'"), (('fast', '--ablation', 'nope'), "unknown ablation 'nope'")]:
        status, message, imported = refused('bench', *args, '--data', tmp_path/'nope')
        assert status == 1 and says in message and 'torch' not in imported  # a misspelt name before the data and torch
    r = cli('bench', 'list', '--data', tmp_path/'nope')  # the list needs no data
    assert r.returncode == 0 and 'fast-progressive' in r.stdout


def test_a_wrong_run_folder_image_or_address_is_refused_before_torch_loads(tiny_run, tmp_path):
    "predict, export, evaluate and serve check what they are given with the standard library: one line, at once"
    import socket
    run, nope = tiny_run[0], tmp_path/'nope'
    unfinished = tmp_path/'unfinished'; unfinished.mkdir(); (unfinished/'results.json').write_text('{}')
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen()
        port = taken.getsockname()[1]
        cases = [(('predict', nope, run/'report.html'), f'no such file: {nope}'),
                 (('predict', run, nope), f'no such file or folder: {nope}'),
                 (('export', nope, '--onnx', tmp_path/'m.onnx'), f'no such file: {nope}'),
                 (('export', run, '--onnx', tmp_path/'m.onnx', '--check', nope), f'no such file or folder: {nope}'),
                 (('export', run), 'give one of --onnx FILE or --space FOLDER'),
                 (('export', run, '--onnx', tmp_path), f'{tmp_path} is a folder: give a file name'),
                 (('export', run, '--space', run), f'{run} already exists and is not an empty folder'),
                 (('predict', unfinished, run/'report.html'), f'{unfinished} has no model.safetensors: the run did not finish'),
                 (('export', unfinished, '--onnx', tmp_path/'m.onnx'), f'{unfinished} has no model.safetensors'),
                 (('predict', run/'checkpoint.pt', run/'report.html'), 'checkpoint.pt is a pickle-based file and is never loaded'),
                 (('predict', run/'export.PKL', run/'report.html'), 'export.PKL is a pickle-based file'),
                 (('predict', run, run/'report.html', '--csv', nope/'p.csv'), f"no such folder for {nope/'p.csv'}: {nope}"),
                 (('evaluate', nope), f'no such run folder: {nope}'),
                 (('evaluate', run, '--out', run), f'--out {run} holds files that are not an earlier evaluation'),
                 (('evaluate', run, '--out', run/'report.html'), f"--out {run/'report.html'} is a file: give a folder"),
                 (('evaluate', unfinished), f'{unfinished} has no model.safetensors'),
                 (('evaluate', run, nope), f'no such folder: {nope}'),
                 (('evaluate', run, nope, '--data', nope), f"--data {nope} is for the run's own test set, moved"),
                 (('evaluate', run, unfinished), f'{unfinished} holds no class folders of images'),
                 (('serve', unfinished), f'{unfinished} has no model.safetensors'),
                 (('serve', run, '--port', port), f'port {port} on 127.0.0.1 is in use: give another with --port'),
                 (('serve', run, '--host', '192.0.2.1'), 'cannot listen on 192.0.2.1: '),  # TEST-NET: no one's address
                 (('serve', run, '--port', 70000), 'port must be from 1 to 65535, got 70000')]
        for args, expected in cases:
            status, message, imported = refused(*args)
            assert status == 1 and expected in message and len(message.strip().splitlines()) == 1, (args, message)
            assert 'torch' not in imported, args  # not after torch and fastai load (7-15 s)
    assert not (tmp_path/'m.onnx').exists()


@pytest.mark.parametrize('opt,value', [('--epochs', 0), ('--bs', 0), ('--width', -1), ('--lr-max', -0.1), ('--seed', -1),
                                       ('--augment', 'foo'), ('--size', 8)])
def test_bad_options_give_one_clear_error(tiny, tmp_path, opt, value):
    status, message, imported = refused('train', '--data', tiny, opt, value, '--out', tmp_path/'run')
    assert status != 0
    assert f"{opt.strip('-').replace('-', '_')} must be" in message and str(value) in message and 'Traceback' not in message
    assert not (tmp_path/'run').exists()
    assert 'recipe.settings' in imported and 'torch' not in imported  # at once, not after torch and fastai load (~7 s)


def test_a_bad_augment_is_named_as_such_on_every_profile():
    from recipe.config import PROFILES
    from recipe.errors import RecipeError
    from recipe.settings import settings_for
    for profile in PROFILES:  # not as flip 'alternate' needing the batch path, on the profiles that flip so
        with pytest.raises(RecipeError, match="augment must be one of albumentations, batch, got 'foo'"): settings_for(profile, augment='foo')


def test_existing_run_folder_is_not_overwritten(tiny, tmp_path):
    out = tmp_path/'run'; out.mkdir(); (out/'results.json').write_text('{"precious": 1}')
    r = cli('train', '--data', tiny, '--epochs', 1, '--width', 8, '--out', out)
    assert r.returncode != 0 and str(out) in r.stderr and 'Traceback' not in r.stderr
    assert (out/'results.json').read_text() == '{"precious": 1}'


def test_skip_bad_warns_in_plain_words(tiny_copy, tmp_path):
    (tiny_copy/'train'/'dog'/'empty.png').touch()
    r = cli('train', '--data', tiny_copy, '--epochs', 1, '--bs', 32, '--width', 8, '--lr-min', 1e-3, '--lr-max', 1e-2,
            '--skip-bad', '--out', tmp_path/'run')
    assert r.returncode == 0, r.stderr
    assert f"warning: skipped 1 bad file or folder in {tiny_copy}:\n  cannot read image {tiny_copy}/train/dog/empty.png: the file is empty (0 bytes)" in r.stderr
    card = (tmp_path/'run'/'README.md').read_text()
    assert '1 epoch, batch 32,' in card and 'no seed (not repeatable), 1 process |' in card  # the card's words for one, and for no seed
    assert 'UserWarning' not in r.stderr and 'data.py' not in r.stderr  # no source lines for a user


def test_the_readmes_signature_of_train_and_its_commands_are_the_real_ones():
    "README's `recipe.train(...)` is the real signature; its command list has every command with all its options"
    import inspect, re
    from fastcore.script import anno_parser
    import recipe
    from recipe.cli import COMMANDS
    readme = (Path(__file__).resolve().parents[1]/'README.md').read_text()
    written = re.search(r'`recipe\.train\((.*?)\)`: ', readme, re.S)[1]
    assert written.split() == str(inspect.signature(recipe.train)).partition(' -> ')[0][1:-1].split()
    block = readme.partition('## Command line')[2].partition('```\n')[2].partition('```')[0]
    usage = {}  # command -> its lines in the block (a line that starts with spaces goes on the one before)
    for line in block.splitlines():
        if line.startswith('python -m recipe '): name = line.split()[3]; usage[name] = usage.get(name, '') + line
        else: usage[name] += line
    for name, command in COMMANDS.items():
        parser = anno_parser(command.__wrapped__)
        options = {o for a in parser._actions for o in a.option_strings if o.startswith('--')} - {'--help', '--pdb', '--xtra'}
        # a positional argument (call_parse's pos) is written as its name in capitals: FOLDER
        missing = {o for o in options if not re.search(rf'{o}\b', usage.get(name, '')) and o[2:].upper() not in usage.get(name, '')}
        assert name in usage and not missing, (name, missing)
