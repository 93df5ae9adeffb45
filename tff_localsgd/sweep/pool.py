"""Running a sweep: its trials, at most `parallel` at a time, in a pool of
trial processes, stopped on SIGINT/SIGTERM.

  results = pool.run_sweep(trials, 'runs/demo', parallel=2)

Trials run in `parallel` trial processes (benchmarks.trial_worker), each in
its own process group (with `threads` TensorFlow threads, if given:
processes.trial_threads), which import TensorFlow and TFF once and train
trial after trial (a crashed or hung trial cannot take the sweep down, and
killing the group stops it); a process whose trial did not complete or diverge is
replaced by a fresh one. With fresh_process=True each trial is its own
`benchmarks.train` process instead; the results are the same bits (tested).
A trial whose summary.json says completed or diverged is done and is
skipped when the sweep is run again; a trial in any other state is rerun
from scratch. A trial that fails (an exit status other than 0 or 3, or a
timeout) is recorded as failed with the tail of its log, and the sweep goes
on. SIGINT or SIGTERM stops every running trial (SIGTERM, then SIGKILL)
before the sweep raises `Interrupted`.

With stack=S > 1, up to S pending seed siblings of one sweep
(grid.stack_units) are one unit, sent to one trial worker as one request
and trained as one stacked computation (driver.train_stack), with the same
bits per trial as one by one. A done trial is never rerun, so a rerun
sweep stacks only the trials still to do.
"""

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

from absl import logging

from tff_localsgd import results
from tff_localsgd import rundir
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import hparams
from tff_localsgd.sweep import processes
from tff_localsgd.sweep import records

POLL_S = 0.1
# A trial process grows ~9 MiB per trial (measured over 16 tiny trials);
# replacing it after this many bounds that (to ~1 GiB) for ~6 s of start-up
# and the traces a fresh process must redo: at 32, the quick preset's 287
# trials started 10 processes, 57 s of its ~1300 core-seconds.
MAX_TRIALS_PER_PROCESS = 128


class Interrupted(KeyboardInterrupt):
  """The sweep stopped on a signal, after stopping its running trials."""

  def __init__(self, signum: int):
    super().__init__(f'stopped by {signal.Signals(signum).name}')
    self.signum = signum


class _FreshProcesses:
  """Each trial in a new `benchmarks.train` process (fresh_process=True)."""

  def __init__(self, python, timeout_s, threads=None):
    self.python, self.timeout_s, self.threads = python, timeout_s, threads

  def pick(self, pending) -> int:
    del pending
    return 0

  def start(self, unit) -> processes.Started:
    return processes.Running(unit, self.python, self.timeout_s,
                             self.threads)

  def done(self, running, unit_results):
    del running, unit_results

  def close(self):
    pass


class _Pool:
  """Trial workers, one per running unit (a trial or a stack), reused unit
  after unit; one with a trial that did not complete or diverge (failed,
  timed out, killed), or that ran MAX_TRIALS_PER_PROCESS trials, is
  retired, and the next unit gets a fresh one."""

  def __init__(self, python, timeout_s, module, threads=None):
    self.python, self.timeout_s, self.module = python, timeout_s, module
    self.threads = threads
    self.idle = []
    self.running = []  # the seedless keys of the units running

  def pick(self, pending) -> int:
    """The index of the pending grid.Unit to start: one whose seed sibling
    an idle worker ran last (it has the computations), else the first whose
    sibling is not running (that worker will want it), else the first."""
    keys = [unit.key() for unit in pending]
    last = {worker.last_key for worker in self.idle}
    for wanted in (lambda k: k in last, lambda k: k not in self.running):
      for i, key in enumerate(keys):
        if wanted(key):
          return i
    return 0

  def start(self, unit) -> processes.Started:
    key = unit.key()
    same = [w for w in self.idle if w.last_key == key]
    if same or self.idle:
      worker = same[0] if same else self.idle[-1]
      self.idle.remove(worker)
    else:
      worker = processes.Worker(unit.sweep_dir, self.python, self.module,
                                self.threads)
    worker.last_key = key
    self.running.append(key)
    return processes.Pooled(unit, worker, self.timeout_s)

  def done(self, running, unit_results):
    """Takes the unit's worker back, or retires it (unit_results None: the
    unit was stopped with the sweep)."""
    self.running.remove(running.worker.last_key)
    if (unit_results is not None and
        all(r.status in results.DONE for r in unit_results) and
        running.worker.trials < MAX_TRIALS_PER_PROCESS and
        running.proc.poll() is None):
      self.idle.append(running.worker)
    else:
      running.worker.close()

  def close(self):
    while self.idle:
      self.idle.pop().close()


