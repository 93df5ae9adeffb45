"""Drives one run from its config to its exit code: what `benchmarks.train`
does, as a library call, so a sweep's long-lived trial workers
(trial_worker.py) write exactly what the binary writes. It checks the input,
lets the RunDir decide (new, resume, completed), computes the rounds
(training.py) and records them (recording.py).

    outcome = driver.train(config, overwrite=True, stop=stop_event)
    outcome.exit_code   # results.EXIT_CODES: 0 completed, 3 diverged,
                        # 130 stopped by `stop`
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


def _prepare(config, overwrite):
  """(Setup, RunDir locked by this process, its state: RunDir.begin), or
  BadInput.

  Checks everything before anything is written: flags, data, another
  process on the run directory, a run of other flags in it, the workers.
  """
  run_dir = recording.new_run_dir(config)
  try:
    setup = training.Setup.prepare(config)
    if config.engine == 'remote':
      # Before anything is written: an unreachable worker is bad input.
      for channel in remote.check_workers(config.workers.split(',')):
        channel.close()
    state = run_dir.begin(overwrite)
  except (config_lib.ConfigError, data_lib.DataUnavailableError,
          remote.WorkerUnreachableError) as e:
    run_dir.close()
    raise BadInput(str(e)) from None
  except OSError as e:  # an impossible root_dir (e.g. under /proc)
    run_dir.close()
    raise BadInput(f'--root_dir: cannot write {run_dir.path}: '
                   f'{e.strerror}') from None
  return setup, run_dir, state


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
  setup, run_dir, state = _prepare(config, overwrite)
  phases = dict(startup_s=startup_s, data_s=time.perf_counter() - tick)
  if state == results.COMPLETED:
    run_dir.close()
    logging.info('%s already completed; nothing to do (--overwrite reruns it)',
                 run_dir.path)
    return Outcome(results.EXIT_CODES[state], run_dir.read_summary(),
                   run_dir.path)
  try:
    summary = recording.run(setup, stop=stop, run_dir=run_dir, phases=phases)
  except (recorders.CheckpointError, remote.WorkerUnreachableError) as e:
    raise BadInput(str(e)) from None
  logging.info('%s: %s after %d rounds, train/loss %s, %.1f s; results in %s',
               config.experiment, summary['status'],
               summary['rounds_completed'],
               summary['final'].get('train/loss'), summary['wall_time_s'],
               run_dir.path)
  return Outcome(results.exit_code(summary['status']), summary, run_dir.path)


def train_stack(configs, *, overwrite=False, stop=None,
                startup_s: float = 0.0) -> list:
  """train() for S configs that differ only in seed, budget and run
  directory (ExperimentConfig.seedless equal; each check_stackable): their
  Outcomes, in order. (Placeholder: one after another; the stacked
  computation comes next.)"""
  return [train(config, overwrite=overwrite, stop=stop,
                startup_s=startup_s if i == 0 else 0.0)
          for i, config in enumerate(configs)]
