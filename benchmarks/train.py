"""Trains one Local SGD experiment on TFF and records it.

  python -m benchmarks.train --width=2048 --rounds=30 --experiment=wide
  python -m benchmarks.train --flagfile=benchmarks/configs/wide_mlp.cfg

Writes <root_dir>/<experiment>/: TensorBoard events, metrics.csv,
config.json, summary.json, checkpoints/ (see tff_localsgd/training.py).
Rerunning the same command resumes from the last checkpoint; SIGINT or
SIGTERM stops after the current round with a checkpoint.
"""

import dataclasses
import os
import shutil
import signal
import threading

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf  # noqa: F401  (TF at module level; see README)

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import recorders
from tff_localsgd import training
from tff_localsgd.engines import remote

flag_defs.define_config_flags()
flags.DEFINE_bool('overwrite', False,
                  'replace an existing <root_dir>/<experiment>/ directory '
                  'instead of resuming it')


def _stop_gracefully(stop: threading.Event):
  """SIGINT/SIGTERM: finish the round, checkpoint, exit; a second: abort."""
  def handler(signum, frame):
    if stop.is_set():
      raise KeyboardInterrupt
    stop.set()
    logging.warning('signal %d: stopping after this round (send it again to '
                    'abort now)', signum)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, handler)


def _existing_run(out: str, config) -> str:
  """'new', 'resume' or 'completed' for the run directory `out`.

  Raises ConfigError if it holds a run of different flags: it is never
  silently overwritten.
  """
  if not (os.path.isdir(out) and os.listdir(out)):
    return 'new'
  recorded = recorders.read_json(os.path.join(out, 'config.json'))
  current = dataclasses.asdict(config)
  for field in config_lib.EXECUTION_FIELDS:
    current.pop(field)
    (recorded or {}).pop(field, None)
  if recorded != current:
    diff = sorted(k for k in set(current) | set(recorded or {})
                  if (recorded or {}).get(k) != current.get(k))
    raise config_lib.ConfigError(
        'experiment', f'{out} holds a run with other flags ({", ".join(diff) or "no config.json"}); '
        'choose another --experiment or pass --overwrite')
  summary = recorders.read_json(os.path.join(out, 'summary.json')) or {}
  return 'completed' if summary.get('status') == 'completed' else 'resume'


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  stop = threading.Event()
  _stop_gracefully(stop)
  config = flag_defs.config_from_flags()
  flag_defs.check_writable_dir(config.root_dir, 'root_dir')
  out = training.run_dir(config)
  try:
    experiment = training.Experiment.prepare(config)
    state = 'new' if flags.FLAGS.overwrite else _existing_run(out, config)
    if config.engine == 'remote':
      # Before anything is written: an unreachable worker is bad input.
      for channel in remote.check_workers(config.workers.split(',')):
        channel.close()
  except (config_lib.ConfigError, data_lib.DataUnavailableError,
          remote.WorkerUnreachableError) as e:
    flag_defs.exit_bad_input(str(e))
  if state == 'completed':
    logging.info('%s already completed; nothing to do (--overwrite reruns it)',
                 out)
    return 0
  if flags.FLAGS.overwrite:
    shutil.rmtree(out, ignore_errors=True)
  try:
    summary = training.run(experiment, stop=stop)
  except (recorders.CheckpointError, remote.WorkerUnreachableError) as e:
    flag_defs.exit_bad_input(str(e))
  logging.info('%s: %s after %d rounds, train/loss %s, %.1f s; results in %s',
               config.experiment, summary['status'],
               summary['rounds_completed'],
               summary['final'].get('train/loss'), summary['wall_time_s'], out)
  return {'completed': 0, 'diverged': 3}.get(summary['status'], 130)


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
