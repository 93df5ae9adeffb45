"""A run directory, <root_dir>/<experiment>/, and everything written to it.

    events.out.tfevents.*   TensorBoard scalars, histograms, the config as text
    metrics.csv             one row per round (round 0 = the initial model)
    drift_steps.csv         per local step drift (--diag_per_step)
    config.json             every config field
    summary.json            status, initial and final metrics, versions, ...
    checkpoints/            the weights after the newest rounds
    worker.log              the TFF worker's own output
    trial.json              in a sweep: the trial and its outcome
                            (tff_localsgd/sweep/records.py)
    .lock                   held (flock) by the one process writing the run

`RunDir` is the only code that opens these files. It owns the policy (new,
resume, completed or overwrite: `begin`), the lock, writing a
`results.RoundResult` (the one place where a metric tag becomes a column),
checkpoints, the summary, and reading a run back (`eps_target`: eps F_0).
It imports no TensorFlow: the live run gives it a TensorBoard writer
(tff_localsgd/board.py) to write the event files with; a reader needs none.
"""

import dataclasses
import errno
import fcntl
import os
import shutil

from tff_localsgd import config as config_lib
from tff_localsgd import metrics as metrics_lib
from tff_localsgd import outcomes
from tff_localsgd import recorders

METRICS_CSV = metrics_lib.METRICS_CSV
STEPS_CSV = metrics_lib.STEPS_CSV
SUMMARY_JSON = 'summary.json'
CONFIG_JSON = 'config.json'
CHECKPOINTS = 'checkpoints'
WORKER_LOG = 'worker.log'
TRIAL_JSON = 'trial.json'
LOCK = '.lock'
STEP_PREFIX = metrics_lib.STEP_PREFIX  # TensorBoard step (t-1) K + k


class BusyError(config_lib.ConfigError):
  """Another live process holds the directory's lock."""


class DirectoryLock:
  """flock on <directory>/.lock: one writing process per directory.

  The kernel drops the lock when its holder dies, even by SIGKILL, so a
  stale lock file never blocks a resume. `flag` names what to change in the
  error (e.g. 'experiment'). blocking: wait for the holder instead (two
  sweeps merging their hparams into one logdir take turns).
  """

  def __init__(self, directory: str, flag: str, blocking: bool = False):
    self.path = os.path.join(directory, LOCK)
    self.flag = flag
    self.blocking = blocking
    self._fd = None

  def acquire(self):
    if self._fd is not None:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else
                                       fcntl.LOCK_NB))
    except OSError as e:
      holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise BusyError(self.flag, f'{os.path.dirname(self.path)} is being '
                      f'written by another process (pid {holder}); wait for '
                      'it or stop it') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _keep_until(round_num, local_steps):
  """Which TensorBoard events of a killed run a resume from round_num keeps:
  those of rounds <= round_num (drift_per_step/* counts local steps)."""
  def keep(event):
    if not event.summary.value:
      return True  # file version, not a summary
    per_step = event.summary.value[0].tag.startswith(STEP_PREFIX)
    return event.step <= round_num * (local_steps if per_step else 1)
  return keep


class _NoBoard:
  """A RunDir's TensorBoard writer when it has none: writes nothing."""

  def __init__(self, logdir):
    del logdir

  @staticmethod
  def truncate_events(logdir, keep):
    del logdir, keep

  def scalars(self, step, values):
    del step, values

  histograms = scalars

  def text(self, tag, markdown):
    del tag, markdown

  def close(self):
    pass


def zero_loss(summary: dict):
  """F_0 = (1/2n) sum_j ||y_j||^2, the zero predictor's loss, from a run's
  summary (the top-level zero_predictor_loss, else the theory's), or None
  when the run did not record it."""
  zero = recorders.to_number(summary.get('zero_predictor_loss'))
  if zero is None:
    zero = recorders.to_number((summary.get('theory') or {}).get(
        'zero_predictor_loss'))
  return zero


def eps_target(config: dict, summary: dict):
  """eps F_0, the loss a run must reach: eps from its config, F_0 from its
  summary (zero_loss); None when either is missing."""
  zero, eps = zero_loss(summary), config.get('eps')
  return None if eps is None or zero is None else float(eps) * zero


