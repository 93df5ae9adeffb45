"""Runs the reproduction suite (E1..E7), checks determinism, writes the report.

  python -m benchmarks.reproduce --preset=quick --out=reports/quick-cpu
  python -m benchmarks.reproduce --preset=smoke --out=/tmp/smoke
  python -m benchmarks.reproduce --preset=paper --out=/out --parallel=1

  python -m benchmarks.reproduce --preset=quick --out=/tmp/q --plan

Each group of each experiment (tff_localsgd/suite.py) is a sweep under
<out>/<experiment>/<group>/<trial>/; all of them run together in --parallel
long-lived trial processes (sweep.run_sweeps), the costliest trials first
(trial_cost), so no slot idles between groups. Rerunning the same command
resumes: finished trials are skipped. Then one trial is rerun in a fresh
process to check that its final weights are bit-identical, and
<out>/REPORT.md is written (benchmarks.report). suite.json records the
suite's wall time, its core-seconds (wall time x --parallel: what it held)
and CPU seconds (user + system of the trial processes and their TFF
workers, getrusage(RUSAGE_CHILDREN)), and per experiment its trials'
seconds (trial_s) and their seconds by phase (phases_s).

--plan runs nothing of the suite: it trains one short run per width (E1's
setting, PLAN_ROUNDS rounds, the last one with diagnostics) under
<out>/plan/, and prints every group's trials and rounds with an estimated
time from the run's phases_s: per trial, its fixed cost (data, theory,
tracing, engine) plus its rounds times the measured round time at its
width, the work part scaled by its example gradients per round and its
depth (a round's work is K n_i m^2 per m x m layer), plus its diagnostic
rounds likewise (estimate_s); and once, the start of the trial processes.
"""

import dataclasses
import functools
import json
import os
import resource
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
from tff_localsgd import suite as suite_lib
from tff_localsgd import sweep
from tff_localsgd import provenance
from tff_localsgd.analysis import report

flags.DEFINE_enum('preset', 'quick', suite_lib.PRESETS, 'suite size')
flags.DEFINE_string('out', None, 'suite directory (results and REPORT.md)')
flags.DEFINE_integer('parallel', 2, 'trials run at once')
flags.DEFINE_list('experiments', [], 'run only these (e.g. E1_width); '
                  'default all')
flags.DEFINE_float('trial_timeout_s', 3600, 'a trial running longer fails')
flags.DEFINE_bool('plan', False, 'print the trials, their rounds and an '
                  'estimated time (one short measured run per width), and '
                  'exit without running the suite')
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class RoundCost:
  """What one short run at a width measured (--plan), from its summary's
  phases_s and metrics.csv: startup_s, the trial process's start (TF and
  TFF imports), paid once per trial process; round_s, the median plain
  round; diag_s, the diagnostic
  round's extra; fixed_s, the rest of the trial (data, theory, tracing,
  engine, first calls); work, example gradients per round times the number
  of m x m layers."""
  width: int
  startup_s: float
  fixed_s: float
  round_s: float
  diag_s: float
  work: float


