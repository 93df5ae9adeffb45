"""Sweeps: a grid of experiments, each trained as `benchmarks.train` would
into a directory of its own, in long-lived trial processes (or a fresh
process per trial), resumable, with TensorBoard HParams summaries.

  trials = expand_grid({'width': ['64', '256']}, seeds=[0, 1], base_flags={})
  results = run_sweep(trials, 'runs/demo', parallel=2)

Output under the sweep directory:
  logs/<trial>.log                the trial's stdout and stderr
  logs/processes.log              trial processes' output between trials
  <trial>/                        the training binary's run directory
                                  (metrics.csv, summary.json, config.json,
                                  events) and, from the sweep:
    trial.json                    {name, swept, flags, result}
    events.out.tfevents.*.hparams-session
                                  the trial's HParams session: every config
                                  field that changes the result, its real
                                  start and end, its final/* scalars, in the
                                  same run directory as its training scalars,
                                  so the HParams dashboard joins them
and at the TensorBoard logdir root (hparams_root: the sweep's parent, or a
reproduction suite's --out):
  events.out.tfevents.*.hparams-experiment
                                  the HParams experiment (hparams_config) of
                                  every sweep under the root: each sweep
                                  merges its hparams into it

Trials run in `parallel` trial processes (benchmarks.trial_worker), each in
its own process group, which import TensorFlow and TFF once and train trial
after trial (a crashed or hung trial cannot take the sweep down, and killing
the group stops it); a process whose trial did not complete or diverge is
replaced by a fresh one. With fresh_process=True each trial is its own
`benchmarks.train` process instead; the results are the same bits (tested).
A trial whose summary.json
says completed or diverged is done and is skipped when the sweep is run
again; a trial in any other state is rerun from scratch. A trial that fails
(an exit status other than 0 or 3, or a timeout) is recorded as failed with
the tail of its log, and the sweep goes on. SIGINT or SIGTERM stops every
running trial (SIGTERM, then SIGKILL) before the sweep raises `Interrupted`;
if the sweep process is killed outright, the kernel kills its trials
(PR_SET_PDEATHSIG), and each trial's TFF worker dies with its trial.

The final/* metrics (also in `sweep_index`), final/<tag> the last value of
the run's <tag>:
  final/train/loss          train/loss of the last round (summary.json)
  final/rounds_to_eps       the first round whose train/loss is <= eps F_0,
                            F_0 the zero predictor's loss (config.json's eps,
                            summary.json's zero_predictor_loss); not written
                            when the run never gets there
  final/drift/grad_diff_rel, final/lazy/weight_change_rel,
  final/lazy/activation_flip_frac
                            the last measured value of the diagnostic (runs
                            with --diag_every > 0 only)
"""

import contextlib
import dataclasses
import difflib
import fcntl
import glob
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

from absl import logging
import tensorflow as tf
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import summary as hp_summary

from tff_localsgd import config as config_lib
from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import rundir

DONE = ('completed', 'diverged')  # a trial in one of these states is skipped
LOGS = 'logs'
TRIAL_JSON = 'trial.json'
HPARAMS_SUFFIX = '.hparams'  # older sweeps' HParams files (SESSION_SUFFIX)
LOG_TAIL_LINES = 20
TERM_GRACE_S = 5.0  # SIGTERM to SIGKILL, when the sweep is stopped
POLL_S = 0.1
# Sweep-level keys: a trial's output place and its seed are set by the sweep.
NOT_SWEPT = ('root_dir', 'experiment', 'seed')
FINAL_METRICS = ('final/train/loss', 'final/rounds_to_eps',
                 'final/drift/grad_diff_rel', 'final/lazy/weight_change_rel',
                 'final/lazy/activation_flip_frac')
_DIAGNOSTICS = ('drift/grad_diff_rel', 'lazy/weight_change_rel',
                'lazy/activation_flip_frac')
ConfigError = config_lib.ConfigError
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MODULE = 'benchmarks.trial_worker'  # a long-lived trial process
PROCESSES_LOG = 'processes.log'  # in logs/: trial processes between trials
# A trial process grows ~9 MiB per trial (measured over 16 tiny trials);
# replacing it after this many bounds that for ~6 s of start-up.
MAX_TRIALS_PER_PROCESS = 32

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


