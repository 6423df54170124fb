"""Pages to look at: `report.html` in every run folder (its card, per-epoch table, plots, per-class table and command
in one self-contained file: the plots are inline, so it works offline and mailed; `recipe show RUN` rebuilds it and
opens it), and `runs/index.html` (`recipe runs [FOLDER]`): every run side by side, sortable, with their accuracy
curves overlaid. The project's own experiment tracker: no server, no account. The HTML is made with Jinja2."""
import base64, io, json, re, unicodedata, warnings, webbrowser
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import matplotlib.pyplot as plt
from jinja2 import Environment
from markupsafe import Markup, escape

from .errors import RecipeError
from .fonts import drawing
from .record import card_rows, last_test_accuracy, read_record, write_text
from .run_folder import in_use

__all__ = ['PLOTS', 'write_run_page', 'show', 'run_rows', 'write_runs_page', 'runs']

PLOTS = ('accuracy', 'loss', 'lr_schedule', 'lr_find', 'confusion_matrix', 'reliability', 'top_losses')  # in this order

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 0 auto; padding: 0.5rem 1rem; color: #222; line-height: 1.4 }
h1 { font-size: 1.4rem } h2 { font-size: 1.15rem; margin-top: 1.6rem }
.scroll { overflow-x: auto }
table { border-collapse: collapse; font-size: 0.9rem } td, th { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums }
th[data-sort] { cursor: pointer; white-space: nowrap } th[data-sort]::after { content: ' \\2195'; color: #999 }
code { background: #f4f4f4; padding: 0 0.2rem; word-break: break-all }
figure { margin: 1rem 0; break-inside: avoid } img { max-width: 100%; height: auto }
.stopped { color: #a40 }
@media print { body { max-width: none; font-size: 10pt } a { color: inherit; text-decoration: none } }
"""

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ style }}</style></head>
<body>{{ body }}{% if sortable %}<script>
// sort a table by the column clicked (numbers by their data-value), again to reverse
document.querySelectorAll('th[data-sort]').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows), up = th.dataset.dir !== 'up';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.value || a.cells[col].textContent, y = b.cells[col].dataset.value || b.cells[col].textContent;
      var d = (isNaN(x) || isNaN(y)) ? x.localeCompare(y) : x - y;
      return up ? d : -d;
    });
    th.dataset.dir = up ? 'up' : 'down';
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>{% endif %}</body></html>
""")

RUN_BODY = Environment(autoescape=True).from_string("""
<h1>{{ name }}{% if acc is not none %}: {{ '%.2f' % (100 * acc) }}% test accuracy{% endif %}</h1>
{% if stopped %}<p class="stopped">Not complete: {{ stopped }}</p>{% endif %}
<div class="scroll"><table>{% for k, v in facts %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></div>
<h2>Per epoch</h2>
<div class="scroll"><table><thead><tr><th class="n">epoch</th><th class="n">train loss</th><th class="n">test loss</th><th class="n">test accuracy</th><th class="n">seconds</th></tr></thead><tbody>
{% for r in epochs %}<tr><td class="n">{{ r.epoch }}</td><td class="n">{{ '%.4f' % r.train_loss }}</td><td class="n">{{ '%.4f' % r.test_loss if r.test_loss is not none else '-' }}</td><td class="n">{{ '%.4f' % r.test_accuracy if r.test_accuracy is not none else '-' }}</td><td class="n">{{ r.seconds }}</td></tr>
{% endfor %}</tbody></table></div>
{% if per_class %}<h2>Per class</h2>
<div class="scroll"><table><thead><tr><th>class</th><th class="n">accuracy (recall)</th><th class="n">precision</th><th class="n">F1</th><th class="n">images</th></tr></thead><tbody>
{% for r in per_class %}<tr><td>{{ r['class'] }}</td><td class="n">{{ '%.4f' % r.recall }}</td><td class="n">{{ '%.4f' % r.precision }}</td><td class="n">{{ '%.4f' % r.f1 }}</td><td class="n">{{ r.support }}</td></tr>
{% endfor %}</tbody></table></div>{% endif %}
<h2>Plots</h2>
{% for name, src in plots %}<figure><img src="{{ src }}" alt="{{ name }}"><figcaption>{{ name }}.png</figcaption></figure>
{% endfor %}
<h2>Command</h2><p><code>{{ command }}</code></p>
""")

RUNS_BODY = Environment(autoescape=True).from_string("""
<h1>{{ title }}</h1>
<p>{{ rows|length }} run(s). Click a column's name to sort by it.</p>
<div class="scroll"><table><thead><tr>{% for c in columns %}<th data-sort{% if c in numeric %} class="n"{% endif %}>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for r in rows %}<tr><td>{% if r.page %}<a href="{{ r.page }}">{{ r.run }}</a>{% else %}{{ r.run }}{% endif %}</td><td>{{ r.date }}</td><td>{{ r.profile }}</td>
<td class="n" data-value="{{ r.epochs_done }}">{{ r.epochs }}</td><td class="n" data-value="{{ -1 if r.accuracy is none else r.accuracy }}"{% if not r.final and r.accuracy is not none %} title="{{ LAST_TEST_PASS }}"{% endif %}>{{ accuracy_text(r) }}</td>
<td class="n" data-value="{{ r.wall }}">{{ '%.0f s' % r.wall }}</td><td>{{ r.machine }}</td><td>{{ r.precision }}</td><td{% if r.status != 'complete' %} class="stopped"{% endif %}>{{ r.status }}</td></tr>
{% endfor %}</tbody></table></div>
{% if rows|rejectattr('final')|selectattr('accuracy', 'ne', none)|list %}<p>(In parentheses: {{ LAST_TEST_PASS }}.)</p>{% endif %}
{% if curves %}<h2>Test accuracy per epoch</h2><figure><img src="{{ curves }}" alt="test accuracy per epoch of every run"></figure>{% endif %}
""")


def code_spans(text: str) -> Markup:
    "The card's `code` as <code>, the rest escaped"
    return Markup(re.sub(r'`([^`]*)`', r'<code>\1</code>', str(escape(text))))


def png_data(path: Path) -> str: return 'data:image/png;base64,' + base64.b64encode(path.read_bytes()).decode()


def write_run_page(run) -> Path:
    """report.html for a run folder, from its record, model.json (if the run got that far) and plots, written atomically"""
    run = Path(run)
    record = read_record(run)
    meta = json.loads((run/'model.json').read_text()) if (run/'model.json').is_file() else None
    if meta and 'test_accuracy' in meta:
        facts = [(k, code_spans(v)) for k, v in card_rows(record, meta) if k not in ('Per class', 'Command')]
    else:  # stopped before its final stage: what the record has
        facts = [('Profile', record.get('profile')), ('Data', record.get('data', {}).get('folder')),
                 ('Started', record.get('started')), ('Machine', machine(record))]
    body = RUN_BODY.render(name=run.name, acc=record.get('test_accuracy') if record.get('complete') else None,
                           stopped=None if record.get('complete') else record.get('stopped') or 'the run stopped, or is still running',
                           facts=facts, epochs=record.get('per_epoch', []), per_class=record.get('per_class'),
                           plots=[(p, png_data(run/f'{p}.png')) for p in PLOTS if (run/f'{p}.png').is_file()],
                           command=record.get('command', ''))
    path = run/'report.html'
    write_text(path, PAGE.render(title=f'{run.name}: recipe run', style=Markup(STYLE), body=Markup(body), sortable=False))
    return path


def show(run, open_page=True) -> Path:
    "Rebuild a run's report.html and open it in the browser, when this machine has one"
    path = write_run_page(run)
    print(f"wrote {path}")
    if open_page and webbrowser.open(path.resolve().as_uri()): print("opened it in the browser")
    return path


def machine(record) -> str:
    m = record.get('machine', {})
    return m.get('cpu', '?') + (f" + {m['gpu']}" if m.get('gpu', 'none') != 'none' else '')


def run_rows(folder) -> list:
    "One dict per run folder in `folder` (those with a results.json), by name (runs/<timestamp>: oldest first)"
    folder = Path(folder)
    if not folder.is_dir(): raise RecipeError(f"no such folder of runs: {folder}")
    rows = []
    for run in sorted(p for p in folder.iterdir() if (p/'results.json').is_file()):
        try: r = json.loads((run/'results.json').read_text())
        except (OSError, ValueError): r = None  # being written by a run that claimed its folder an instant ago, or damaged
        if not isinstance(r, dict):
            rows.append(dict(run=run.name, path=run, date='', profile='?', epochs_done=0, epochs='?', accuracy=None, final=False, wall=0,
                             machine='?', precision='?', per_epoch=[], status='results.json cannot be read'))
            continue
        done = len(r.get('per_epoch', []))
        rows.append(dict(run=run.name, path=run, date=(r.get('started') or datetime.fromtimestamp(run.stat().st_mtime).isoformat(timespec='seconds')).replace('T', ' '),
                         profile=r.get('profile', '?'), epochs_done=done, epochs=f"{done}/{r.get('epochs', '?')}",
                         accuracy=r.get('test_accuracy') if r.get('complete') else last_test_accuracy(r),
                         final=bool(r.get('complete')), wall=r.get('wall_seconds', 0), machine=machine(r),
                         precision=r.get('precision', '?'), per_epoch=r.get('per_epoch', []),
                         status=status(r, run)))
    return rows


LAST_TEST_PASS = "the last test pass's accuracy, without TTA: the run is not complete"


def accuracy_text(row) -> str:
    """A run's accuracy as the index shows it: a run not complete has only its last test pass's, without TTA (even one
    stopped in its final stage after the TTA), in parentheses"""
    if row['accuracy'] is None: return ''
    return f"{100 * row['accuracy']:.2f}%" if row['final'] else f"({100 * row['accuracy']:.2f}%)"


def status(record, run) -> str:
    "complete; training (a process holds the folder: a resumed run too, whose record says stopped until it ends); stopped; killed?"
    if record.get('complete'): return 'complete'
    held = in_use(run)
    if held: return 'training'
    if record.get('stopped'): return f"stopped: {record['stopped']}"
    return 'not complete' if held is None else 'not complete: no process holds it (killed?)'


def accuracy_curves(rows) -> str:
    "Every run's test accuracy per epoch in one plot, as an inline PNG ('' when no run has an epoch)"
    if not any(r['per_epoch'] for r in rows): return ''
    with drawing([r['run'] for r in rows]):  # run names in any script
        fig, ax = plt.subplots(figsize=(9, 5))
        for r in rows:
            if r['per_epoch']: ax.plot([e['epoch'] for e in r['per_epoch']], [e['test_accuracy'] for e in r['per_epoch']], marker='.', label=r['run'])
        ax.set_xlabel('epoch'); ax.set_ylabel('test accuracy'); ax.grid(alpha=.3)
        if len(rows) <= 12: ax.legend(fontsize=8)
        buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=100, bbox_inches='tight'); plt.close(fig)
    return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


def write_runs_page(folder, rows) -> Path:
    """index.html in `folder`: the runs' table, each finished or stopped run linking to its report.html (made again: a
    few ms, and a renamed folder's page names it anew); a run still going, or whose record cannot be read, is listed
    and its folder left alone"""
    folder = Path(folder)
    for r in rows:
        r['page'] = None
        if not (r['status'] == 'complete' or r['status'].startswith('stopped:')): continue
        try: write_run_page(r['path'])
        except (RecipeError, OSError, ValueError, KeyError) as e:  # one run's folder (read-only, a damaged file): the others go on
            warnings.warn(f"cannot make {r['path']/'report.html'} ({e}): " + ('its last one is linked' if (r['path']/'report.html').is_file() else 'no link'))
            if not (r['path']/'report.html').is_file(): continue
        r['page'] = quote(r['run']) + '/report.html'  # a name with # or ? is a path, not a URL's parts
    columns = ['run', 'date', 'profile', 'epochs', 'accuracy', 'wall time', 'machine', 'precision', 'status']
    body = RUNS_BODY.render(title=f'Runs in {folder.resolve()}', rows=rows, columns=columns, numeric={'epochs', 'accuracy', 'wall time'},
                            curves=accuracy_curves(rows), accuracy_text=accuracy_text, LAST_TEST_PASS=LAST_TEST_PASS)
    path = folder/'index.html'
    write_text(path, PAGE.render(title=f'runs: {folder.name}', style=Markup(STYLE), body=Markup(body), sortable=True))
    return path


def columns(text) -> int:  # as a terminal shows it: 日 takes 2 columns, a combining accent none
    return sum(0 if unicodedata.combining(c) else 1 + (unicodedata.east_asian_width(c) in 'WF') for c in text)
def padded(text, width) -> str: return text + ' ' * (width - columns(text))


def runs(folder='runs') -> list:
    "Print every run in `folder` side by side and write its index.html; returns the rows. A folder without runs is refused"
    rows = run_rows(folder)
    if not rows: raise RecipeError(f"no runs in {folder}: none of its folders holds a results.json")
    for r in rows: r['status_text'] = r['status'][:40]
    run_w, profile_w, status_w = (max(n, *(columns(r[k]) for r in rows)) for k, n in (('run', 22), ('profile', 9), ('status_text', 20)))  # wide names keep their columns
    print(f"{'run':<{run_w}} {'date':<19} {'profile':<{profile_w}} {'epochs':>7} {'accuracy':>9} {'wall':>8}  {'precision':<20} {'status':<{status_w}} machine")
    for r in rows:
        print(f"{padded(r['run'], run_w)} {r['date']:<19} {padded(r['profile'], profile_w)} {r['epochs']:>7} {accuracy_text(r):>9} {r['wall']:>7.0f}s  "
              f"{r['precision']:<20} {padded(r['status_text'], status_w)} {r['machine']}")
    if any(r['accuracy'] is not None and not r['final'] for r in rows): print(f"(accuracy in parentheses: {LAST_TEST_PASS})")
    print(f"wrote {write_runs_page(folder, rows)}")
    return rows
