"""Computing a run: its rounds, yielded one RoundResult at a time. Writes
nothing (recording.py writes them).

    setup = training.Setup.prepare(config)   # validate, load data, build model
    with setup.started(prediction) as rounds:  # the computations, the engine
      for result in rounds.iterate():        # results.RoundResult, t = 0..T
        ...

Round t >= 1 samples the cohort S_t and runs the TFF round from w^{t-1} (on
diagnostic rounds the measured one, diagnostic_process.Diagnostics); w^t is
then evaluated, F(w^t) (and the test loss), and on diagnostic rounds the
averaged model measured. Round 0 is the initial model w^0, evaluated and
measured. When every client takes part, round t+1's TFF call computes F(w^t)
itself (process.py's `start`, the bits `evaluate` gives), so round t is
yielded after round t+1 has run, and only the last round (and one before a
lockstep round) costs an evaluation call. A round whose loss is not finite
is the last one yielded: the run diverged.
"""

import collections
import contextlib
import dataclasses
import platform
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import engines
from tff_localsgd import models
from tff_localsgd import process as process_lib
from tff_localsgd import results
from tff_localsgd import theory

TIMING_PREFIX = results.TIMING_PREFIX
THEORY_PREFIX = results.THEORY_PREFIX
THEORY_SCALARS = ('lambda_min', 'lambda_max', 'rate_per_round',
                  'rounds_to_eps', 'delta', 'zero_predictor_loss')


def theory_scalars(prediction) -> dict:
  """The prediction's numbers as round-0 metrics (theory/*), where defined."""
  values = prediction.to_dict()
  return {THEORY_PREFIX + k: float(values[k]) for k in THEORY_SCALARS
          if values[k] is not None}


def versions() -> dict:
  """The versions of Python and the numerical stack in this process."""
  return dict(python=platform.python_version(), tensorflow=tf.__version__,
              tensorflow_federated=tff.__version__, numpy=np.__version__)


def sample_cohort(seed: int, round_num: int, num_clients: int,
                  cohort_size: int) -> np.ndarray:
  """S_t: cohort_size distinct clients, a function of (seed, t) alone."""
  if cohort_size == num_clients:
    return np.arange(num_clients)
  rng = data_lib.stream(seed, data_lib.COHORT_STREAM, round_num)
  return np.sort(rng.choice(num_clients, cohort_size, replace=False))


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs, built and checked before anything is written."""
  config: config_lib.ExperimentConfig
  data: data_lib.FederatedData
  spec: models.ModelSpec

  @classmethod
  def prepare(cls, config, check_memory: bool = True) -> 'Setup':
    """Validates config, loads data, checks it against config, builds the model.

    check_memory=False skips the lockstep memory check (a plan made on
    another machine than the one that will train). Raises ConfigError or
    DataUnavailableError; writes nothing.
    """
    config.validate()
    data = data_lib.load_federated_data(config)
    config.validate_against_data(data.client_sizes)
    spec = models.build_model(config, data.input_shape, data.output_dim)
    if check_memory:
      diagnostic_process.check_lockstep_memory(config, spec)
    return cls(config, data, spec)

  @property
  def zero_predictor_loss(self) -> float:
    """F_0 = F(f = 0), the loss of the zero predictor on the training data:
    (1/2n) sum_j ||y_j||^2 for mse; the target is eps F_0."""
    y = self.data.train_y
    return float(np.mean(models.loss_fn(self.config.loss, np.zeros_like(y),
                                        y)))

  def predict(self):
    """(theory.Prediction or None, why not): the linearized (NTK) prediction
    of this run from w^0, with its own schedule, partition and cohorts."""
    config, data = self.config, self.data
    why_not = theory.applies(config)
    if why_not:
      return None, why_not
    cohorts = None
    if config.cohort_size < config.num_clients:
      cohorts = [sample_cohort(config.seed, t, config.num_clients,
                               config.cohort_size)
                 for t in range(1, config.rounds + 1)]
    return theory.predict(
        self.spec, tuple(self.spec.initial_weights), data.client_x,
        data.client_y, lr=config.lr, local_steps=config.local_steps,
        server_lr=config.server_lr, rounds=config.rounds, eps=config.eps,
        delta=data.min_pairwise_distance, cohorts=cohorts,
        batch_size=(None if config.algorithm == 'local_gd' else
                    config.batch_size)), None

  def facts(self) -> dict:
    """What summary.json records of the run's setup."""
    data, spec = self.data, self.spec
    return dict(zero_predictor_loss=self.zero_predictor_loss,
                versions=versions(), num_parameters=spec.num_parameters(),
                num_trainable_parameters=spec.num_parameters(True),
                client_sizes=list(data.client_sizes),
                min_pairwise_distance=data.min_pairwise_distance,
                lr=self.config.lr)

  @contextlib.contextmanager
  def started(self, prediction=None, log_path=None):
    """The run's Rounds, its computations built and its engine up until
    the block ends (which stops the engine).

    prediction: the run's theory.Prediction, recorded as theory/*
    (Setup.predict). log_path: where the TFF worker writes its output.
    """
    tick = time.perf_counter()
    one = _Round(self, prediction)
    trace_s = time.perf_counter() - tick
    tick = time.perf_counter()
    with engines.engine(self.config, log_path=log_path) as running:
      engine_s = time.perf_counter() - tick
      tick = time.perf_counter()
      engines.prepare(running, one.in_process())
      trace_s += time.perf_counter() - tick
      yield Rounds(one, results.Startup(trace_s=trace_s, engine_s=engine_s))


