"""Checkpoint and resume: a run killed at any round and rerun with the same
command ends exactly as an uninterrupted run."""

import json
import random
import signal
import time

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from test_train import SMALL, read_csv, start_train, train

ARGS = [*SMALL[:-1], '--rounds=12', '--checkpoint_every=3', '--diag_every=4',
        '--diag_per_step', '--probe_size=8']


def wait_for_rows(path, rows, proc, timeout=120):
  deadline = time.monotonic() + timeout
  while not (path.exists() and len(read_csv(path)) >= rows):
    assert proc.poll() is None and time.monotonic() < deadline
    time.sleep(0.05)


def without_timing(rows):
  return [{k: v for k, v in r.items() if not k.startswith('system_')}
          for r in rows]


def tensorboard_losses(run_dir):
  acc = event_accumulator.EventAccumulator(str(run_dir),
                                           size_guidance={'tensors': 0})
  acc.Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto)))
          for e in acc.Tensors('train/loss')]


def test_kill_9_then_resume_is_bit_identical(tmp_path):
  reference = train(tmp_path, *ARGS, experiment='reference')
  assert reference.returncode == 0, reference.stderr
  # Killed after a round chosen at random (seeded), then the same command.
  kill_after = random.Random(0).randint(4, 10)
  proc = start_train(tmp_path, *ARGS)
  wait_for_rows(tmp_path / 'run' / 'metrics.csv', kill_after + 1, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = train(tmp_path, *ARGS)
  assert resumed.returncode == 0, resumed.stderr
  assert 'resuming after round' in resumed.stderr

  def read(name):
    summary = json.loads((tmp_path / name / 'summary.json').read_text())
    return (summary['final_weights_sha256'],
            without_timing(read_csv(tmp_path / name / 'metrics.csv')),
            read_csv(tmp_path / name / 'drift_steps.csv'))
  assert read('run') == read('reference')
  losses = tensorboard_losses(tmp_path / 'run')
  assert [step for step, _ in losses] == list(range(13))  # one curve
  assert losses == tensorboard_losses(tmp_path / 'reference')


def test_sigterm_stops_at_a_round_boundary_with_a_checkpoint(tmp_path):
  proc = start_train(tmp_path, *SMALL[:-1], '--rounds=100000',
                     '--checkpoint_every=0')
  wait_for_rows(tmp_path / 'run' / 'metrics.csv', 3, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 130
  summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
  assert summary['status'] == 'interrupted'
  done = summary['rounds_completed']
  assert len(read_csv(tmp_path / 'run' / 'metrics.csv')) == done + 1
  assert (tmp_path / 'run' / 'checkpoints' /
          f'checkpoint-{done:08d}.npz').exists()


def test_corrupt_checkpoint_and_other_flags_are_refused(tmp_path):
  proc = start_train(tmp_path, *SMALL[:-1], '--rounds=100000',
                     '--checkpoint_every=1')
  wait_for_rows(tmp_path / 'run' / 'metrics.csv', 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  other = train(tmp_path, *SMALL[:-1], '--rounds=100000', '--width=64')
  assert other.returncode == 2
  assert '--experiment' in other.stderr.splitlines()[-1]
  assert 'width' in other.stderr.splitlines()[-1]
  latest = sorted((tmp_path / 'run' / 'checkpoints').glob('*.npz'))[-1]
  latest.write_bytes(b'not a checkpoint')
  corrupt = train(tmp_path, *SMALL[:-1], '--rounds=100000',
                  '--checkpoint_every=1')
  assert corrupt.returncode == 2
  assert latest.name in corrupt.stderr.splitlines()[-1]
  assert latest.read_bytes() == b'not a checkpoint'  # left for the user
