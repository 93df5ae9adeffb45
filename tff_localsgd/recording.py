"""Recording a run: the live run's one writer. A run's rounds, computed by
training.py, go through here into the config's RunDir (metrics.csv,
TensorBoard, checkpoints, summary.json), resuming it:

    run = recording.RecordedRun(setup)   # setup: training.Setup
    for result in run:                   # each RoundResult, once on disk
      ...
    run.summary                          # what summary.json says

This module computes nothing: it asks `setup` for the prediction, the facts
of the run and its rounds (Setup.predict, facts, started), and imports no
module of the compute floor.
"""

import collections
import contextlib
import hashlib
import math
import time

from absl import logging
import numpy as np

from tff_localsgd import board
from tff_localsgd import results
from tff_localsgd import rundir as rundir_lib

TIMING_PREFIX = results.TIMING_PREFIX


def weights_digest(weights) -> str:
  """SHA-256 of the weights' bytes: equal digests mean bit-identical models."""
  h = hashlib.sha256()
  for w in weights:
    h.update(np.ascontiguousarray(w, np.float32).tobytes())
  return h.hexdigest()


class Progress:
  """The log line of each round; the ETA counts only rounds without
  diagnostics, which take several times longer."""

  def __init__(self, setup):
    self.config, self.data = setup.config, setup.data
    self.times = []

  def log(self, result: results.RoundResult):
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


class PhaseClock:
  """Seconds by phase of one run (results.PHASES), summary.json's
  phases_s. The keys sum to the run's time in this process."""

  def __init__(self, given=None):
    self.seconds = collections.Counter(given or {})

  @contextlib.contextmanager
  def timed(self, name):
    tick = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - tick

  def add_startup(self, startup: results.Startup):
    self.seconds['trace_s'] += startup.trace_s
    self.seconds['engine_s'] += startup.engine_s

  def add_round(self, metrics):
    self.seconds['rounds_s'] += metrics.get(TIMING_PREFIX + 'round_time_s', 0)
    self.seconds['diagnostics_s'] += metrics.get(
        TIMING_PREFIX + 'diag_time_s', 0)

  def to_dict(self) -> dict:
    seconds = collections.Counter(self.seconds)
    # compute_s: waiting for the rounds; what the rounds and diagnostics do
    # not account for is evaluation.
    seconds['evaluation_s'] = max(0.0, seconds['compute_s'] -
                                  seconds['rounds_s'] -
                                  seconds['diagnostics_s'])
    return {k: float(seconds[k]) for k in results.PHASES}


class RecordedRun:
  """The rounds of `setup` (a training.Setup) written into the config's
  RunDir, resuming it.

  `stop` (a threading.Event) ends the run at the next round boundary, after
  a checkpoint. run_dir: the config's RunDir if the caller has one (it is
  closed at the end). phases: seconds the caller spent on the run before
  (startup_s, data_s), recorded with the run's own in summary.json's
  phases_s. Iterating raises recorders.CheckpointError for an unreadable
  checkpoint and rundir.BusyError if another process writes the directory.
  """

  def __init__(self, setup, stop=None, run_dir=None, phases=None):
    self.setup, self.stop = setup, stop
    self.run_dir = run_dir or new_run_dir(setup.config)
    self.summary = {}
    self.phases = PhaseClock(phases)

  def __iter__(self):
    run_dir, tick = self.run_dir, time.perf_counter()
    run_dir.lock()
    try:
      with self.phases.timed('writing_s'):
        start = run_dir.open([w.shape for w in
                              self.setup.spec.initial_weights])
      prediction = self._summary_start(start)
      last = yield from self._record(start, prediction)
      self._finish(start, last)
    except BaseException as e:
      self.summary['status'] = results.INTERRUPTED if isinstance(
          e, (KeyboardInterrupt, SystemExit, GeneratorExit)) else (
              results.FAILED)
      self.summary['error'] = repr(e)
      raise
    finally:
      if self.summary:
        self.summary['wall_time_s'] = time.perf_counter() - tick
        self.summary['phases_s'] = self.phases.to_dict()
        run_dir.write_summary(self.summary)
      run_dir.close()

  def _summary_start(self, start):
    """Starts the summary; returns the run's prediction (or None)."""
    with self.phases.timed('theory_s'):
      prediction, why_not = self.setup.predict()
    if why_not:
      logging.info('no theory/* prediction: %s', why_not)
    self.summary = dict(status=results.RUNNING, rounds_completed=0,
                        theory=prediction and prediction.to_dict(),
                        theory_not_applicable=why_not,
                        theory_time_s=self.phases.seconds['theory_s'],
                        **self.setup.facts())
    if start is not None:
      self.summary['rounds_completed'] = start[0]
      self.summary['initial'] = (self.run_dir.read_summary() or {}).get(
          'initial', {})
      self.summary['resumed_from_round'] = start[0]
      logging.info('resuming after round %d from %s', start[0],
                   self.run_dir.path)
    return prediction

  def _record(self, start, prediction):
    """Writes and yields each round; returns the last one (None if none)."""
    progress, last, phases = Progress(self.setup), None, self.phases
    with contextlib.ExitStack() as engine:
      rounds = engine.enter_context(self.setup.started(
          prediction, log_path=self.run_dir.file(rundir_lib.WORKER_LOG)))
      phases.add_startup(rounds.startup)
      stream = rounds.iterate(start)
      try:
        while True:
          with phases.timed('compute_s'):
            result = next(stream, None)
          phases.seconds['compute_s'] -= rounds.others_s()
          if result is None:
            break
          last = result
          phases.add_round(last.metrics)
          with phases.timed('writing_s'):
            self.run_dir.write(last)
          progress.log(last)
          self.summary['rounds_completed'] = last.round
          if last.round == 0:
            self.summary['initial'] = dict(last.metrics)
          yield last
          if last.round and self._after_round(last):
            break
      finally:
        with phases.timed('engine_s'):
          engine.close()  # stops the engine
    return last

  def _after_round(self, last) -> bool:
    """Divergence, stop and checkpoint after round t >= 1; True to stop."""
    t, config = last.round, self.setup.config
    if last.diverged:
      self.summary['status'] = results.DIVERGED
      logging.error('round %d: the loss is not finite; the run diverged '
                    '(try a smaller --client_lr)', t)
      return True
    if self.stop is not None and self.stop.is_set():
      self.summary['status'] = results.INTERRUPTED
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
    if self.summary['status'] == results.RUNNING:
      self.summary['status'] = results.COMPLETED
    self.summary['final'] = dict(last.metrics) if last and last.round else {}
    weights = last.weights if last else start[1]
    self.summary['final_weights_sha256'] = weights_digest(weights)


def new_run_dir(config) -> rundir_lib.RunDir:
  """The config's RunDir, writing TensorBoard event files too."""
  return rundir_lib.RunDir(config, board=board.TensorBoardRecorder)


def run(setup, stop=None, run_dir=None, phases=None) -> dict:
  """Runs a RecordedRun to its end; returns its summary."""
  recorded = RecordedRun(setup, stop, run_dir, phases)
  for _ in recorded:
    pass
  return recorded.summary
