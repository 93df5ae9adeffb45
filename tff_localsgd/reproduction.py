"""The reproduction suite's machinery beside its plan (suite.py): running
every group's sweep in one pool of trial processes, the costliest first
(trial_cost), the determinism check, and --plan's cost model (estimate_s,
from one short measured run per width). benchmarks.reproduce is its binary.

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
import os
import resource
import shutil
import subprocess
import sys
import time

from absl import logging

from tff_localsgd import config as config_lib
from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import results
from tff_localsgd import rundir
from tff_localsgd import suite as suite_lib
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import pool
from tff_localsgd.sweep import records

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
  args = [f'--{k}={grid.flag_value(v)}' for k, v in config.items()]
  subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                  f'--root_dir={root}', f'--experiment=width-{width}',
                  '--overwrite'], cwd=REPO, check=True, capture_output=True)
  run = rundir.RunDir(path=os.path.join(root, f'width-{width}'))
  phases = run.read_summary()['phases_s']
  rows = run.read_rows()
  round_column = metrics.column(results.TIMING_PREFIX + 'round_time_s')
  diag_column = metrics.column(results.TIMING_PREFIX + 'diag_time_s')
  # The median plain round, not rounds_s / PLAN_ROUNDS: the first call of a
  # computation pays its one-time cost, which counts as fixed here. So do
  # evaluation and writing, which in 3 rounds are mostly first calls: a
  # trial of many rounds is underestimated by their per-round part
  # (measured in the quick suite: ~0.06 s a round at m = 1024).
  plain = sorted(r[round_column] for r in rows
                 if r.get(round_column) is not None and
                 r.get(diag_column) is None)
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


def plan_lines(steps, costs, parallel: int) -> list:
  """Every group's trials, rounds and estimated time; the suite's total,
  with the `parallel` trial processes paying the startup once."""
  startup = max(c.startup_s for c in costs.values())
  total = startup * parallel
  lines = []
  for spec, label, trials in steps:
    configs = [grid.trial_config(t) for t in trials]
    seconds = sum(estimate_s(c, costs) for c in configs)
    total += seconds
    rounds = sorted({c['rounds'] for c in configs})
    widths = sorted({c['width'] for c in configs})
    lines.append(f'{spec.name}/{label}: {len(trials)} trials, rounds '
                 f'{rounds}, widths {widths}: ~{seconds:.0f} trial-seconds')
  for cost in costs.values():
    lines.append(f'measured at m={cost.width}: process start '
                 f'{cost.startup_s:.1f} s, fixed {cost.fixed_s:.1f} s, round '
                 f'{cost.round_s:.3f} s, diagnostic round '
                 f'+{cost.diag_s:.3f} s')
  lines.append(f'total ~{total:.0f} trial-seconds; '
               f'~{total / parallel / 60:.1f} min of wall time at '
               f'--parallel={parallel}')
  return lines


def plan_costs(out, preset, steps) -> dict:
  """{width: RoundCost} for every width the planned trials use."""
  base = suite_lib.suite(preset)[0].groups()[0][1]
  widths = sorted({grid.trial_config(t)['width'] for _, _, trials in steps
                   for t in trials})
  return {m: measure_width(out, base, m) for m in widths}


# A round's fixed cost in units of its work (K n_i m^2 per m x m layer):
# measured on the in-process engine at the quick sizes, ~5 ms against
# ~9e-11 s per unit (m = 2048, K = 5, n = 64: 0.12 s a round).
ROUND_OVERHEAD_WORK = 5.6e7


def trial_cost(trial) -> float:
  """A trial's relative cost, to start the costliest first (run_sweeps):
  its rounds times (the fixed cost of a round + its work x m^2)."""
  config = grid.trial_config(trial)
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


def run_suite(out, steps, suite_info, parallel: int, timeout_s: float):
  """Runs every group's sweep in one set of --parallel trial processes,
  the costliest trials first; records the suite's wall time, core-seconds
  (wall x --parallel, what the suite held) and CPU seconds, and per
  experiment the trials' seconds (trial_s) and their seconds by phase
  (records.phase_totals)."""
  start, cpu = time.monotonic(), _core_s()
  every = pool.run_sweeps(
      [(trials, os.path.join(out, spec.name, label))
       for spec, label, trials in steps],
      parallel=parallel, timeout_s=timeout_s,
      on_progress=functools.partial(_progress, out, start), cost=trial_cost)
  wall = time.monotonic() - start
  suite_info.update(wall_time_s=wall, core_s=wall * parallel,
                    cpu_s=_core_s() - cpu)
  for (spec, _, _), trial_results in zip(steps, every):
    trial_s = suite_info['trial_s']
    trial_s[spec.name] = trial_s.get(spec.name, 0.0) + sum(
        r.wall_time_s for r in trial_results if not r.skipped)
    phases = suite_info['phases_s'].setdefault(spec.name, {})
    for key, value in records.phase_totals(trial_results).items():
      phases[key] = phases.get(key, 0) + value
  recorders.write_json(os.path.join(out, 'suite.json'), suite_info)


def check_determinism(out, trial_dir):
  """Reruns one finished trial in a fresh process; compares weight hashes."""
  trial = rundir.RunDir(path=trial_dir)
  config, original = trial.read_config(), trial.read_summary()
  rerun_root = os.path.join(out, 'determinism')
  shutil.rmtree(rerun_root, ignore_errors=True)
  args = [f'--{k}={grid.flag_value(v)}' for k, v in config.items()
          if k not in ('root_dir', 'experiment')]
  subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                  f'--root_dir={rerun_root}', '--experiment=rerun'],
                 cwd=REPO, check=True, capture_output=True)
  rerun = rundir.RunDir(path=os.path.join(rerun_root, 'rerun')).read_summary()
  result = {'trial': os.path.relpath(trial_dir, out),
            'original_sha256': original.get('final_weights_sha256'),
            'rerun_sha256': rerun.get('final_weights_sha256')}
  result['identical'] = result['original_sha256'] == result['rerun_sha256']
  recorders.write_json(os.path.join(out, 'determinism.json'), result)
  return result


def check_widest(out, preset, steps):
  """check_determinism of the last trial of the preset's first experiment
  (E1's widest), if the suite ran it and it wrote a summary; else None."""
  first = suite_lib.suite(preset)[0].name
  ran = [(spec, label, trials) for spec, label, trials in steps
         if spec.name == first]
  if not ran:
    return None
  spec, label, trials = ran[0]
  widest = rundir.RunDir(path=os.path.join(out, spec.name, label,
                                           trials[-1].name))
  if widest.read_summary() is None:
    return None
  return check_determinism(out, widest.path)