class _Clients:
  """The clients' TFF values: one round's cohort, all clients, the test set."""

  def __init__(self, data, config):
    self.data, self.config = data, config
    self.all = self.cohort(range(config.num_clients), 0)
    self.test = None
    if data.test_x is not None:
      self.test = [process_lib.client_data(data.test_x, data.test_y,
                                           config.seed, 0, 0, 1)]

  def cohort(self, indices, round_num):
    return [process_lib.client_data(self.data.client_x[i],
                                    self.data.client_y[i], self.config.seed,
                                    round_num, i, self.config.num_clients)
            for i in indices]


def _evaluation(sums, num_classes, prefix) -> dict:
  """{prefix/loss, prefix/accuracy}: F(w) from evaluation sums (`evaluate`'s,
  or the round's `start`)."""
  out = {f'{prefix}/loss': float(sums['loss_sum'] / sums['num_examples'])}
  if num_classes:
    out[f'{prefix}/accuracy'] = float(sums['correct'] / sums['num_examples'])
  return out


# The TFF computations of the last runs of this process (a trial worker runs
# trial after trial), shared with a run whose config differs only in its
# seed: the seed enters through the arguments (data, minibatch seeds) and
# `initialize`, which each run builds anew (LocalSGDProcess.with_initial).
SHARED_RUNS = 4
_shared = collections.OrderedDict()  # key -> (process, diagnostics' or None)


def _computations(setup):
  """(LocalSGDProcess, diagnostic computations or None) for setup: an
  earlier run's with this run's w^0, or new ones."""
  config, data, spec = setup.config, setup.data, setup.spec
  key = (config.seedless(), spec.layers, tuple(w.shape for w in spec.initial_weights),
         data.input_shape, data.output_dim)
  if key in _shared:
    _shared.move_to_end(key)
    proc, diag = _shared[key]
    return proc.with_initial(spec), diag
  proc = process_lib.LocalSGDProcess(spec, config, data.input_shape,
                                     data.output_dim)
  diag = (diagnostic_process.build_computations(proc, config,
                                                data.input_shape)
          if config.diag_every else None)
  _shared[key] = proc, diag
  while len(_shared) > SHARED_RUNS:
    _shared.popitem(last=False)
  return proc, diag


