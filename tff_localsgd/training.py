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
import time

from absl import logging
import numpy as np
import tensorflow as tf

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import diagnostics
from tff_localsgd import engines
from tff_localsgd import models
from tff_localsgd import process as process_lib
from tff_localsgd import recorders
from tff_localsgd.analysis import provenance

COHORT_STREAM = 4  # SeedSequence([seed, COHORT_STREAM, t]): round t's cohort


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
    _check_lockstep_memory(config, spec)
    return cls(config, data, spec)


# TFF's runtime keeps every value of a call alive until the call returns. The
# worker's peak in a lockstep call, measured at m=1024 with 8 clients for 1, 2,
# 5 and 10 steps per call (1.10, 1.25, 1.76, 2.25 GB), is about 28 + 4 x steps
# copies of every client's model (float32): the base is the broadcast model,
# the local models, their average, gradients and the client's end-of-round
# values; each step adds its local models, average and measurements.
LOCKSTEP_BYTES_PER_PARAMETER_CLIENT = 28 * 4
LOCKSTEP_BYTES_PER_PARAMETER_CLIENT_STEP = 4 * 4
# The worker's share of the machine; the Python process holds the rest.
LOCKSTEP_MEMORY_FRACTION = 0.75


def _physical_memory() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def lockstep_steps_per_call(config, spec) -> int:
  """Local steps per TFF call of the lockstep round that fit in memory.

  0 if not even one step fits (the run is refused).
  """
  per_client_parameter = LOCKSTEP_MEMORY_FRACTION * _physical_memory() / (
      config.cohort_size * spec.num_parameters(trainable_only=True))
  steps = ((per_client_parameter - LOCKSTEP_BYTES_PER_PARAMETER_CLIENT)
           // LOCKSTEP_BYTES_PER_PARAMETER_CLIENT_STEP)
  return int(min(config.local_steps, max(steps, 0)))


def _check_lockstep_memory(config, spec):
  """Refuses, before any work, a lockstep round this machine cannot hold."""
  if not (config.diag_every and config.lockstep_drift):
    return
  if not lockstep_steps_per_call(config, spec):
    raise config_lib.ConfigError(
        'lockstep_drift', 'one local step of the lockstep round needs more '
        f'than {LOCKSTEP_MEMORY_FRACTION:.0%} of this machine\'s '
        f'{_physical_memory() / 2**30:.0f} GB (clients_per_round x '
        'parameters); use '
        '--lockstep_drift=false, or fewer clients per round')


def _evaluate(proc, weights, clients, num_classes, prefix):
  sums = proc.evaluate(weights, clients)
  out = {f'{prefix}/loss': float(sums['loss_sum'] / sums['num_examples'])}
  if num_classes:
    out[f'{prefix}/accuracy'] = float(sums['correct'] / sums['num_examples'])
  return out


class _Diagnostics:
  """Runs the diagnostic computations of a round and names their metrics."""

  def __init__(self, proc, config, data, spec):
    self.config = config
    self.computations = diagnostic_process.DiagnosticComputations(
        proc, config, data.input_shape)
    self.probe_x = data_lib.probe_set(data, config.probe_size, config.seed)
    self.initial = tuple(spec.initial_weights)
    self.initial_gram = None
    self.initial_spectral = None
    self.steps_per_call = lockstep_steps_per_call(config, spec)

  def due(self, round_num) -> bool:
    return bool(self.config.diag_every) and round_num % self.config.diag_every == 0

  def lockstep_round(self, weights, cohort):
    """One lockstep round: (w^{t+1}, round metrics, histograms, step rows)."""
    weights, summary, per_client = self.computations.lockstep_next(
        weights, cohort, steps_per_call=self.steps_per_call)
    steps = summary['steps']
    metrics = {'drift/grad_diff_vs_start': float(summary['grad_diff_vs_start']),
               'drift/model_divergence': float(summary['model_divergence'])}
    for name in diagnostic_process.DRIFT_STEP_METRICS:
      values = [float(step[name]) for step in steps]
      metrics[f'drift/{name}'] = float(np.mean(values))
      metrics[f'drift/{name}_max'] = max(values)
    histograms = {f'clients/drift/{k}': np.asarray(v, np.float32)
                  for k, v in per_client.items()}
    step_rows = [{'local_step': k, **{name: float(step[name])
                                          for name in step}}
                 for k, step in enumerate(steps)]
    return weights, metrics, histograms, step_rows

  def measure_model(self, weights, all_clients, round_num):
    """Diagnostics of the averaged model w^t: lazy/*, ntk/*, train/grad_norm."""
    comp = self.computations
    if self.initial_spectral is None:
      self.initial_spectral = comp.spectral_norms(self.initial)
    out = comp.measure_model(weights, self.initial, self.initial_spectral,
                             self.probe_x, all_clients)
    client_losses = out.pop('client_losses')
    grad_norm = out.pop('grad_norm')
    metrics = {f'lazy/{k}': float(v) for k, v in out.items()}
    metrics['train/grad_norm'] = float(grad_norm)
    ntk_every = self.config.ntk_every
    if ntk_every and round_num % ntk_every == 0:
      gram = np.asarray(comp.ntk_gram(weights, self.probe_x), np.float64)
      if self.initial_gram is None:
        self.initial_gram = np.asarray(
            comp.ntk_gram(self.initial, self.probe_x), np.float64)
      metrics.update({k: float(v) for k, v in diagnostics.ntk_summary(
          tf.constant(gram), tf.constant(self.initial_gram)).items()})
    histograms = {'clients/train_loss': np.asarray(client_losses, np.float32)}
    return metrics, histograms


def _keep_until(round_num, local_steps):
  """Which TensorBoard events of a killed run a resume from round_num keeps:
  those of rounds <= round_num (drift_per_step/* counts local steps)."""
  def keep(event):
    if not event.summary.value:
      return True  # file version, not a summary
    per_step = event.summary.value[0].tag.startswith('drift_per_step/')
    return event.step <= round_num * (local_steps if per_step else 1)
  return keep


def run(experiment: Experiment, stop=None) -> dict:
  """Trains for config.rounds rounds; returns (and writes) the summary.

  Resumes from the newest checkpoint in <run dir>/checkpoints if there is
  one: the weights after round t0 are all the state a run has (every random
  stream is a function of seed, round and client), so rounds t0+1.. repeat
  what an uninterrupted run computes, bit for bit. `stop` (a threading.Event)
  ends the run at the next round boundary, after a checkpoint.
  Raises recorders.CheckpointError for an unreadable checkpoint.
  """
  config, data, spec = experiment.config, experiment.data, experiment.spec
  out = run_dir(config)
  checkpoints = os.path.join(out, 'checkpoints')
  resumed = recorders.latest_checkpoint(
      checkpoints, [w.shape for w in spec.initial_weights])
  os.makedirs(out, exist_ok=True)
  recorders.write_json(os.path.join(out, 'config.json'),
                       dataclasses.asdict(config))
  start_round = resumed[0] if resumed else 0
  # What a killed run wrote after its last checkpoint (or at all, without
  # one) is dropped, so the files read as one uninterrupted run.
  recorders.truncate_events(out, _keep_until(start_round if resumed else -1,
                                             config.local_steps))
  if not resumed:
    for name in ('metrics.csv', 'drift_steps.csv', 'summary.json'):
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
  proc = process_lib.LocalSGDProcess(spec, config, data.input_shape,
                                     data.output_dim)
  diag = _Diagnostics(proc, config, data, spec) if config.diag_every else None
  n_clients = config.num_clients

  def clients(indices, round_num):
    return [process_lib.client_data(data.client_x[i], data.client_y[i],
                                    config.seed, round_num, i, n_clients)
            for i in indices]

  all_clients = clients(range(n_clients), 0)
  test = ([process_lib.client_data(data.test_x, data.test_y, config.seed, 0,
                                   0, 1)] if data.test_x is not None else None)
  kept = start_round if resumed else None
  csv = recorders.MetricsCSV(os.path.join(out, 'metrics.csv'), ['round'],
                             up_to_round=kept)
  step_csv = recorders.MetricsCSV(os.path.join(out, 'drift_steps.csv'),
                                  ['round', 'local_step'], up_to_round=kept)
  board = recorders.TensorBoardRecorder(out)
  if not resumed:
    board.text('config', '```\n' + config.to_json() + '\n```')

  def evaluate(weights, round_num):
    metrics = _evaluate(proc, weights, all_clients, data.num_classes, 'train')
    if test:
      metrics.update(_evaluate(proc, weights, test, data.num_classes, 'test'))
    if diag and diag.due(round_num):
      tick = time.perf_counter()
      model_metrics, histograms = diag.measure_model(weights, all_clients,
                                                     round_num)
      metrics.update(model_metrics)
      metrics['system/diag_time_s'] = time.perf_counter() - tick
      board.histograms(round_num, histograms)
    return metrics

  def record(round_num, metrics):
    board.scalars(round_num, metrics)
    csv.append({'round': round_num,
                **{csv_column(k): v for k, v in metrics.items()}})

  def train_round(weights, t, cohort_data):
    if not (diag and diag.due(t)):
      weights, out = proc.next(weights, proc.pack(cohort_data))
      return weights, {'train/local_loss': float(out['local_loss'])}
    if not config.lockstep_drift:
      weights, out = proc.next_measured(weights, proc.pack(cohort_data))
      return weights, {
          'train/local_loss': float(out['local_loss']),
          'drift/grad_diff_vs_start': float(out['grad_diff_vs_start'])}
    weights, metrics, histograms, step_rows = diag.lockstep_round(
        weights, cohort_data)
    board.histograms(t, histograms)
    if config.diag_per_step:
      for row in step_rows:
        global_step = (t - 1) * config.local_steps + row['local_step']
        board.scalars(global_step, {f'drift_per_step/{k}': v for k, v in
                                    row.items() if k != 'local_step'})
        step_csv.append({'round': t, **row})
    return weights, metrics

  summary = dict(status='running', rounds_completed=start_round,
                 versions=provenance.versions(),
                 num_parameters=spec.num_parameters(),
                 num_trainable_parameters=spec.num_parameters(True),
                 client_sizes=list(data.client_sizes),
                 min_pairwise_distance=data.min_pairwise_distance, lr=config.lr)
  summary_path = os.path.join(out, 'summary.json')

  def checkpoint(t, weights):
    recorders.write_checkpoint(checkpoints, t, weights)
    recorders.write_json(summary_path, summary)

  start = time.perf_counter()
  try:
    with engines.engine(config, log_path=os.path.join(out, 'worker.log')):
      if resumed:
        weights = resumed[1]
        previous = recorders.read_json(summary_path) or {}
        summary['initial'] = previous.get('initial', {})
        summary['resumed_from_round'] = start_round
        logging.info('resuming after round %d from %s', start_round,
                     checkpoints)
      else:
        weights = proc.initialize()
        metrics = evaluate(weights, 0)
        record(0, metrics)
        summary['initial'] = metrics
        logging.info('round 0/%d train/loss %.4g  (n=%d, N=%d, delta=%.3g)',
                     config.rounds, metrics['train/loss'], data.num_examples,
                     n_clients, data.min_pairwise_distance)
      metrics = {}
      for t in range(start_round + 1, config.rounds + 1):
        tick = time.perf_counter()
        cohort = sample_cohort(config.seed, t, n_clients, config.cohort_size)
        weights, metrics = train_round(weights, t, clients(cohort, t))
        round_time = time.perf_counter() - tick
        metrics['system/round_time_s'] = round_time
        metrics['system/examples_per_s'] = config.examples_per_round(
            [data.client_sizes[i] for i in cohort]) / round_time
        if t % config.eval_every == 0 or t == config.rounds or (
            diag and diag.due(t)):
          metrics.update(evaluate(weights, t))
        record(t, metrics)
        summary['rounds_completed'] = t
        elapsed = time.perf_counter() - start
        done = t - start_round
        logging.info('round %d/%d train/loss %s  %.3f s/round  ETA %.0f s', t,
                     config.rounds,
                     '%.4g' % metrics['train/loss'] if 'train/loss' in metrics
                     else '-', round_time,
                     elapsed / done * (config.rounds - t))
        if not all(math.isfinite(metrics.get(k, 0.0))
                   for k in ('train/loss', 'train/local_loss')):
          summary['status'] = 'diverged'
          logging.error('round %d: the loss is not finite; the run diverged '
                        '(try a smaller --client_lr)', t)
          break
        if stop is not None and stop.is_set():
          summary['status'] = 'interrupted'
          checkpoint(t, weights)
          logging.warning('stopped after round %d; rerun the same command to '
                          'resume', t)
          break
        if config.checkpoint_every and t % config.checkpoint_every == 0:
          checkpoint(t, weights)
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
