"""Trains one Local SGD experiment on TFF and records it.

  python -m benchmarks.train --width=2048 --rounds=30 --experiment=wide
  python -m benchmarks.train --flagfile=benchmarks/configs/wide_mlp.cfg

Writes <root_dir>/<experiment>/: TensorBoard events, metrics.csv,
config.json, summary.json, checkpoints/ (see tff_localsgd/rundir.py).
A second process on the same directory exits 2 naming the first one's pid.
Rerunning the same command resumes from the last checkpoint; SIGINT or
SIGTERM stops after the current round with a checkpoint.
"""

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
from tff_localsgd import rundir
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


def _prepare(config):
  """(Setup, RunDir locked by this process, its state), or exit 2.

  Checks everything before anything is written: flags, data, another
  process on the run directory, a run of other flags in it, the workers.
  """
  run_dir = rundir.RunDir(config)
  try:
    setup = training.Setup.prepare(config)
    if config.engine == 'remote':
      # Before anything is written: an unreachable worker is bad input.
      for channel in remote.check_workers(config.workers.split(',')):
        channel.close()
    run_dir.lock()
    state = 'new' if flags.FLAGS.overwrite else run_dir.state()
  except (config_lib.ConfigError, data_lib.DataUnavailableError,
          remote.WorkerUnreachableError) as e:
    run_dir.close()
    flag_defs.exit_bad_input(str(e))
  return setup, run_dir, state


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  stop = threading.Event()
  _stop_gracefully(stop)
  config = flag_defs.config_from_flags()
  flag_defs.check_writable_dir(config.root_dir, 'root_dir')
  setup, run_dir, state = _prepare(config)
  if state == 'completed':
    run_dir.close()
    logging.info('%s already completed; nothing to do (--overwrite reruns it)',
                 run_dir.path)
    return 0
  if flags.FLAGS.overwrite:
    run_dir.clear()
  try:
    summary = training.run(setup, stop=stop, run_dir=run_dir)
  except (recorders.CheckpointError, remote.WorkerUnreachableError) as e:
    flag_defs.exit_bad_input(str(e))
  logging.info('%s: %s after %d rounds, train/loss %s, %.1f s; results in %s',
               config.experiment, summary['status'],
               summary['rounds_completed'],
               summary['final'].get('train/loss'), summary['wall_time_s'],
               run_dir.path)
  return {'completed': 0, 'diverged': 3}.get(summary['status'], 130)


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
