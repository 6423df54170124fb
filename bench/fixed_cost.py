"""Where a run's wall time goes besides training (issue 23, part 5): from bench JSONs (or run folders' results.json)
that have `phases` and `per_epoch_test_seconds`, one column per run:

    python bench/fixed_cost.py bench/results/fast-w64-e7-*.json [--json OUT]

- start: the run's start to its first epoch: `data` (decoding, or reading the images back from the image store, recipe/image_store.py), `model` (the net, the whitening), other
  (the record, the checks, lr_find where a profile has it);
- epochs: training, the per-epoch test passes, and between epochs (the record and the checkpoint; the last epoch's
  checkpoint falls in the final stage's other);
- final stage: `tta` (the test set with TTA), `imports` (the modules only this stage uses: torchmetrics, fastai's image
  plots), `weights`, `plots`, `card`, other;
- end to end / training: the aim is at most 2.
"""
import json
from pathlib import Path

from fastcore.script import call_parse

FINAL = ('tta', 'imports', 'weights', 'plots', 'card')  # the final stage's phases; 'imports' since the eighteenth session (before, those modules loaded before the run's clock)


def itemise(r) -> dict:
    "Seconds of each part of run record `r` (a complete run of one process, recorded with `phases`)"
    ph, pe, walls = r['phases'], r['per_epoch'], r['per_epoch_wall']
    epoch_s, test_s = sum(e['seconds'] for e in pe), sum(r['per_epoch_test_seconds'])
    start = walls[0] - pe[0]['seconds']
    final = r['wall_seconds'] - walls[-1]
    final_known = sum(ph.get(k, 0) for k in FINAL)
    parts = {'start: data': ph['data'], 'start: model': ph['model'], 'start: other': start - ph['data'] - ph['model'],
             'epochs: training': epoch_s - test_s, 'epochs: test passes': test_s,
             'epochs: between (record, checkpoint)': walls[-1] - start - epoch_s,
             **{f'final: {k}': ph.get(k, 0) for k in FINAL}, 'final: other': final - final_known}
    parts = {k: round(v, 2) for k, v in parts.items()}  # as `phases` are recorded: a small set's data phase is under 0.05 s
    return dict(parts, wall=r['wall_seconds'], end_to_end_over_training=round(r['wall_seconds'] / (epoch_s - test_s), 2))


@call_parse
def main(files: str = None,  # bench JSON files or run folders, separated by spaces
         *more: str, json_out: str = None):  # write the table as JSON too
    "Itemise the wall time of each run"
    paths = [Path(f) for f in ([files] if files else []) + list(more)]
    rows = {p.name: itemise(json.loads((p/'results.json' if p.is_dir() else p).read_text())) for p in paths}
    keys = list(next(iter(rows.values())))
    print('| part | ' + ' | '.join(rows) + ' |\n|---|' + '---|' * len(rows))
    for k in keys: print(f'| {k} | ' + ' | '.join(f'{r[k]}' for r in rows.values()) + ' |')
    if json_out: Path(json_out).write_text(json.dumps(rows, indent=1))
