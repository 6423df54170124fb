import json, os, subprocess, sys
import pytest

from recipe.bench import run_profile, time_to, write_report
from recipe.run import choose_precision
from conftest import ROOT

FIELDS = ['profile', 'width', 'epochs', 'bs', 'seed', 'lr_min', 'lr_max', 'test_accuracy', 'test_loss', 'per_epoch',
          'wall_seconds', 'git_commit', 'machine', 'versions', 'data', 'complete']


def test_harness_one_epoch_writes_a_complete_result_and_report(tiny, tmp_path):
    path = run_profile('seed', seed=1, data=tiny, width=8, epochs=1, bs=32, results=tmp_path/'results', runs=tmp_path/'runs')
    res = json.loads(path.read_text())
    for k in FIELDS: assert k in res, k
    assert res['profile'] == 'seed' and res['width'] == 8 and res['epochs'] == 1 and res['bs'] == 32 and res['complete']
    assert res['test_accuracy'] == res['per_epoch'][-1]['test_accuracy'] and round(50 * res['test_accuracy'], 6) % 1 == 0  # k of 50
    assert res['wall_seconds'] > sum(e['seconds'] for e in res['per_epoch'])
    assert [sorted(e) for e in res['per_epoch']] == [sorted(['epoch', 'train_loss', 'test_loss', 'test_accuracy', 'seconds'])]
    assert set(res['machine']) >= {'cpu', 'cores', 'gpu'} and set(res['versions']) >= {'python', 'torch', 'fastai', 'albumentations'}
    assert res['data']['n_train'] == 200 and res['data']['n_test'] == 50 and len(res['data']['file_list_sha256']) == 64
    md = write_report(tmp_path/'results', tmp_path/'BENCHMARKS.md').read_text()
    assert f"| seed | 8 | 1 | 1 | {100*res['test_accuracy']:.2f}% on 50 test images |" in md  # not CIFAR-10's 10,000
    assert 'where the row does not give another number of test images' in md
    assert len(res['per_epoch_wall']) == 1 and 0 < res['per_epoch_wall'][0] <= res['wall_seconds']
    assert (tmp_path/'accuracy_vs_epoch.png').stat().st_size > 0 and (tmp_path/'accuracy_vs_time.png').stat().st_size > 0


def test_a_stopped_bench_run_resumes_into_its_result_file(tiny, tmp_path, monkeypatch):
    import recipe
    from recipe.callbacks import Checkpoint
    save = Checkpoint.after_epoch
    def stop_after_first_epoch(self):
        save(self)
        if self.epoch == 0: raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoint, 'after_epoch', stop_after_first_epoch)
    with pytest.raises(recipe.RecipeError, match='resume with'):
        run_profile('seed', seed=1, data=tiny, width=8, epochs=2, bs=32, results=tmp_path/'results', runs=tmp_path/'runs')
    [path] = (tmp_path/'results').glob('*.json')
    res = json.loads(path.read_text())
    assert not res['complete'] and len(res['per_epoch']) == 1 and res['stopped'] == 'interrupted'
    monkeypatch.setattr(Checkpoint, 'after_epoch', save)
    recipe.train(resume=res['out'])
    res = json.loads(path.read_text())
    assert res['complete'] and [e['epoch'] for e in res['per_epoch']] == [1, 2] and res['resumed_after_epoch'] == [1]


def test_an_ablations_widths_follow_the_runs_width(tiny, tmp_path):
    "`bench fast --ablation widths-192 --width 8`: groups 2-3 narrowed at the run's width (8/24/24), not the profile's (64/192/192)"
    from recipe.bench import run_label
    path = run_profile('fast', seed=0, data=tiny, width=8, epochs=1, bs=50, ablation='widths-192', results=tmp_path/'results', runs=tmp_path/'runs')
    res = json.loads(path.read_text())
    assert res['widths'] == [8, 24, 24] and json.loads((tmp_path/'runs'/path.stem/'model.json').read_text())['widths'] == [8, 24, 24]
    assert run_label(res, seed=False) == 'fast (widths-192)'