class Interrupted(KeyboardInterrupt):
  """The sweep stopped on a signal, after stopping its running trials."""

  def __init__(self, signum: int):
    super().__init__(f'stopped by {signal.Signals(signum).name}')
    self.signum = signum


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of the sweep: `swept` holds the grid's values and the seed;
  `flags` is the full flag list it is trained with: every base and swept
  value (the binary's base holds every config field)."""
  name: str
  swept: dict
  flags: tuple


@dataclasses.dataclass(frozen=True)
class TrialResult:
  name: str
  status: str  # completed, diverged or failed (trial.json may also say
  # interrupted: a trial stopped with the sweep)
  skipped: bool = False  # done by an earlier run of the sweep
  returncode: int | None = None
  wall_time_s: float = 0.0
  error: str = ''
  log_tail: str = ''  # the last lines of the log, for a failed trial
  log_path: str = ''
  summary: dict | None = None  # the trial's summary.json, when it has one
  sweep_dir: str = ''  # the sweep it belongs to (run_sweeps)


# Grid expansion and validation: pure, before anything runs.


def flag_value(value) -> str:
  """How `benchmarks.train` reads `value` back exactly."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, float):
    return repr(value)
  return str(value)


def parse_grid(specs) -> dict:
  """--grid values ['width=64,256', 'local_steps=1,5'] -> {key: [strings]}.

  Raises ConfigError naming 'grid' for malformed or repeated entries; keys
  and values are checked by expand_grid.
  """
  grid = {}
  for spec in specs:
    key, sep, values = spec.partition('=')
    key = key.strip()
    items = [v.strip() for v in values.split(',')]
    if not sep or not key or not all(items):
      raise ConfigError('grid', f'expected key=value1,value2,... got {spec!r}')
    if key in grid:
      raise ConfigError('grid', f'{key} is given twice')
    grid[key] = items
  return grid


def _name_part(text: str) -> str:
  # Filesystem-safe and readable: anything else becomes '_'.
  return re.sub(r'[^A-Za-z0-9.+-]', '_', text)


def _check_grid(grid: dict, seeds) -> dict:
  """The grid with typed values; ConfigError on a bad key or value."""
  fields = config_lib.FIELDS
  typed = {}
  for key, values in grid.items():
    if key not in fields:
      close = difflib.get_close_matches(key, fields, n=1)
      raise ConfigError('grid', f'{key!r} is not a config field' +
                        (f'; did you mean {close[0]!r}?' if close else ''))
    if key in NOT_SWEPT:
      raise ConfigError('grid', f'{key} is set by the sweep (--root_dir, '
                        '--sweep, --seed and --seeds), not by --grid')
    if not values:
      raise ConfigError('grid', f'{key} has no values')
    typed[key] = [config_lib.parse_value(key, v, ' (in --grid)') for v in values]
    if len(set(typed[key])) != len(typed[key]):
      raise ConfigError('grid', f'{key} lists a value twice: {values}')
  if not seeds:
    raise ConfigError('seeds', 'a sweep needs at least one seed')
  if len(set(seeds)) != len(seeds):
    raise ConfigError('seeds', f'a seed is listed twice: {list(seeds)}')
  return typed


def expand_grid(grid: dict, seeds, base_flags: dict) -> list:
  """The trials of the cartesian product grid x seeds, in a fixed order.

  grid: {config field: [values as flag strings]}; the first key varies
  slowest and the seed fastest. base_flags: {config field: value (typed or a
  flag string)} for everything not swept; root_dir and experiment are
  ignored (the sweep sets them). Every trial's config is validated before
  this returns; raises ConfigError naming the field (and the trial), or
  'grid' for a key that is not a config field.
  """
  fields = config_lib.FIELDS
  for key in base_flags:
    if key not in fields:
      raise ConfigError(key, 'unknown config field')
  typed = _check_grid(grid, seeds)
  base = {k: config_lib.parse_value(k, v) for k, v in base_flags.items()
          if k not in ('root_dir', 'experiment')}
  trials, names = [], set()
  keys = list(grid)
  for combo in itertools.product(*(range(len(grid[k])) for k in keys),
                                 seeds):
    *picks, seed = combo
    swept = {k: typed[k][i] for k, i in zip(keys, picks)}
    swept['seed'] = int(seed)
    name = '_'.join([f'{k}-{_name_part(grid[k][i])}'
                     for k, i in zip(keys, picks)] + [f'seed-{int(seed)}'])
    if name in names:
      raise ConfigError('grid', f'two trials would be named {name}')
    names.add(name)
    values = {**base, **swept, 'experiment': name}
    try:
      config_lib.ExperimentConfig(**values).validate()
    except ConfigError as e:
      message = str(e)[len(f'--{e.field}: '):]
      raise ConfigError(e.field, f'{message} (trial {name})') from None
    flags = tuple(f'--{k}={flag_value(v)}' for k, v in values.items()
                  if k not in ('root_dir', 'experiment'))
    trials.append(Trial(name, swept, flags))
  return trials


def trial_config(trial: Trial) -> dict:
  """The config values a trial's flags set (typed), by field name."""
  out = {}
  for flag in trial.flags:
    key, _, value = flag[2:].partition('=')
    out[key] = config_lib.parse_value(key, value)
  return out


# Reading a sweep directory.


def final_metrics(trial_dir: str, summary: dict) -> dict:
  """The final/* metrics of a finished trial (see the module docstring)."""
  run = rundir.RunDir(path=trial_dir)
  final = summary.get('final') or {}
  out = {}
  loss = recorders.to_number(final.get('train/loss'))
  if loss is not None:
    out['final/train/loss'] = loss
  reached = run.rounds_to_eps()
  if reached is not None:
    out['final/rounds_to_eps'] = float(reached)
  rows = None
  for tag in _DIAGNOSTICS:
    value = recorders.to_number(final.get(tag))
    if value is None:  # not measured in the last round: the last measured
      rows = run.read_rows() if rows is None else rows
      column = [r.get(metrics.column(tag)) for r in rows]
      value = next((v for v in reversed(column) if v is not None), None)
    if value is not None:
      out['final/' + tag] = value
  return out


def _done_summary(trial_dir):
  """summary.json of a trial that is done (completed or diverged), or None."""
  summary = recorders.read_json(os.path.join(trial_dir, 'summary.json'))
  if summary and summary.get('status') in DONE:
    return summary
  return None


def sweep_index(sweep_dir: str) -> list:
  """One dict per trial directory (one with a trial.json), sorted by name.

  Keys: name, dir, swept, flags, status (summary.json's, else 'failed' if
  the sweep recorded a failure, else 'missing'), error and log (from the
  sweep's record), final (summary.json's final metrics), metrics (final/*).
  """
  sweep_dir = os.path.abspath(os.path.expanduser(sweep_dir))
  index = []
  for path in sorted(glob.glob(os.path.join(sweep_dir, '*', TRIAL_JSON))):
    trial_dir = os.path.dirname(path)
    record = recorders.read_json(path) or {}
    result = record.get('result') or {}
    summary = recorders.read_json(os.path.join(trial_dir, 'summary.json'))
    status = (summary or {}).get('status') or result.get('status') or 'missing'
    index.append(dict(
        name=record.get('name', os.path.basename(trial_dir)), dir=trial_dir,
        swept=record.get('swept', {}), flags=record.get('flags', []),
        status=status, error=result.get('error', ''),
        log=result.get('log', ''),
        final=(summary or {}).get('final', {}),
        metrics=final_metrics(trial_dir, summary) if summary else {}))
  return index


# TensorBoard HParams: one experiment (hparams_config) per logdir, one session
# per trial.
#
# TensorBoard 2.14 reads the experiment from the first run it lists that holds
# one ("arbitrarily pick the first one": backend_context._find_experiment_tag),
# so sweeps that each write their own under one logdir lose all but one
# sweep's columns. The sweeps under a logdir share one experiment at its root
# instead: the union of their hparams, which each sweep reads back and
# extends. TensorBoard on a single sweep directory finds none and builds the
# experiment from the trials' sessions: every trial still shows.

EXPERIMENT_SUFFIX = '.hparams-experiment'  # the logdir's experiment file
# A trial's session. Sessions in HPARAMS_SUFFIX files predate it (numbers,
# group = trial name): a rerun sweep finds none of these and rewrites them.
SESSION_SUFFIX = '.hparams-session'
SUITE_MARKER = 'provenance.json'  # in a reproduction suite's --out
# Where and how a run was computed, not what: not hyperparameters.
NOT_HPARAMS = (*config_lib.EXECUTION_FIELDS, 'root_dir', 'experiment',
               'data_dir', 'checkpoint_every')
_DTYPES = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64,
           str: api_pb2.DATA_TYPE_STRING}
