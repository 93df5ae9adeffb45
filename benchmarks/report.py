"""Writes the reproducibility report of a suite directory.

  python -m benchmarks.report --runs=reports/quick-cpu

Reads the trials under --runs (see tff_localsgd/analysis/runs.py) and writes
REPORT.md, the PNG figures and results.json beside them. Works on a partial
suite: missing trials are listed as not run.
"""

import os

from absl import app
from absl import flags
import tensorflow as tf  # noqa: F401  (TF at module level; see README)

from benchmarks import flags as flag_defs
from tff_localsgd.analysis import report

flags.DEFINE_string('runs', None, 'a suite directory written by '
                    'benchmarks.reproduce')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if not FLAGS.runs or not os.path.isdir(FLAGS.runs):
    flag_defs.exit_bad_input(f'--runs: {FLAGS.runs!r} is not a directory')
  results = report.generate(FLAGS.runs)
  verdicts = [f'{c["id"]} {c["verdict"]}' for c in results['claims']]
  print(f'{os.path.join(FLAGS.runs, "REPORT.md")}: ' + ', '.join(verdicts))


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