def _stop_all(running):
  """SIGTERM to every running unit's group; SIGKILL to what is left."""
  for r in running:
    processes.signal_group(r.proc, signal.SIGTERM)
  deadline = time.monotonic() + processes.TERM_GRACE_S
  try:
    for r in running:
      try:
        r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        pass
  finally:
    for r in running:
      # also any straggler in the group
      processes.signal_group(r.proc, signal.SIGKILL)
      r.proc.wait()
      r.close()


class _SignalFlag:
  """SIGINT and SIGTERM set a flag the sweep loop checks, so a signal never
  lands between starting a trial and recording it (main thread only; other
  threads keep the handlers they have)."""

  def __enter__(self):
    self.signum = None
    self._old = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def check(self):
    if self.signum is not None:
      raise Interrupted(self.signum)

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _record_interrupted(r: processes.Started):
  for member in r.members:
    try:
      os.makedirs(member.dir, exist_ok=True)  # it may have been removing it
      records.write_trial_json(member.trial, member.dir, records.TrialResult(
          member.trial.name, results.INTERRUPTED,
          returncode=r.proc.returncode, error='stopped with the sweep',
          log_path=member.log_path))
    except OSError as e:  # never mask the interruption
      logging.warning('could not record trial %s: %s', member.trial.name, e)


def _finish(running: processes.Started, timed_out=False) -> list:
  """Records each member's result (trial.json; HParams when done)."""
  unit_results = running.result(timed_out)
  for member, result in zip(running.members, unit_results):
    records.write_trial_json(member.trial, member.dir, result)
    if result.status in results.DONE:
      hparams.write_trial_hparams(member.trial, member.dir, result.summary)
    if result.status == results.FAILED:
      logging.warning('trial %s failed (%s); the end of %s:\n%s',
                      result.name, result.error, running.log_path,
                      result.log_tail)
  return unit_results


def _done_before(trials, sweep_dir, record) -> list:
  """Records the trials an earlier run of the sweep finished; returns the
  others, as (trial, sweep_dir)."""
  pending = []
  for trial in trials:
    trial_dir = os.path.join(sweep_dir, trial.name)
    summary = records.done_summary(trial_dir)
    if summary is None:
      pending.append((trial, sweep_dir))
      continue
    if not hparams.session_files(trial_dir):
      hparams.write_trial_hparams(trial, trial_dir, summary)
    record(sweep_dir, records.TrialResult(
        trial.name, summary['status'], skipped=True,
        log_path=os.path.join(sweep_dir, records.LOGS, f'{trial.name}.log'),
        summary=summary))
  return pending


def _poll(running, launcher, record):
  """Finishes the running units that are done or past their deadline."""
  for r in list(running):
    timed_out = not r.finished() and time.monotonic() > r.deadline
    if timed_out:
      r.kill()
    if r.finished():
      running.remove(r)
      unit_results = _finish(r, timed_out)
      launcher.done(r, unit_results)
      for result in unit_results:
        record(r.sweep_dir, result)


def _run_pending(pending, parallel, launcher, record):
  """Runs the pending grid.Units in order, at most `parallel` at a time."""
  running = []
  with _SignalFlag() as stop:
    try:
      while pending or running:
        stop.check()
        while pending and len(running) < parallel:
          running.append(launcher.start(pending.pop(launcher.pick(pending))))
        _poll(running, launcher, record)
        time.sleep(POLL_S)
    finally:
      if running:
        logging.warning('stopping %d running unit(s)', len(running))
        _stop_all(running)
        for r in running:  # the record the index sees; a rerun redoes it
          _record_interrupted(r)
          launcher.done(r, None)
      launcher.close()


