"""Showing a run: `recipe serve RUN` and the Space of `recipe export RUN --space DIR`, each driven in headless Chromium
(selenium; .ci/run installs Debian's chromium): an uploaded image gets the class `recipe.predict` gives, a bad upload a
message while the server goes on, and no server or process is left behind."""
import ast, json, os, shutil, signal, socket, struct, subprocess, sys, time, zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import recipe
from recipe import RecipeError
from recipe.space_app import MAX_PIXELS, classified, markdown_text, problem


@pytest.fixture(scope='module')
def demo_run(quick_run, tmp_path_factory):
    "A copy of the quick run on `tiny` (TTA level 2 under 0.8 confidence, which the pages must apply), without what `recipe evaluate` wrote"
    return Path(shutil.copytree(quick_run, tmp_path_factory.mktemp('demo')/'run', ignore=shutil.ignore_patterns('eval')))


@pytest.fixture(scope='module')
def space(demo_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp('space')/'space'
    r = subprocess.run([sys.executable, '-m', 'recipe', 'export', demo_run, '--space', folder], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return folder


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def listening(port) -> list:
    "The local addresses listening on `port` (IPv4), from /proc/net/tcp"
    rows = [line.split() for line in open('/proc/net/tcp').read().splitlines()[1:]]
    return [socket.inet_ntoa(bytes.fromhex(r[1].split(':')[0])[::-1]) for r in rows if int(r[1].split(':')[1], 16) == port and r[3] == '0A']


class Server:
    "A server in a process group of its own, started and waited for; stopped with everything it started"
    def __init__(self, cmd, port, env=None):
        self.port, self.proc = port, subprocess.Popen(cmd, env=os.environ | (env or {}), start_new_session=True,
                                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        try:
            while not listening(port):
                if self.proc.poll() is not None: pytest.fail(f"{cmd} exited {self.proc.returncode}: {self.proc.stdout.read()}")
                if time.time() > deadline: pytest.fail(f"{cmd} did not listen on {port} within 180 s")
                time.sleep(0.5)
        except BaseException: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(); raise  # never left running
    def stop(self):
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try: self.proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(10); pytest.fail("the server ignored Ctrl-C")
        try: os.killpg(self.proc.pid, 0); left = True
        except ProcessLookupError: left = False
        assert not left, 'a process of the server outlived it'
        assert listening(self.port) == []
        return self.proc.stdout.read()  # what it printed


def text_file_named_png(folder):
    bad = folder/'notes.png'; bad.write_text('not an image, whatever its name says\n'); return bad


def upload_and_read(browser, url, image, bad, expected):
    """Open the page, upload `image`: the class shown and the table's probability must be `expected`'s; then `bad`,
    whose message must show; then `image` again, to see the server go on"""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(url)
    wait = WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException])  # the page re-renders
    upload = lambda f: wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#images input[type=file]')).send_keys(str(f))
    shown = lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, '#classes [data-testid="label-output-value"]')]
    cells = lambda d: [c.get_attribute('textContent').strip() for c in d.find_elements(By.CSS_SELECTOR, '#table tbody td')]
    clear = lambda: browser.find_element(By.CSS_SELECTOR, '#images button[aria-label="Clear"]').click()
    upload(image)
    assert wait.until(shown) == [expected[0]]
    row = wait.until(lambda d: cells(d)[:3] if image.name in cells(d) else None)
    assert row[1] == expected[0] and abs(float(row[2]) - expected[1]) < 1e-4  # the table shows 4 decimals
    clear(); wait.until(lambda d: not shown(d))
    upload(bad)
    message = wait.until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="toast-body"]') if 'notes.png' in e.text])
    assert 'not an image' in message[0]
    clear(); wait.until(lambda d: not shown(d))
    upload(image)
    assert wait.until(shown) == [expected[0]]  # the server went on serving


def test_served_page_and_exported_space_in_a_browser_agree_with_predict(demo_run, space, tiny, browser, tmp_path):
    files = sorted((tiny/'test').rglob('*.png'))
    top = [r[0] for r in recipe.predict(recipe.load(demo_run), files, k=1)]
    counts = {c: sum(t[0] == c for t in top) for c, _ in top}
    i = min(range(len(files)), key=lambda i: counts[top[i][0]])  # the rarest answer: a page that shows one class for all fails
    image, expected = files[i], top[i]
    bad = text_file_named_png(tmp_path)
    served = Server([sys.executable, '-m', 'recipe', 'serve', demo_run, '--port', str(port := free_port())], port)
    try:
        assert listening(port) == ['127.0.0.1']  # this machine only, unless --host says otherwise
        upload_and_read(browser, f'http://127.0.0.1:{port}/', image, bad, expected)
        import urllib.error, urllib.request
        fetch = lambda f: urllib.request.urlopen(f'http://127.0.0.1:{port}/gradio_api/file={f}', timeout=30).status
        cats = sorted((tiny/'test'/'cat').iterdir())
        assert fetch(cats[0]) == 200  # an example, shown on the page
        with pytest.raises(urllib.error.HTTPError, match='403'): fetch(cats[1])  # beside it, not shown: not served
    finally: said = served.stop()
    assert f'serving {demo_run} on http://127.0.0.1:{port}/ (Ctrl-C stops it)' in said and 'share=True' not in said, said
    spaced = Server([sys.executable, space/'app.py'], port := free_port(), env=dict(GRADIO_SERVER_PORT=str(port)))
    try:
        assert listening(port) == ['127.0.0.1']
        upload_and_read(browser, f'http://127.0.0.1:{port}/', image, bad, expected)
    finally: spaced.stop()


