"""A sweep's TensorBoard HParams: one experiment (hparams_config) per logdir,
one session per trial.

  <trial>/events.out.tfevents.*.hparams-session
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

TensorBoard 2.14 reads the experiment from the first run it lists that holds
one ("arbitrarily pick the first one": backend_context._find_experiment_tag),
so sweeps that each write their own under one logdir lose all but one
sweep's columns. The sweeps under a logdir share one experiment at its root
instead: the union of their hparams, which each sweep reads back and
extends. TensorBoard on a single sweep directory finds none and builds the
experiment from the trials' sessions: every trial still shows.
"""

import dataclasses
import glob
import os

import tensorflow as tf
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import summary as hp_summary

from tff_localsgd import config as config_lib
from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import rundir
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import records

HPARAMS_SUFFIX = '.hparams'  # older sweeps' HParams files (SESSION_SUFFIX)
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


def session_files(directory, suffix=SESSION_SUFFIX):
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


def trial_hparams(trial: grid.Trial) -> dict:
  """Every config field that changes the trial's result, defaults filled in.

  Integers are strings: TensorBoard 2.14's dashboard prints every number with
  toPrecision(5) (its prettyPrint: width 128 shows as 128.00, seed 0 as
  0.0000), and only strings print as given.
  """
  config = dataclasses.asdict(config_lib.ExperimentConfig(
      **grid.trial_config(trial)))
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
  # Two sweeps under one root merge in turn.
  with rundir.DirectoryLock(root, 'root_dir', blocking=True):
    older = _experiments_under(root)
    values, tags = {}, list(records.FINAL_METRICS)
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


def _mtime(path):
  try:
    return os.path.getmtime(path)
  except OSError:
    return None


def write_trial_hparams(trial: grid.Trial, trial_dir: str, summary: dict,
                        root: str | None = None):
  """The trial's session in its run directory (so the dashboard joins it with
  the training scalars): its hparams, its final/* scalars, its status, and
  its real end (summary.json is written last) and start (wall_time_s before
  it; else config.json's time). Its group name is the trial's path under
  the logdir `root` (default hparams_root): the dashboard merges sessions
  that share a group, and trial names repeat across sweeps."""
  trial_dir = os.path.abspath(trial_dir)
  root = root or hparams_root(os.path.dirname(trial_dir))
  for path in (session_files(trial_dir) +
               session_files(trial_dir, HPARAMS_SUFFIX)):
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
    for tag, value in records.final_metrics(trial_dir, summary).items():
      tf.summary.scalar(tag, value, step=step)
    tf.summary.experimental.write_raw_pb(hp_summary.session_end_pb(
        status, end_time_secs=end).SerializeToString(), step=step)
  writer.close()
