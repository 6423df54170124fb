"""The demo against recipe.predict on a run's test images, through a real browser (issue 25's "done when"):
`recipe serve RUN` and the Space of `recipe export RUN --space` each get N test images (10 a class by default) in
one upload, through the page's own endpoint, and the table each page returns (top class, probability to 4 decimals)
is compared with recipe.predict; the Space's ONNX model is also compared in full precision. Prints one JSON line.

    python bench/demo_check.py RUN [--n-per-class 10] [--shot docs/serve.png]
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

import recipe
from recipe.evaluation import own_test_files
from recipe.record import finished_run


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def started(cmd, port, env=None):
    proc = subprocess.Popen(cmd, env=os.environ | (env or {}), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(360):
        try: socket.create_connection(('127.0.0.1', port), 1).close(); return proc
        except OSError: time.sleep(0.5)
        if proc.poll() is not None: sys.exit(f"{cmd} exited {proc.returncode}")
    os.killpg(proc.pid, signal.SIGKILL); sys.exit(f"{cmd} did not listen on {port}")


def stopped(proc):
    proc.send_signal(signal.SIGINT)
    try: proc.wait(30)
    except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(); sys.exit('a server ignored Ctrl-C')


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions(); o.binary_location = shutil.which('chromium')
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--window-size=1100,1300', '--disable-dev-shm-usage'): o.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=o)


def shown_by(url, files) -> dict:
    """{file name: (class, probability)}: the table the page shows after `files` are uploaded at once, from the page's
    own endpoint (gradio_client makes the call the browser makes; the page's table is virtual, so not read from the DOM)"""
    from gradio_client import Client, handle_file
    label, table, picture = Client(url, verbose=False).predict([handle_file(str(f)) for f in files], api_name='/classify')
    return {r[0]: (r[1], float(r[2])) for r in table['data']}


def screenshot(url, file, shot):
    "The page after one upload, as a person sees it"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#images input[type=file]')).send_keys(str(file))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#classes [data-testid="label-output-value"]'))
        time.sleep(1); driver.save_screenshot(shot)
    finally: driver.quit()


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('run'); ap.add_argument('--n-per-class', type=int, default=10); ap.add_argument('--shot')
    a = ap.parse_args()
    run = Path(a.run)
    model = recipe.load(run)
    files, _ = own_test_files(run, finished_run(run), None, model.classes, lambda msg: None)
    picked = [f for c in model.classes for f in [f for f in files if f.parent.name == c][:a.n_per_class]]
    names = [f'{f.parent.name}_{f.name}' for f in picked]  # unique names: the page shows the uploaded file's name
    tmp = Path(tempfile.mkdtemp())
    for f, n in zip(picked, names): shutil.copyfile(f, tmp/n)
    uploads = [tmp/n for n in names]
    want = dict(zip(names, recipe.predict(model, uploads, k=1)))
    space = tmp/'space'
    subprocess.run([sys.executable, '-m', 'recipe', 'export', run, '--space', space], check=True, capture_output=True)
    sys.path.insert(0, str(space)); from app import onnx_predict  # the Space's own code
    meta = json.loads((space/'model.json').read_text())
    onnx = dict(zip(names, onnx_predict(space/'model.onnx', meta['classes'], meta['size'])(list(map(str, uploads)))))
    result = dict(run=str(run), images=len(names), onnx_same_top1=sum(onnx[n][0][0] == want[n][0][0] for n in names),
                  onnx_max_prob_diff=max(abs(onnx[n][0][1] - want[n][0][1]) for n in names))
    serve_port, space_port = free_port(), free_port()
    for name, p, cmd, env in [('serve', serve_port, [sys.executable, '-m', 'recipe', 'serve', run, '--port', str(serve_port)], None),
                              ('space', space_port, [sys.executable, space/'app.py'], dict(GRADIO_SERVER_PORT=str(space_port)))]:
        proc = started(cmd, p, env)
        try:
            t0 = time.time()
            shown = shown_by(f'http://127.0.0.1:{p}/', uploads)
            result[f'{name}_seconds'] = round(time.time() - t0, 1)
            if a.shot and name == 'serve': screenshot(f'http://127.0.0.1:{p}/', uploads[len(uploads) // 2], a.shot)
        finally: stopped(proc)
        result[f'{name}_same_top1'] = sum(shown[n][0] == want[n][0][0] for n in names)
        result[f'{name}_max_prob_diff'] = max(abs(shown[n][1] - want[n][0][1]) for n in names)  # the table rounds to 4 decimals
    print(json.dumps(result))


if __name__ == '__main__': main()