# The dashboard shows 5 hparams, those that differ across trials first (a
# stable sort): these lead, the other fields follow in config order.
_LEADING = ('width', 'local_steps', 'num_examples', 'client_lr', 'algorithm',
            'partition', 'depth', 'dataset', 'seed')


def _hparams_files(directory, suffix=SESSION_SUFFIX):
  """The event files in directory that the sweep wrote with `suffix`."""
  return glob.glob(os.path.join(directory, 'events.out.tfevents.*' + suffix))


def hparams_root(sweep_dir: str) -> str:
  """The logdir whose experiment holds the sweep's hparams: the nearer of
  the sweep's parent and grandparent that is a reproduction suite's --out
  (it holds provenance.json; sweeps <out>/<E>/<group>/, <out>/runs/<sweep>/),
  else its parent (benchmarks.sweep's --root_dir)."""
  parent = os.path.dirname(os.path.abspath(os.path.expanduser(sweep_dir)))
  for directory in (parent, os.path.dirname(parent)):
    if os.path.exists(os.path.join(directory, SUITE_MARKER)):
      return directory
  return parent


def trial_hparams(trial: Trial) -> dict:
  """Every config field that changes the trial's result, defaults filled in.

  Integers are strings: TensorBoard 2.14's dashboard prints every number with
  toPrecision(5) (its prettyPrint: width 128 shows as 128.00, seed 0 as
  0.0000), and only strings print as given.
  """
  config = dataclasses.asdict(config_lib.ExperimentConfig(
      **trial_config(trial)))
  return {k: str(v) if config_lib.field_type(k) is int else v
          for k, v in config.items() if k not in NOT_HPARAMS}


