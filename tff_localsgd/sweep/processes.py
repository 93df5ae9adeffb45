"""The processes a sweep runs its units (grid.Unit: a trial, or a stack of
seed siblings) in: a trial process of its own (`benchmarks.train`, Running;
one trial) or a long-lived trial worker (`benchmarks.trial_worker`,
protocol in tff_localsgd/trial_worker.py) that is sent unit after unit
(Worker, Pooled). Each runs in a process group of its own, started
through _LAUNCHER: if the sweep process is killed outright, the kernel
kills its trials (PR_SET_PDEATHSIG), and each trial's TFF worker dies with
its trial.
"""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

from tff_localsgd import config as config_lib
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


# --trial_threads: TensorFlow's default (every core: the bits of a run
# alone), the cores shared out among the --parallel processes, or a number.
ALL_THREADS, SHARED_THREADS = 'all', 'shared'
THREAD_VARIABLES = ('TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS')


def trial_threads(value: str, parallel: int) -> int | None:
  """The TensorFlow threads (intra- and inter-op) of each trial process for
  --trial_threads=value: None for 'all' (TensorFlow's default), cores //
  parallel for 'shared', else the number. Raises ConfigError.

  A speed lever that changes bits: on 2 cores, two trial processes of every
  core's threads ran the suite's rounds up to 1.6x slower than of one each
  (docs/performance.md), but a matmul's float32 sums depend on its threads:
  4 of the quick preset's 287 trials (depth 2 and 4, m = 1024) ended with
  other bits (final loss within 7e-5 relative; tests/test_sweep.py checks a
  tolerance), the other 283 bit-identical.
  """
  if value == ALL_THREADS:
    return None
  if value == SHARED_THREADS:
    return max(1, len(os.sched_getaffinity(0)) // parallel)
  if not value.isdigit() or int(value) < 1:
    raise config_lib.ConfigError(
        'trial_threads', f"{ALL_THREADS!r}, {SHARED_THREADS!r} or a number "
        f'>= 1, got {value!r}')
  return int(value)


def thread_env(threads: int | None) -> dict:
  """os.environ with TensorFlow's thread variables set to threads (unless
  the environment sets them already, or threads is None)."""
  env = dict(os.environ)
  for name in THREAD_VARIABLES:
    if threads and name not in os.environ:
      env[name] = str(threads)
  return env


def _launch(python, args, threads=None, **popen_args) -> subprocess.Popen:
  """`python args` through _LAUNCHER, in a new session (process group);
  threads: TensorFlow's threads in it (thread_env)."""
  env = thread_env(threads)
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


@dataclasses.dataclass(frozen=True)
class Member:
  """A trial of a started unit: its run directory and its log."""
  trial: grid.Trial
  dir: str
  log_path: str


def _member(trial, sweep_dir) -> Member:
  return Member(trial, os.path.join(sweep_dir, trial.name),
                os.path.join(sweep_dir, records.LOGS, f'{trial.name}.log'))


class Started:
  """A started unit (grid.Unit: one trial, or a stack of seed siblings):
  each member's directory (cleared: whatever an earlier attempt left is not
  a result) and trial.json, and the unit's deadline (timeout_s per member).
  Its output goes to log_path, the first member's log. Subclasses run it in
  a process of its own (Running, one trial) or in a trial worker (Pooled),
  and give each member's exit status (outcome)."""

  def __init__(self, unit, timeout_s):
    self.sweep_dir = unit.sweep_dir
    self.members = tuple(_member(t, unit.sweep_dir) for t in unit.trials)
    for member in self.members:
      rundir.RunDir(path=member.dir).clear()
      os.makedirs(member.dir, exist_ok=True)
      records.write_trial_json(member.trial, member.dir)
    self.log_path = self.members[0].log_path
    self.start = time.monotonic()
    self.deadline = (self.start + timeout_s * len(self.members) if timeout_s
                     else math.inf)

  def result(self, timed_out=False) -> list:
    """One TrialResult per member, in order, once the unit has finished
    (or been killed). Each member gets an equal share of the unit's wall
    time, so a sum over trials stays the slots' seconds."""
    self.close()
    wall = (time.monotonic() - self.start) / len(self.members)
    return [self._member_result(i, wall, timed_out)
            for i in range(len(self.members))]

  def _member_result(self, i, wall, timed_out) -> records.TrialResult:
    member = self.members[i]
    rc, why = self.outcome(i)
    summary = rundir.RunDir(path=member.dir).read_summary()
    status = (summary or {}).get('status')
    expected = results.done_status(rc)
    common = dict(name=member.trial.name, returncode=rc,
                  log_path=member.log_path, wall_time_s=wall, summary=summary)
    if not timed_out and expected and status == expected:
      return records.TrialResult(status=status, **common)
    if timed_out:
      error = f'timed out after {self.deadline - self.start:.0f} s; killed'
    elif expected:
      error = f'exit status {rc} but summary.json says {status!r}'
    else:
      error = f'exit status {rc}' + (f': {why}' if why else '')
    return records.TrialResult(status=results.FAILED, error=error,
                               log_tail=records.log_tail(self.log_path),
                               **common)

  def outcome(self, i) -> tuple:
    """(exit status, error) of member i."""
    raise NotImplementedError

  def kill(self):
    """SIGKILL to the unit's process group (hung: no grace)."""
    signal_group(self.proc, signal.SIGKILL)
    self.proc.wait()

  def close(self):
    pass


class Running(Started):
  """A unit of one trial as `benchmarks.train` in a process of its own."""

  def __init__(self, unit, python, timeout_s, threads=None):
    (trial,) = unit.trials  # a process of its own never stacks
    super().__init__(unit, timeout_s)
    args = _train_args(trial, unit.sweep_dir)
    self.log = open(self.log_path, 'wb')
    self.log.write(('$ ' + ' '.join([python, *args]) + '\n').encode())
    self.log.flush()
    try:
      self.proc = _launch(python, args, threads, stdin=subprocess.DEVNULL,
                          stdout=self.log, stderr=subprocess.STDOUT)
    except BaseException:
      self.log.close()
      raise

  def finished(self) -> bool:
    return self.proc.poll() is not None

  def outcome(self, i) -> tuple:
    del i
    return self.proc.returncode, ''

  def close(self):
    self.log.close()


class Worker:
  """A long-lived trial process (benchmarks.trial_worker; protocol in
  tff_localsgd/trial_worker.py) in a process group of its own; its output
  between trials goes to logs/processes.log."""

  def __init__(self, sweep_dir, python, module, threads=None):
    log_path = os.path.join(sweep_dir, records.LOGS, PROCESSES_LOG)
    with open(log_path, 'ab') as log:
      self.proc = _launch(python, ['-m', module], threads,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=log)
    os.set_blocking(self.proc.stdout.fileno(), False)
    self._buffer = b''
    self.trials = 0  # started in this process
    self.last_key = None  # seedless_key of its last trial

  def send(self, request: dict, trials: int):
    self.trials += trials
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
  """A unit sent to a trial worker: one trial as a single request, a stack
  as one stack request, with one reply per member."""

  def __init__(self, unit, worker, timeout_s):
    super().__init__(unit, timeout_s)
    self.worker, self.proc = worker, worker.proc
    self._replies = {}  # by trial name
    requests = [dict(name=m.trial.name, config={
        **grid.trial_config(m.trial), 'root_dir': self.sweep_dir,
        'experiment': m.trial.name}, log=m.log_path) for m in self.members]
    self._write_header()
    worker.send(requests[0] if len(requests) == 1 else dict(stack=requests),
                len(requests))

  def _write_header(self):
    """The command each member is the same as, in the unit's log (the
    worker appends to it); the other members' logs emptied (the worker
    points them at it)."""
    n, pid = self.worker.trials, self.proc.pid
    commands = ''.join(
        f'$ {sys.executable} {" ".join(_train_args(m.trial, self.sweep_dir))}'
        '\n' for m in self.members)
    if len(self.members) == 1:
      header = f'# trial {n + 1} of trial process {pid}; the same as:\n'
    else:
      header = (f'# trials {n + 1}-{n + len(self.members)} of trial process '
                f'{pid}, one stack of {len(self.members)} seeds; each the '
                'same as:\n')
    for i, member in enumerate(self.members):
      with open(member.log_path, 'wb') as log:
        if i == 0:
          log.write((header + commands).encode())

  def finished(self) -> bool:
    self._read_replies()
    if len(self._replies) < len(self.members) and self.proc.poll() is not None:
      self._read_replies()  # written just before it exited
    return (len(self._replies) == len(self.members) or
            self.proc.returncode is not None)

  def _read_replies(self):
    while len(self._replies) < len(self.members):
      reply = self.worker.reply()
      if reply is None:
        return
      self._replies[reply['name']] = reply

  def outcome(self, i) -> tuple:
    """The worker's reply for member i, else (it died or was killed first)
    the process's exit status."""
    reply = self._replies.get(self.members[i].trial.name)
    if reply is None:
      return self.proc.returncode, ''
    return reply['exit_code'], reply.get('error', '')
