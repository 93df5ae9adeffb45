"""The reproduction suite's machinery beside its plan (suite.py): each
trial's budget from its prediction (budgets.py, cached in budgets.json),
running every group's sweep in one pool of trial processes, the costliest
first (trial_cost), the determinism check, and --plan's cost model.
benchmarks.reproduce is its binary.

--plan runs nothing of the suite: it builds every trial up to its
prediction (T_pred, the budget ceil(2 T_pred), its peak memory and FLOPs),
trains one short run per width up to MEASURED_MAX_WIDTH (E1's setting,
PLAN_ROUNDS rounds, the last one with diagnostics) under <out>/plan/, and
prints every trial with an estimated time here from the run's phases_s:
its fixed cost (data, theory, tracing, engine) plus its rounds times the
measured round time at the nearest width, the work part scaled by its
example gradients per round, its depth and (m / m_0)^2 (a round's work is
K n_i m^2 per m x m layer), plus its diagnostic rounds likewise
(estimate_s); and a FLOP lower bound on the stated GPU (budgets.py).
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
import numpy as np

from tff_localsgd import budgets
from tff_localsgd import config as config_lib
from tff_localsgd import metrics
from tff_localsgd import recorders
from tff_localsgd import results
from tff_localsgd import rundir
from tff_localsgd import suite as suite_lib
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import pool
from tff_localsgd.sweep import processes
from tff_localsgd.sweep import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_ROUNDS = 3
# --plan measures widths up to this one on the machine at hand; wider
# trials are scaled from it (a 3-round run at m = 16384 would take the
# plan longer than the estimate it serves).
MEASURED_MAX_WIDTH = 2048
BUDGETS_JSON = 'budgets.json'


class PlanError(RuntimeError):
  """A measuring run of --plan failed: the message names it and why."""


def plan_budgets(out, steps) -> tuple:
  """(steps with budgets.assign's rounds, {'study/group/trial': Budget}),
  reusing and rewriting <out>/budgets.json."""
  path = os.path.join(out, BUDGETS_JSON)
  save = functools.partial(_write_budgets, path)
  planned, found = budgets.assign(steps, recorders.read_json(path), save)
  save(found)
  return planned, {k: b for k, (_, b) in found.items()}


def _write_budgets(path, found):
  recorders.write_json(path, {k: (sig, b.to_dict())
                              for k, (sig, b) in found.items()})


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


def steady_round_s(rows) -> float:
  """The median time of the plain rounds after round 1 (metrics rows).

  Round 1 is the first call of the round's computation, which pays its
  one-time cost (counted as fixed by measure_width); a diagnostic round is
  timed apart. Evaluation and writing, in a few rounds mostly first calls,
  count as fixed too: a trial of many rounds is underestimated by their
  per-round part (measured in the quick suite: ~0.06 s a round at m = 1024).
  """
  round_column = metrics.column(results.TIMING_PREFIX + 'round_time_s')
  diag_column = metrics.column(results.TIMING_PREFIX + 'diag_time_s')
  plain = [r[round_column] for r in rows
           if r['round'] >= 2 and r.get(round_column) is not None and
           r.get(diag_column) is None]
  if not plain:
    raise PlanError('a measuring run recorded no plain round after round 1')
  return float(np.median(plain))


def measure_width(out: str, base: dict, width: int) -> RoundCost:
  """Trains E1's setting at `width` for PLAN_ROUNDS rounds, the last with
  diagnostics, under <out>/plan/, and reads its phases back."""
  config = dict(base, width=width, rounds=PLAN_ROUNDS, diag_every=PLAN_ROUNDS,
                seed=0)
  root = os.path.join(out, 'plan')
  args = [f'--{k}={grid.flag_value(v)}' for k, v in config.items()]
  done = subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                         f'--root_dir={root}', f'--experiment=width-{width}',
                         '--overwrite'], cwd=REPO, capture_output=True,
                        text=True)
  if done.returncode:
    last = (done.stderr.strip().splitlines() or ['no output'])[-1]
    raise PlanError(f'the measuring run at m={width} (E1\'s setting) exited '
                    f'{done.returncode}: {last}')
  run = rundir.RunDir(path=os.path.join(root, f'width-{width}'))
  phases = run.read_summary()['phases_s']
  round_s = steady_round_s(run.read_rows())
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


def _trial_line(name, config, b, costs, machine_bytes) -> tuple:
  """(line, seconds here or None, GPU seconds) of one planned trial."""
  rounds = (f'T_pred {b.t_pred:.1f}, rounds {b.rounds}' if b.from_prediction
            else f'rounds {b.rounds} ({b.why})')
  where = b.footprint.where(machine_bytes)
  here = estimate_s(config, costs) if where == 'here' else None
  fits = {'here': 'fits here', 'gpu': f'needs the {budgets.GPU_NAME}',
          'nowhere': 'FITS NOWHERE'}[where]
  return (f'  {name}: {rounds}; peak {b.footprint.peak_bytes / 2**30:.1f} '
          f'GB ({fits}); ' + (f'~{here:.0f} s here' if here is not None
                              else 'not run here') +
          f', >= {b.footprint.gpu_seconds():.1f} s on the GPU',
          here, b.footprint.gpu_seconds())


def plan_lines(steps, costs, parallel: int, found, machine_bytes) -> list:
  """Every trial's T_pred, budget, peak memory, where it fits and its
  estimated time here and on the stated GPU; the suite's totals, with the
  `parallel` trial processes paying the startup once."""
  startup = max(c.startup_s for c in costs.values())
  here_s, gpu_s, elsewhere, lines = startup * parallel, 0.0, 0, []
  for spec, label, trials in steps:
    lines.append(f'{spec.name}/{label}: {len(trials)} trials')
    for trial in trials:
      key = f'{spec.name}/{label}/{trial.name}'
      line, here, gpu = _trial_line(key, grid.trial_config(trial),
                                    found[key], costs, machine_bytes)
      lines.append(line)
      gpu_s += gpu
      if here is None:
        elsewhere += 1
      else:
        here_s += here
  for cost in costs.values():
    lines.append(f'measured at m={cost.width}: process start '
               f'{cost.startup_s:.1f} s, fixed {cost.fixed_s:.1f} s, round '
               f'{cost.round_s:.3f} s, diagnostic round +{cost.diag_s:.3f} s')
  lines.append(f'here: ~{here_s:.0f} trial-seconds, ~{here_s / parallel / 60:.1f}'
               f' min of wall time at --parallel={parallel}' +
               (f'; {elsewhere} trials do not fit this machine\'s '
                f'{machine_bytes / 2**30:.0f} GB' if elsewhere else ''))
  lines.append(f'on one {budgets.GPU_NAME}: >= {gpu_s / 60:.1f} min of '
               f'floating-point work at its float32 peak (a lower bound: the '
               'suite\'s small matmuls run far below peak)')
  if any(b.footprint.where(budgets.GPU_BYTES) == 'nowhere'
         for b in found.values()):
    lines.append('ERROR: some trials fit nowhere (FITS NOWHERE above)')
  return lines


def plan_costs(out, preset, steps) -> dict:
  """{width: RoundCost} for every width the planned trials use up to
  MEASURED_MAX_WIDTH (and at least the narrowest)."""
  base = suite_lib.suite(preset)[0].groups()[0][1]
  widths = sorted({grid.trial_config(t)['width'] for _, _, trials in steps
                   for t in trials})
  measured = [m for m in widths if m <= MEASURED_MAX_WIDTH] or widths[:1]
  return {m: measure_width(out, base, m) for m in measured}


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


def run_suite(out, steps, suite_info, parallel: int, timeout_s: float,
              stack: int = 1, threads: int | None = None):
  """Runs every group's sweep in one set of --parallel trial processes,
  the costliest trials first, up to `stack` seed siblings as one stacked
  computation, with `threads` TensorFlow threads each (pool.run_sweeps);
  records the suite's wall time, core-seconds
  (wall x --parallel, what the suite held) and CPU seconds, and per
  experiment the trials' seconds (trial_s) and their seconds by phase
  (records.phase_totals)."""
  start, cpu = time.monotonic(), _core_s()
  every = pool.run_sweeps(
      [(trials, os.path.join(out, spec.name, label))
       for spec, label, trials in steps],
      parallel=parallel, timeout_s=timeout_s,
      on_progress=functools.partial(_progress, out, start), cost=trial_cost,
      stack=stack, threads=threads)
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


def record_binary_wall(out, seconds: float):
  """suite.json's binary_wall_s: the reproduce binary's wall time up to its
  report (budgets, trials, determinism rerun), the user's wait."""
  path = os.path.join(out, 'suite.json')
  info = recorders.read_json(path) or {}
  recorders.write_json(path, {**info, 'binary_wall_s': seconds})


def check_determinism(out, trial_dir, threads: int | None = None):
  """Reruns one finished trial in a fresh process, with the suite's
  TensorFlow threads (processes.thread_env); compares weight hashes."""
  trial = rundir.RunDir(path=trial_dir)
  config, original = trial.read_config(), trial.read_summary()
  rerun_root = os.path.join(out, 'determinism')
  shutil.rmtree(rerun_root, ignore_errors=True)
  args = [f'--{k}={grid.flag_value(v)}' for k, v in config.items()
          if k not in ('root_dir', 'experiment')]
  subprocess.run([sys.executable, '-m', 'benchmarks.train', *args,
                  f'--root_dir={rerun_root}', '--experiment=rerun'],
                 cwd=REPO, check=True, capture_output=True,
                 env=processes.thread_env(threads))
  rerun = rundir.RunDir(path=os.path.join(rerun_root, 'rerun')).read_summary()
  result = {'trial': os.path.relpath(trial_dir, out),
            'original_sha256': original.get('final_weights_sha256'),
            'rerun_sha256': rerun.get('final_weights_sha256')}
  result['identical'] = result['original_sha256'] == result['rerun_sha256']
  recorders.write_json(os.path.join(out, 'determinism.json'), result)
  return result


def check_widest(out, preset, steps, threads: int | None = None):
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
  return check_determinism(out, widest.path, threads)
