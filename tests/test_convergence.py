"""The paper's claim in miniature: a wide ReLU net trained by Local GD on a
few clients drives the training loss to (nearly) zero, geometrically."""

import math

from tff_localsgd import config as config_lib
from tff_localsgd import recording
from tff_localsgd import training


def test_wide_network_reaches_small_loss(tmp_path):
  config = config_lib.ExperimentConfig(
      dataset='synthetic', num_examples=32, input_dim=16, num_clients=4,
      width=2048, depth=1, algorithm='local_gd', local_steps=10,
      lr_scale='width', client_lr=4.0, rounds=25, eval_every=5,
      root_dir=str(tmp_path), experiment='wide')
  run = recording.RecordedRun(training.Setup.prepare(config))
  losses = [r.metrics['train/loss'] for r in run if 'train/loss' in r.metrics]
  summary = run.summary
  assert summary['status'] == 'completed'
  initial = summary['initial']['train/loss']
  final = summary['final']['train/loss']
  assert final < 1e-3 * initial, (initial, final)
  # Geometric decay: the loss falls at every evaluation, each time by a factor.
  assert len(losses) == 6
  ratios = [b / a for a, b in zip(losses, losses[1:])]
  assert all(0 < r < 0.7 for r in ratios), ratios
  assert math.isfinite(final)
