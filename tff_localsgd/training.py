"""The run loop: `rounds()` yields one RoundResult per round, and writes nothing.

    setup = training.Setup.prepare(config)   # validate, load data, build model
    summary = training.run(setup)             # rounds() into its RunDir

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
import hashlib
import math
import time

from absl import logging
import numpy as np

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import engines
from tff_localsgd import models
from tff_localsgd import process as process_lib
from tff_localsgd import rundir as rundir_lib
from tff_localsgd import theory

COHORT_STREAM = 4  # SeedSequence([seed, COHORT_STREAM, t]): round t's cohort
TIMING_PREFIX = 'system/'
THEORY_PREFIX = 'theory/'
THEORY_SCALARS = ('lambda_min', 'lambda_max', 'rate_per_round',
                  'rounds_to_eps', 'delta', 'zero_predictor_loss')


def theory_scalars(prediction) -> dict:
  """The prediction's numbers as round-0 metrics (theory/*), where defined."""
  values = prediction.to_dict()
  return {THEORY_PREFIX + k: float(values[k]) for k in THEORY_SCALARS
          if values[k] is not None}


def sample_cohort(seed: int, round_num: int, num_clients: int,
                  cohort_size: int) -> np.ndarray:
  """S_t: cohort_size distinct clients, a function of (seed, t) alone."""
  if cohort_size == num_clients:
    return np.arange(num_clients)
  rng = np.random.default_rng(
      np.random.SeedSequence([seed, COHORT_STREAM, round_num]))
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


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class RoundResult:
  """One round: w^t and what was measured of it.

  metrics: {tag: float} in the order they were measured (system/* are the
  round's timings); histograms: {tag: float32[N]} per-client values;
  step_rows: a lockstep round's drift per local step k, ({'local_step': k,
  name: value}, ...), when --diag_per_step.
  """
  round: int
  weights: tuple
  metrics: dict
  histograms: dict = dataclasses.field(default_factory=dict)
  step_rows: tuple = ()

  @property
  def timings(self) -> dict:
    return {k: v for k, v in self.metrics.items()
            if k.startswith(TIMING_PREFIX)}

  @property
  def diverged(self) -> bool:
    return not all(math.isfinite(self.metrics.get(k, 0.0))
                   for k in ('train/loss', 'train/local_loss'))


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


class _Round:
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

  def due(self, t) -> bool:
    return self.diag is not None and self.diag.due(t)

  def measure(self, t, weights, metrics, histograms, sums=None):
    """F(w^t) on the training (and test) clients (the training clients' from
    `sums`, if given: the next round's `start`); on diagnostic rounds the
    averaged model's diagnostics too. Adds to metrics and histograms."""
    num_classes = self.data.num_classes
    sums = sums or self.proc.evaluate(weights, self.clients.all)
    metrics.update(_evaluation(sums, num_classes, 'train'))
    if self.clients.test:
      metrics.update(_evaluation(
          self.proc.evaluate(weights, self.clients.test), num_classes, 'test'))
    if self.prediction is not None and self.prediction.curve is not None:
      metrics[THEORY_PREFIX + 'loss'] = self.prediction.curve[t]
    if self.due(t):
      tick = time.perf_counter()
      model_metrics, model_histograms = self.diag.measure_model(
          weights, self.clients.all, t)
      metrics.update(model_metrics)
      metrics[TIMING_PREFIX + 'diag_time_s'] = time.perf_counter() - tick
      histograms.update(model_histograms)

  def initial(self) -> RoundResult:
    """w^0, its measurements to come (finish)."""
    return RoundResult(0, self.proc.initialize(), {})

  def train(self, t, weights) -> tuple:
    """Round t from w^{t-1}: (its RoundResult, w^t to be measured by finish;
    the evaluation sums of w^{t-1} if the round computed them, else None)."""
    config = self.config
    tick = time.perf_counter()
    cohort = sample_cohort(config.seed, t, config.num_clients,
                           config.cohort_size)
    cohort_data = self.clients.cohort(cohort, t)
    histograms, step_rows = {}, ()
    if self.due(t):
      weights, metrics, histograms, step_rows, start = self.diag.train_round(
          weights, cohort_data)
    else:
      weights, out = self.proc.next(weights, self.proc.pack(cohort_data))
      metrics = {'train/local_loss': float(out['local_loss'])}
      start = out.get('start')
    round_time = time.perf_counter() - tick
    metrics[TIMING_PREFIX + 'round_time_s'] = round_time
    metrics[TIMING_PREFIX + 'examples_per_s'] = config.examples_per_round(
        [self.data.client_sizes[i] for i in cohort]) / round_time
    return RoundResult(t, weights, metrics, histograms, step_rows), start

  def finish(self, result, sums) -> RoundResult:
    """The round with its measurements of w^t, if round t has them (every
    eval_every rounds, the last and diagnostic rounds): F(w^t) from `sums`
    (round t+1's start) or an evaluation call."""
    t, config = result.round, self.config
    if t % config.eval_every == 0 or t == config.rounds or self.due(t):
      self.measure(t, result.weights, result.metrics, result.histograms,
                   sums)
    if t == 0 and self.prediction is not None:
      result.metrics.update(theory_scalars(self.prediction))
    return result