def _value(name, pb):
  """A domain value read back (a google.protobuf.Value) as trial_hparams
  writes it: an integer field's number from an older sweep as a string."""
  value = getattr(pb, pb.WhichOneof('kind'))
  if (name in config_lib.FIELDS and config_lib.field_type(name) is int
      and isinstance(value, float)):
    return str(int(value))
  return value


def _value_order(value):
  """Numbers (and integers as strings) by value, then text."""
  try:
    return (0, float(value), '')
  except (TypeError, ValueError):
    return (1, 0.0, str(value))


def _hparam_order(name):
  """_LEADING first, then config order, then any other name."""
  if name in _LEADING:
    return (0, _LEADING.index(name), name)
  fields = list(config_lib.FIELDS)
  return (1, fields.index(name) if name in fields else len(fields), name)


def _hparam_infos(values: dict) -> list:
  """HParamInfos over {name: set of values}: discrete domains, `differs`."""
  infos = []
  for name in sorted(values, key=_hparam_order):
    domain = sorted(values[name], key=_value_order)
    kinds = {type(v) for v in domain}
    dtype = (_DTYPES[kinds.pop()] if len(kinds) == 1
             else api_pb2.DATA_TYPE_STRING)
    info = api_pb2.HParamInfo(name=name, type=dtype, differs=len(domain) > 1)
    info.domain_discrete.extend(domain)
    infos.append(info)
  return infos


def _read_experiment(path):
  """The last hparams experiment in an event file, or None."""
  found = None
  # TensorBoard's own reader: a torn last record ends the file quietly.
  for event in event_file_loader.LegacyEventFileLoader(path).Load():
    for value in event.summary.value:
      if value.tag == hp_metadata.EXPERIMENT_TAG:
        found = hp_metadata.parse_experiment_plugin_data(
            value.metadata.plugin_data.content)
  return found


def _experiments_under(root) -> dict:
  """{event file: experiment} of every experiment under root: the root's,
  and older ones in sweep directories or in a logdir now inside root (not
  in trial directories, which hold sessions only)."""
  found = {}
  for directory, _, files in os.walk(root):
    if rundir.CONFIG_JSON in files:
      continue
    for name in files:
      if name.startswith('events.out.tfevents.') and (
          name.endswith(HPARAMS_SUFFIX) or name.endswith(EXPERIMENT_SUFFIX)):
        experiment = _read_experiment(os.path.join(directory, name))
        if experiment is not None:
          found[os.path.join(directory, name)] = experiment
  return found