def test_report_gives_mean_and_range_of_complete_runs_only(tmp_path):
    base = dict(profile='seed-w32', width=32, epochs=24, bs=512, wall_seconds=4800, git_commit='0123456789abcdef',
                machine=dict(cpu='AMD EPYC', cores=2, gpu='none'))
    for seed, acc, complete in [(0, 0.90, True), (1, 0.92, True), (2, 0.5, False)]:
        per_epoch = [dict(epoch=1, test_accuracy=acc, seconds=200)]
        (tmp_path/f'run{seed}.json').write_text(json.dumps(base | dict(seed=seed, test_accuracy=acc, complete=complete, per_epoch=per_epoch)))
    stopped_in_final_stage = dict(seed=3, test_accuracy=0.61, test_accuracy_no_tta=0.6, complete=False, per_epoch=[dict(epoch=1, test_accuracy=0.6, seconds=200)])
    (tmp_path/'run3.json').write_text(json.dumps(base | stopped_in_final_stage))  # after the TTA: its accuracy is not the run's
    md = write_report(tmp_path, tmp_path/'BENCHMARKS.md').read_text()
    assert '- seed-w32, width 32, 24 epochs: 2 runs, mean 91.00%, lowest 90.00%, highest 92.00%' in md
    assert '| seed-w32 | 32 | 24 | 2 | incomplete: 50.00% after 1 of 24 epochs | 80.0 min | - | - |' in md
    assert '| seed-w32 | 32 | 24 | 3 | incomplete: 60.00% after 1 of 24 epochs |' in md


def test_report_refuses_a_missing_or_empty_results_folder_and_links_from_the_markdown_files_folder(tmp_path):
    from recipe.errors import RecipeError
    (tmp_path/'bench'/'results').mkdir(parents=True); (tmp_path/'docs').mkdir()
    md = tmp_path/'BENCHMARKS.md'; md.write_text('the old table')
    for results, says in [(tmp_path/'bench'/'resultz', 'no such folder of results'), (tmp_path/'bench'/'results', 'no result JSON')]:
        with pytest.raises(RecipeError, match=says): write_report(results, md)  # a typo must not empty the table
    assert md.read_text() == 'the old table' and not list((tmp_path/'bench').glob('*.png'))
    pe = [dict(epoch=1, test_accuracy=0.9, seconds=60)]
    (tmp_path/'bench'/'results'/'run0.json').write_text(json.dumps(dict(
        profile='fast', width=64, epochs=1, bs=2000, seed=0, test_accuracy=0.9, complete=True, per_epoch=pe, wall_seconds=70,
        git_commit='0' * 12, machine=dict(cpu='AMD EPYC', cores=2, gpu='none'))))
    with pytest.raises(RecipeError, match='no such folder'): write_report(tmp_path/'bench'/'results', tmp_path/'nope'/'B.md')
    text = write_report(tmp_path/'bench'/'results', tmp_path/'docs'/'B.md').read_text()
    assert '(../bench/results/run0.json)' in text and '(../bench/accuracy_vs_epoch.png)' in text  # resolve from docs/


