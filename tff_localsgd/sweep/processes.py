"""The processes a sweep runs its trials in: a trial process of its own
(`benchmarks.train`, Running) or a long-lived trial worker
(`benchmarks.trial_worker`, protocol in tff_localsgd/trial_worker.py) that
is sent trial after trial (Worker, Pooled). Each runs in a process group
of its own, started through _LAUNCHER: if the sweep process is killed
outright, the kernel kills its trials (PR_SET_PDEATHSIG), and each trial's
TFF worker dies with its trial.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

from tff_localsgd import results
from tff_localsgd import rundir
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import records

TERM_GRACE_S = 5.0  # SIGTERM to SIGKILL, when the sweep is stopped
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
WORKER_MODULE = 'benchmarks.trial_worker'  # a long-lived trial process
PROCESSES_LOG = 'processes.log'  # in logs/: trial processes between trials

# Runs first in each trial process, then execs the trial: the kernel SIGKILLs
# the trial when the sweep dies, even by SIGKILL (the setting survives exec).
# Not preexec_fn: the sweep process has TensorFlow's threads.
_LAUNCHER = '''import ctypes, os, signal, sys
try:
  ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (AttributeError, OSError):
  pass
if os.getppid() != int(sys.argv[1]):
  sys.exit(125)
os.execvp(sys.argv[2], sys.argv[2:])
'''


def signal_group(proc, sig):
  """Signals the process group of `proc` (its pgid is its pid)."""
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass  # the group is gone


def _launch(python, args, **popen_args) -> subprocess.Popen:
  """`python args` through _LAUNCHER, in a new session (process group)."""
  env = dict(os.environ)
  # benchmarks/ importable from any working directory; relative paths in
  # flags (--data_dir) still mean what they meant to the caller.
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (_REPO, env.get('PYTHONPATH')) if p)
  return subprocess.Popen(
      [sys.executable, '-c', _LAUNCHER, str(os.getpid()), python, *args],
      env=env, start_new_session=True, **popen_args)


def _train_args(trial, sweep_dir) -> list:
  """benchmarks.train's arguments for the trial: its directory, from scratch."""
  return ['-m', 'benchmarks.train', f'--root_dir={sweep_dir}',
          f'--experiment={trial.name}', *trial.flags, '--overwrite']


class Started:
  """A started trial: its directory (cleared: whatever an earlier attempt
  left is not a result), trial.json, its log and deadline. Subclasses run it
  in a process of its own (Running) or in a trial worker (Pooled)."""

  def __init__(self, trial, sweep_dir, timeout_s):
    self.trial, self.sweep_dir = trial, sweep_dir
    self.dir = os.path.join(sweep_dir, trial.name)
    self.log_path = os.path.join(sweep_dir, records.LOGS, f'{trial.name}.log')
    rundir.RunDir(path=self.dir).clear()
    os.makedirs(self.dir, exist_ok=True)
    records.write_trial_json(trial, self.dir)
    self.start = time.monotonic()
    self.deadline = self.start + timeout_s if timeout_s else math.inf

  def result(self, timed_out=False) -> records.TrialResult:
    """The outcome of the finished (or killed) trial."""
    self.close()
    rc = self.returncode
    summary = rundir.RunDir(path=self.dir).read_summary()
    status = (summary or {}).get('status')
    expected = results.done_status(rc)
    common = dict(name=self.trial.name, returncode=rc, log_path=self.log_path,
                  wall_time_s=time.monotonic() - self.start, summary=summary)
    if not timed_out and expected and status == expected:
      return records.TrialResult(status=status, **common)
    if timed_out:
      error = f'timed out after {self.deadline - self.start:.0f} s; killed'
    elif expected:
      error = f'exit status {rc} but summary.json says {status!r}'
    else:
      error = f'exit status {rc}' + (f': {self.error}' if self.error else '')
    return records.TrialResult(status=results.FAILED, error=error,
                              log_tail=records.log_tail(self.log_path),
                              **common)

  def kill(self):
    """SIGKILL to the trial's process group (hung: no grace)."""
    signal_group(self.proc, signal.SIGKILL)
    self.proc.wait()

  def close(self):
    pass


class Running(Started):
  """A trial as `benchmarks.train` in a process of its own."""

  error = ''

  def __init__(self, trial, sweep_dir, python, timeout_s):
    super().__init__(trial, sweep_dir, timeout_s)
    args = _train_args(trial, sweep_dir)
    self.log = open(self.log_path, 'wb')
    self.log.write(('$ ' + ' '.join([python, *args]) + '\n').encode())
    self.log.flush()
    try:
      self.proc = _launch(python, args, stdin=subprocess.DEVNULL,
                          stdout=self.log, stderr=subprocess.STDOUT)
    except BaseException:
      self.log.close()
      raise

  def finished(self) -> bool:
    return self.proc.poll() is not None

  @property
  def returncode(self):
    return self.proc.returncode

  def close(self):
    self.log.close()


class Worker:
  """A long-lived trial process (benchmarks.trial_worker; protocol in
  tff_localsgd/trial_worker.py) in a process group of its own; its output
  between trials goes to logs/processes.log."""

  def __init__(self, sweep_dir, python, module):
    log_path = os.path.join(sweep_dir, records.LOGS, PROCESSES_LOG)
    with open(log_path, 'ab') as log:
      self.proc = _launch(python, ['-m', module], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=log)
    os.set_blocking(self.proc.stdout.fileno(), False)
    self._buffer = b''
    self.trials = 0  # started in this process
    self.last_key = None  # seedless_key of its last trial

  def send(self, request: dict):
    self.trials += 1
    try:
      self.proc.stdin.write((json.dumps(request) + '\n').encode())
      self.proc.stdin.flush()
    except BrokenPipeError:
      pass  # it died: finished() sees its exit status

  def reply(self):
    """The next reply if one has arrived (non-blocking), else None."""
    try:
      self._buffer += self.proc.stdout.read() or b''
    except (OSError, ValueError):
      pass
    line, sep, rest = self._buffer.partition(b'\n')
    if not sep:
      return None
    self._buffer = rest
    return json.loads(line)

  def close(self):
    """EOF on stdin ends an idle worker; SIGKILL whatever is left."""
    try:
      self.proc.stdin.close()
      self.proc.wait(timeout=TERM_GRACE_S)
    except (BrokenPipeError, subprocess.TimeoutExpired):
      pass
    signal_group(self.proc, signal.SIGKILL)
    self.proc.wait()
    self.proc.stdout.close()


class Pooled(Started):
  """A trial sent to a trial worker."""

  def __init__(self, trial, sweep_dir, worker, timeout_s):
    super().__init__(trial, sweep_dir, timeout_s)
    self.worker, self.proc = worker, worker.proc
    self._reply = None
    with open(self.log_path, 'wb') as log:  # the worker appends to it
      log.write(f'# trial {worker.trials + 1} of trial process '
                f'{self.proc.pid}; the same as:\n$ {sys.executable} '
                f'{" ".join(_train_args(trial, sweep_dir))}\n'.encode())
    config = {**grid.trial_config(trial), 'root_dir': sweep_dir,
              'experiment': trial.name}
    worker.send(dict(name=trial.name, config=config, log=self.log_path))

  def finished(self) -> bool:
    self._reply = self._reply or self.worker.reply()
    if self._reply is None and self.proc.poll() is not None:
      self._reply = self.worker.reply()  # written just before it exited
    return self._reply is not None or self.proc.returncode is not None

  @property
  def returncode(self):
    return self._reply['exit_code'] if self._reply else self.proc.returncode

  @property
  def error(self) -> str:
    return (self._reply or {}).get('error', '')