def write_hparams_config(trials, sweep_dir: str, root: str | None = None):
  """Merges the sweep's hparams into the experiment of the logdir `root`
  (default hparams_root(sweep_dir)): every value of every hparam and every
  metric of the experiments under root, and of the trials."""
  root = root or hparams_root(sweep_dir)
  os.makedirs(root, exist_ok=True)
  with _DirLock(root):  # two sweeps under one root merge in turn
    older = _experiments_under(root)
    values, tags = {}, list(FINAL_METRICS)
    for experiment in older.values():
      for info in experiment.hparam_infos:
        values.setdefault(info.name, set()).update(
            _value(info.name, v) for v in info.domain_discrete.values)
      tags += [m.name.tag for m in experiment.metric_infos]
    for trial in trials:
      for key, value in trial_hparams(trial).items():
        values.setdefault(key, set()).add(value)
    metric_infos = [api_pb2.MetricInfo(
        name=api_pb2.MetricName(tag=tag), display_name=tag,
        description=metrics.description(tag) if metrics.find(tag) else '')
                    for tag in dict.fromkeys(tags)]
    writer = tf.summary.create_file_writer(root,
                                           filename_suffix=EXPERIMENT_SUFFIX)
    with writer.as_default():
      tf.summary.experimental.write_raw_pb(hp_summary.experiment_pb(
          _hparam_infos(values), metric_infos).SerializeToString(), step=0)
    writer.close()
    for path in older:  # after the new one is written
      os.remove(path)


class _DirLock:
  """A blocking flock on a directory itself (no lock file to leave)."""

  def __init__(self, directory):
    self.directory = directory

  def __enter__(self):
    self.fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(self.fd, fcntl.LOCK_EX)
    return self

  def __exit__(self, *exc):
    os.close(self.fd)  # releases the lock


def _mtime(path):
  try:
    return os.path.getmtime(path)
  except OSError:
    return None


def write_trial_hparams(trial: Trial, trial_dir: str, summary: dict,
                        root: str | None = None):
  """The trial's session in its run directory (so the dashboard joins it with
  the training scalars): its hparams, its final/* scalars, its status, and
  its real end (summary.json is written last) and start (wall_time_s before
  it; else config.json's time). Its group name is the trial's path under
  the logdir `root` (default hparams_root): the dashboard merges sessions
  that share a group, and trial names repeat across sweeps."""
  trial_dir = os.path.abspath(trial_dir)
  root = root or hparams_root(os.path.dirname(trial_dir))
  for path in (_hparams_files(trial_dir) +
               _hparams_files(trial_dir, HPARAMS_SUFFIX)):
    os.remove(path)
  end = _mtime(os.path.join(trial_dir, rundir.SUMMARY_JSON))
  wall = recorders.to_number(summary.get('wall_time_s'))
  start = (end - wall if end and wall is not None
           else _mtime(os.path.join(trial_dir, rundir.CONFIG_JSON)))
  status = (api_pb2.STATUS_SUCCESS if summary.get('status') == 'completed'
            else api_pb2.STATUS_FAILURE)
  start_pb = hp_summary.session_start_pb(
      trial_hparams(trial), group_name=os.path.relpath(trial_dir, root),
      start_time_secs=start)
  step = int(summary.get('rounds_completed', 0))
  writer = tf.summary.create_file_writer(trial_dir,
                                         filename_suffix=SESSION_SUFFIX)
  with writer.as_default():
    tf.summary.experimental.write_raw_pb(start_pb.SerializeToString(), step=0)
    for tag, value in final_metrics(trial_dir, summary).items():
      tf.summary.scalar(tag, value, step=step)
    tf.summary.experimental.write_raw_pb(hp_summary.session_end_pb(
        status, end_time_secs=end).SerializeToString(), step=step)
  writer.close()


# Running.