def test_the_space_needs_no_recipe_and_no_pickle_and_agrees_with_predict(demo_run, space, tiny, tmp_path):
    assert sorted(p.name for p in space.iterdir()) == ['.gitattributes', 'README.md', 'app.py', 'card.md', 'examples', 'model.json', 'model.onnx', 'requirements.txt']
    assert '*.onnx filter=lfs' in (space/'.gitattributes').read_text()  # the Hub takes binaries through LFS
    imported = {n.names[0].name.split('.')[0] for n in ast.walk(ast.parse((space/'app.py').read_text())) if isinstance(n, ast.Import)}
    imported |= {n.module.split('.')[0] for n in ast.walk(ast.parse((space/'app.py').read_text())) if isinstance(n, ast.ImportFrom)}
    assert imported <= {'json', 'os', 're', 'sys', 'pathlib', 'numpy', 'PIL', 'gradio', 'onnxruntime'}
    assert {l.split('=')[0] for l in (space/'requirements.txt').read_text().split()} == {'gradio', 'onnxruntime', 'numpy', 'pillow'}
    readme = (space/'README.md').read_text()
    assert readme.startswith('---\n') and '\nsdk: gradio\n' in readme and '\napp_file: app.py\n' in readme and '# run: an image classifier' in readme
    assert str(tiny) not in readme + (space/'card.md').read_text()  # no local path is published
    assert not [p for p in space.rglob('*') if p.suffix in ('.pkl', '.pth', '.pt', '.bin')]
    assert len(list((space/'examples').iterdir())) == 10  # one test image per class
    # the Space's own code, run as a Space runs it (no recipe on its path), against recipe.predict on the test images
    Image.open(sorted((tiny/'test'/'cat').iterdir())[0]).convert('RGBA').resize((50, 40)).save(tmp_path/'rgba.png')
    Image.open(sorted((tiny/'test'/'dog').iterdir())[0]).convert('L').resize((64, 64)).save(tmp_path/'gray.png')
    files = sorted(str(f) for f in (tiny/'test').rglob('*.png')) + [str(tmp_path/'rgba.png'), str(tmp_path/'gray.png')]
    code = ("import json, sys; sys.modules['recipe'] = None; sys.path.insert(0, sys.argv[1]); from app import onnx_predict; meta = json.load(open(sys.argv[1] + '/model.json'));"
            "print(json.dumps(onnx_predict(sys.argv[1] + '/model.onnx', meta['classes'], meta['size'])(sys.argv[2:])))")
    r = subprocess.run([sys.executable, '-I', '-c', code, space, *files], capture_output=True, text=True, timeout=300, cwd=space.parent)
    assert r.returncode == 0, r.stderr
    got, want = json.loads(r.stdout), recipe.predict(recipe.load(demo_run), files)
    assert [g[0][0] for g in got] == [w[0][0] for w in want]  # the top class of every image
    assert np.abs(np.array([[p for _, p in g] for g in got]) - np.array([[p for _, p in w] for w in want])).max() < 1e-5


def test_bad_uploads_are_named(tmp_path):
    empty = tmp_path/'empty.png'; empty.write_bytes(b'')
    assert problem(empty) == 'empty.png: the file is empty'
    assert problem(text_file_named_png(tmp_path)).startswith('notes.png: not an image')
    side = int(MAX_PIXELS ** 0.5) + 1
    Image.new('L', (side, side)).save(tmp_path/'huge.png')
    assert problem(tmp_path/'huge.png') == f'huge.png: {side:,} x {side:,} pixels is too large (at most {MAX_PIXELS:,})'
    ihdr = struct.pack('>IIBBBBB', 20000, 20000, 8, 2, 0, 0, 0)  # a header alone, of 400 million pixels: Pillow's bomb check
    chunk = lambda kind, data: struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    (tmp_path/'bomb.png').write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', b'') + chunk(b'IEND', b''))
    assert problem(tmp_path/'bomb.png') == f'bomb.png: too large (more than {MAX_PIXELS:,} pixels)'
    Image.new('RGB', (40, 30)).save(tmp_path/'fine.png')
    assert problem(tmp_path/'fine.png') is None