def rounds(setup: Setup, start=None, log_path=None, prediction=None,
           phases=None):
  """Yields RoundResult for round 0 (unless resuming) and rounds 1..T.

  start: (t0, w^{t0}) to resume after round t0: the weights are all the
  state a run has (every random stream is a function of seed, round and
  client), so rounds t0+1.. repeat an uninterrupted run bit for bit.
  log_path: where the TFF worker writes its output. prediction: the run's
  theory.Prediction, recorded as theory/* (Setup.predict). Stops after a
  diverged round. The engine is up while the generator is; close() stops it.
  phases: a dict that gets the seconds spent building and compiling the TFF
  computations (trace_s; none for those an earlier run of the process
  shared, _computations) and starting the engine (engine_s).
  """
  phases = {} if phases is None else phases
  tick = time.perf_counter()
  one = _Round(setup, prediction)
  phases['trace_s'] = time.perf_counter() - tick
  tick = time.perf_counter()
  with engines.engine(setup.config, log_path=log_path) as running:
    phases['engine_s'] = time.perf_counter() - tick
    tick = time.perf_counter()
    engines.prepare(running, one.in_process())
    phases['trace_s'] += time.perf_counter() - tick
    # Round t is yielded once round t+1 has run: that round's call also
    # evaluates w^t (process.py's `start`), which saves a call per round.
    if start is None:
      held = one.initial()
      t0, weights = 0, held.weights
    else:
      (t0, weights), held = start, None
    for t in range(t0 + 1, setup.config.rounds + 1):
      result, sums = one.train(t, weights)
      if held is not None:
        yield one.finish(held, sums)
        if held.diverged:
          return
      held, weights = result, result.weights
    if held is not None:
      yield one.finish(held, None)


def weights_digest(weights) -> str:
  """SHA-256 of the weights' bytes: equal digests mean bit-identical models."""
  h = hashlib.sha256()
  for w in weights:
    h.update(np.ascontiguousarray(w, np.float32).tobytes())
  return h.hexdigest()


class _Progress:
  """The log line of each round; the ETA counts only rounds without
  diagnostics, which take several times longer."""

  def __init__(self, setup):
    self.config, self.data = setup.config, setup.data
    self.times = []

  def log(self, result: RoundResult):
    t, metrics, total = result.round, result.metrics, self.config.rounds
    loss = metrics.get('train/loss')
    loss_text = '-' if loss is None else f'{loss:.4g}'
    if t == 0:
      logging.info('round 0/%d train/loss %s  (n=%d, N=%d, delta=%.3g)',
                   total, loss_text, self.data.num_examples,
                   self.config.num_clients, self.data.min_pairwise_distance)
      return
    round_time = metrics[TIMING_PREFIX + 'round_time_s']
    if TIMING_PREFIX + 'diag_time_s' not in metrics:
      self.times.append(round_time)
    eta = np.median(self.times) * (total - t) if self.times else math.nan
    logging.info('round %d/%d train/loss %s  %.3f s/round  ETA %.0f s', t,
                 total, loss_text, round_time, eta)


# The phases that are training: a suite's share of time "inside rounds".
TRAINING_PHASES = ('rounds_s', 'diagnostics_s')


class _Phases:
  """Seconds by phase of one run, summary.json's phases_s: start-up and data
  (given by the caller), theory (the prediction), trace (building the TFF
  computations, and compiling them on the in-process engine), engine
  (starting and stopping it), rounds and diagnostics (system/round_time_s
  and system/diag_time_s summed), evaluation (the rest of producing the
  rounds: F(w^t) where the round does not compute it, the native engine's
  first calls), writing (the RunDir). The keys sum to the run's time in this
  process."""

  ORDER = ('startup_s', 'data_s', 'theory_s', 'trace_s', 'engine_s',
           'rounds_s', 'diagnostics_s', 'evaluation_s', 'writing_s')

  def __init__(self, given=None):
    self.seconds = collections.Counter(given or {})
    self.stream = {}  # rounds() sets trace_s and engine_s (its start)

  @contextlib.contextmanager
  def timed(self, name):
    tick = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - tick

  def add_round(self, metrics):
    self.seconds['rounds_s'] += metrics.get(TIMING_PREFIX + 'round_time_s', 0)
    self.seconds['diagnostics_s'] += metrics.get(
        TIMING_PREFIX + 'diag_time_s', 0)

  def to_dict(self) -> dict:
    seconds = self.seconds + collections.Counter(self.stream)
    inside = sum(seconds[k] for k in ('trace_s', 'rounds_s',
                                      'diagnostics_s'))
    # compute_s: waiting for rounds(); the engine's stop is timed apart.
    seconds['evaluation_s'] = max(0.0, seconds['compute_s'] - inside -
                                  self.stream.get('engine_s', 0))
    return {k: float(seconds[k]) for k in self.ORDER}


