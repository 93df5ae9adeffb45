"""Runs the reproduction suite (E1..E7), checks determinism, writes the report.

  python -m benchmarks.reproduce --preset=quick --out=reports/quick-cpu
  python -m benchmarks.reproduce --preset=smoke --out=/tmp/smoke
  python -m benchmarks.reproduce --preset=paper --out=/out --parallel=1

Each experiment is a sweep (tff_localsgd/suite.py) whose
trials run as `benchmarks.train` subprocesses under
<out>/<experiment>/<group>/<trial>/. Rerunning the same command resumes:
finished trials are skipped. Then one trial is rerun in a fresh process to
check that its final weights are bit-identical, and <out>/REPORT.md is
written (benchmarks.report).
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf  # noqa: F401  (TF at module level; see README)

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd import sweep
from tff_localsgd import suite as suite_lib
from tff_localsgd.analysis import provenance
from tff_localsgd.analysis import report

flags.DEFINE_enum('preset', 'quick', suite_lib.PRESETS, 'suite size')
flags.DEFINE_string('out', None, 'suite directory (results and REPORT.md)')
flags.DEFINE_integer('parallel', 2, 'trials run at once')
flags.DEFINE_list('experiments', [], 'run only these (e.g. E1_width); '
                  'default all')
flags.DEFINE_float('trial_timeout_s', 3600, 'a trial running longer fails')
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan(preset, only):
  """[(experiment spec, group label, trials)], validated before any run."""
  out = []
  for spec in suite_lib.suite(preset):
    if only and spec.name not in only:
      continue
    for label, base in spec.groups():
      grid = {k: [str(v) for v in values] for k, values in spec.grid.items()}
      trials = sweep.expand_grid(grid, list(range(spec.seeds)),
                                 {k: str(v) for k, v in base.items()})
      out.append((spec, label, trials))
  return out


def check_determinism(out, trial_dir):
  """Reruns one finished trial in a fresh process; compares weight hashes."""
  config = json.load(open(os.path.join(trial_dir, 'config.json')))
  original = json.load(open(os.path.join(trial_dir, 'summary.json')))
  rerun_root = os.path.join(out, 'determinism')
  shutil.rmtree(rerun_root, ignore_errors=True)
  args = [f'--{k}={v}' for k, v in config.items()
          if k not in ('root_dir', 'experiment')]
  subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                  f'--root_dir={rerun_root}', '--experiment=rerun'],
                 cwd=REPO, check=True, capture_output=True)
  rerun = json.load(open(os.path.join(rerun_root, 'rerun', 'summary.json')))
  result = {'trial': os.path.relpath(trial_dir, out),
            'original_sha256': original.get('final_weights_sha256'),
            'rerun_sha256': rerun.get('final_weights_sha256')}
  result['identical'] = result['original_sha256'] == result['rerun_sha256']
  recorders.write_json(os.path.join(out, 'determinism.json'), result)
  return result


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if not FLAGS.out:
    flag_defs.exit_bad_input('--out: the suite directory is required')
  flag_defs.check_writable_dir(FLAGS.out, 'out')
  if FLAGS.parallel < 1:
    flag_defs.exit_bad_input('--parallel: must be >= 1')
  known = {s.name for s in suite_lib.suite(FLAGS.preset)}
  unknown = set(FLAGS.experiments) - known
  if unknown:
    flag_defs.exit_bad_input(f'--experiments: unknown {sorted(unknown)}; '
                             f'one of {sorted(known)}')
  try:
    steps = plan(FLAGS.preset, set(FLAGS.experiments))
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)
  total = sum(len(trials) for _, _, trials in steps)
  suite_info = {'preset': FLAGS.preset, 'planned_trials': total,
                'epsilon': suite_lib.epsilon(FLAGS.preset),
                'wall_time_s': {}, 'parallel': FLAGS.parallel}
  recorders.write_json(os.path.join(out, 'provenance.json'),
                       provenance.collect(REPO))
  start, done = time.monotonic(), 0
  for spec, label, trials in steps:
    tick = time.monotonic()

    def progress(finished, _, result, offset=done):
      elapsed = time.monotonic() - start
      n = offset + finished
      logging.info('[%d/%d] %s/%s/%s: %s  (%.0f s elapsed, ETA %.0f s)', n,
                   total, spec.name, label, result.name, result.status,
                   elapsed, elapsed / n * (total - n))

    sweep.run_sweep(trials, os.path.join(out, spec.name, label),
                    parallel=FLAGS.parallel, timeout_s=FLAGS.trial_timeout_s,
                    on_progress=progress)
    done += len(trials)
    suite_info['wall_time_s'][spec.name] = (
        suite_info['wall_time_s'].get(spec.name, 0.0) + time.monotonic() - tick)
    recorders.write_json(os.path.join(out, 'suite.json'), suite_info)
  e1 = [(spec, label, trials) for spec, label, trials in steps
        if spec.name == 'E1_width']
  if e1:
    spec, label, trials = e1[0]
    widest = os.path.join(out, spec.name, label, trials[-1].name)
    if os.path.exists(os.path.join(widest, 'summary.json')):
      result = check_determinism(out, widest)
      logging.info('determinism: %s', 'bit-identical' if result['identical']
                   else 'DIFFERENT')
  results = report.generate(out)
  print(f'{os.path.join(out, "REPORT.md")}: ' + ', '.join(
      f'{c["id"]} {c["verdict"]}' for c in results['claims']))


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
