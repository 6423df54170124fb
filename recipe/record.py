"""What a run leaves behind: per-epoch metrics (CSV + JSON written as it goes), weights, and where it ran."""
import csv, hashlib, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from fastai.vision.all import Callback, Recorder
from safetensors.torch import save_file

__all__ = ['write_json', 'write_csv', 'machine_info', 'versions', 'git_commit', 'data_info', 'RunRecord', 'save_weights']


def write_json(path, obj):
    "Write `obj` as JSON to `path` atomically: a kill leaves the old file or the new one, never half of one"
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f: json.dump(obj, f, indent=1); f.flush(); os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True); raise


def machine_info() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    return {'cpu': cpu, 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'gpu': gpu}


def versions() -> dict:
    import albumentations, fastai
    return {'python': platform.python_version(), 'torch': torch.__version__, 'fastai': fastai.__version__,
            'albumentations': albumentations.__version__}


def git_commit() -> str:
    "HEAD of the repository holding this package, '+dirty' when the package's code differs from it; None outside git"
    here = Path(__file__).parent
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', '.', '../setup.cfg'], cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ('+dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError): return None


def data_info(dls) -> dict:
    "Folder, image counts and a fingerprint (sha256 of the sorted relative file list) of the data a run used"
    root = Path(dls.path)
    names = sorted(str(Path(f).relative_to(root)) for f in dls.train_ds.items + dls.valid_ds.items)
    return {'folder': str(root.resolve()), 'n_train': len(dls.train_ds), 'n_test': len(dls.valid_ds),
            'classes': list(dls.vocab), 'file_list_sha256': hashlib.sha256('\n'.join(names).encode()).hexdigest()}


def write_csv(path, header, rows):
    "Write a CSV atomically (temporary file, then rename)"
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'w', newline='') as f: w = csv.writer(f); w.writerow(header); w.writerows(rows)
    os.replace(tmp, path)


class RunRecord(Callback):
    "After every epoch: a row in metrics.csv and the whole run record rewritten (atomically) to each JSON file"
    order = Recorder.order + 1  # after the Recorder has the epoch's values, before the checkpoint (resume trims extra rows)
    COLUMNS = ['epoch', 'train_loss', 'test_loss', 'test_accuracy', 'seconds']
    def __init__(self, record: dict, csv_path, json_paths, t0, start_epoch=0):
        self.record, self.csv_path, self.json_paths = record, Path(csv_path), [Path(p) for p in json_paths]
        self.start_epoch, self.t0 = start_epoch, t0 - (record.get('wall_seconds', 0) if start_epoch else 0)

    def before_fit(self):
        "Start the CSV and JSON; on resume, keep the epochs the checkpoint holds and continue after them"
        self.record.update(complete=False, per_epoch=self.record.get('per_epoch', [])[:self.start_epoch],
                           per_epoch_wall=self.record.get('per_epoch_wall', [])[:self.start_epoch])
        write_csv(self.csv_path, self.COLUMNS, [r.values() for r in self.record['per_epoch']])
        self.save()  # a run cut short in its first epoch still leaves its record

    def before_epoch(self): self.t_epoch = time.perf_counter()

    def after_epoch(self):
        if self.epoch < self.start_epoch: return  # skipped on resume
        train_loss, test_loss, acc = (float(v) for v in self.recorder.values[-1][:3])
        row = dict(epoch=self.epoch + 1, train_loss=train_loss, test_loss=test_loss, test_accuracy=acc,
                   seconds=round(time.perf_counter() - self.t_epoch, 2))
        with open(self.csv_path, 'a', newline='') as f: csv.writer(f).writerow(row.values())
        self.record['per_epoch'].append(row)
        self.record['per_epoch_wall'].append(round(time.perf_counter() - self.t0, 1))  # since the run started: time-to-accuracy
        self.record.update(test_accuracy=acc, test_loss=test_loss)
        self.save()

    def after_fit(self):
        "The Recorder has nothing for epochs skipped on resume: give it the recorded ones, for the plots"
        self.recorder.values = [[r['train_loss'], r['test_loss'], r['test_accuracy']] for r in self.record['per_epoch']]

    def save(self, **updates):
        "Rewrite the JSON files; `wall_seconds` counts from the start of the run (data loading and lr_find included)"
        self.record.update(updates, wall_seconds=round(time.perf_counter() - self.t0, 1))
        for p in self.json_paths: write_json(p, self.record)


def save_weights(model, path, meta: dict):
    "Weights as safetensors (loading them never unpickles anything) plus a JSON of what is needed to use them"
    path = Path(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path.with_suffix('.safetensors')))
    write_json(path.with_suffix('.json'), meta)