def test_labels_say_when_a_profile_has_changed_since_the_run_and_group_runs_by_their_settings(tmp_path, monkeypatch):
    from recipe.bench import run_label
    from recipe.config import ABLATIONS, PROFILES
    from recipe.settings import settings_for
    def result(profile, ablation=None, seed=0, **changed):
        s = settings_for(profile, {k: v for a in (ablation or '').split(',') if a for k, v in ABLATIONS[a].items()})
        return json.loads(json.dumps(s | changed | dict(ablation=ablation, seed=seed)))  # tuples as JSON lists
    assert run_label(result('fast7')) == 'fast7 w64 seed 0'
    assert run_label(result('fast7', 'lookahead'), seed=False) == 'fast7 (lookahead)'
    assert run_label(result('seed-w32', lr_min=1e-3, lr_max=1e-2, act='relu'), seed=False) == 'seed-w32'  # lr_find's LRs; the net's own act
    assert run_label(result('fast7', 'small-early-2,group2-192,tta-below-0.8', epochs=10), seed=False) == 'fast-progressive'  # its settings, before it was a profile
    # its settings before 2026-12-06: 8 epochs, the first 3 at 24 pixels, the full-width net; its day at 2; its 3 runs at 10 epochs
    assert run_label(result('fast-progressive', widths=None, small_early=[24, 3], epochs=8), seed=False) == 'fast-progressive (then: widths None, small_early [24, 3])'
    assert run_label(result('fast-progressive', widths=None, epochs=8), seed=False) == 'fast-progressive (then: widths None)'
    assert run_label(result('fast-progressive', small_early=[24, 3]), seed=False) == 'fast-progressive (then: small_early [24, 3])'
    assert run_label(result('fast-progressive', 'group2-192'), seed=False) == 'fast-progressive'  # an ablation it has taken in since
    assert run_label(result('fast-progressive', 'whiten-bias-8'), seed=False) == 'fast-progressive (whiten-bias-8)'
    assert run_label(result('fast7', 'small-early-2,group2-192', epochs=10), seed=False) == 'fast7 (small-early-2,group2-192)'  # TTA on every image
    assert run_label(result('fast-progressive', test_every=1), seed=False) == 'fast-progressive'  # tested every epoch: the same weights and accuracy
    assert run_label(result('fast-progressive', tta_below=None), seed=False) == 'fast-progressive (then: tta_below None)'
    assert run_label(result('fast7', 'small-early-2,group2-192,tta-below-0.8', epochs=9), seed=False) == 'fast7 (small-early-2,group2-192,tta-below-0.8)'  # not quite
    assert run_label(result('fast7', 'small-early-2,group2-192,tta-below-0.8,fp32', epochs=10), seed=False) == 'fast7 (small-early-2,group2-192,tta-below-0.8,fp32)'  # not a profile's
    assert run_label(result('seed-w32', 'fp32', lr_min=1e-3, lr_max=1e-2), seed=False) == 'seed-w32 (fp32)'  # not 'seed'
    assert run_label(result('seed', 'fp32', lr_min=1e-3, lr_max=1e-2), seed=False) == 'seed (fp32)'  # not 'seed-w32'
    assert run_label(result('seed-w32', 'random-flip', lr_min=1e-3, lr_max=1e-2), seed=False) == 'seed-w32'  # its flip already
    runs = [result('fast7', seed=0), result('fast7', 'lookahead', seed=1), result('fast7', 'lookahead', seed=2)]
    monkeypatch.setitem(PROFILES, 'fast7', PROFILES['fast7'] | dict(lookahead=True))  # the profile takes in the ablation
    assert [run_label(r, seed=False) for r in runs] == ['fast7 (then: lookahead False)', 'fast7', 'fast7']
    assert run_label(result('fast', epochs=3) | dict(profile='quick'), seed=False) == 'quick (then: the fast profile)'  # then another's settings
    assert run_label(result('quick', 'ls-0.09,bs-1024'), seed=False) == 'quick (bs-1024)'  # quick has ls-0.09 already
    older = {k: v for k, v in result('fast7').items() if k != 'renorm_every'}  # a run from before the setting existed
    monkeypatch.setitem(PROFILES, 'fast7', PROFILES['fast7'] | dict(renorm_every=8))
    assert run_label(older, seed=False) == 'fast7 (then: renorm_every 1)'  # its default: the code of then
    monkeypatch.setitem(PROFILES, 'fast7', PROFILES['fast7'] | dict(renorm_every=1))
    narrow = settings_for('fast95', width=64)  # the profile's net at half its width: widths (64, 192, 192)
    assert run_label(json.loads(json.dumps(narrow | dict(ablation=None, seed=0))), seed=False) == 'fast95'
    monkeypatch.setitem(PROFILES, 'fast95', PROFILES['fast95'] | dict(widths=(128, 384, 512)))  # the profile's widths change
    assert run_label(result('fast95') | dict(widths=[128, 384, 384]), seed=False) == 'fast95 (then: widths [128, 384, 384])'
    for i, r in enumerate(runs):
        pe = [dict(epoch=1, test_accuracy=0.9 + i / 100, seconds=60)]
        r |= dict(test_accuracy=pe[0]['test_accuracy'], complete=True, per_epoch=pe, wall_seconds=70, git_commit='0' * 12,
                  machine=dict(cpu='AMD EPYC', cores=2, gpu='none'))
        (tmp_path/f'run{i}.json').write_text(json.dumps(r))
    md = write_report(tmp_path, tmp_path/'BENCHMARKS.md').read_text()
    assert '- fast7 (then: lookahead False), width 64, 7 epochs: 1 run, mean 90.00%' in md
    assert '- fast7, width 64, 7 epochs: 2 runs, mean 91.50%, lowest 91.00%, highest 92.00%' in md


