"""Writes the reproducibility report of a suite directory.

  python -m benchmarks.report --runs=reports/quick-cpu

Reads the trials under --runs (see tff_localsgd/analysis/runs.py) and writes
REPORT.md, the PNG figures and results.json beside them. Works on a partial
suite: missing trials are listed as not run. Exits 2 and writes nothing when
--runs holds no trial (a fresh clone's reports/ hold only the report), or
fewer trials than its results.json reports, unless --overwrite.

Needs numpy, scipy and matplotlib, not TensorFlow: without it the report's
TensorBoard summaries are skipped, with one line saying so.
"""

import os

from absl import app
from absl import flags

from benchmarks import flags as flag_defs
from tff_localsgd import recorders
from tff_localsgd import reporting
from tff_localsgd.analysis import runs as runs_lib

flags.DEFINE_string('runs', None, 'a suite directory written by '
                    'benchmarks.reproduce')
flags.DEFINE_bool('overwrite', False, 'replace a report of more trials than '
                  '--runs holds')
FLAGS = flags.FLAGS


def _check_trials(runs_dir: str):
  """Exits 2 unless the report would cover at least what the old one did."""
  found = len(runs_lib.load_runs(runs_dir))
  if not found:
    flag_defs.exit_bad_input(f'--runs: {runs_dir} holds no trial (no '
                             '<experiment>/<group>/<trial>/trial.json)')
  results = os.path.join(runs_dir, 'results.json')
  reported = len((recorders.read_json(results) or {}).get('trials') or ())
  if reported > found and not FLAGS.overwrite:
    flag_defs.exit_bad_input(
        f'--runs: {results} reports {reported} trials, {runs_dir} holds '
        f'{found}; pass --overwrite to replace it')


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if not FLAGS.runs or not os.path.isdir(FLAGS.runs):
    flag_defs.exit_bad_input(f'--runs: {FLAGS.runs!r} is not a directory')
  _check_trials(FLAGS.runs)
  flag_defs.check_writable_dir(FLAGS.runs, 'runs')
  results = reporting.write_report(FLAGS.runs)
  verdicts = [f'{c["id"]} {c["verdict"]}' for c in results['claims']]
  print(f'{os.path.join(FLAGS.runs, "REPORT.md")}: ' + ', '.join(verdicts))


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
