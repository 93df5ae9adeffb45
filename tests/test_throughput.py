"""benchmarks.throughput: its plain-TF reference computes our round, its FLOP
count is the analytic one, and its cells refuse the flags they set."""

import subprocess
import sys

import numpy as np
import pytest

from benchmarks import throughput
from tff_localsgd import config as config_lib
from tff_localsgd import models
from tff_localsgd import process
from tff_localsgd.engines import inprocess

D, N, SIZE = 6, 4, 8  # equal client sizes: the stacked reference needs them


def make_config(**overrides):
  values = dict(dataset='synthetic', input_dim=D, num_examples=N * SIZE,
                num_clients=N, width=32, depth=1, algorithm='local_gd',
                local_steps=3, client_lr=4.0, lr_scale='width', seed=0)
  values.update(overrides)
  return config_lib.ExperimentConfig(**values).validate()


@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
@pytest.mark.parametrize('stacked', [True, False])
def test_plain_round_is_our_round(train_layers, stacked):
  config = make_config(train_layers=train_layers)
  rng = np.random.default_rng(1)
  xs = [rng.standard_normal((SIZE, D)).astype(np.float32) for _ in range(N)]
  ys = [rng.standard_normal((SIZE, 1)).astype(np.float32) for _ in range(N)]
  spec = models.build_model(config, (D,), 1)
  proc = process.LocalSGDProcess(spec, config, (D,), 1)
  with inprocess.inprocess_engine('/CPU:0'):
    want, metrics = proc.next(
        spec.initial_weights, [process.client_data(x, y, 0, 1, i, N)
                               for i, (x, y) in enumerate(zip(xs, ys))])
  got, loss_sum = throughput.plain_round_fn(spec, config, xs, ys, stacked)(
      spec.initial_weights)
  moved = max(float(np.max(np.abs(w - w0)))
              for w, w0 in zip(want, spec.initial_weights))
  assert moved > 1e-3
  for g, w in zip(got, want):
    np.testing.assert_allclose(g.numpy(), w, rtol=0, atol=1e-6)
  np.testing.assert_allclose(float(loss_sum),
                             float(metrics['start']['loss_sum']), rtol=1e-6)


def test_round_flops_counts_the_trained_layers_matmuls():
  d, m, n, k = D, 32, SIZE, 3
  full = make_config()
  params = d * m + m * m + m
  # All layers train: forward 2P, backward 4P less the first layer's input
  # gradient; the round also evaluates w^t (2P per example).
  assert throughput.round_flops(full, n) == N * n * (
      k * (6 * params - 2 * d * m) + 2 * params)
  hidden = make_config(train_layers='hidden', eval_every=2)
  # Only W trains: its weight gradient (2 m^2), and the input gradient of
  # the layer above it (2 m); nothing below W.
  assert throughput.round_flops(hidden, n) == N * n * k * (
      2 * params + 2 * m * m + 2 * m)


def refusal(*args) -> list[str]:
  """The stderr lines of benchmarks.throughput run with args, which must
  exit 2."""
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.throughput', *args],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  return result.stderr.strip().splitlines()


def test_flags_a_cell_sets_are_refused():
  assert refusal('--width=64', '--rows=64:4:5') == [
      'error: --width: each cell sets it (--rows or --grid, '
      '--examples_per_client, --settings)']


@pytest.mark.parametrize('flag,message', [
    ('--stack=0', 'error: --stack: must be >= 1, got 0'),
    ('--diag_every=2', 'error: --diag_every: the diagnostics measure one '
     'model; stacked seeds train without them (--diag_every=0)'),
])
def test_what_the_stacked_setting_cannot_run_is_refused(flag, message):
  assert refusal(flag, '--rows=64:4:5',
                 '--settings=inprocess,inprocess_stacked') == [message]


def test_each_repeat_starts_a_row_at_the_next_setting():
  assert throughput.turns(3, 3) == [0, 1, 2, 1, 2, 0, 2, 0, 1]
  assert throughput.turns(2, 1) == [0, 1]
  # Every setting is measured once per repeat.
  order = throughput.turns(4, 5)
  assert all(sorted(order[r * 4:(r + 1) * 4]) == [0, 1, 2, 3]
             for r in range(5))


def test_a_cell_reports_its_median_repeat():
  runs = [dict(seconds_per_round=s, gflops=g)
          for s, g in [(3.0, 1.0), (1.0, 3.0), (2.0, 1.5)]]
  cell = throughput.median_repeat(runs)
  assert cell == dict(seconds_per_round=2.0, gflops=1.5,
                      repeat_seconds=[3.0, 1.0, 2.0])
  # Even R: the lower of the two middle runs.
  assert throughput.median_repeat(runs[:2])['seconds_per_round'] == 1.0
  # A failed repeat fails the cell.
  failed = dict(error=['Traceback'])
  assert throughput.median_repeat(runs + [failed]) == failed


def test_repeats_below_one_are_refused():
  assert refusal('--repeats=0', '--rows=64:4:5') == [
      'error: --repeats: must be >= 1, got 0']
