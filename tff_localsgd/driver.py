"""Drives one run from its config to its exit code: what `benchmarks.train`
does, as a library call, so a sweep's long-lived trial workers
(trial_worker.py) write exactly what the binary writes. It checks the input,
lets the RunDir decide (new, resume, completed), computes the rounds
(training.py) and records them (recording.py).

    outcome = driver.train(config, overwrite=True, stop=stop_event)
    outcome.exit_code   # results.EXIT_CODES: 0 completed, 3 diverged,
                        # 130 stopped by `stop`
    outcomes = driver.train_stack(configs, overwrite=True)  # seeds as one
                        # computation (stacked_training.py), one run each
"""

import dataclasses
import signal
import threading
import time

from absl import logging
import psutil

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import recorders
from tff_localsgd import recording
from tff_localsgd import results
from tff_localsgd import stacked_training
from tff_localsgd import training
from tff_localsgd.engines import remote


class BadInput(Exception):
  """Bad flags, data, workers or checkpoint: exit 2 with this one line."""


@dataclasses.dataclass(frozen=True)
class Outcome:
  exit_code: int  # results.exit_code(summary's status)
  summary: dict  # what summary.json says
  path: str  # the run directory


def process_age_s() -> float:
  """Seconds since this process started (the exec'd interpreter's start,
  imports included): a trial's start-up phase."""
  return max(0.0, time.time() - psutil.Process().create_time())


def stop_on_signals(stop: threading.Event):
  """SIGINT/SIGTERM: set `stop` (the run finishes its round, checkpoints and
  returns); a second one aborts with KeyboardInterrupt."""
  def handler(signum, frame):
    del frame
    if stop.is_set():
      raise KeyboardInterrupt
    stop.set()
    logging.warning('signal %d: stopping after this round (send it again to '
                    'abort now)', signum)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, handler)


def _setup(config) -> training.Setup:
  """The run's Setup, every input checked (flags, data, the workers);
  BadInput otherwise. Writes nothing."""
  try:
    setup = training.Setup.prepare(config)
    if config.engine == 'remote':
      # Before anything is written: an unreachable worker is bad input.
      for channel in remote.check_workers(config.workers.split(',')):
        channel.close()
  except (config_lib.ConfigError, data_lib.DataUnavailableError,
          remote.WorkerUnreachableError) as e:
    raise BadInput(str(e)) from None
  return setup


def _begin(config, overwrite):
  """(RunDir locked by this process, its state: RunDir.begin), or BadInput:
  another process on the run directory, a run of other flags in it."""
  run_dir = recording.new_run_dir(config)
  try:
    return run_dir, run_dir.begin(overwrite)
  except config_lib.ConfigError as e:
    run_dir.close()
    raise BadInput(str(e)) from None
  except OSError as e:  # an impossible root_dir (e.g. under /proc)
    run_dir.close()
    raise BadInput(f'--root_dir: cannot write {run_dir.path}: '
                   f'{e.strerror}') from None


def _completed(run_dir) -> Outcome:
  """A completed run, left as it is."""
  run_dir.close()
  logging.info('%s already completed; nothing to do (--overwrite reruns it)',
               run_dir.path)
  return Outcome(results.EXIT_CODES[results.COMPLETED],
                 run_dir.read_summary(), run_dir.path)


def _outcome(config, summary, path) -> Outcome:
  logging.info('%s: %s after %d rounds, train/loss %s, %.1f s; results in %s',
               config.experiment, summary['status'],
               summary['rounds_completed'],
               summary['final'].get('train/loss'), summary['wall_time_s'],
               path)
  return Outcome(results.exit_code(summary['status']), summary, path)


def train(config, *, overwrite=False, stop=None,
          startup_s: float = 0.0) -> Outcome:
  """Trains `config` into <root_dir>/<experiment>/, resuming it unless
  `overwrite` (which clears it first); a completed run is left as it is.

  stop: a threading.Event that ends the run after the current round, with a
  checkpoint. startup_s: the process's start-up this run pays for (the
  first run of a process), recorded in summary.json's phases_s. Raises
  BadInput before anything is written.
  """
  tick = time.perf_counter()
  setup = _setup(config)
  run_dir, state = _begin(config, overwrite)
  phases = dict(startup_s=startup_s, data_s=time.perf_counter() - tick)
  if state == results.COMPLETED:
    return _completed(run_dir)
  return _record_alone(setup, run_dir, stop, phases)


def _lockstep(runs):
  """Iterates the recorded runs round by round, each in turn, until all
  have ended; an exception ends the others (interrupted) and is raised."""
  iterators = [iter(run) for run in runs]
  try:
    live = list(iterators)
    while live:
      live = [it for it in live if next(it, None) is not None]
  finally:
    for it in iterators:
      it.close()


def train_stack(configs, *, overwrite=False, stop=None,
                startup_s: float = 0.0) -> list:
  """train() for S configs that differ only in seed, budget and run
  directory (config.check_stack): their Outcomes, in order. The fresh runs
  (new, or cleared by `overwrite`) train as one stack (stacked_training.py),
  each into its own run directory, as it would alone but for summary.json's
  `stack`; a run to resume runs alone after them (from its checkpoint), and
  a completed one is left as it is. startup_s is shared by the runs.
  Raises BadInput before anything is written.
  """
  tick = time.perf_counter()
  try:
    config_lib.check_stack(configs)
  except config_lib.ConfigError as e:
    raise BadInput(str(e)) from None
  setups = [_setup(config) for config in configs]
  phases = dict(startup_s=startup_s / len(configs),
                data_s=(time.perf_counter() - tick) / len(configs))
  begun = []
  try:
    for config in configs:
      begun.append(_begin(config, overwrite))
  except BadInput:
    for run_dir, _ in begun:
      run_dir.close()
    raise
  fresh = [i for i, (_, state) in enumerate(begun) if state == 'new']
  outcomes = {i: _completed(run_dir) for i, (run_dir, state)
              in enumerate(begun) if state == results.COMPLETED}
  if len(fresh) > 1:
    outcomes.update(_run_stack([setups[i] for i in fresh],
                               [begun[i][0] for i in fresh], fresh, stop,
                               phases))
  for i, (run_dir, _) in enumerate(begun):
    if i not in outcomes:
      outcomes[i] = _record_alone(setups[i], run_dir, stop, phases)
  return [outcomes[i] for i in range(len(configs))]


def _record_alone(setup, run_dir, stop, phases) -> Outcome:
  """The run recorded on its own (recording.run)."""
  try:
    summary = recording.run(setup, stop=stop, run_dir=run_dir, phases=phases)
  except (recorders.CheckpointError, remote.WorkerUnreachableError) as e:
    raise BadInput(str(e)) from None
  return _outcome(setup.config, summary, run_dir.path)


def _run_stack(setups, run_dirs, indices, stop, phases) -> dict:
  """{index: Outcome} of the fresh runs, trained as one stack."""
  stack = stacked_training.Stack(setups)
  runs = [recording.RecordedRun(member, stop, run_dir, phases)
          for member, run_dir in zip(stack.members, run_dirs)]
  try:
    _lockstep(runs)
  finally:
    stack.close()
  return {i: _outcome(run.setup.config, run.summary, run.run_dir.path)
          for i, run in zip(indices, runs)}