def _work(config: dict) -> float:
  """Example gradients per round (equal client shares) times the depth."""
  cfg = config_lib.ExperimentConfig.from_dict(config)
  sizes = [max(1, cfg.num_examples // cfg.num_clients)] * cfg.cohort_size
  return cfg.examples_per_round(sizes) * max(1, cfg.depth)


def measure_width(out: str, base: dict, width: int) -> RoundCost:
  """Trains E1's setting at `width` for PLAN_ROUNDS rounds, the last with
  diagnostics, under <out>/plan/, and reads its phases back."""
  config = dict(base, width=width, rounds=PLAN_ROUNDS, diag_every=PLAN_ROUNDS,
                seed=0)
  root = os.path.join(out, 'plan')
  args = [f'--{k}={sweep.flag_value(v)}' for k, v in config.items()]
  subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                  f'--root_dir={root}', f'--experiment=width-{width}',
                  '--overwrite'], cwd=REPO, check=True, capture_output=True)
  run = os.path.join(root, f'width-{width}')
  phases = recorders.read_json(os.path.join(run, 'summary.json'))['phases_s']
  rows = recorders.read_metrics(os.path.join(run, 'metrics.csv'))
  # The median plain round, not rounds_s / PLAN_ROUNDS: the first call of a
  # computation pays its one-time cost, which counts as fixed here. So do
  # evaluation and writing, which in 3 rounds are mostly first calls: a
  # trial of many rounds is underestimated by their per-round part
  # (measured in the quick suite: ~0.06 s a round at m = 1024).
  plain = sorted(float(r['system_round_time_s']) for r in rows
                 if r.get('system_round_time_s') and
                 not r.get('system_diag_time_s'))
  round_s = plain[len(plain) // 2]
  diag_s = phases['diagnostics_s']
  in_trial = sum(v for k, v in phases.items() if k != 'startup_s')
  return RoundCost(width, startup_s=phases['startup_s'],
                   fixed_s=max(0.0, in_trial - PLAN_ROUNDS * round_s - diag_s),
                   round_s=round_s, diag_s=diag_s, work=_work(config))


def estimate_s(config: dict, costs: dict) -> float:
  """A trial's estimated seconds from the cost measured at the nearest width.

  A round costs o + w: o the per-round overhead of the runtime (taken as the
  smallest measured round, where the work is negligible) and w the work,
  scaled by the trial's work over the measured one's times (m / m0)^2.
  """
  width = config['width']
  cost = costs[min(costs, key=lambda m: abs(m - width))]
  overhead = min(c.round_s for c in costs.values())
  scale = _work(config) / cost.work * (width / cost.width) ** 2
  round_s = overhead + scale * max(0.0, cost.round_s - overhead)
  rounds = config['rounds']
  diags = rounds // config['diag_every'] if config['diag_every'] else 0
  return cost.fixed_s + rounds * round_s + diags * scale * cost.diag_s


def print_plan(steps, costs, parallel: int):
  """Every group's trials, rounds and estimated time; the suite's total,
  with the `parallel` trial processes paying the startup once."""
  startup = max(c.startup_s for c in costs.values())
  total = startup * parallel
  for spec, label, trials in steps:
    configs = [sweep.trial_config(t) for t in trials]
    seconds = sum(estimate_s(c, costs) for c in configs)
    total += seconds
    rounds = sorted({c['rounds'] for c in configs})
    widths = sorted({c['width'] for c in configs})
    print(f'{spec.name}/{label}: {len(trials)} trials, rounds {rounds}, '
          f'widths {widths}: ~{seconds:.0f} trial-seconds')
  for cost in costs.values():
    print(f'measured at m={cost.width}: process start {cost.startup_s:.1f} '
          f's, fixed {cost.fixed_s:.1f} s, round {cost.round_s:.3f} s, '
          f'diagnostic round +{cost.diag_s:.3f} s')
  print(f'total ~{total:.0f} trial-seconds; ~{total / parallel / 60:.1f} '
        f'min of wall time at --parallel={parallel}')


def plan_costs(out, preset, steps) -> dict:
  """{width: RoundCost} for every width the planned trials use."""
  base = suite_lib.suite(preset)[0].groups()[0][1]
  widths = sorted({sweep.trial_config(t)['width'] for _, _, trials in steps
                   for t in trials})
  return {m: measure_width(out, base, m) for m in widths}


# A round's fixed cost in units of its work (K n_i m^2 per m x m layer):
# measured on the in-process engine at the quick sizes, ~5 ms against
# ~9e-11 s per unit (m = 2048, K = 5, n = 64: 0.12 s a round).
ROUND_OVERHEAD_WORK = 5.6e7


def trial_cost(trial) -> float:
  """A trial's relative cost, to start the costliest first (run_sweeps):
  its rounds times (the fixed cost of a round + its work x m^2)."""
  config = sweep.trial_config(trial)
  work = _work(config) * config['width'] ** 2
  return config['rounds'] * (ROUND_OVERHEAD_WORK + work)


def _progress(out, start, finished, total, result):
  elapsed = time.monotonic() - start
  name = os.path.relpath(os.path.join(result.sweep_dir, result.name), out)
  logging.info('[%d/%d] %s: %s  (%.0f s elapsed, ETA %.0f s)', finished,
               total, name, result.status, elapsed,
               elapsed / finished * (total - finished))


def _core_s() -> float:
  """User + system CPU seconds of this process's finished descendants."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_suite(out, steps, suite_info):
  """Runs every group's sweep in one set of --parallel trial processes,
  the costliest trials first; records the suite's wall time, core-seconds
  (wall x --parallel, what the suite held) and CPU seconds, and per
  experiment the trials' seconds (trial_s) and their seconds by phase
  (sweep.phase_totals)."""
  start, cpu = time.monotonic(), _core_s()
  every = sweep.run_sweeps(
      [(trials, os.path.join(out, spec.name, label))
       for spec, label, trials in steps],
      parallel=FLAGS.parallel, timeout_s=FLAGS.trial_timeout_s,
      on_progress=functools.partial(_progress, out, start), cost=trial_cost)
  wall = time.monotonic() - start
  suite_info.update(wall_time_s=wall, core_s=wall * FLAGS.parallel,
                    cpu_s=_core_s() - cpu)
  for (spec, _, _), results in zip(steps, every):
    trial_s = suite_info['trial_s']
    trial_s[spec.name] = trial_s.get(spec.name, 0.0) + sum(
        r.wall_time_s for r in results if not r.skipped)
    phases = suite_info['phases_s'].setdefault(spec.name, {})
    for key, value in sweep.phase_totals(results).items():
      phases[key] = phases.get(key, 0) + value
  recorders.write_json(os.path.join(out, 'suite.json'), suite_info)


def check_determinism(out, trial_dir):
  """Reruns one finished trial in a fresh process; compares weight hashes."""
  config = json.load(open(os.path.join(trial_dir, 'config.json')))
  original = json.load(open(os.path.join(trial_dir, 'summary.json')))
  rerun_root = os.path.join(out, 'determinism')
  shutil.rmtree(rerun_root, ignore_errors=True)
  args = [f'--{k}={sweep.flag_value(v)}' for k, v in config.items()
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
    steps = suite_lib.plan(FLAGS.preset, set(FLAGS.experiments))
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)
  if FLAGS.plan:
    print_plan(steps, plan_costs(out, FLAGS.preset, steps), FLAGS.parallel)
    return
  suite_info = {'preset': FLAGS.preset,
                'planned_trials': sum(len(t) for _, _, t in steps),
                'epsilon': suite_lib.epsilon(FLAGS.preset),
                'parallel': FLAGS.parallel, 'trial_s': {}, 'phases_s': {}}
  recorders.write_json(os.path.join(out, 'provenance.json'),
                       provenance.collect(REPO))
  run_suite(out, steps, suite_info)
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
