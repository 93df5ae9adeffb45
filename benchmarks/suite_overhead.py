"""Where a sweep's time goes: the same sweep in long-lived trial processes and
with a fresh process per trial, side by side.

  python -m benchmarks.suite_overhead --grid=width=256,1024 --seeds=2 \\
      --parallel=2 --repeats=1

Every flag of benchmarks.train sets the trials' base config (defaults here:
the suite's synthetic setting, 4 clients of 16 examples, K = 5, 30 rounds);
--grid and --seeds as in benchmarks.sweep. Each repeat runs the sweep both
ways into a new directory under --out (the order alternates between repeats,
so a drift in the machine's load hits both) and reports per way: wall time,
core-seconds (wall x --parallel: what the sweep held), CPU seconds (the
trial processes and their TFF workers, getrusage(RUSAGE_CHILDREN)), the
trials' phases summed (summary.json's phases_s, wall seconds of each trial's
process) and the fraction of core-seconds inside rounds and diagnostics.
It also checks that both ways give every trial the same final weights.
"""

import dataclasses
import json
import os
import resource
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

import benchmarks  # noqa: F401  (the binaries' environment, before TF)
from benchmarks import flags as flag_defs
from tff_localsgd import results
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import pool
from tff_localsgd.sweep import records

flag_defs.define_config_flags()
flags.DEFINE_multi_string('grid', ['width=256,1024'], 'key=v1,v2,...: sweep '
                          'config field `key` over these values (repeatable)')
flags.DEFINE_integer('seeds', 2, 'seeds per grid point')
flags.DEFINE_integer('parallel', 2, 'trials running at once')
flags.DEFINE_integer('repeats', 1, 'times to run the pair of sweeps')
flags.DEFINE_string('out', '', 'directory for the sweeps (default: a '
                    'temporary one, removed at the end)')
flags.DEFINE_string('json_out', '', 'also write the measurements here')
FLAGS = flags.FLAGS
_DEFAULTS = dict(dataset='synthetic', num_examples=64, input_dim=16,
                 num_clients=4, model='mlp', train_layers='hidden',
                 lr_scale='width', algorithm='local_gd', local_steps=5,
                 batch_size=4, rounds=30, probe_size=32)
WAYS = ('pooled', 'fresh')


@dataclasses.dataclass(frozen=True)
class Measurement:
  way: str  # pooled (trial workers) or fresh (a process per trial)
  wall_s: float
  slots: int  # --parallel
  cpu_s: float  # user + system CPU of the trial processes and TFF workers
  phases_s: dict  # records.phase_totals: phases_s summed, trials, processes
  digests: dict  # trial name -> final_weights_sha256

  @property
  def core_s(self) -> float:
    """Core-seconds the sweep held: wall time x --parallel."""
    return self.wall_s * self.slots

  @property
  def inside_fraction(self) -> float:
    """Of the core-seconds, the fraction inside rounds and diagnostics."""
    return sum(self.phases_s.get(k, 0.0)
               for k in results.TRAINING_PHASES) / self.core_s


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def measure(trials, sweep_dir, way) -> Measurement:
  """Runs the sweep one way into sweep_dir (new) and measures it."""
  cpu, tick = _children_cpu_s(), time.perf_counter()
  results = pool.run_sweep(trials, sweep_dir, parallel=FLAGS.parallel,
                           fresh_process=(way == 'fresh'))
  wall, cpu = time.perf_counter() - tick, _children_cpu_s() - cpu
  digests = {}
  for result in results:
    if result.status == 'failed':
      logging.warning('%s: trial %s failed: %s', way, result.name,
                      result.error)
    digests[result.name] = (result.summary or {}).get('final_weights_sha256')
  return Measurement(way, wall, FLAGS.parallel, cpu,
                     records.phase_totals(results), digests)


def _report(measurements):
  """Logs one line per way and the pooled/fresh ratios."""
  for m in measurements:
    logging.info('%-6s wall %6.1f s  core-s %6.1f  CPU %6.1f s  inside '
                 'rounds+diag %4.1f%%  phases %s', m.way, m.wall_s, m.core_s,
                 m.cpu_s, 100 * m.inside_fraction,
                 ', '.join(f'{k.removesuffix("_s")} {v:.1f}'
                           for k, v in m.phases_s.items()))
  by_way = {w: [m for m in measurements if m.way == w] for w in WAYS}
  total = {w: (sum(m.wall_s for m in ms), sum(m.cpu_s for m in ms))
           for w, ms in by_way.items()}
  logging.info('pooled / fresh: wall (and core-seconds) %.2f, CPU %.2f',
               total['pooled'][0] / total['fresh'][0],
               total['pooled'][1] / total['fresh'][1])
  same = all(m.digests == measurements[0].digests for m in measurements)
  logging.info('final weights bit-identical across ways and repeats: %s',
               same)
  return same


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  base = flag_defs.config_from_flags()
  seeds = list(range(base.seed, base.seed + FLAGS.seeds))
  try:
    trials = grid.expand_grid(grid.parse_grid(FLAGS.grid), seeds,
                               dataclasses.asdict(base))
  except grid.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  with tempfile.TemporaryDirectory() as scratch:
    out = FLAGS.out or scratch
    measurements = []
    for repeat in range(FLAGS.repeats):
      order = WAYS if repeat % 2 == 0 else WAYS[::-1]
      for way in order:
        os.makedirs(out, exist_ok=True)
        sweep_dir = tempfile.mkdtemp(prefix=f'{repeat}-{way}-', dir=out)
        measurements.append(measure(trials, sweep_dir, way))
  same = _report(measurements)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump([dict(dataclasses.asdict(m), core_s=m.core_s,
                      inside_fraction=m.inside_fraction)
                 for m in measurements], f, indent=1)
  return 0 if same else 1


if __name__ == '__main__':
  for _key, _value in _DEFAULTS.items():
    FLAGS.set_default(_key, _value)
  app.run(main, flags_parser=flag_defs.parse_flags)