def test_names_show_as_they_are_and_each_upload_gets_its_row(demo_run, tmp_path):
    "A run or class named with HTML or Markdown in it italicised the page; two identical uploads (one file to gradio) got one row"
    from recipe.serve import card
    record, meta = json.loads((demo_run/'results.json').read_text()), json.loads((demo_run/'model.json').read_text())
    meta['classes'] = ['<b>plane&"x"', 'a|b', *meta['classes'][2:]]
    record['per_class'][0]['class'] = meta['classes'][0]
    odd = Path(shutil.copytree(demo_run, tmp_path/"odd <i>&'name 名"))
    text = card(odd, record, meta)
    assert '<b>' not in text and '<i>' not in text and '&lt;b&gt;plane&amp;"x"' in text and r'a\|b' in text and r'a\\|b' not in text
    assert text.startswith("## The model: odd &lt;i&gt;&amp;'name 名") and markdown_text('# *x*_ [y](z)') == r'\# \*x\*\_ \[y\]\(z\)'
    Image.new('RGB', (8, 8)).save(tmp_path/'a.png')
    label, rows, first, messages = classified([str(tmp_path/'a.png')] * 2 + [str(text_file_named_png(tmp_path))],
                                              lambda paths: [[('cat', 0.75)] for _ in paths])
    assert label == {'cat': 0.75} and first == str(tmp_path/'a.png') and len(messages) == 1
    assert [r[:3] for r in rows] == [['a.png', 'cat', 0.75], ['a.png', 'cat', 0.75], ['notes.png', '', '']]


def test_serve_refuses_what_is_not_a_finished_run_before_listening(demo_run, tmp_path):
    unfinished = tmp_path/'unfinished'; unfinished.mkdir()
    (unfinished/'results.json').write_text((demo_run/'results.json').read_text())
    for folder, message in [(tmp_path, f'{tmp_path} is not a run folder'), (unfinished, f'{unfinished} has no model.safetensors')]:
        port = free_port()
        r = subprocess.run([sys.executable, '-m', 'recipe', 'serve', folder, '--port', str(port)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and message in r.stderr and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_without_gradio_names_the_extra(demo_run, tmp_path, monkeypatch):
    from recipe.serve import serve
    monkeypatch.setitem(sys.modules, 'gradio', None)  # what Python does for a package that is not installed
    with pytest.raises(RecipeError, match=r'needs gradio, the demo extra: pip install -e "\.\[demo\]"'): serve(demo_run)


def test_serve_on_a_port_in_use_or_a_foreign_host_says_so_before_loading(demo_run):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, '-m', 'recipe', 'serve', demo_run, '--port', str(port)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f'port {port} on 127.0.0.1 is in use: give another with --port' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, '-m', 'recipe', 'serve', demo_run, '--host', '192.0.2.1'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and 'cannot listen on 192.0.2.1: ' in r.stderr and 'Traceback' not in r.stderr, r.stderr  # TEST-NET: no one's address


def test_a_port_left_waiting_by_the_last_server_is_free_again():
    "After a served page is used and stopped, its port waits in TIME_WAIT: the next serve took the port after it"
    from recipe.address import free_port as recipe_free_port
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's
        listener.bind(('127.0.0.1', 0)); listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(('127.0.0.1', port))
        conn, _ = listener.accept()
        conn.close()  # the server closes first: its side of the connection waits in TIME_WAIT
    client.close(); time.sleep(0.2)
    assert recipe_free_port('127.0.0.1', port) == port


def test_a_failed_export_leaves_nothing_and_a_second_try_works(demo_run, tmp_path, monkeypatch):
    import recipe.serve
    def broken(*a, **k): raise RecipeError('ONNX export of the run failed: as a test')
    monkeypatch.setattr(recipe.serve, 'export_onnx', broken)
    with pytest.raises(RecipeError, match='as a test'): recipe.serve.export_space(demo_run, tmp_path/'space')
    assert list(tmp_path.iterdir()) == []  # no half-written Space, no temporary folder
    monkeypatch.undo()
    recipe.serve.export_space(demo_run, tmp_path/'space', examples=False)
    assert (tmp_path/'space'/'model.onnx').is_file() and not (tmp_path/'space'/'examples').exists()
    (tmp_path/'file').write_text('x')
    for taken in (tmp_path/'space', tmp_path/'file'):
        with pytest.raises(RecipeError, match=f'{taken} already exists and is not an empty folder'): recipe.serve.export_space(demo_run, taken)
