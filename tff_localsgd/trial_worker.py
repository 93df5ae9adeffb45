"""A sweep's trial worker: one long-lived process that trains trial after
trial (driver.train, as `benchmarks.train --overwrite` does), or a stack of
seed siblings as one computation (driver.train_stack), so TensorFlow's and
TFF's import, and the native engine's TFF worker (native.kept_worker), are
paid once per process instead of once per trial.

    python -m benchmarks.trial_worker    # started by tff_localsgd/sweep/pool.py

Protocol, one JSON object per line:
  stdin   a trial: {"name": ..., "config": {every ExperimentConfig field},
          "log": path}, or a stack: {"stack": [trial, trial, ...]} (configs
          that differ only in seed, rounds and run directory)
  stdout  {"name": ..., "exit_code": n, "error": "..."} once the trial is
          done; for a stack, one such line per member, in order, once the
          stack is done (bad input or an exception: every member's)
While a trial runs, file descriptors 1 and 2 point at its log (appended);
between trials, at the process's stderr. A stack's output goes to its first
member's log; every other member's log gets a line naming the stack and
that log. Exit codes are benchmarks.train's (results.py): 0 completed, 3
diverged, 2 bad input, 1 an exception, 130 stopped. After a trial, or a
stack with a member, that neither completed nor diverged the process exits
with that code, so the sweep runs the next trial in a fresh process and
nothing a failed trial left behind is reused. SIGINT/SIGTERM during a trial
(or a stack) stop it after its round with a checkpoint (as
benchmarks.train), then the process exits 130; between trials they end the
process at once. EOF on stdin: exit 0.
"""

import contextlib
import json
import os
import signal
import sys
import threading
import traceback

import psutil

from tff_localsgd import config as config_lib
from tff_localsgd import engines
from tff_localsgd import driver
from tff_localsgd import results
from tff_localsgd.engines import native

# The kept TFF worker grows by ~80 MiB per trial at m = 1024 (measured: 75
# MiB -> 753 MiB over 16 trials of m = 64, 256, 1024); above this it is
# replaced between trials (~0.9 s).
KEPT_WORKER_MAX_BYTES = 1 << 30


class _Signals:
  """SIGINT/SIGTERM: during a trial, driver.stop_on_signals' stop (finish
  the round, checkpoint); between trials, KeyboardInterrupt at once."""

  def __init__(self):
    self.stop = threading.Event()
    self.busy = False
    driver.stop_on_signals(self.stop)
    self._trial_handler = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    if not self.busy:
      raise KeyboardInterrupt
    self._trial_handler(signum, frame)


def train_trials(requests, stop: threading.Event, startup_s: float) -> list:
  """Trains the requests' configs, each into its run directory from
  scratch: one alone (driver.train), several as one stack
  (driver.train_stack); the exit codes benchmarks.train would return, in
  order. Raises driver.BadInput."""
  configs = [config_lib.ExperimentConfig(**r['config']) for r in requests]
  if len(configs) == 1:
    return [driver.train(configs[0], overwrite=True, stop=stop,
                         startup_s=startup_s).exit_code]
  outcomes = driver.train_stack(configs, overwrite=True, stop=stop,
                                startup_s=startup_s)
  return [outcome.exit_code for outcome in outcomes]


def _into(fd: int):
  """Points file descriptors 1 and 2 at `fd` (flushing Python's first)."""
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(fd, 1)
  os.dup2(fd, 2)


def _open_log(path: str) -> int:
  return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def _point_at_first(requests):
  """Each member's log but the first: where the stack's output is."""
  names = ', '.join(r['name'] for r in requests)
  for request in requests[1:]:
    fd = _open_log(request['log'])
    try:
      os.write(fd, f'# trained in a stack with {names}; its output is in '
               f'{requests[0]["log"]}\n'.encode())
    finally:
      os.close(fd)


def _run_unit(run_trials, requests, signals, startup_s) -> tuple:
  """([exit code per request], error) of one trial or one stack, its
  output in the first request's log."""
  _point_at_first(requests)
  home = os.dup(2)
  log_fd = _open_log(requests[0]['log'])
  _into(log_fd)
  os.close(log_fd)
  signals.busy = True
  try:
    return run_trials(requests, signals.stop, startup_s), ''
  except driver.BadInput as e:
    print(f'error: {e}', file=sys.stderr)
    return [results.EXIT_BAD_INPUT] * len(requests), str(e)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    return [results.EXIT_ERROR] * len(requests), repr(e)
  finally:
    signals.busy = False
    _into(home)
    os.close(home)


class KeptWorker:
  """native.kept_worker() for the trials on the native engine, started by
  the first one and replaced once its memory passes KEPT_WORKER_MAX_BYTES
  (the in-process engine starts a worker only for what it cannot run)."""

  def __init__(self):
    self._stack = self.worker = None

  def ensure(self, request):
    """Starts the worker if the request's trial runs on the native engine."""
    config = config_lib.ExperimentConfig(**request['config'])
    if self._stack is None and engines.resolve(config) == 'native':
      self._stack = contextlib.ExitStack()
      self.worker = self._stack.enter_context(native.kept_worker())

  def check(self):
    """Stops the worker if it has grown too large (the next trial starts
    another)."""
    if self.worker is not None and psutil.Process(
        self.worker.process.pid).memory_info().rss > KEPT_WORKER_MAX_BYTES:
      self.close()

  def close(self):
    if self._stack is not None:
      self._stack.close()
    self._stack = self.worker = None


def _serve(run_trials, replies, signals, kept) -> int:
  """The request loop of serve(); kept: the KeptWorker."""
  first = True
  for line in sys.stdin:
    request = json.loads(line)
    requests = request.get('stack', [request])
    kept.ensure(requests[0])  # its output: our stderr
    # The first request pays for the process's start-up (it is sent as the
    # process starts: no idle time in it).
    startup_s = driver.process_age_s() if first else 0.0
    first = False
    codes, error = _run_unit(run_trials, requests, signals, startup_s)
    for member, code in zip(requests, codes):
      replies.write(json.dumps(dict(name=member['name'], exit_code=code,
                                    error=error)) + '\n')
    kept.check()
    failed = [code for code in codes if results.done_status(code) is None]
    if failed or signals.stop.is_set():
      return (failed or codes)[0] or results.EXIT_STOPPED
  return 0


def serve(run_trials=train_trials) -> int:
  """Runs the trials and stacks stdin asks for until EOF; the process's
  exit code.

  run_trials(requests, stop, startup_s) -> [exit code per request]:
  train_trials, or a test's wrapper of it.
  """
  replies = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)  # stray prints between trials: the process's stderr
  signals = _Signals()
  kept = KeptWorker()
  try:
    return _serve(run_trials, replies, signals, kept)
  except KeyboardInterrupt:
    return results.EXIT_STOPPED
  finally:
    kept.close()
