"""What the diagnostics cost: round time with diagnostics every round vs off.

  python -m benchmarks.diag_overhead --widths=256,1024,4096 --rounds=6

For each width, three runs of the same experiment, one after the other in one
process: diagnostics off; --diag_every=1 --lockstep_drift=false;
--diag_every=1 (lockstep on). A round's cost is system/round_time_s plus
system/diag_time_s (the model diagnostics), median over rounds 2..R (round 1
compiles). Writes a Markdown table (ratios to the plain round) to --out.
"""

import dataclasses
import os
import statistics
import tempfile

from absl import app
from absl import flags
import tensorflow as tf  # noqa: F401  (TF at module level; see README)

from benchmarks import flags as flag_defs
from tff_localsgd import recorders
from tff_localsgd import training

flag_defs.define_config_flags()
flags.DEFINE_list('widths', ['256', '1024', '4096'], 'widths m to measure')
flags.DEFINE_string('out', 'reports/perf/diag_overhead.md', 'Markdown table')
FLAGS = flags.FLAGS

SETTINGS = (('off', dict(diag_every=0)),
            ('diag, lockstep off', dict(diag_every=1, lockstep_drift=False)),
            ('diag, lockstep on', dict(diag_every=1, lockstep_drift=True)))


def seconds_per_round(config) -> float:
  training.run(training.Experiment.prepare(config))
  rows = recorders.read_metrics(os.path.join(training.run_dir(config),
                                             'metrics.csv'))
  times = [float(r['system_round_time_s']) + float(r.get('system_diag_time_s')
                                                    or 0.0)
           for r in rows[2:]]
  return statistics.median(times)


def main(argv):
  del argv
  base = flag_defs.config_from_flags()
  lines = ['| width | ' + ' | '.join(f'{name} (s/round)' for name, _ in
                                     SETTINGS) + ' | lockstep off / off | '
           'lockstep on / off |', '|' + '---|' * (len(SETTINGS) + 3)]
  with tempfile.TemporaryDirectory() as root:
    for width in map(int, FLAGS.widths):
      times = []
      for name, overrides in SETTINGS:
        config = dataclasses.replace(
            base, width=width, root_dir=root, eval_every=base.rounds,
            experiment=f'm{width}-{len(times)}', **overrides).validate()
        times.append(seconds_per_round(config))
      lines.append(f'| {width} | ' + ' | '.join(f'{t:.3f}' for t in times) +
                   f' | {times[1] / times[0]:.2f}x | {times[2] / times[0]:.2f}x |')
      print(lines[-1], flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  recorders.atomic_write(FLAGS.out, '\n'.join(lines) + '\n')


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
