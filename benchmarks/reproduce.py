"""Runs the reproduction suite (E1..E7), checks determinism, writes the report.

  python -m benchmarks.reproduce --preset=quick --out=reports/quick-cpu
  python -m benchmarks.reproduce --preset=smoke --out=/tmp/smoke
  python -m benchmarks.reproduce --preset=paper --out=/out --parallel=1

  python -m benchmarks.reproduce --preset=quick --out=/tmp/q --plan

Each group of each experiment (tff_localsgd/suite.py) is a sweep under
<out>/<experiment>/<group>/<trial>/; all of them run together in --parallel
long-lived trial processes (pool.run_sweeps), the costliest trials first
(trial_cost), so no slot idles between groups; up to --stack seeds of one
group's setting train as one stacked computation (the same bits);
--trial_threads=shared gives each trial process its share of the cores as
TensorFlow's threads (faster, bits to a tolerance; suite.json records
it). Rerunning the same command resumes: finished trials are skipped.
Then one trial is rerun in a fresh process to check that its final weights
are bit-identical, and <out>/REPORT.md is written (benchmarks.report).
suite.json records the suite's wall time, its core-seconds (wall time x
--parallel: what it held) and CPU seconds (user + system of the trial
processes and their TFF workers, getrusage(RUSAGE_CHILDREN)), and per
experiment its trials' seconds (trial_s) and their seconds by phase
(phases_s).

--plan runs nothing of the suite: it trains one short run per width and
prints every group's trials and rounds with an estimated time (the cost
model: tff_localsgd/reproduction.py).
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf  # noqa: F401  (TF at module level)

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import provenance
from tff_localsgd import recorders
from tff_localsgd import reporting
from tff_localsgd import reproduction
from tff_localsgd import suite as suite_lib
from tff_localsgd.sweep import processes

flags.DEFINE_enum('preset', 'quick', suite_lib.PRESETS, 'suite size')
flags.DEFINE_string('out', None, 'suite directory (results and REPORT.md)')
flags.DEFINE_integer('parallel', 2, 'trials run at once')
flags.DEFINE_list('studies', [], 'run only these studies (e.g. E1_width); '
                  'default all')
flags.DEFINE_float('trial_timeout_s', 3600, 'a trial running longer fails')
flag_defs.define_trial_process_flags("group's setting")
flags.DEFINE_bool('plan', False, 'print the trials, their rounds and an '
                  'estimated time (one short measured run per width), and '
                  'exit without running the suite')
FLAGS = flags.FLAGS


def main(argv):
  start = time.monotonic()
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if not FLAGS.out:
    flag_defs.exit_bad_input('--out: the suite directory is required')
  flag_defs.check_writable_dir(FLAGS.out, 'out')
  if FLAGS.parallel < 1:
    flag_defs.exit_bad_input('--parallel: must be >= 1')
  if FLAGS.stack < 1:
    flag_defs.exit_bad_input('--stack: must be >= 1')
  try:
    threads = processes.trial_threads(FLAGS.trial_threads, FLAGS.parallel)
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  known = {s.name for s in suite_lib.suite(FLAGS.preset)}
  unknown = set(FLAGS.studies) - known
  if unknown:
    flag_defs.exit_bad_input(f'--studies: unknown {sorted(unknown)}; '
                             f'one of {sorted(known)}')
  try:
    steps = suite_lib.plan(FLAGS.preset, set(FLAGS.studies))
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  out = FLAGS.out
  # Before anything is written: the budgets may rewrite a committed
  # budgets.json, which would make the tree look dirty.
  origin = provenance.collect(reproduction.REPO)
  os.makedirs(out, exist_ok=True)
  try:
    steps, found = reproduction.plan_budgets(out, steps)
    if FLAGS.plan:
      print('\n'.join(reproduction.plan_lines(
          steps, reproduction.plan_costs(out, FLAGS.preset, steps),
          FLAGS.parallel, found, int(
              diagnostic_process.LOCKSTEP_MEMORY_FRACTION *
              diagnostic_process.physical_memory()))))
      return
  except (config_lib.ConfigError, reproduction.PlanError) as e:
    flag_defs.exit_bad_input(str(e))
  suite_info = {'preset': FLAGS.preset,
                'planned_trials': sum(len(t) for _, _, t in steps),
                'epsilon': suite_lib.epsilon(FLAGS.preset),
                'parallel': FLAGS.parallel, 'stack': FLAGS.stack,
                'trial_threads': threads or processes.ALL_THREADS,
                'trial_s': {}, 'phases_s': {}}
  recorders.write_json(os.path.join(out, 'provenance.json'), origin)
  reproduction.run_suite(out, steps, suite_info, FLAGS.parallel,
                         FLAGS.trial_timeout_s, FLAGS.stack, threads)
  result = reproduction.check_widest(out, FLAGS.preset, steps, threads)
  if result:
    logging.info('determinism: %s', 'bit-identical' if result['identical']
                 else 'DIFFERENT')
  reproduction.record_binary_wall(out, time.monotonic() - start)
  results = reporting.write_report(out)
  print(f'{os.path.join(out, "REPORT.md")}: ' + ', '.join(
      f'{c["id"]} {c["verdict"]}' for c in results['claims']))


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
