"""The remote engine on two TFF workers on localhost: the same weights as the
native engine, the diagnostics' fallback to the first worker, and the errors
for an unreachable worker and for one that dies mid-run."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import portpicker
import pytest
import tensorflow as tf  # noqa: F401  (TF before TFF, as everywhere)
import tensorflow_federated as tff

from tff_localsgd import config as config_lib
from tff_localsgd import recording
from tff_localsgd import training
from tff_localsgd.engines import native
from tff_localsgd.engines import remote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_examples=48, input_dim=6, num_clients=3, width=32,
             local_steps=2, batch_size=4, rounds=3, checkpoint_every=0,
             probe_size=16)


@pytest.fixture(scope='module')
def workers():
  started = [native.Worker(), native.Worker()]
  try:
    for w in started:
      native.connect(w.address, worker=w)
    yield started
  finally:
    for w in started:
      w.stop()


def run(tmp_path, name, **fields):
  config = config_lib.ExperimentConfig(**{**SMALL, **fields},
                                       root_dir=str(tmp_path), experiment=name)
  return recording.run(training.Setup.prepare(config))


def addresses(workers):
  return ','.join(w.address for w in workers)


def test_two_workers_give_the_native_weights(tmp_path, workers):
  # Three clients on two workers: blocks {0, 1} and {2}, so the weighted sums
  # are ((c0 + c1) + c2), the native engine's order: bit-identical weights.
  # diag_every=2: round 2 is a lockstep round (not mergeable, runs on the
  # first worker), rounds 1 and 3 are spread over both.
  for diag in (0, 2):
    reference = run(tmp_path, f'native{diag}', engine='native',
                    diag_every=diag)
    spread = run(tmp_path, f'remote{diag}', engine='remote',
                 workers=addresses(workers), diag_every=diag)
    assert spread['status'] == reference['status'] == 'completed'
    assert (spread['final_weights_sha256'] ==
            reference['final_weights_sha256']), diag
    assert ({k: v for k, v in spread['final'].items() if 'system' not in k} ==
            {k: v for k, v in reference['final'].items() if 'system' not in k})


def test_four_clients_differ_only_in_the_summation_order(tmp_path, workers):
  # Blocks {0, 1} and {2, 3}: (c0 + c1) + (c2 + c3) instead of the native
  # ((c0 + c1) + c2) + c3, so only float32 rounding may differ.
  fields = dict(num_clients=4, checkpoint_every=3, engine='remote',
                workers=addresses(workers))
  spread = run(tmp_path, 'remote', **fields)
  one_worker = run(tmp_path, 'one', **{**fields, 'workers': workers[0].address})
  reference = run(tmp_path, 'native', num_clients=4, checkpoint_every=3,
                  engine='native')
  assert one_worker['final_weights_sha256'] == reference['final_weights_sha256']
  assert spread['final']['train/loss'] == pytest.approx(
      reference['final']['train/loss'], rel=1e-5)
  final = [np.load(glob.glob(os.path.join(tmp_path, name, 'checkpoints',
                                          '*.npz'))[0])
           for name in ('remote', 'native')]
  assert final[0]['round'] == final[1]['round'] == 3
  for key in final[0].files:
    np.testing.assert_allclose(final[0][key], final[1][key], rtol=1e-5,
                               atol=1e-7)


def test_an_unreachable_worker_is_named_at_start(tmp_path, workers):
  unused = f'localhost:{portpicker.pick_unused_port()}'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.train', f'--root_dir={tmp_path}',
       '--engine=remote', f'--workers={workers[0].address},{unused}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert unused in last and workers[0].address not in last, last
  assert not os.listdir(tmp_path)  # nothing written


def test_a_worker_dying_mid_run_stops_it_and_it_resumes(tmp_path):
  first, second = native.Worker(), native.Worker()
  try:
    args = [sys.executable, '-m', 'benchmarks.train', f'--root_dir={tmp_path}',
            '--experiment=run', '--engine=remote',
            f'--workers={first.address},{second.address}',
            *[f'--{k}={v}' for k, v in SMALL.items()
              if k not in ('rounds', 'checkpoint_every')],
            '--rounds=24', '--checkpoint_every=2', '--eval_every=12']
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / 'run' / 'checkpoints'
    deadline = time.monotonic() + 120
    while not (checkpoints.exists() and os.listdir(checkpoints)):
      assert time.monotonic() < deadline and proc.poll() is None
      time.sleep(0.05)
    second.process.kill()  # mid-run, as an out-of-memory kill would
    assert proc.wait(timeout=remote.DEAD_AFTER_S + 60) == 1
    stderr = proc.stderr.read()
    assert 'WorkerDiedError' in stderr and second.address in stderr
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['status'] == 'failed'
    assert 0 < summary['rounds_completed'] < 24
    assert first.process.poll() is None  # the other worker is unharmed
    assert not psutil.pid_exists(proc.pid)

    # The worker is back on its port: the same command resumes and ends
    # with the weights of an uninterrupted native run.
    second = native.Worker(port=second.port)
    native.connect(second.address, worker=second)
    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['resumed_from_round'] > 0
    reference = run(tmp_path, 'native', engine='native', rounds=24,
                    eval_every=12)
    assert summary['final_weights_sha256'] == reference['final_weights_sha256']
  finally:
    first.stop()
    second.stop()


def test_the_worker_binary_wrapper(tmp_path):
  from benchmarks import worker as worker_main  # no TensorFlow in it
  # Found without importing TFF, it is the binary the wheel ships.
  assert worker_main.worker_binary.path() == os.path.join(
      os.path.dirname(tff.__file__), 'data', 'worker_binary')
  for bad in (['--port=0'], ['--port=65536'], ['--port=x'], []):
    result = subprocess.run([sys.executable, '-m', 'benchmarks.worker', *bad],
                            cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and '--port' in result.stderr, bad

  port = portpicker.pick_unused_port()
  proc = subprocess.Popen(
      [sys.executable, '-m', 'benchmarks.worker', f'--port={port}'], cwd=ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    # worker_binary binds every interface: the wrapper must say so.
    lines, deadline = [], time.monotonic() + 60
    while not any('warning' in line for line in lines):
      assert time.monotonic() < deadline and proc.poll() is None, lines
      lines.append(proc.stderr.readline())
    assert f'[::]:{port}' in lines[-1] and 'never publish' in lines[-1]
    binary = [c for c in psutil.Process(proc.pid).children()
              if c.exe() == native.WORKER_BINARY]
    assert len(binary) == 1
    busy = subprocess.run([sys.executable, '-m', 'benchmarks.worker',
                           f'--port={port}'], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert busy.returncode == 2 and '--port' in busy.stderr
    remote.check_workers([f'localhost:{port}'])[0].close()  # it serves TFF
    proc.terminate()  # forwarded to worker_binary
    assert proc.wait(timeout=30) != 0
    binary[0].wait(timeout=10)
    assert not binary[0].is_running()
  finally:
    if proc.poll() is None:
      proc.kill()
