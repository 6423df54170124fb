from pathlib import Path

import nbformat
from nbclient import NotebookClient

NB = Path(__file__).resolve().parents[1]/'nbs'/'train.ipynb'


def test_notebook_runs_top_to_bottom_in_its_small_setting(tiny, tmp_path, monkeypatch):
    """Every cell runs and shows its plots, on `tiny` (in batches of 32: each epoch 6 batches): what the small run finds on the
    full data is in the committed outputs, from a real run (docs/results.md)"""
    nb = nbformat.read(NB, as_version=4)
    switch = next(c for c in nb.cells if c.cell_type == 'code' and 'SWITCH' in c.source)
    assert 'SMALL_RUN = True' in switch.source  # the committed notebook is in its small setting
    monkeypatch.setenv('RECIPE_DATA', str(tiny))
    # tiny's 200 images in 6 batches, not 1: lr_find's 100 steps would otherwise be 100 one-batch epochs of 128 (85 s here)
    nb.cells.insert(nb.cells.index(switch) + 1, nbformat.v4.new_code_cell('BS = 32  # the test on tiny'))
    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert not [o for o in outputs if o.output_type == 'error']
    assert sum('image/png' in o.get('data', {}) for o in outputs) >= 6  # batch, lr_find, schedule, loss, confusion, top losses
    text = ''.join(o.get('text', '') for o in outputs)
    assert 'LRMIN' in text and '200 training and 50 test images' in text