def test_time_to_accuracy_from_the_epoch_walls_or_the_final_tta_accuracy():
    from recipe.bench import time_to
    pe = [dict(epoch=i + 1, test_accuracy=a, seconds=100) for i, a in enumerate([0.5, 0.91, 0.935])]
    run = dict(per_epoch=pe, per_epoch_wall=[130, 230, 330], wall_seconds=360, complete=True, test_accuracy=0.941)
    assert time_to(run, 0.9) == 230                  # the end of the first epoch at 90%
    assert time_to(run, 0.94) == 360                 # only the final accuracy (with TTA) reached 94%: the whole run
    assert time_to(run | dict(test_accuracy=0.935), 0.94) is None
    old = {k: v for k, v in run.items() if k != 'per_epoch_wall'}
    assert time_to(old, 0.9) == 260                  # an older record: wall time less the epochs after


def test_step_overhead_times_the_plain_loop_and_every_profile(tmp_path):
    import subprocess, sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path/'overhead.json'
    p = subprocess.run([sys.executable, 'bench/step_overhead.py', '--epochs', '2', '--json-out', str(out)], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res['ms']) == {'plain PyTorch loop', 'Learner, seed profile', 'Learner, fast profile', 'Learner, fast-sgd profile'}
    assert res['n_train'] == 300 and res['steps_per_epoch'] == 9 and res['threads'] == 1
    assert all(v['per_step'] > 0 and v['per_epoch_fixed'] > 0 for v in res['ms'].values())
    assert 'ms per step' in p.stdout and 'Learner, fast profile' in p.stdout


def test_gpu_check_dry_run_on_the_cpu(tiny, tmp_path):
    "bench/gpu_check.sh's plan, shortened (DRY_RUN=1), runs here and leaves its summary and results archive, not its run folders"
    import os, subprocess, tarfile
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out, other, tmp = tmp_path/'out', tmp_path/'bin', tmp_path/'tmp'
    other.mkdir(); tmp.mkdir(); (other/'python3').write_text('#!/bin/sh\necho "another python3, without fastai" >&2; exit 1\n'); (other/'python3').chmod(0o755)
    # the suite's own Python (PYTHON), not the first python3 on PATH: a venv's, say, that is not activated
    p = subprocess.run(['bash', 'bench/gpu_check.sh', str(out), str(tiny)], cwd=root, capture_output=True, text=True, timeout=600,
                       env=os.environ | dict(DRY_RUN='1', BUDGET='400', PYTHON=sys.executable, PATH=f"{other}:{os.environ['PATH']}",
                                             TMPDIR=str(tmp),  # where its run folders go, and must not stay
                                             TORCHINDUCTOR_CACHE_DIR=os.environ.get('TORCHINDUCTOR_CACHE_DIR') or default_cache_dir()))  # not under TMPDIR
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert '200 training and 50 test files' in p.stdout
    assert not list(tmp.glob('gpu_check_runs-*'))  # every run folder: 4 runs' checkpoints, weights and plots
    summary = json.loads((out/'gpu_check.json').read_text())
    assert summary['dry_run'] and not summary['failed'] and not summary['skipped']
    assert set(summary['runs']) == {'fast-s0', 'seed-w64-s0', 'step-overhead', 'compile-speed', 'quick-s0', 'fast96-s0'}
    assert summary['runs']['compile-speed']['eager_ms_per_step'] > 0 and summary['runs']['compile-speed']['compiled_ms_per_step'] > 0
    fast = summary['runs']['fast-s0']
    assert fast['complete'] and fast['epochs'] == 2 and fast['n_train'] == 200 and len(fast['epoch_seconds']) == 2
    cost = fast['fixed_cost']  # bench/fixed_cost.py, from the phases the run recorded
    assert cost['epochs: training'] > 0 and cost['start: data'] > 0 and {'final: tta', 'final: plots'} <= set(cost)
    assert cost['epochs: training'] < cost['wall'] and cost['end_to_end_over_training'] > 1
    assert summary['runs']['fast96-s0']['complete']
    with tarfile.open(out/'results.tar.gz') as t:
        assert len([n for n in t.getnames() if n.endswith('.json')]) == 4
    assert not (out/'results').exists()