class RecordedRun:
  """rounds() written into the config's RunDir, resuming it:

      run = training.RecordedRun(setup)
      for result in run:      # each RoundResult, once it is on disk
        ...
      run.summary             # what summary.json says

  `stop` (a threading.Event) ends the run at the next round boundary, after
  a checkpoint. run_dir: the config's RunDir if the caller has one (it is
  closed at the end). phases: seconds the caller spent on the run before
  (startup_s, data_s), recorded with the run's own in summary.json's
  phases_s (_Phases). Iterating raises recorders.CheckpointError for an
  unreadable checkpoint and rundir.BusyError if another process writes the
  directory.
  """

  def __init__(self, setup: Setup, stop=None, run_dir=None, phases=None):
    self.setup, self.stop = setup, stop
    self.run_dir = run_dir or rundir_lib.RunDir(setup.config)
    self.summary = {}
    self.prediction = None
    self.phases = _Phases(phases)

  def __iter__(self):
    run_dir, tick = self.run_dir, time.perf_counter()
    run_dir.lock()
    try:
      with self.phases.timed('writing_s'):
        start = run_dir.open([w.shape for w in
                              self.setup.spec.initial_weights])
      self.summary = self._summary_start(start)
      last = yield from self._record(start)
      self._finish(start, last)
    except BaseException as e:
      self.summary['status'] = 'interrupted' if isinstance(
          e, (KeyboardInterrupt, SystemExit, GeneratorExit)) else 'failed'
      self.summary['error'] = repr(e)
      raise
    finally:
      if self.summary:
        self.summary['wall_time_s'] = time.perf_counter() - tick
        self.summary['phases_s'] = self.phases.to_dict()
        run_dir.write_summary(self.summary)
      run_dir.close()

  def _summary_start(self, start) -> dict:
    data, spec = self.setup.data, self.setup.spec
    tick = time.perf_counter()
    self.prediction, why_not = self.setup.predict()
    theory_s = time.perf_counter() - tick
    self.phases.seconds['theory_s'] += theory_s
    if why_not:
      logging.info('no theory/* prediction: %s', why_not)
    summary = dict(status='running', rounds_completed=0,
                   zero_predictor_loss=self.setup.zero_predictor_loss,
                   theory=self.prediction and self.prediction.to_dict(),
                   theory_not_applicable=why_not, theory_time_s=theory_s,
                   versions=rundir_lib.versions(),
                   num_parameters=spec.num_parameters(),
                   num_trainable_parameters=spec.num_parameters(True),
                   client_sizes=list(data.client_sizes),
                   min_pairwise_distance=data.min_pairwise_distance,
                   lr=self.setup.config.lr)
    if start is not None:
      summary['rounds_completed'] = start[0]
      summary['initial'] = (self.run_dir.read_summary() or {}).get('initial',
                                                                   {})
      summary['resumed_from_round'] = start[0]
      logging.info('resuming after round %d from %s', start[0],
                   self.run_dir.path)
    return summary

  def _record(self, start):
    """Writes and yields each round; returns the last one (None if none)."""
    config, progress, last = self.setup.config, _Progress(self.setup), None
    phases = self.phases
    stream = rounds(self.setup, start,
                    log_path=self.run_dir.file(rundir_lib.WORKER_LOG),
                    prediction=self.prediction, phases=phases.stream)
    try:
      while True:
        with phases.timed('compute_s'):
          result = next(stream, None)
        if result is None:
          break
        last = result
        phases.add_round(last.metrics)
        with phases.timed('writing_s'):
          self.run_dir.write(last)
        progress.log(last)
        self.summary['rounds_completed'] = last.round
        if last.round == 0:
          self.summary['initial'] = last.metrics
        yield last
        if last.round and self._after_round(last):
          break
    finally:
      with phases.timed('engine_s'):
        stream.close()  # stops the engine
    return last

  def _after_round(self, last) -> bool:
    """Divergence, stop and checkpoint after round t >= 1; True to stop."""
    t, config = last.round, self.setup.config
    if last.diverged:
      self.summary['status'] = 'diverged'
      logging.error('round %d: the loss is not finite; the run diverged '
                    '(try a smaller --client_lr)', t)
      return True
    if self.stop is not None and self.stop.is_set():
      self.summary['status'] = 'interrupted'
      with self.phases.timed('writing_s'):
        self.run_dir.checkpoint(t, last.weights, self.summary)
      logging.warning('stopped after round %d; rerun the same command to '
                      'resume', t)
      return True
    if config.checkpoint_every and t % config.checkpoint_every == 0:
      with self.phases.timed('writing_s'):
        self.run_dir.checkpoint(t, last.weights, self.summary)
    return False

  def _finish(self, start, last):
    if self.summary['status'] == 'running':
      self.summary['status'] = 'completed'
    self.summary['final'] = last.metrics if last and last.round else {}
    weights = last.weights if last else start[1]
    self.summary['final_weights_sha256'] = weights_digest(weights)


def run(setup: Setup, stop=None, run_dir=None, phases=None) -> dict:
  """Runs a RecordedRun to its end; returns its summary."""
  recorded = RecordedRun(setup, stop, run_dir, phases)
  for _ in recorded:
    pass
  return recorded.summary
