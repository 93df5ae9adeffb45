"""Trains one Local SGD experiment on TFF and records it.

  python -m benchmarks.train --width=2048 --rounds=30 --experiment=wide
  python -m benchmarks.train --flagfile=benchmarks/configs/wide_mlp.cfg

Writes <root_dir>/<experiment>/: TensorBoard events, metrics.csv,
config.json, summary.json, checkpoints/ (see tff_localsgd/rundir.py).
A second process on the same directory exits 2 naming the first one's pid.
Rerunning the same command resumes from the last checkpoint; SIGINT or
SIGTERM stops after the current round with a checkpoint.
"""

import threading

from absl import app
from absl import flags
import tensorflow as tf  # noqa: F401  (TF at module level)

from benchmarks import flags as flag_defs
from tff_localsgd import driver

flag_defs.define_config_flags()
flags.DEFINE_bool('overwrite', False,
                  'replace an existing <root_dir>/<experiment>/ directory '
                  'instead of resuming it')


def main(argv):
  startup_s = driver.process_age_s()
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  stop = threading.Event()
  driver.stop_on_signals(stop)
  config = flag_defs.config_from_flags()
  flag_defs.check_writable_dir(config.root_dir, 'root_dir')
  try:
    outcome = driver.train(config, overwrite=flags.FLAGS.overwrite,
                            stop=stop, startup_s=startup_s)
  except driver.BadInput as e:
    flag_defs.exit_bad_input(str(e))
  return outcome.exit_code


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