def check_resumable(trials, sweep_dir: str):
  """Raises ConfigError('sweep') if a trial directory holds a run of another
  config (the sweep name was reused with other flags): resuming would mix
  the two. root_dir may differ (a moved sweep directory)."""
  sweep_dir = os.path.abspath(os.path.expanduser(sweep_dir))
  for trial in trials:
    run = rundir.RunDir(path=os.path.join(sweep_dir, trial.name))
    differ = run.differing_fields(trial_config(trial), ignore=())
    if differ:
      raise ConfigError('sweep', f'{run.path} was run with other values of '
                        f'{", ".join(differ)}; choose another sweep name or '
                        'delete the directory')


def _write_trial_json(trial, trial_dir, result=None):
  record = dict(name=trial.name, swept=trial.swept, flags=list(trial.flags))
  if result is not None:
    record['result'] = dict(status=result.status, returncode=result.returncode,
                            error=result.error, log=result.log_path,
                            wall_time_s=result.wall_time_s)
  recorders.write_json(os.path.join(trial_dir, TRIAL_JSON), record)


def _log_tail(path, lines=LOG_TAIL_LINES) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def _signal_group(proc, sig):
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


class _Trial:
  """A started trial: its directory (cleared: whatever an earlier attempt
  left is not a result), trial.json, its log and deadline. Subclasses run it
  in a process of its own (_Running) or in a trial worker (_Pooled)."""

  def __init__(self, trial, sweep_dir, timeout_s):
    self.trial, self.sweep_dir = trial, sweep_dir
    self.dir = os.path.join(sweep_dir, trial.name)
    self.log_path = os.path.join(sweep_dir, LOGS, f'{trial.name}.log')
    rundir.RunDir(path=self.dir).clear()
    os.makedirs(self.dir, exist_ok=True)
    _write_trial_json(trial, self.dir)
    self.start = time.monotonic()
    self.deadline = self.start + timeout_s if timeout_s else math.inf

  def result(self, timed_out=False) -> TrialResult:
    """The outcome of the finished (or killed) trial."""
    self.close()
    rc = self.returncode
    summary = recorders.read_json(os.path.join(self.dir, 'summary.json'))
    status = (summary or {}).get('status')
    expected = {0: 'completed', 3: 'diverged'}.get(rc)
    common = dict(name=self.trial.name, returncode=rc, log_path=self.log_path,
                  wall_time_s=time.monotonic() - self.start, summary=summary)
    if not timed_out and expected and status == expected:
      return TrialResult(status=status, **common)
    if timed_out:
      error = f'timed out after {self.deadline - self.start:.0f} s; killed'
    elif expected:
      error = f'exit status {rc} but summary.json says {status!r}'
    else:
      error = f'exit status {rc}' + (f': {self.error}' if self.error else '')
    return TrialResult(status='failed', error=error,
                       log_tail=_log_tail(self.log_path), **common)

  def kill(self):
    """SIGKILL to the trial's process group (hung: no grace)."""
    _signal_group(self.proc, signal.SIGKILL)
    self.proc.wait()

  def close(self):
    pass


class _Running(_Trial):
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


class _Worker:
  """A long-lived trial process (benchmarks.trial_worker; protocol in
  tff_localsgd/trial_worker.py) in a process group of its own; its output
  between trials goes to logs/processes.log."""

  def __init__(self, sweep_dir, python, module):
    with open(os.path.join(sweep_dir, LOGS, PROCESSES_LOG), 'ab') as log:
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
    _signal_group(self.proc, signal.SIGKILL)
    self.proc.wait()
    self.proc.stdout.close()


