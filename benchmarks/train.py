"""Trains one Local SGD experiment on TFF and records it.

  python -m benchmarks.train --width=2048 --rounds=30 --experiment=wide
  python -m benchmarks.train --flagfile=benchmarks/configs/quick.cfg

Writes <root_dir>/<experiment>/: TensorBoard events, metrics.csv,
config.json, summary.json (see tff_localsgd/training.py).
"""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf  # noqa: F401  (TF at module level; see README)

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import training

flag_defs.define_config_flags()
flags.DEFINE_bool('overwrite', False,
                  'replace an existing <root_dir>/<experiment>/ directory')


def _stop_on_sigterm(signum, frame):
  # SystemExit unwinds through the run's finally blocks: the summary is
  # written and the TFF worker stopped.
  sys.exit(128 + signum)


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  config = flag_defs.config_from_flags()
  try:
    experiment = training.Experiment.prepare(config)
    out = training.run_dir(config)
    if os.path.exists(out) and os.listdir(out) and not flags.FLAGS.overwrite:
      raise config_lib.ConfigError(
          'experiment', f'{out} exists; choose another --experiment or pass '
          '--overwrite')
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  except data_lib.DataUnavailableError as e:
    flag_defs.exit_bad_input(str(e))
  if flags.FLAGS.overwrite and os.path.isdir(out):
    import shutil
    shutil.rmtree(out)
  summary = training.run(experiment)
  logging.info('%s: %s after %d rounds, train/loss %s, %.1f s; results in %s',
               config.experiment, summary['status'],
               summary['rounds_completed'],
               summary['final'].get('train/loss'), summary['wall_time_s'], out)
  return 0 if summary['status'] == 'completed' else 3


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