class MeasuredRound:
  """What a run's rounds do with w^t however the round is computed: when it
  is measured (every eval_every rounds, the last and diagnostic rounds) and
  what of it (F(w^t), the test loss, theory/loss, the diagnostics).
  Subclasses give the evaluation sums: `_sums`."""

  config: config_lib.ExperimentConfig
  data: data_lib.FederatedData
  prediction: object  # theory.Prediction or None
  diag = None  # diagnostic_process.Diagnostics, on diagnostic runs

  def _sums(self, t, weights, test: bool):
    """The evaluation sums of w^t on the training clients (or the test
    set): process.evaluation_sums'."""
    raise NotImplementedError

  def due(self, t) -> bool:
    return self.diag is not None and self.diag.due(t)

  def measure(self, t, weights, sums=None) -> tuple:
    """(metrics, histograms) of w^t: F(w^t) on the training (and test)
    clients (the training clients' from `sums`, if given: the next round's
    `start`); on diagnostic rounds the averaged model's diagnostics too."""
    num_classes = self.data.num_classes
    sums = sums or self._sums(t, weights, test=False)
    metrics, histograms = _evaluation(sums, num_classes, 'train'), {}
    if self.data.test_x is not None:
      metrics.update(_evaluation(self._sums(t, weights, test=True),
                                 num_classes, 'test'))
    if self.prediction is not None and self.prediction.curve is not None:
      metrics[THEORY_PREFIX + 'loss'] = self.prediction.curve[t]
    if self.due(t):
      tick = time.perf_counter()
      model_metrics, histograms = self.diag.measure_model(
          weights, self.clients.all, t)
      metrics.update(model_metrics)
      metrics[TIMING_PREFIX + 'diag_time_s'] = time.perf_counter() - tick
    return metrics, histograms

  def timed(self, trained, round_time, cohort) -> results.TrainedRound:
    """The round with its timings: system/round_time_s and the examples
    per second of its cohort."""
    return dataclasses.replace(trained, metrics={
        **trained.metrics, TIMING_PREFIX + 'round_time_s': round_time,
        TIMING_PREFIX + 'examples_per_s': self.config.examples_per_round(
            [self.data.client_sizes[i] for i in cohort]) / round_time})

  def others_s(self) -> float:
    """Seconds of the last round's computing that were other runs' (a
    stack's member that ran the shared round pays only its share); the
    recorder subtracts them from this run's compute time."""
    return 0.0

  def finish(self, result, sums) -> results.RoundResult:
    """The round with its measurements of w^t, if round t has them: F(w^t)
    from `sums` (round t+1's start) or an evaluation call."""
    t, config = result.round, self.config
    if t % config.eval_every == 0 or t == config.rounds or self.due(t):
      result = result.measured(*self.measure(t, result.weights, sums))
    if t == 0 and self.prediction is not None:
      result = result.measured(theory_scalars(self.prediction), {})
    return result


class _Round(MeasuredRound):
  """The computations of one run, and one round of them at a time."""

  def __init__(self, setup, prediction):
    self.config, self.data = setup.config, setup.data
    self.proc, computations = _computations(setup)
    self.diag = (diagnostic_process.Diagnostics(self.proc, setup,
                                                computations)
                 if self.config.diag_every else None)
    self.clients = _Clients(self.data, self.config)
    self.prediction = prediction

  def in_process(self) -> list:
    """The computations the in-process engine compiles: the round, the
    evaluation and the diagnostics'."""
    return [self.proc.iterative_process.next, self.proc.evaluate] + (
        self.diag.in_process() if self.diag else [])

  def _sums(self, t, weights, test: bool):
    del t
    return self.proc.evaluate(
        weights, self.clients.test if test else self.clients.all)

  def initial(self) -> results.RoundResult:
    """w^0, its measurements to come (finish)."""
    return results.RoundResult(0, self.proc.initialize(), {})

  def train(self, t, weights) -> results.TrainedRound:
    """Round t from w^{t-1}: w^t, to be measured by finish, with the
    round's metrics (and the evaluation sums of w^{t-1} if the round
    computed them)."""
    config = self.config
    tick = time.perf_counter()
    cohort = sample_cohort(config.seed, t, config.num_clients,
                           config.cohort_size)
    cohort_data = self.clients.cohort(cohort, t)
    if self.due(t):
      trained = self.diag.train_round(weights, cohort_data)
    else:
      weights, out = self.proc.next(weights, self.proc.pack(cohort_data))
      trained = results.TrainedRound(
          weights, {'train/local_loss': float(out['local_loss'])},
          start=out.get('start'))
    return self.timed(trained, time.perf_counter() - tick, cohort)


class Rounds:
  """The rounds of one run, its computations built and its engine up
  (Setup.started); `startup`: the seconds that took (results.Startup)."""

  def __init__(self, one: MeasuredRound, startup: results.Startup):
    self.one, self.startup = one, startup

  def others_s(self) -> float:
    return self.one.others_s()

  def iterate(self, start=None):
    """Yields RoundResult for round 0 (unless resuming) and rounds 1..T.

    start: (t0, w^{t0}) to resume after round t0: the weights are all the
    state a run has (every random stream is a function of seed, round and
    client), so rounds t0+1.. repeat an uninterrupted run bit for bit.
    Stops after a diverged round.
    """
    one = self.one
    # Round t is yielded once round t+1 has run: that round's call also
    # evaluates w^t (process.py's `start`), which saves a call per round.
    if start is None:
      held = one.initial()
      t0, weights = 0, held.weights
    else:
      (t0, weights), held = start, None
    for t in range(t0 + 1, one.config.rounds + 1):
      trained = one.train(t, weights)
      if held is not None:
        finished = one.finish(held, trained.start)
        yield finished
        if finished.diverged:
          return
      held = results.RoundResult(t, trained.weights, trained.metrics,
                                 trained.histograms, trained.step_rows)
      weights = trained.weights
    if held is not None:
      yield one.finish(held, None)
