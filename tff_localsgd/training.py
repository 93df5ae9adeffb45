"""The run loop: rounds of the TFF process, evaluation, recording.

Output under <root_dir>/<experiment>/ (one directory per run):
  events.out.tfevents.*   TensorBoard scalars and the config as text
  metrics.csv             one row per round (round 0 = the initial model)
  config.json             every config field
  summary.json            final metrics, status, wall time, versions
  worker.log              the TFF worker's own output
"""

import dataclasses
import hashlib
import math
import os
import platform
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import models
from tff_localsgd import process as process_lib
from tff_localsgd import recorders
from tff_localsgd.engines import native

COHORT_STREAM = 4  # SeedSequence([seed, COHORT_STREAM, t]): round t's cohort

TRAIN_METRICS = ('train/loss', 'train/accuracy')
TEST_METRICS = ('test/loss', 'test/accuracy')
ROUND_METRICS = ('train/local_loss', 'system/round_time_s',
                 'system/examples_per_s')


def run_dir(config) -> str:
  return os.path.join(os.path.expanduser(config.root_dir), config.experiment)


def sample_cohort(seed: int, round_num: int, num_clients: int,
                  cohort_size: int) -> np.ndarray:
  """S_t: cohort_size distinct clients, a function of (seed, t) alone."""
  if cohort_size == num_clients:
    return np.arange(num_clients)
  rng = np.random.default_rng(
      np.random.SeedSequence([seed, COHORT_STREAM, round_num]))
  return np.sort(rng.choice(num_clients, cohort_size, replace=False))


def examples_per_round(config, client_sizes, cohort) -> int:
  """Examples whose gradient a round computes: K * B (or K * n_i) per client."""
  if config.algorithm == 'local_gd':
    return config.local_steps * int(sum(client_sizes[i] for i in cohort))
  return config.local_steps * config.batch_size * len(cohort)


def versions() -> dict:
  return dict(python=platform.python_version(), tensorflow=tf.__version__,
              tensorflow_federated=tff.__version__, numpy=np.__version__)


@dataclasses.dataclass
class Experiment:
  """What a run needs, built and checked before anything is written."""
  config: config_lib.ExperimentConfig
  data: data_lib.FederatedData
  spec: models.ModelSpec

  @classmethod
  def prepare(cls, config) -> 'Experiment':
    """Validates config, loads data, checks it against config, builds the model.

    Raises ConfigError or DataUnavailableError; writes nothing.
    """
    config.validate()
    data = data_lib.load_federated_data(config)
    config.validate_against_data(data.client_sizes)
    spec = models.build_model(config, data.input_shape, data.output_dim)
    return cls(config, data, spec)


def _evaluate(proc, weights, clients, num_classes, prefix):
  sums = proc.evaluate(weights, clients)
  out = {f'{prefix}/loss': float(sums['loss_sum'] / sums['num_examples'])}
  if num_classes:
    out[f'{prefix}/accuracy'] = float(sums['correct'] / sums['num_examples'])
  return out


def run(experiment: Experiment) -> dict:
  """Trains for config.rounds rounds; returns (and writes) the summary."""
  config, data, spec = experiment.config, experiment.data, experiment.spec
  out = run_dir(config)
  os.makedirs(out, exist_ok=True)
  recorders.write_json(os.path.join(out, 'config.json'),
                       dataclasses.asdict(config))
  proc = process_lib.LocalSGDProcess(spec, config, data.input_shape,
                                     data.output_dim)
  n_clients = config.num_clients

  def clients(indices, round_num):
    return [process_lib.client_data(data.client_x[i], data.client_y[i],
                                    config.seed, round_num, i, n_clients)
            for i in indices]

  all_clients = clients(range(n_clients), 0)
  test = ([process_lib.client_data(data.test_x, data.test_y, config.seed, 0,
                                   0, 1)] if data.test_x is not None else None)
  evaluated = TRAIN_METRICS + (TEST_METRICS if test else ())
  columns = ['round'] + [c for c in evaluated
                         if data.num_classes or not c.endswith('accuracy')]
  csv = recorders.MetricsCSV(os.path.join(out, 'metrics.csv'),
                             [csv_column(c) for c in columns + list(ROUND_METRICS)])
  board = recorders.TensorBoardRecorder(out)
  board.text('config', '```\n' + config.to_json() + '\n```')

  def evaluate(weights):
    metrics = _evaluate(proc, weights, all_clients, data.num_classes, 'train')
    if test:
      metrics.update(_evaluate(proc, weights, test, data.num_classes, 'test'))
    return metrics

  def record(round_num, metrics):
    board.scalars(round_num, metrics)
    csv.append({'round': round_num,
                **{csv_column(k): v for k, v in metrics.items()}})

  summary = dict(status='running', rounds_completed=0, versions=versions(),
                 num_parameters=spec.num_parameters(),
                 num_trainable_parameters=spec.num_parameters(True),
                 client_sizes=list(data.client_sizes),
                 min_pairwise_distance=data.min_pairwise_distance, lr=config.lr)
  start = time.perf_counter()
  try:
    with native.native_engine(log_path=os.path.join(out, 'worker.log')):
      weights = proc.initialize()
      metrics = evaluate(weights)
      record(0, metrics)
      initial_loss = metrics['train/loss']
      summary['initial'] = metrics
      logging.info('round 0/%d train/loss %.4g  (n=%d, N=%d, delta=%.3g)',
                   config.rounds, initial_loss, data.num_examples, n_clients,
                   data.min_pairwise_distance)
      for t in range(1, config.rounds + 1):
        tick = time.perf_counter()
        cohort = sample_cohort(config.seed, t, n_clients, config.cohort_size)
        weights, round_out = proc.next(weights, clients(cohort, t))
        round_time = time.perf_counter() - tick
        metrics = {
            'train/local_loss': float(round_out['local_loss']),
            'system/round_time_s': round_time,
            'system/examples_per_s':
                examples_per_round(config, data.client_sizes, cohort)
                / round_time,
        }
        if t % config.eval_every == 0 or t == config.rounds:
          metrics.update(evaluate(weights))
        record(t, metrics)
        summary['rounds_completed'] = t
        elapsed = time.perf_counter() - start
        logging.info('round %d/%d train/loss %s  %.3f s/round  ETA %.0f s', t,
                     config.rounds,
                     '%.4g' % metrics['train/loss'] if 'train/loss' in metrics
                     else '-', round_time,
                     elapsed / t * (config.rounds - t))
        if not all(math.isfinite(v) for v in metrics.values()):
          summary['status'] = 'diverged'
          logging.error('round %d: loss or weights are not finite; the run '
                        'diverged (try a smaller --client_lr)', t)
          break
      else:
        summary['status'] = 'completed'
      summary['final'] = metrics
      summary['final_weights_sha256'] = weights_digest(weights)
  except BaseException as e:
    summary['status'] = 'interrupted' if isinstance(
        e, (KeyboardInterrupt, SystemExit)) else 'failed'
    summary['error'] = repr(e)
    raise
  finally:
    board.close()
    summary['wall_time_s'] = time.perf_counter() - start
    recorders.write_json(os.path.join(out, 'summary.json'), summary)
  return summary


def csv_column(tag: str) -> str:
  """The metrics.csv column of a metric tag: train/loss -> train_loss."""
  return tag.replace('/', '_')


def weights_digest(weights) -> str:
  """SHA-256 of the weights' bytes: equal digests mean bit-identical models."""
  h = hashlib.sha256()
  for w in weights:
    h.update(np.ascontiguousarray(w, np.float32).tobytes())
  return h.hexdigest()