def bench_script(script, *args, json_out) -> tuple:
    "Run bench/<script> with `args` from the project root on one thread, writing --json `json_out`: (its JSON, its stdout)"
    r = subprocess.run([sys.executable, f'bench/{script}', *map(str, args), '--json', json_out], capture_output=True, text=True,
                       cwd=ROOT, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr
    return json.loads(json_out.read_text()), r.stdout


def test_compile_speed_tiny_mode_measures_both_ways(tmp_path):
    "bench/compile_speed.py on a tiny net: eager and compiled steps timed, the compile's cost, where it pays (if ever)"
    res, stdout = bench_script('compile_speed.py', '--profile', 'fast', '--steps', 2, '--bs', 8, '--width', 8, json_out=tmp_path/'compile.json')
    assert res['eager_ms_per_step'] > 0 and res['compiled_ms_per_step'] > 0 and res['compile_s'] > 0
    assert res['precision'] == choose_precision('auto')[0] and ('pays after' in stdout or 'never pays' in stdout)


def test_precision_speed_times_the_seed_net_in_fp32_and_bf16(tmp_path):
    "bench/precision_speed.py --arch resnet (the seed recipe's net, Adam), tiny: both precisions timed, the JSON written"
    res, stdout = bench_script('precision_speed.py', '--arch', 'resnet', '--steps', 1, '--bs', 8, '--width', 8, json_out=tmp_path/'precision.json')
    assert res['arch'] == 'resnet' and res['bs'] == 8 and res['fp32_s_per_step'] > 0 and res['bf16_s_per_step'] > 0
    assert f"bf16 is {res['bf16_speedup']:.2f}x as fast" in stdout


def test_width_speed_times_the_widths_it_is_given_at_the_size_it_is_given(tmp_path):
    "bench/width_speed.py --widths --size, tiny: each net timed, its multiply-adds at that size, a command that runs again"
    res, stdout = bench_script('width_speed.py', '--bs', 4, '--steps', 1, '--reps', 1, '--size', 24, '--widths', '8,16,16 8,12,16',
                               json_out=tmp_path/'width.json')
    assert list(res['ms_per_image']) == ['8/16/16', '8/12/16'] and all(ms > 0 for ms in res['ms_per_image'].values())
    assert res['size'] == 24 and res['forward_macs']['8/12/16'] < res['forward_macs']['8/16/16']
    # by hand at 24 pixels: whitening 23x23x24x12, group 1 23x23x8x216 + 11x11x8x72, group 2 11x11x16x72 + 5x5x16x144,
    # group 3 5x5x16x144 + 2x2x16x144, head 16x10
    assert res['forward_macs']['8/16/16'] == 152_352 + 914_112 + 69_696 + 139_392 + 57_600 + 57_600 + 9_216 + 160
    assert "--widths '8,16,16 8,12,16'" in res['command'] and '24-pixel images' in stdout


def test_weight_grad_speed_times_each_conv_of_the_fast_net_both_ways(tmp_path):
    """bench/weight_grad_speed.py, tiny: one row per conv of the net at each size, with the maps FastNet really has,
    and the convs marked shifted are those that take the products in training"""
    import torch
    from recipe.model import FastNet, SmallMapConv
    res, stdout = bench_script('weight_grad_speed.py', '--bs', 4, '--widths', '8,16,12', '--sizes', '32,24', '--reps', 1,
                               json_out=tmp_path/'wg.json')
    net, found = FastNet(10, 8, widths=(8, 16, 12)), []
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
            m.register_forward_hook(lambda m, i, o: found.append((i[0].shape[1], o.shape[1], i[0].shape[-1], isinstance(m, SmallMapConv))))
    for size in (32, 24): net(torch.randn(2, 3, size, size))
    assert [(r['c_in'], r['c_out'], r['map']) for r in res['rows']] == [f[:3] for f in found]
    assert [r['takes_shifts'] for r in res['rows']] == [small and m <= SmallMapConv.MAX_MAP for *_, m, small in found]
    assert [r['map'] for r in res['rows'] if r['takes_shifts']] == [7, 7, 3, 5, 5, 2]
    assert all(v > 0 for r in res['rows'] for v in r['ms'].values()) and stdout.count('<- shifted in training') == 6


def test_time_to_and_the_report_skip_the_epochs_without_a_test_pass(tmp_path):
    r = dict(profile='fast-progressive', width=64, epochs=3, bs=1536, seed=0, wall_seconds=300, git_commit='0123456789abcdef',
             machine=dict(cpu='AMD EPYC', cores=2, gpu='none'), complete=True, test_accuracy=0.95, per_epoch_wall=[100, 200, 290],
             per_epoch=[dict(epoch=1, test_accuracy=None, seconds=100), dict(epoch=2, test_accuracy=None, seconds=100),
                        dict(epoch=3, test_accuracy=0.93, seconds=90)])
    assert time_to(r, 0.9) == 290 and time_to(r, 0.94) == 300  # the end of epoch 3; with TTA, the end of the run
    (tmp_path/'r.json').write_text(json.dumps(r))
    assert '| 95.00% | 5.0 min | 4.8 min | 5.0 min |' in write_report(tmp_path, tmp_path/'B.md').read_text()


def test_arithmetic_curve_puts_runs_that_trained_alike_in_one_point_and_counts_small_epochs_at_their_size(tmp_path):
    "bench/arithmetic_curve.py: test-time settings (tta_below, test_every) and act None/'gelu' do not split a setting"
    from recipe.settings import settings_for
    def write(name, profile, acc, seed, **changed):
        per_epoch = [dict(epoch=1, train_loss=1 + seed / 10)]
        (tmp_path/f'{name}.json').write_text(json.dumps(settings_for(profile) | dict(precision='bf16 autocast (CPU)') | changed | dict(
            seed=seed, complete=True, test_accuracy=acc, per_epoch=per_epoch)))
    for seed, acc in enumerate((0.940, 0.941, 0.942)): write(f'p{seed}', 'fast-progressive', acc, seed)
    write('p3', 'fast-progressive', 0.943, 3, tta_below=None, test_every=1, act='gelu')  # the same training
    write('p3-again', 'fast7', 0.943, 3, epochs=10, small_early=[[24, 2]], widths=[64, 192, 256])  # the same run recorded twice: counted once
    write('p4', 'fast-progressive', 0.95, 4, precision='fp32')  # fp32: another setting
    write('f0', 'fast', 0.941, 0)  # one run: under --min-runs
    write('x0', 'fast-progressive', 0.99, 0, prune_easy=0.5)  # its arithmetic is not its epochs': left out
    r = subprocess.run([sys.executable, 'bench/arithmetic_curve.py', '--results', tmp_path, '--min-runs', '2', '--png', tmp_path/'a.png'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    # with group 2 at 192 channels, 2 epochs at 24 pixels (0.40 of the 64/256/256 net's 32-pixel epoch) + 8 at 32 (0.76);
    # sd 0.13, standard error 0.065
    assert '| fast-progressive | 10 | 6.89 | 4 | 94.15% | 0.13 | 0.065 |' in r.stdout, r.stdout
    assert '| fast |' not in r.stdout and '95.00%' not in r.stdout and '99' not in r.stdout
    assert (tmp_path/'a.png').stat().st_size > 10_000
    sys.path.insert(0, str(ROOT/'bench'))
    try: from arithmetic_curve import epochs_of_arithmetic
    finally: sys.path.remove(str(ROOT/'bench'))
    old = dict(width=64, epochs=8)  # a JSON from before size, widths and small_early were recorded
    assert epochs_of_arithmetic(old) == 8
    stages = epochs_of_arithmetic(old | dict(small_early=[[24, 3], [28, 3]]))
    assert stages == pytest.approx(epochs_of_arithmetic(old | dict(small_early=[24, 3], epochs=5)) + 3 * 0.76, abs=0.03)
    assert epochs_of_arithmetic(old | dict(widths=[64, 192, 256], epochs=10)) == pytest.approx(10 * 0.76, abs=0.02)
    assert epochs_of_arithmetic(old | dict(depth=[2, 2, 3])) == pytest.approx(8 * 1.045, abs=0.01)  # a depth per group, as JSON holds it


def test_paired_by_seed_sets_each_run_against_the_baselines_runs_of_its_seed(tmp_path):
    from recipe.settings import settings_for
    def write(name, acc, seed, **changed):
        (tmp_path/f'{name}.json').write_text(json.dumps(settings_for('fast-progressive') | changed | dict(
            seed=seed, complete=True, test_accuracy=acc, per_epoch=[dict(epoch=1, train_loss=acc + seed)])))
    write('b0', 0.940, 0); write('b0-again', 0.942, 0); write('b1', 0.939, 1)  # the baseline: seed 0 twice
    write('c0', 0.943, 0, depth=[2, 2, 3]); write('c1', 0.940, 1, depth=[2, 2, 3]); write('c9', 0.95, 9, depth=[2, 2, 3])  # seed 9: no pair
    run = lambda *a: subprocess.run([sys.executable, 'bench/paired_by_seed.py', *a, '--results', tmp_path], capture_output=True,
                                    text=True, cwd=ROOT, timeout=300)
    r = run('fast-progressive (then: depth [2, 2, 3])')
    assert r.returncode == 0, r.stderr
    assert '| 0 | 94.30% | 94.10% (2) | +0.20 |' in r.stdout and '| 1 | 94.00% | 93.90% (1) | +0.10 |' in r.stdout and '| 9 |' not in r.stdout
    assert '| mean of 2 | 94.15% | 94.00% | **+0.150** (sd 0.07, standard error 0.050) |' in r.stdout, r.stdout
    r = run('fast-progressive (nothing)')
    assert r.returncode == 1 and "no setting 'fast-progressive (nothing)'" in r.stderr and 'Traceback' not in r.stderr
    write('c1-longer', 0.945, 1, depth=[2, 2, 3], epochs=9)  # the same name, another number of epochs: which one?
    r = run('fast-progressive (then: depth [2, 2, 3])')
    assert r.returncode == 1 and "2 settings are named 'fast-progressive (then: depth [2, 2, 3])', of " in r.stderr and '--epochs' in r.stderr
    r = run('fast-progressive (then: depth [2, 2, 3])', '--epochs', '9')
    assert r.returncode == 0 and '| 1 | 94.50% | 93.90% (1) | +0.60 |' in r.stdout and '| 0 |' not in r.stdout, r.stdout + r.stderr