def run_sweep(trials, sweep_dir: str, **options) -> list:
  """Runs the trials not done yet, at most `parallel` at a time.

  Each trial writes <sweep_dir>/<name>/ as `python -m benchmarks.train
  --root_dir=<sweep_dir> --experiment=<name> <flags> --overwrite` would,
  with its output in <sweep_dir>/logs/<name>.log. By default it runs in one
  of `parallel` long-lived trial processes (`python -m worker_module`), each
  in its own process group, which run trial after trial and so import
  TensorFlow and TFF once; a trial that fails, times out or kills its
  process gets its process retired, and the next trial a fresh one.
  fresh_process: run each trial as that benchmarks.train command instead.
  A trial running longer than timeout_s seconds is killed (its whole group)
  and recorded as failed. on_progress(done, total, result) is called after
  each trial, skipped ones included. Returns a TrialResult per trial, in the
  order of `trials`. Raises ConfigError (check_resumable; rundir.BusyError
  if another process runs the same sweep) before anything runs, and
  `Interrupted` on SIGINT/SIGTERM once no trial of the sweep is left
  running. A stack of seed siblings (stack > 1) runs in one trial worker
  as one computation; each member still gets its own directory, log,
  trial.json and TrialResult, and if the stack fails, times out or kills
  its process, every member is recorded as failed. Options: those of
  run_sweeps.
  """
  return run_sweeps([(trials, sweep_dir)], **options)[0]


def run_sweeps(sweeps, *, parallel: int = 1, python: str = sys.executable,
               timeout_s: float | None = None, on_progress=None,
               fresh_process: bool = False,
               worker_module: str = processes.WORKER_MODULE,
               cost=None, stack: int = 1, threads: int | None = None
               ) -> list:
  """run_sweep for several sweeps, [(trials, sweep_dir)], whose trials share
  the `parallel` trial processes: a process goes from one sweep's trial to
  the next sweep's, so a sweep smaller than `parallel` leaves no slot idle
  and no process starts per sweep. A process goes on with a trial that
  differs from its last one only in the seed when one is pending, since it
  has that trial's computations (_Pool.pick). cost(trial) -> float, if
  given, orders the pending units of all the sweeps by the sum of their
  trials' costs, the costliest first, so the last ones to start are short
  and the slots finish together (the longest-first rule of list
  scheduling); by default they run in the order given. stack: the most
  seed siblings of one sweep trained as one stacked computation in one
  trial worker (grid.stack_units: stackable trials, width <=
  STACK_MAX_WIDTH; the same bits as one by one), timed out after timeout_s
  per member; 1, or fresh_process, trains every trial on its own.
  threads: TensorFlow's threads in each trial process (None: its default,
  every core; processes.trial_threads: a speed lever that changes bits).
  on_progress counts the trials of all the sweeps. Returns run_sweep's list
  for each sweep, in order.
  """
  if parallel < 1:
    raise ValueError(f'parallel must be >= 1, got {parallel}')
  if stack < 1:
    raise ValueError(f'stack must be >= 1, got {stack}')
  sweeps = [(trials, os.path.abspath(os.path.expanduser(sweep_dir)))
            for trials, sweep_dir in sweeps]
  for trials, sweep_dir in sweeps:
    records.check_resumable(trials, sweep_dir)
  total = sum(len(trials) for trials, _ in sweeps)
  finished = {}

  def record(sweep_dir, result):
    result = dataclasses.replace(result, sweep_dir=sweep_dir)
    finished[sweep_dir, result.name] = result
    logging.debug('trial %s: %s%s', result.name, result.status,
                  ' (done before)' if result.skipped else '')
    if on_progress:
      on_progress(len(finished), total, result)

  with contextlib.ExitStack() as locks:
    pending = []
    for trials, sweep_dir in sweeps:
      locks.enter_context(rundir.DirectoryLock(sweep_dir, 'sweep'))
      os.makedirs(os.path.join(sweep_dir, records.LOGS), exist_ok=True)
      hparams.write_hparams_config(trials, sweep_dir)
      pending += _done_before(trials, sweep_dir, record)
    pending = grid.stack_units(pending, 1 if fresh_process else stack)
    if cost is not None:  # stable among equals
      pending.sort(key=lambda unit: -sum(map(cost, unit.trials)))
    launcher = (_FreshProcesses(python, timeout_s, threads) if fresh_process
                else _Pool(python, timeout_s, worker_module, threads))
    _run_pending(pending, parallel, launcher, record)
  return [[finished[sweep_dir, t.name] for t in trials]
          for trials, sweep_dir in sweeps]