class RunDir:
  """<root_dir>/<experiment>/ of one config (or, to read or clear a run, of
  a path alone).

  board: the TensorBoard writer class of a live run
  (board.TensorBoardRecorder); without it, a run is written without event
  files (a test's, or a reader's that writes nothing).
  """

  def __init__(self, config=None, path: str | None = None, board=None):
    self.config = config
    self.path = path or os.path.join(os.path.expanduser(config.root_dir),
                                     config.experiment)
    self._lock = DirectoryLock(self.path, 'experiment')
    self._board_type = board or _NoBoard
    self._board = self._csv = self._step_csv = None

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  # The policy: new, resume, completed or overwrite.

  def state(self) -> str:
    """'new', 'resume' or 'completed'.

    Raises ConfigError('experiment') if the directory holds a run of other
    flags (execution fields aside): it is never silently mixed.
    """
    if not (os.path.isdir(self.path) and set(os.listdir(self.path)) - {LOCK}):
      return 'new'
    differ = self.differing_fields(dataclasses.asdict(self.config))
    if differ is not None:
      raise config_lib.ConfigError(
          'experiment', f'{self.path} holds a run with other flags '
          f'({", ".join(differ) or "no config.json"}); choose another '
          '--experiment or pass --overwrite')
    summary = self.read_summary() or {}
    return 'completed' if summary.get('status') == 'completed' else 'resume'

  def differing_fields(self, wanted: dict, ignore=config_lib.EXECUTION_FIELDS):
    """The fields of `wanted` that config.json records otherwise (None if
    they agree; [] if there is no config.json)."""
    recorded = self.read_config()
    if recorded is None:
      return []
    differ = sorted(k for k in set(wanted) | set(recorded) if k not in ignore
                    and k in wanted and recorded.get(k) != wanted[k])
    return differ or None

  def lock(self) -> DirectoryLock:
    """Held while this process writes the run; BusyError if another does."""
    return self._lock.acquire()

  def begin(self, overwrite: bool) -> str:
    """Locks the directory and decides what to do with it: 'new' (cleared
    first if `overwrite`), 'resume' or 'completed' (leave it as it is).
    Raises BusyError, or ConfigError (state) for a run of other flags."""
    self.lock()
    if overwrite:
      self.clear()
      return 'new'
    return self.state()

  def clear(self):
    """--overwrite: removes everything the directory holds but the lock."""
    if not os.path.isdir(self.path):
      return
    for name in os.listdir(self.path):
      if name == LOCK:
        continue
      target = self.file(name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      else:
        os.remove(target)

  # Writing a run.

  def open(self, weight_shapes):
    """Prepares to write rounds; returns (round, weights) to resume from.

    Resumes from the newest checkpoint if there is one: what a killed run
    wrote after it (or at all, without one) is dropped, so the files read as
    one uninterrupted run. Raises recorders.CheckpointError.
    """
    resumed = recorders.latest_checkpoint(self.file(CHECKPOINTS),
                                          weight_shapes)
    os.makedirs(self.path, exist_ok=True)
    recorders.write_json(self.file(CONFIG_JSON),
                         dataclasses.asdict(self.config))
    kept = resumed[0] if resumed else None
    self._board_type.truncate_events(self.path, _keep_until(
        -1 if kept is None else kept, self.config.local_steps))
    if kept is None:
      for name in (METRICS_CSV, STEPS_CSV, SUMMARY_JSON):
        if os.path.exists(self.file(name)):
          os.remove(self.file(name))
    self._csv = recorders.MetricsCSV(self.file(METRICS_CSV), ['round'],
                                     up_to_round=kept)
    self._step_csv = recorders.MetricsCSV(self.file(STEPS_CSV),
                                          ['round', 'local_step'],
                                          up_to_round=kept)
    self._board = self._board_type(self.path)
    if kept is None:
      self._board.text('config', '```\n' + self.config.to_json() + '\n```')
    return resumed

  def write(self, result):
    """One round's RoundResult: TensorBoard and metrics.csv (tag -> column)."""
    t = result.round
    self._board.histograms(t, result.histograms)
    for row in result.step_rows:
      step = (t - 1) * self.config.local_steps + row['local_step']
      self._board.scalars(step, {STEP_PREFIX + k: v for k, v in row.items()
                                 if k != 'local_step'})
      self._step_csv.append({'round': t, **row})
    self._board.scalars(t, result.metrics)
    self._csv.append({'round': t, **{metrics_lib.column(k): v
                                     for k, v in result.metrics.items()}})

  def checkpoint(self, round_num: int, weights, summary: dict):
    recorders.write_checkpoint(self.file(CHECKPOINTS), round_num, weights)
    self.write_summary(summary)

  def write_summary(self, summary: dict):
    recorders.write_json(self.file(SUMMARY_JSON), summary)

  def write_trial(self, record: dict):
    recorders.write_json(self.file(TRIAL_JSON), record)

  def close(self):
    if self._board is not None:
      self._board.close()
      self._board = None
    self._lock.release()

  # Reading a run back.

  def read_config(self):
    return recorders.read_json(self.file(CONFIG_JSON))

  def read_summary(self):
    return recorders.read_json(self.file(SUMMARY_JSON))

  def read_trial(self):
    """trial.json, or None: not a sweep's trial (or not yet)."""
    return recorders.read_json(self.file(TRIAL_JSON))

  def eps_target(self):
    """eps F_0 of this run (eps_target), or None."""
    return eps_target(self.read_config() or {}, self.read_summary() or {})

  def rounds_to_eps(self):
    """T: where train/loss crosses eps F_0 (outcomes.rounds_to_eps,
    interpolated between the rounds around it), or None."""
    target, rows = self.eps_target(), self.read_rows()
    if target is None:
      return None
    loss = metrics_lib.column('train/loss')
    return outcomes.rounds_to_eps([r['round'] for r in rows],
                                  [r.get(loss) for r in rows], target)

  def read_rows(self, name: str = METRICS_CSV) -> list:
    """The rows of metrics.csv (or drift_steps.csv) as {column: float or
    None}; [] if there are none."""
    try:
      rows = recorders.read_metrics(self.file(name))
    except (OSError, ValueError):
      return []
    return [{k: recorders.to_number(v) for k, v in r.items()} for r in rows]
