"""The run directory: its policy, its lock, writing a round and reading back."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tff_localsgd import board
from tff_localsgd import config as config_lib
from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import results
from tff_localsgd import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(tmp_path, **overrides):
  return config_lib.ExperimentConfig(root_dir=str(tmp_path), experiment='run',
                                     **overrides)


def test_state_new_resume_completed_and_other_flags(tmp_path):
  config = make_config(tmp_path)
  run = rundir.RunDir(config)
  assert run.state() == 'new'
  os.makedirs(run.path)
  recorders.write_json(run.file(rundir.CONFIG_JSON),
                       dataclasses.asdict(config))
  assert run.state() == 'resume'
  recorders.write_json(run.file(rundir.SUMMARY_JSON), {'status': 'completed'})
  assert run.state() == 'completed'
  # An execution field may differ; a field that changes the result may not.
  assert rundir.RunDir(dataclasses.replace(config, engine='inprocess')).state(
  ) == 'completed'
  with pytest.raises(config_lib.ConfigError) as e:
    rundir.RunDir(dataclasses.replace(config, width=64)).state()
  assert e.value.field == 'experiment' and 'width' in str(e.value)


def test_clear_keeps_only_the_lock(tmp_path):
  run = rundir.RunDir(make_config(tmp_path))
  run.lock()
  os.makedirs(run.file('checkpoints'))
  recorders.write_json(run.file(rundir.SUMMARY_JSON), {})
  run.clear()
  assert os.listdir(run.path) == [rundir.LOCK]
  run.close()


def test_write_maps_tags_to_columns_and_reads_back(tmp_path):
  config = make_config(tmp_path, local_steps=2)
  run = rundir.RunDir(config)
  run.lock()
  assert run.open([(2, 2)]) is None
  tag = 'lazy/weight_change_rel/hidden_1'
  run.write(results.RoundResult(0, (), {'train/loss': 1.0, tag: 0.5}))
  run.write(results.RoundResult(
      1, (), {'train/loss': 0.25}, step_rows=(
          {'local_step': 0, 'grad_diff': 0.0},
          {'local_step': 1, 'grad_diff': 0.1})))
  run.close()
  rows = run.read_rows()
  assert rows == [{'round': 0, 'train_loss': 1.0, metrics.column(tag): 0.5},
                  {'round': 1, 'train_loss': 0.25, metrics.column(tag): None}]
  assert metrics.tag(metrics.column(tag)) == tag
  steps = recorders.read_metrics(run.file(rundir.STEPS_CSV))
  assert [(r['round'], r['local_step']) for r in steps] == [('1', '0'),
                                                            ('1', '1')]


def test_eps_target_and_rounds_to_eps_of_a_run(tmp_path):
  config = make_config(tmp_path, eps=0.01)
  run = rundir.RunDir(config)
  run.lock()
  run.open([(2, 2)])
  for t, loss in enumerate([3.0, 0.5, 0.04, 0.02]):
    run.write(results.RoundResult(t, (), {'train/loss': loss}))
  run.write_summary({'zero_predictor_loss': 2.5})
  run.close()
  assert run.eps_target() == pytest.approx(0.025)
  # Crossed between rounds 2 (0.04) and 3 (0.02), log-linearly:
  # 2 + log(0.04 / 0.025) / log(0.04 / 0.02) = 2.678.
  assert run.rounds_to_eps() == pytest.approx(2 + math.log(1.6) / math.log(2),
                                              rel=1e-12)


_HOLD = '''
import sys, time
from tff_localsgd import config as config_lib, rundir
run = rundir.RunDir(config_lib.ExperimentConfig(root_dir=sys.argv[1],
                                                experiment='run'))
run.lock()
print('locked', flush=True)
time.sleep(60)
'''


def _hold_lock(tmp_path):
  proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(tmp_path)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
  holder = _hold_lock(tmp_path)
  try:
    run = rundir.RunDir(make_config(tmp_path))
    with pytest.raises(rundir.BusyError) as e:
      run.lock()
    assert e.value.field == 'experiment'
    assert f'pid {holder.pid}' in str(e.value)
  finally:
    holder.kill()
    holder.wait()


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
  holder = _hold_lock(tmp_path)
  holder.kill()  # SIGKILL: the lock file stays, the kernel drops the flock
  holder.wait()
  run = rundir.RunDir(make_config(tmp_path))
  assert os.path.exists(run.file(rundir.LOCK))
  run.lock()
  assert open(run.file(rundir.LOCK)).read().strip() == str(os.getpid())
  run.close()


def test_two_train_processes_on_one_directory(tmp_path):
  """The second `benchmarks.train` exits 2 naming the first one's pid and
  touches nothing; the first one goes on and stops cleanly on SIGTERM."""
  args = [sys.executable, '-m', 'benchmarks.train', f'--root_dir={tmp_path}',
          '--experiment=run', '--num_examples=24', '--input_dim=4',
          '--num_clients=2', '--width=16', '--local_steps=2',
          '--batch_size=4', '--rounds=100000', '--checkpoint_every=1']
  first = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  metrics_csv = tmp_path / 'run' / rundir.METRICS_CSV
  deadline = time.monotonic() + 120
  while not metrics_csv.exists():
    assert first.poll() is None and time.monotonic() < deadline
    time.sleep(0.05)
  second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert second.returncode == 2, second.stderr
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1 and f'pid {first.pid}' in lines[0], lines
  assert '--experiment' in lines[0]
  assert first.poll() is None  # untouched, still training
  first.send_signal(signal.SIGTERM)
  assert first.wait(timeout=120) == 130, first.stderr.read()
  summary = recorders.read_json(str(tmp_path / 'run' / rundir.SUMMARY_JSON))
  rows = rundir.RunDir(make_config(tmp_path)).read_rows()
  assert summary['status'] == 'interrupted'
  assert [r['round'] for r in rows] == list(
      range(summary['rounds_completed'] + 1))


def test_a_value_beyond_float32_is_inf_in_tensorboard_and_exact_in_csv(
    tmp_path):
  """A predicted curve past the edge of stability grows beyond float32:
  the run must not crash writing it."""
  run = rundir.RunDir(make_config(tmp_path), board=board.TensorBoardRecorder)
  run.lock()
  run.open([(2, 2)])
  run.write(results.RoundResult(0, (), {'train/loss': 1.0,
                                         'theory/loss': 1e300}))
  run.close()
  assert run.read_rows()[0]['theory_loss'] == 1e300
  acc = event_accumulator.EventAccumulator(run.path,
                                           size_guidance={'tensors': 0})
  acc.Reload()
  value = tf.make_ndarray(acc.Tensors('theory/loss')[0].tensor_proto)
  assert value == np.inf
