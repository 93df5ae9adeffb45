"""Sweeps: grid expansion and validation (pure), and sweeps of tiny trials in
subprocesses: outputs, resuming, failures, timeouts, bad input and SIGTERM,
both in long-lived trial processes (the default) and with a fresh process per
trial (fresh_process=True), whose final weights must be the same bits.

A trial process imports TF and TFF (several seconds), so the tests use few
trials. With fresh processes a fake `python` (a shell script that records
its arguments, then fails, hangs or execs the real interpreter) shows which
trials ran; trial workers are tests/chaos_worker.py, which records them and
misbehaves on request."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tff_localsgd import config as config_lib
from tff_localsgd.sweep import grid as grid_lib
from tff_localsgd.sweep import hparams
from tff_localsgd.sweep import pool
from tff_localsgd.sweep import processes
from tff_localsgd.sweep import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(num_examples=24, input_dim=4, num_clients=2, width=16,
            local_steps=2, batch_size=4, rounds=2)
TINY_FLAGS = [f'--{k}={v}' for k, v in TINY.items()]
NAMES = ['width-16_local_steps-2_seed-0', 'width-16_local_steps-2_seed-1',
         'width-32_local_steps-2_seed-0', 'width-32_local_steps-2_seed-1']


def tiny_base(**overrides):
  return dataclasses.asdict(config_lib.ExperimentConfig(**{**TINY,
                                                           **overrides}))


def run_binary(root, *args, **kwargs):
  return subprocess.run(
      [sys.executable, '-m', 'benchmarks.sweep', f'--root_dir={root}', *args],
      cwd=ROOT, capture_output=True, text=True, **kwargs)


def fake_python(tmp_path, cases=''):
  """A `python` that appends its arguments to launches.txt, runs the shell
  `case` branches given (patterns on the arguments), else the real one."""
  launches = tmp_path / 'launches.txt'
  script = tmp_path / 'python'
  script.write_text(f'#!/bin/sh\necho "$*" >> {launches}\n'
                    f'case "$*" in\n{cases}esac\n'
                    f'exec {sys.executable} "$@"\n')
  script.chmod(script.stat().st_mode | stat.S_IXUSR)
  return str(script), launches


def launched(launches):
  """The trial names the fake python was started for."""
  if not launches.exists():
    return []
  return sorted(arg.split('=', 1)[1] for line in launches.read_text().split(
      '\n') for arg in line.split() if arg.startswith('--experiment='))


def chaos(monkeypatch, tmp_path, **actions):
  """Trial workers (tests/chaos_worker.py) where trial `name` does
  actions[name]; returns the file it records launches in."""
  launches = tmp_path / 'chaos_launches.txt'
  monkeypatch.setenv('CHAOS', ','.join(f'{k}={v}' for k, v in
                                       actions.items()))
  monkeypatch.setenv('CHAOS_LAUNCHES', str(launches))
  monkeypatch.setenv('CHAOS_PIDS', str(tmp_path / 'pids'))
  return launches


def chaos_launched(launches):
  """[(pid, trial name)] in the order the trial workers were asked."""
  if not launches.exists():
    return []
  return [(int(pid), name) for pid, name in
          (line.split() for line in launches.read_text().splitlines())]


CHAOS_WORKER = 'tests.chaos_worker'


def tags(directory):
  acc = event_accumulator.EventAccumulator(str(directory),
                                           size_guidance={'tensors': 0})
  acc.Reload()
  return set(acc.Tags()['tensors'])


def gone(pid):
  try:
    return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


def wait_gone(pids, timeout=20):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and not all(map(gone, pids)):
    time.sleep(0.1)
  return [p for p in pids if not gone(p)]


# Grid expansion: pure and fast.


def test_expand_grid_order_names_and_values():
  grid = grid_lib.parse_grid(['width=64,256', 'local_steps=1,5'])
  trials = grid_lib.expand_grid(grid, [0, 1], tiny_base())
  assert [t.name for t in trials] == [
      f'width-{m}_local_steps-{k}_seed-{s}'
      for m in (64, 256) for k in (1, 5) for s in (0, 1)]
  first = trials[0]
  assert first.swept == {'width': 64, 'local_steps': 1, 'seed': 0}
  assert type(first.swept['width']) is int
  assert '--width=64' in first.flags and '--seed=0' in first.flags
  assert '--rounds=2' in first.flags  # base flags are passed on
  assert not any(f.startswith(('--root_dir', '--experiment'))
                 for f in first.flags)
  config = grid_lib.trial_config(first)
  assert config['local_steps'] == 1 and config['client_lr'] == 1.0
  assert trials == grid_lib.expand_grid(grid, [0, 1], tiny_base())


def test_expand_grid_converts_types_and_makes_safe_names():
  grid = {'client_lr': ['0.5', '2'], 'lockstep_drift': ['true', '0'],
          'data_dir': ['/tmp/a b']}
  trials = grid_lib.expand_grid(grid, [3], tiny_base())
  assert [t.swept for t in trials[:2]] == [
      {'client_lr': 0.5, 'lockstep_drift': True, 'data_dir': '/tmp/a b',
       'seed': 3},
      {'client_lr': 0.5, 'lockstep_drift': False, 'data_dir': '/tmp/a b',
       'seed': 3}]
  assert trials[0].name == ('client_lr-0.5_lockstep_drift-true_'
                            'data_dir-_tmp_a_b_seed-3')
  assert '--lockstep_drift=false' in trials[1].flags
  assert '--client_lr=2.0' in trials[2].flags
  assert all('/' not in t.name and ' ' not in t.name for t in trials)
  # No grid: one trial per seed.
  assert [t.name for t in grid_lib.expand_grid({}, [0, 1], tiny_base())] == [
      'seed-0', 'seed-1']


@pytest.mark.parametrize('grid, field, words', [
    ({'depthh': ['1']}, 'grid', 'depthh'),
    ({'seed': ['1', '2']}, 'grid', 'seed'),
    ({'experiment': ['a']}, 'grid', 'experiment'),
    ({'width': ['16', '016']}, 'grid', 'twice'),
    ({'width': ['16', 'abc']}, 'width', 'abc'),
    ({'lockstep_drift': ['yes']}, 'lockstep_drift', 'bool'),
    ({'width': ['16', '0']}, 'width', 'trial width-0_seed-0'),
    ({'local_steps': ['1', '2'], 'algorithm': ['minibatch_sgd']},
     'local_steps', 'trial local_steps-2_algorithm-minibatch_sgd_seed-0'),
])
def test_expand_grid_errors_name_the_field(grid, field, words):
  with pytest.raises(config_lib.ConfigError) as e:
    grid_lib.expand_grid(grid, [0], tiny_base())
  assert e.value.field == field
  assert str(e.value).startswith(f'--{field}: ') and words in str(e.value)


@pytest.mark.parametrize('specs', [['width'], ['width='], ['=1,2'],
                                   ['width=1,,2'], ['width=1', 'width=2']])
def test_parse_grid_errors_name_grid(specs):
  with pytest.raises(config_lib.ConfigError) as e:
    grid_lib.parse_grid(specs)
  assert e.value.field == 'grid'


def test_phase_totals_sum_the_trials_run_now():
  def result(name, skipped=False, stack=None, **phases):
    summary = {'phases_s': phases, **({'stack': stack} if stack else {})}
    return records.TrialResult(name, 'completed', skipped=skipped,
                               summary=summary)
  totals = records.phase_totals([
      result('a', startup_s=5.0, rounds_s=1.0),
      result('b', startup_s=0.0, rounds_s=2.0),
      result('c', skipped=True, startup_s=9.0, rounds_s=9.0),
      records.TrialResult('d', 'failed'),
      # A stack that paid a process's start-up shares it.
      result('e', stack={'index': 0}, startup_s=1.5, rounds_s=1.0),
      result('f', stack={'index': 1}, startup_s=1.5, rounds_s=1.0)])
  assert totals == {'trials': 4, 'processes': 2, 'startup_s': 8.0,
                    'rounds_s': 5.0}


# Sweeps of real trials.


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
  """A 2 (width) x 1 (local_steps) x 2 (seeds) sweep by the binary (each
  width's seeds a stack: --stack's default)."""
  root = tmp_path_factory.mktemp('root')
  result = run_binary(root, '--sweep=demo', '--grid=width=16,32',
                      '--grid=local_steps=2', '--seeds=2', '--parallel=2',
                      *TINY_FLAGS, timeout=300)
  assert result.returncode == 0, result.stderr
  return root / 'demo', result


def test_sweep_runs_every_trial(demo):
  sweep_dir, result = demo
  assert '[4/4]' in result.stderr and 'ETA' in result.stderr
  assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == sorted(
      NAMES + ['logs'])
  for name in NAMES:
    trial_dir = sweep_dir / name
    summary = json.loads((trial_dir / 'summary.json').read_text())
    assert summary['status'] == 'completed'
    record = json.loads((trial_dir / 'trial.json').read_text())
    assert record['name'] == name and record['result']['status'] == 'completed'
    assert (sweep_dir / 'logs' / f'{name}.log').stat().st_size > 0
    # Training scalars, hparams and final/* scalars in one run directory.
    assert {'train/loss', '_hparams_/session_start_info',
            '_hparams_/session_end_info', 'final/train/loss'} <= tags(
                trial_dir)
  # The experiment is the logdir's, at the sweep's parent (test_tensorboard).
  assert '_hparams_/experiment' in tags(sweep_dir.parent)
  index = records.sweep_index(sweep_dir)
  assert [row['name'] for row in index] == sorted(NAMES)
  assert index[0]['swept'] == {'width': 16, 'local_steps': 2, 'seed': 0}
  assert all(row['status'] == 'completed' for row in index)
  assert index[0]['metrics']['final/train/loss'] == index[0]['final'][
      'train/loss']


@pytest.fixture(scope='module')
def demo_fresh(tmp_path_factory):
  """The demo sweep with a fresh process per trial."""
  root = tmp_path_factory.mktemp('root')
  result = run_binary(root, '--sweep=demo', '--grid=width=16,32',
                      '--grid=local_steps=2', '--seeds=2', '--parallel=2',
                      '--fresh_process', *TINY_FLAGS, timeout=300)
  assert result.returncode == 0, result.stderr
  return root / 'demo'


def test_trial_workers_reuse_processes_with_the_same_bits(demo, demo_fresh):
  sweep_dir, _ = demo
  pids = set()
  for name in NAMES:
    header = (sweep_dir / 'logs' / f'{name}.log').read_text().split('\n')[0]
    if name.endswith('seed-0'):  # a stack of 2 seeds (--stack's default)
      assert header.startswith('# trials 1-2 of trial process '), header
      pids.add(header.split('trial process ')[1].split(',')[0])
    else:
      assert header.startswith('# trained in a stack with '), header
    pooled, fresh = (json.loads((d / name / 'summary.json').read_text())
                     for d in (sweep_dir, demo_fresh))
    assert pooled['final_weights_sha256'] == fresh['final_weights_sha256']
    assert pooled['final'] == {**fresh['final'], **{
        k: v for k, v in pooled['final'].items() if k.startswith('system/')}}
    assert fresh['phases_s']['startup_s'] > 0
    assert set(pooled['phases_s']) == set(fresh['phases_s'])
    # The run's own phases account for its wall time (the rest is logging).
    in_run = sum(v for k, v in fresh['phases_s'].items()
                 if k not in ('startup_s', 'data_s'))
    assert 0.5 * fresh['wall_time_s'] < in_run <= fresh['wall_time_s']
    files = [sorted(p.name for p in (d / name).iterdir()
                    if not p.name.startswith('events.'))
             for d in (sweep_dir, demo_fresh)]
    assert files[0] == files[1] and 'worker.log' in files[0]
  assert len(pids) <= 2  # --parallel=2 processes ran the 4 trials
  summaries = [json.loads((sweep_dir / n / 'summary.json').read_text())
               for n in NAMES]
  # A process's first stack paid its start-up, shared by the stack's seeds.
  assert all(s['phases_s']['startup_s'] > 0 for s in summaries)
  assert [s['stack']['index'] for s in summaries] == [0, 1, 0, 1]
  assert records.phase_totals([records.TrialResult(
      n, 'completed', summary=s) for n, s in zip(NAMES, summaries)])[
          'processes'] == len(pids)


def test_resume_reruns_only_unfinished_trials(demo, tmp_path):
  sweep_dir = tmp_path / 'demo'
  shutil.copytree(demo[0], sweep_dir)
  unfinished, interrupted, *kept = NAMES
  (sweep_dir / unfinished / 'summary.json').unlink()
  (sweep_dir / interrupted / 'metrics.csv').unlink()
  summary = json.loads((sweep_dir / interrupted / 'summary.json').read_text())
  (sweep_dir / interrupted / 'summary.json').write_text(
      json.dumps({**summary, 'status': 'interrupted'}))
  before = {name: (sweep_dir / name / 'summary.json').stat().st_mtime_ns
            for name in kept}
  python, launches = fake_python(tmp_path)
  trials = grid_lib.expand_grid({'width': ['16', '32'], 'local_steps': ['2']},
                                [0, 1], tiny_base())
  progress = []
  results = pool.run_sweep(trials, sweep_dir, parallel=2, python=python,
                           on_progress=lambda *a: progress.append(a[:2]),
                           fresh_process=True)
  assert launched(launches) == sorted([unfinished, interrupted])
  assert [r.name for r in results] == NAMES
  assert [r.status for r in results] == ['completed'] * 4
  assert [r.skipped for r in results] == [False, False, True, True]
  assert sorted(progress) == [(i, 4) for i in range(1, 5)]
  assert (sweep_dir / interrupted / 'metrics.csv').exists()
  for name in kept:
    assert (sweep_dir / name / 'summary.json').stat().st_mtime_ns == (
        before[name])
  assert all(row['status'] == 'completed' for row in
             records.sweep_index(sweep_dir))


def test_resume_in_trial_workers_reruns_only_unfinished_trials(
    demo, tmp_path, monkeypatch):
  sweep_dir = tmp_path / 'demo'
  shutil.copytree(demo[0], sweep_dir)
  unfinished = NAMES[2]
  (sweep_dir / unfinished / 'summary.json').unlink()
  launches = chaos(monkeypatch, tmp_path)
  trials = grid_lib.expand_grid({'width': ['16', '32'], 'local_steps': ['2']},
                                [0, 1], tiny_base())
  results = pool.run_sweep(trials, sweep_dir, parallel=2,
                           worker_module=CHAOS_WORKER)
  assert [name for _, name in chaos_launched(launches)] == [unfinished]
  assert [r.skipped for r in results] == [True, True, False, True]
  assert all(r.status == 'completed' for r in results)


def test_resume_stacks_only_the_trials_left(demo, tmp_path, monkeypatch):
  sweep_dir = tmp_path / 'demo'
  shutil.copytree(demo[0], sweep_dir)
  for name in NAMES[1:]:  # width 16's seed 0 is done
    (sweep_dir / name / 'summary.json').unlink()
  launches = chaos(monkeypatch, tmp_path)
  trials = grid_lib.expand_grid({'width': ['16', '32'], 'local_steps': ['2']},
                                [0, 1], tiny_base())
  got = pool.run_sweep(trials, sweep_dir, worker_module=CHAOS_WORKER,
                       stack=4)
  assert [r.skipped for r in got] == [True, False, False, False]
  assert all(r.status == 'completed' for r in got)
  assert [name for _, name in chaos_launched(launches)] == NAMES[1:]
  headers = [(sweep_dir / 'logs' / f'{name}.log').read_text().split('\n')[0]
             for name in NAMES[1:]]
  assert headers[0].startswith('# trial 1 of trial process ')  # alone
  assert headers[1].startswith('# trials 2-3 of trial process ')
  assert headers[2].startswith('# trained in a stack with ' + ', '.join(
      NAMES[2:]))


def test_sweeps_share_trial_processes_costliest_first(tmp_path,
                                                     monkeypatch):
  launches = chaos(monkeypatch, tmp_path)
  # 1 trial (a slot idles), cheap; 4 trials, of which seeds tie.
  small = grid_lib.expand_grid({}, [0], tiny_base(local_steps=1))
  large = grid_lib.expand_grid({'width': ['16', '32']}, [0, 1], tiny_base())
  cost = lambda trial: grid_lib.trial_config(trial)['width'] * (
      grid_lib.trial_config(trial)['local_steps'] - 1)
  progress = []
  got_small, got_large = pool.run_sweeps(
      [(small, tmp_path / 'a'), (large, tmp_path / 'b')], parallel=2,
      worker_module=CHAOS_WORKER, cost=cost,
      on_progress=lambda *a: progress.append(a[:2]))
  assert [r.name for r in got_small] == [t.name for t in small]
  assert [r.name for r in got_large] == [t.name for t in large]
  assert all(r.status == 'completed' for r in got_small + got_large)
  asked = chaos_launched(launches)
  assert len({pid for pid, _ in asked}) == 2  # two processes ran all five
  # The two costliest first, one per process. Which process then takes
  # what depends on which finishes first (test_pick_* below: a sibling
  # goes to the process that has its computations).
  assert {name for _, name in asked[:2]} == {
      'width-32_seed-0', 'width-16_seed-0'}
  assert asked[0][0] != asked[1][0]
  assert sorted(progress) == [(i, 5) for i in range(1, 6)]
  assert (tmp_path / 'a' / small[0].name / 'summary.json').exists()


class _Idle:
  def __init__(self, last_key):
    self.last_key = last_key


def test_pick_gives_a_process_its_last_trials_seed_sibling():
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0, 1], tiny_base())
  small = grid_lib.expand_grid({}, [0], tiny_base(local_steps=1))[0]
  workers = pool._Pool(sys.executable, None, CHAOS_WORKER)
  pending = [grid_lib.Unit('b', (trials[3],)),
             grid_lib.Unit('b', (trials[1],)), grid_lib.Unit('a', (small,))]
  # Idle after width 16: its sibling, though width 32's comes first.
  workers.idle = [_Idle(grid_lib.seedless_key(trials[0]))]
  workers.running = [grid_lib.seedless_key(trials[2])]
  assert pending[workers.pick(pending)].trials[0].name == 'width-16_seed-1'
  # Idle after width 32 while width 16 runs: not width 16's sibling (its
  # process will want it) but the next trial, the cheap one.
  workers.idle = [_Idle(grid_lib.seedless_key(trials[2]))]
  workers.running = [grid_lib.seedless_key(trials[0])]
  assert pending[workers.pick(pending[1:]) + 1].trials[0].name == small.name
  # Only the running trial's sibling is left: it goes to the idle process.
  assert workers.pick(pending[1:2]) == 0


def test_seedless_key_tells_seed_siblings():
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0, 1], tiny_base())
  keys = [grid_lib.seedless_key(t) for t in trials]
  assert keys[0] == keys[1] != keys[2] == keys[3]


def test_resume_refuses_a_sweep_of_other_flags(demo):
  trials = grid_lib.expand_grid({'width': ['16', '32'], 'local_steps': ['2']},
                                [0, 1], tiny_base(rounds=3))
  with pytest.raises(config_lib.ConfigError) as e:
    pool.run_sweep(trials, demo[0])
  assert e.value.field == 'sweep' and 'rounds' in str(e.value)


def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
  python, launches = fake_python(
      tmp_path, '  *--experiment=width-16_seed-0*)\n'
      '    for i in $(seq 1 30); do echo "line $i"; done; exit 7;;\n')
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0], tiny_base())
  results = pool.run_sweep(trials, tmp_path / 'sw', parallel=2,
                           python=python, fresh_process=True)
  failed, completed = results
  assert failed.status == 'failed' and failed.returncode == 7
  assert 'exit status 7' in failed.error
  assert 'line 30' in failed.log_tail and 'line 10\n' not in failed.log_tail
  assert completed.status == 'completed', completed.log_tail
  index = {row['name']: row for row in records.sweep_index(tmp_path / 'sw')}
  assert index['width-16_seed-0']['status'] == 'failed'
  assert index['width-32_seed-0']['status'] == 'completed'
  # A failed trial is rerun on resume; the completed one is not.
  pool.run_sweep(trials, tmp_path / 'sw', python=python, fresh_process=True)
  assert launched(launches) == ['width-16_seed-0'] * 2 + ['width-32_seed-0']


def test_trial_that_kills_its_worker_is_recorded_and_the_sweep_goes_on(
    tmp_path, monkeypatch):
  launches = chaos(monkeypatch, tmp_path, **{'width-16_seed-0': 'exit'})
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0], tiny_base())
  failed, completed = pool.run_sweep(trials, tmp_path / 'sw', parallel=2,
                                     worker_module=CHAOS_WORKER)
  assert failed.status == 'failed' and failed.returncode == 7
  assert 'exit status 7' in failed.error
  assert 'line 30' in failed.log_tail and 'line 10\n' not in failed.log_tail
  assert completed.status == 'completed', completed.log_tail
  chaos(monkeypatch, tmp_path)  # now it behaves: the rerun completes it
  pool.run_sweep(trials, tmp_path / 'sw', worker_module=CHAOS_WORKER)
  assert [name for _, name in chaos_launched(launches)].count(
      'width-16_seed-0') == 2
  assert records.sweep_index(tmp_path / 'sw')[0]['status'] == 'completed'


def test_failed_trial_retires_its_worker_and_the_next_reuses_one(
    tmp_path, monkeypatch):
  launches = chaos(monkeypatch, tmp_path, **{'width-16_seed-0': 'raise'})
  monkeypatch.setattr(pool, 'MAX_TRIALS_PER_PROCESS', 2)
  trials = grid_lib.expand_grid({'width': ['16', '24', '32', '40']}, [0],
                                tiny_base())
  results = pool.run_sweep(trials, tmp_path / 'sw',
                           worker_module=CHAOS_WORKER)
  assert [r.status for r in results] == ['failed'] + ['completed'] * 3
  assert results[0].returncode == 1 and 'chaos: raise' in results[0].error
  assert 'line 30' in results[0].log_tail
  assert 'RuntimeError' in results[0].log_tail
  pids = [pid for pid, _ in chaos_launched(launches)]
  # A fresh process after the failure, and after MAX_TRIALS_PER_PROCESS.
  assert pids[0] != pids[1] == pids[2] != pids[3]


def test_hung_trial_in_a_worker_is_killed_with_its_group(tmp_path,
                                                         monkeypatch):
  chaos(monkeypatch, tmp_path, **{'seed-1': 'hang'})
  trials = grid_lib.expand_grid({}, [0, 1], tiny_base())
  before, hung = pool.run_sweep(trials, tmp_path / 'sw', timeout_s=30,
                                worker_module=CHAOS_WORKER)
  assert before.status == 'completed', before.log_tail
  assert hung.status == 'failed' and 'timed out' in hung.error
  pids = [int(p) for p in (tmp_path / 'pids').read_text().split()]
  assert not wait_gone(pids, 10)


def test_hung_trial_is_killed_with_its_process_group(tmp_path):
  pids = tmp_path / 'pids'
  python, _ = fake_python(
      tmp_path, f'  *)\n    sleep 600 & echo $! $$ > {pids}; wait;;\n')
  trials = grid_lib.expand_grid({}, [0], tiny_base())
  start = time.monotonic()
  [result] = pool.run_sweep(trials, tmp_path / 'sw', python=python,
                            timeout_s=2, fresh_process=True)
  assert time.monotonic() - start < 30
  assert result.status == 'failed' and 'timed out' in result.error
  assert not wait_gone([int(p) for p in pids.read_text().split()], 10)


@pytest.mark.parametrize('args, flag', [
    (['--grid=width'], 'grid'),  # unknown keys: test_expand_grid_errors...
    (['--grid=width=16,0'], 'width'),
])
def test_binary_bad_input_exits_2_and_writes_nothing(tmp_path, args, flag):
  result = run_binary(tmp_path / 'root', *args, *TINY_FLAGS, timeout=120)
  assert result.returncode == 2, result.stderr
  assert f'--{flag}' in result.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'root').exists()


@pytest.mark.parametrize('mode', [[], ['--fresh_process']])
def test_sigterm_stops_every_trial(tmp_path, mode):
  proc = subprocess.Popen(
      [sys.executable, '-m', 'benchmarks.sweep', f'--root_dir={tmp_path}',
       '--sweep=long', '--grid=width=16,32', '--parallel=2',
       *TINY_FLAGS[:-1], '--rounds=100000', *mode],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 150
    while True:
      assert proc.poll() is None, proc.stderr.read()
      tree = psutil.Process(proc.pid).children(recursive=True)
      workers = [p for p in tree if 'worker_binary' in ' '.join(p.cmdline())]
      if len(workers) == 2:
        break
      assert time.monotonic() < deadline, 'the trials did not start'
      time.sleep(0.2)
    time.sleep(1)  # a round or two
    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
  finally:
    if proc.poll() is None:
      proc.kill()
  assert not wait_gone([p.pid for p in tree], 10)
  index = records.sweep_index(tmp_path / 'long')
  assert [row['status'] for row in index] == ['interrupted'] * 2


@pytest.mark.parametrize('key, hint', [
    ('widht', "; did you mean 'width'?"), ('local_step', "'local_steps'?"),
    ('zzz', None)])
def test_unknown_grid_key_suggests_the_closest_field(key, hint):
  with pytest.raises(config_lib.ConfigError) as e:
    grid_lib.expand_grid({key: ['1']}, [0], tiny_base())
  assert e.value.field == 'grid'
  if hint:
    assert str(e.value).endswith(hint)
  else:
    assert str(e.value).endswith('is not a config field')


# Stacks: seed siblings trained as one computation in one trial worker.


def units_of(pending, stack):
  """[(sweep_dir, [trial names])] of grid.stack_units."""
  return [(unit.sweep_dir, [t.name for t in unit.trials])
          for unit in grid_lib.stack_units(pending, stack)]


def test_stack_units_group_seed_siblings_of_one_sweep_up_to_stack():
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0, 1, 2],
                                tiny_base())
  # Interleaved, and a second sweep with the same configs.
  pending = ([(t, 'a') for t in trials[::2]] + [(t, 'a') for t in trials[1::2]]
             + [(t, 'b') for t in trials[:2]])
  assert units_of(pending, 2) == [
      ('a', ['width-16_seed-0', 'width-16_seed-2']),
      ('a', ['width-32_seed-1', 'width-32_seed-0']),
      ('a', ['width-16_seed-1']), ('a', ['width-32_seed-2']),
      ('b', ['width-16_seed-0', 'width-16_seed-1'])]
  assert [len(names) for _, names in units_of(pending, 3)] == [3, 3, 2]
  assert units_of(pending, 1) == [(d, [t.name]) for t, d in pending]


@pytest.mark.parametrize('grid, overrides', [
    ({'diag_every': ['1']}, {}),
    ({'ntk_every': ['1']}, {}),
    ({'clients_per_pack': ['2']}, {}),
    ({'width': [str(grid_lib.STACK_MAX_WIDTH + 1)]}, {}),
])
def test_stack_units_leave_unstackable_trials_alone(grid, overrides):
  trials = grid_lib.expand_grid(grid, [0, 1, 2], tiny_base(**overrides))
  pending = [(t, 'a') for t in trials]
  assert not any(grid_lib.stackable(t) for t in trials)
  assert units_of(pending, 3) == [('a', [t.name]) for t in trials]


def test_stack_units_take_trials_up_to_the_widest_stackable():
  trials = grid_lib.expand_grid(
      {'width': [str(grid_lib.STACK_MAX_WIDTH)]}, [0, 1], tiny_base())
  assert units_of([(t, 'a') for t in trials], 4) == [
      ('a', [t.name for t in trials])]


def rows_less_system(path):
  """metrics.csv without its system_* (timing) columns."""
  with open(path) as f:
    return [{k: v for k, v in row.items() if not k.startswith('system_')}
            for row in csv.DictReader(f)]


def test_stacked_sweep_has_the_bits_of_one_by_one(tmp_path):
  trials = grid_lib.expand_grid({}, [0, 1, 2], tiny_base())
  stacked = pool.run_sweep(trials, tmp_path / 'stacked', stack=3)
  alone = pool.run_sweep(trials, tmp_path / 'alone', stack=1)
  hashes = set()
  for trial, s, a in zip(trials, stacked, alone):
    assert s.name == a.name == trial.name
    assert s.status == a.status == 'completed', s.log_tail
    sha = s.summary['final_weights_sha256']
    assert sha == a.summary['final_weights_sha256']
    hashes.add(sha)
    dirs = [tmp_path / sweep / trial.name for sweep in ('stacked', 'alone')]
    assert rows_less_system(dirs[0] / 'metrics.csv') == rows_less_system(
        dirs[1] / 'metrics.csv')
    record = json.loads((dirs[0] / 'trial.json').read_text())
    assert record['name'] == trial.name
    assert record['result']['status'] == 'completed'
    assert hparams.session_files(dirs[0])
  assert len(hashes) == 3  # three seeds, three runs
  assert len({r.wall_time_s for r in stacked}) == 1  # equal shares
  logs = tmp_path / 'stacked' / records.LOGS
  first = (logs / 'seed-0.log').read_text()
  assert first.startswith('# trials 1-3 of trial process ')
  assert all(f'--experiment=seed-{i}' in first for i in range(3))
  for name in ('seed-1', 'seed-2'):
    assert (logs / f'{name}.log').read_text() == (
        '# trained in a stack with seed-0, seed-1, seed-2; its output is in '
        f'{logs / "seed-0.log"}\n')
  alone_log = (tmp_path / 'alone' / records.LOGS / 'seed-1.log').read_text()
  assert alone_log.startswith('# trial 2 of trial process ')


def test_a_stack_that_kills_its_worker_fails_every_member(tmp_path,
                                                          monkeypatch):
  launches = chaos(monkeypatch, tmp_path, **{'width-16_seed-1': 'exit'})
  trials = grid_lib.expand_grid({'width': ['16', '32']}, [0, 1], tiny_base())
  got = pool.run_sweep(trials, tmp_path / 'sw', worker_module=CHAOS_WORKER,
                       stack=2)
  assert [r.status for r in got] == ['failed'] * 2 + ['completed'] * 2
  for result in got[:2]:
    assert result.returncode == 7 and 'exit status 7' in result.error
    assert 'line 30' in result.log_tail  # the stack's log: its first's
  asked = chaos_launched(launches)
  assert [name for _, name in asked] == [t.name for t in trials]
  pids = [pid for pid, _ in asked]
  assert pids[0] == pids[1] != pids[2] == pids[3]  # a fresh process after
  index = records.sweep_index(tmp_path / 'sw')
  assert [row['status'] for row in index] == ['failed'] * 2 + [
      'completed'] * 2


class _Finished(processes.Started):
  """A started unit whose process exited 0 without writing a summary."""

  def outcome(self, i):
    return 0, ''


def test_a_unit_has_timeout_s_per_member_and_fails_every_member(tmp_path):
  trials = grid_lib.expand_grid({}, [0, 1, 2], tiny_base())
  started = _Finished(grid_lib.Unit(str(tmp_path), tuple(trials)), 5)
  assert started.deadline - started.start == 15
  assert started.log_path == str(tmp_path / records.LOGS / 'seed-0.log')
  for trial in trials:
    record = json.loads((tmp_path / trial.name / 'trial.json').read_text())
    assert record == {'name': trial.name, 'swept': trial.swept,
                      'flags': list(trial.flags)}
  got = started.result(timed_out=True)
  assert [r.name for r in got] == [t.name for t in trials]
  assert all(r.status == 'failed' and r.error == 'timed out after 15 s; '
             'killed' for r in got)
  assert [r.status for r in started.result()] == ['failed'] * 3  # no summary


def worker_request(tmp_path, name, **overrides):
  config = {**tiny_base(**overrides), 'root_dir': str(tmp_path),
            'experiment': name}
  return dict(name=name, config=config, log=str(tmp_path / f'{name}.log'))


def test_trial_worker_replies_once_per_stack_member_in_order(tmp_path):
  stack = [worker_request(tmp_path, 'b', seed=1),
           worker_request(tmp_path, 'a', seed=0)]
  single = worker_request(tmp_path, 'c', seed=2)
  bad = [worker_request(tmp_path, 'd', seed=3, width=0),
         worker_request(tmp_path, 'e', seed=4, width=0)]
  lines = [{'stack': stack}, single, {'stack': bad}, single]
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.trial_worker'], cwd=ROOT,
      input=''.join(json.dumps(line) + '\n' for line in lines),
      capture_output=True, text=True, timeout=300)
  replies = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [(r['name'], r['exit_code']) for r in replies] == [
      ('b', 0), ('a', 0), ('c', 0), ('d', 2), ('e', 2)], proc.stderr
  assert replies[3]['error'] == replies[4]['error'] != ''
  assert '--width' in replies[3]['error']
  assert proc.returncode == 2  # after bad input: the last request not read
  for name in 'bac':
    summary = json.loads((tmp_path / name / 'summary.json').read_text())
    assert summary['status'] == 'completed'
  assert not (tmp_path / 'd').exists() and not (tmp_path / 'e').exists()
  assert (tmp_path / 'a.log').read_text() == (
      f'# trained in a stack with b, a; its output is in {tmp_path}/b.log\n')
  stack_log = (tmp_path / 'b.log').read_text()
  assert 'b: completed after 2 rounds' in stack_log
  assert 'a: completed after 2 rounds' in stack_log


def _launched_threads(monkeypatch, threads, user=None):
  """The thread variables a process _launch started sees."""
  for name in processes.THREAD_VARIABLES:
    monkeypatch.delenv(name, raising=False)
    if user:
      monkeypatch.setenv(name, user)
  proc = processes._launch(sys.executable, ['-c', (
      'import os; print([os.environ.get(n) for n in '
      f'{processes.THREAD_VARIABLES!r}])')], threads, stdout=subprocess.PIPE)
  out, _ = proc.communicate(timeout=60)
  return out.decode().strip()


def test_trial_threads_all_shared_or_a_number(monkeypatch):
  cores = len(os.sched_getaffinity(0))
  assert processes.trial_threads('all', 2) is None  # TensorFlow's default
  assert processes.trial_threads('shared', 2) == max(1, cores // 2)
  assert processes.trial_threads('shared', 4 * cores) == 1
  assert processes.trial_threads('3', 2) == 3
  for bad in ('0', '-1', 'half', ''):
    with pytest.raises(config_lib.ConfigError) as info:
      processes.trial_threads(bad, 2)
    assert info.value.field == 'trial_threads'
  assert _launched_threads(monkeypatch, 3) == "['3', '3']"
  assert _launched_threads(monkeypatch, None) == '[None, None]'
  # The caller's own setting wins.
  assert _launched_threads(monkeypatch, 3, user='2') == "['2', '2']"


def test_one_thread_agrees_with_every_core_to_a_tolerance(tmp_path):
  # --trial_threads changes a float32 matmul's bits (the quick preset's
  # depth-2 and depth-4 trials at m = 1024 did); a run of one thread must
  # still agree with one of TensorFlow's default threads to 1e-4, every
  # round's losses and the prediction (float64, NumPy's threads).
  flags = ['--dataset=synthetic', '--num_examples=64', '--input_dim=16',
           '--num_clients=4', '--width=1024', '--depth=2',
           '--train_layers=hidden', '--lr_scale=width', '--client_lr=4',
           '--algorithm=local_gd', '--local_steps=5', '--rounds=4',
           '--engine=inprocess', f'--root_dir={tmp_path}']
  rows = {}
  for name, threads in (('all', None), ('one', 1)):
    subprocess.run([sys.executable, '-m', 'benchmarks.train', *flags,
                    f'--experiment={name}'], check=True, cwd=ROOT,
                   env=processes.thread_env(threads), capture_output=True)
    with open(tmp_path / name / 'metrics.csv') as f:
      rows[name] = list(csv.DictReader(f))
  assert len(rows['one']) == len(rows['all']) == 5
  for one, every in zip(rows['one'], rows['all']):
    for column, value in every.items():
      if value and not column.startswith('system_'):
        assert float(one[column]) == pytest.approx(float(value), rel=1e-4), (
            column)