class _Pooled(_Trial):
  """A trial sent to a trial worker."""

  def __init__(self, trial, sweep_dir, worker, timeout_s):
    super().__init__(trial, sweep_dir, timeout_s)
    self.worker, self.proc = worker, worker.proc
    self._reply = None
    with open(self.log_path, 'wb') as log:  # the worker appends to it
      log.write(f'# trial {worker.trials + 1} of trial process '
                f'{self.proc.pid}; the same as:\n$ {sys.executable} '
                f'{" ".join(_train_args(trial, sweep_dir))}\n'.encode())
    config = {**trial_config(trial), 'root_dir': sweep_dir,
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


def seedless_key(trial: Trial) -> config_lib.ExperimentConfig:
  """Equal for trials that differ only in their seed: a trial process that
  ran one has built and compiled the other's computations (training's
  cache, keyed alike)."""
  return config_lib.ExperimentConfig.from_dict(trial_config(trial)).seedless()


class _FreshProcesses:
  """Each trial in a new `benchmarks.train` process (fresh_process=True)."""

  def __init__(self, python, timeout_s):
    self.python, self.timeout_s = python, timeout_s

  def pick(self, pending) -> int:
    del pending
    return 0

  def start(self, trial, sweep_dir) -> _Trial:
    return _Running(trial, sweep_dir, self.python, self.timeout_s)

  def done(self, running, result):
    del running, result

  def close(self):
    pass


class _Pool:
  """Trial workers, one per running trial, reused trial after trial; one
  whose trial did not complete or diverge (failed, timed out, killed), or
  that ran MAX_TRIALS_PER_PROCESS, is retired, and the next trial gets a
  fresh one."""

  def __init__(self, python, timeout_s, module):
    self.python, self.timeout_s, self.module = python, timeout_s, module
    self.idle = []
    self.running = []  # the seedless keys of the trials running

  def pick(self, pending) -> int:
    """The index of the pending (trial, sweep_dir) to start: a trial whose
    seed sibling an idle worker ran last (it has the computations), else
    the first whose sibling is not running (that worker will want it),
    else the first."""
    keys = [seedless_key(trial) for trial, _ in pending]
    last = {worker.last_key for worker in self.idle}
    for wanted in (lambda k: k in last, lambda k: k not in self.running):
      for i, key in enumerate(keys):
        if wanted(key):
          return i
    return 0

  def start(self, trial, sweep_dir) -> _Trial:
    key = seedless_key(trial)
    same = [w for w in self.idle if w.last_key == key]
    if same or self.idle:
      worker = same[0] if same else self.idle[-1]
      self.idle.remove(worker)
    else:
      worker = _Worker(sweep_dir, self.python, self.module)
    worker.last_key = key
    self.running.append(key)
    return _Pooled(trial, sweep_dir, worker, self.timeout_s)

  def done(self, running, result):
    """Takes the trial's worker back, or retires it (result None: the trial
    was stopped with the sweep)."""
    self.running.remove(running.worker.last_key)
    if (result is not None and result.status in DONE and
        running.worker.trials < MAX_TRIALS_PER_PROCESS and
        running.proc.poll() is None):
      self.idle.append(running.worker)
    else:
      running.worker.close()

  def close(self):
    while self.idle:
      self.idle.pop().close()


def _stop_all(running):
  """SIGTERM to every running trial's group; SIGKILL to what is left."""
  for r in running:
    _signal_group(r.proc, signal.SIGTERM)
  deadline = time.monotonic() + TERM_GRACE_S
  try:
    for r in running:
      try:
        r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        pass
  finally:
    for r in running:
      _signal_group(r.proc, signal.SIGKILL)  # also any straggler in the group
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


def _record_interrupted(r: _Trial):
  try:
    os.makedirs(r.dir, exist_ok=True)  # the trial may have been removing it
    _write_trial_json(r.trial, r.dir, TrialResult(
        r.trial.name, 'interrupted', returncode=r.proc.returncode,
        error='stopped with the sweep', log_path=r.log_path))
  except OSError as e:  # never mask the interruption
    logging.warning('could not record trial %s: %s', r.trial.name, e)


def _finish(running: _Trial, timed_out=False) -> TrialResult:
  result = running.result(timed_out)
  _write_trial_json(running.trial, running.dir, result)
  if result.status in DONE:
    write_trial_hparams(running.trial, running.dir, result.summary)
  if result.status == 'failed':
    logging.warning('trial %s failed (%s); the end of %s:\n%s',
                    result.name, result.error, result.log_path,
                    result.log_tail)
  return result


def _done_before(trials, sweep_dir, record) -> list:
  """Records the trials an earlier run of the sweep finished; returns the
  others, as (trial, sweep_dir)."""
  pending = []
  for trial in trials:
    trial_dir = os.path.join(sweep_dir, trial.name)
    summary = _done_summary(trial_dir)
    if summary is None:
      pending.append((trial, sweep_dir))
      continue
    if not _hparams_files(trial_dir):
      write_trial_hparams(trial, trial_dir, summary)
    record(sweep_dir, TrialResult(
        trial.name, summary['status'], skipped=True,
        log_path=os.path.join(sweep_dir, LOGS, f'{trial.name}.log'),
        summary=summary))
  return pending


def _poll(running, launcher, record):
  """Finishes the running trials that are done or past their deadline."""
  for r in list(running):
    timed_out = not r.finished() and time.monotonic() > r.deadline
    if timed_out:
      r.kill()
    if r.finished():
      running.remove(r)
      result = _finish(r, timed_out)
      launcher.done(r, result)
      record(r.sweep_dir, result)


def _run_pending(pending, parallel, launcher, record):
  """Runs the pending (trial, sweep_dir)s in order, at most `parallel` at a
  time."""
  running = []
  with _SignalFlag() as stop:
    try:
      while pending or running:
        stop.check()
        while pending and len(running) < parallel:
          running.append(launcher.start(*pending.pop(
              launcher.pick(pending))))
        _poll(running, launcher, record)
        time.sleep(POLL_S)
    finally:
      if running:
        logging.warning('stopping %d running trial(s)', len(running))
        _stop_all(running)
        for r in running:  # the record the index sees; a rerun redoes it
          _record_interrupted(r)
          launcher.done(r, None)
      launcher.close()


def phase_totals(results) -> dict:
  """summary.json's phases_s summed over the trials run_sweep trained
  (skipped ones ran earlier), with `trials` (their number) and `processes`
  (those that paid a process's start-up, startup_s > 0)."""
  totals = {'trials': 0, 'processes': 0}
  for result in results:
    phases = (result.summary or {}).get('phases_s')
    if result.skipped or not phases:
      continue
    totals['trials'] += 1
    totals['processes'] += phases.get('startup_s', 0) > 0
    for key, value in phases.items():
      totals[key] = totals.get(key, 0.0) + value
  return totals


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
  running. Options: those of run_sweeps.
  """
  return run_sweeps([(trials, sweep_dir)], **options)[0]


def run_sweeps(sweeps, *, parallel: int = 1, python: str = sys.executable,
               timeout_s: float | None = None, on_progress=None,
               fresh_process: bool = False,
               worker_module: str = WORKER_MODULE, cost=None) -> list:
  """run_sweep for several sweeps, [(trials, sweep_dir)], whose trials share
  the `parallel` trial processes: a process goes from one sweep's trial to
  the next sweep's, so a sweep smaller than `parallel` leaves no slot idle
  and no process starts per sweep. A process goes on with a trial that
  differs from its last one only in the seed when one is pending, since it
  has that trial's computations (_Pool.pick). cost(trial) -> float, if given, orders
  the pending trials of all the sweeps, the costliest first, so the last
  ones to start are short and the slots finish together (the longest-first
  rule of list scheduling); by default they run in the order given.
  on_progress counts the trials of all the sweeps. Returns run_sweep's list
  for each sweep, in order.
  """
  if parallel < 1:
    raise ValueError(f'parallel must be >= 1, got {parallel}')
  sweeps = [(trials, os.path.abspath(os.path.expanduser(sweep_dir)))
            for trials, sweep_dir in sweeps]
  for trials, sweep_dir in sweeps:
    check_resumable(trials, sweep_dir)
  total = sum(len(trials) for trials, _ in sweeps)
  results = {}

  def record(sweep_dir, result):
    result = dataclasses.replace(result, sweep_dir=sweep_dir)
    results[sweep_dir, result.name] = result
    logging.debug('trial %s: %s%s', result.name, result.status,
                  ' (done before)' if result.skipped else '')
    if on_progress:
      on_progress(len(results), total, result)

  with contextlib.ExitStack() as locks:
    pending = []
    for trials, sweep_dir in sweeps:
      locks.enter_context(rundir.DirectoryLock(sweep_dir, 'sweep'))
      os.makedirs(os.path.join(sweep_dir, LOGS), exist_ok=True)
      write_hparams_config(trials, sweep_dir)
      pending += _done_before(trials, sweep_dir, record)
    if cost is not None:
      pending.sort(key=lambda item: -cost(item[0]))  # stable among equals
    launcher = (_FreshProcesses(python, timeout_s) if fresh_process
                else _Pool(python, timeout_s, worker_module))
    _run_pending(pending, parallel, launcher, record)
  return [[results[sweep_dir, t.name] for t in trials]
          for trials, sweep_dir in sweeps]
