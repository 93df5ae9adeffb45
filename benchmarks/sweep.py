"""Runs a grid of `benchmarks.train` runs: a sweep.

  python -m benchmarks.sweep --grid=width=64,256 --grid=local_steps=1,5 \\
      --seeds=2 --rounds=5 --sweep=demo

Every flag of benchmarks.train sets the base config; --grid=key=v1,v2,...
(repeatable) sweeps a config field; --seeds=N runs seeds --seed ..
--seed+N-1 of each grid point. Trials run --parallel at a time in as many
long-lived trial processes (each imports TF and TFF once and runs trial after
trial; a trial that fails gets its process replaced; --fresh_process: one
benchmarks.train process per trial, the same results; --stack=S: up to S
seeds of a grid point trained as one stacked computation, the same results)
into
<root_dir>/<sweep>/<trial>/ (layout: tff_localsgd/sweep/), named like
width-64_local_steps-5_seed-0. Run the same command again to resume:
completed and diverged trials are kept, the rest rerun. --experiment is not
used (trials are named by their values).

Every trial's config is checked before any trial starts; a bad --grid entry
or value exits with status 2 and one line naming --grid or the field, and
writes nothing. Exit status: 0 when every trial completed or diverged, 1 if
some failed (see logs/<trial>.log), 128 + signal number on SIGINT/SIGTERM
(running trials are stopped first).

When it ends the sweep prints a table (trial, status, final train/loss,
rounds to eps) and the TensorBoard command whose HParams tab compares its
trials with those of every other sweep under the same --root_dir:

  tensorboard --logdir <root_dir>
"""

import dataclasses
import os
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf  # noqa: F401  (TF at module level)

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib
from tff_localsgd.sweep import grid
from tff_localsgd.sweep import hparams
from tff_localsgd.sweep import pool
from tff_localsgd.sweep import processes
from tff_localsgd.sweep import records

flag_defs.define_config_flags()
flags.DEFINE_multi_string('grid', [], 'key=v1,v2,...: sweep config field '
                          '`key` over these values (repeatable)')
flags.DEFINE_integer('seeds', 1, 'seeds per grid point: --seed .. '
                     '--seed + seeds - 1')
flags.DEFINE_integer('parallel', 1, 'trials running at once')
flags.DEFINE_string('sweep', 'sweep', 'the sweep is written to '
                    '<root_dir>/<sweep>/')
flags.DEFINE_float('trial_timeout_s', 0, 'kill a trial running longer than '
                   'this and record it as failed (0 = no limit)')
flags.DEFINE_bool('fresh_process', False, 'run each trial as its own '
                  'benchmarks.train process (imports TF and TFF per trial) '
                  'instead of in --parallel long-lived trial processes')
flag_defs.define_trial_process_flags('grid point')
FLAGS = flags.FLAGS


def _check_sweep_flags():
  if FLAGS.seeds < 1:
    raise config_lib.ConfigError('seeds', f'must be >= 1, got {FLAGS.seeds}')
  if FLAGS.parallel < 1:
    raise config_lib.ConfigError('parallel',
                                 f'must be >= 1, got {FLAGS.parallel}')
  if FLAGS.stack < 1:
    raise config_lib.ConfigError('stack', f'must be >= 1, got {FLAGS.stack}')
  processes.trial_threads(FLAGS.trial_threads, FLAGS.parallel)
  if not FLAGS.trial_timeout_s >= 0:
    raise config_lib.ConfigError(
        'trial_timeout_s', f'must be >= 0, got {FLAGS.trial_timeout_s}')
  if not FLAGS.sweep or '/' in FLAGS.sweep or FLAGS.sweep in ('.', '..'):
    raise config_lib.ConfigError('sweep', 'must be a non-empty name '
                                 'without "/"')


def plan():
  """(trials, sweep dir) from the flags; ConfigError on any bad input."""
  _check_sweep_flags()
  base = flag_defs.config_from_flags()
  seeds = list(range(base.seed, base.seed + FLAGS.seeds))
  trials = grid.expand_grid(grid.parse_grid(FLAGS.grid), seeds,
                             dataclasses.asdict(base))
  sweep_dir = os.path.join(os.path.abspath(os.path.expanduser(base.root_dir)),
                           FLAGS.sweep)
  records.check_resumable(trials, sweep_dir)
  return trials, sweep_dir


class _Progress:
  """Logs a line per trial, with an ETA from the trials run so far."""

  def __init__(self):
    self.start = time.monotonic()
    self.ran = 0

  def __call__(self, done, total, result):
    if not result.skipped:
      self.ran += 1
    elapsed = time.monotonic() - self.start
    eta = (f'ETA {elapsed / self.ran * (total - done):.0f} s' if self.ran
           else 'ETA -')
    loss = ((result.summary or {}).get('final') or {}).get('train/loss', '-')
    logging.info('[%d/%d] %s: %s%s, train/loss %s; %s', done, total,
                 result.name, result.status,
                 ' (done before)' if result.skipped else
                 f' in {result.wall_time_s:.1f} s', loss, eta)


def closing_table(results, sweep_dir) -> str:
  """One line per trial: its status, final train/loss and rounds to eps
  ('-': none, or not reached)."""
  rows = [('trial', 'status', 'final loss', 'rounds to eps')]
  for result in results:
    final = (records.final_metrics(os.path.join(sweep_dir, result.name),
                                   result.summary) if result.summary else {})
    loss = final.get('final/train/loss')
    reached = final.get('final/rounds_to_eps')
    rows.append((result.name, result.status,
                 '-' if loss is None else f'{loss:.6g}',
                 '-' if reached is None else f'{reached:.0f}'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths))
                   .rstrip() for row in rows)


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  try:
    trials, sweep_dir = plan()
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  flag_defs.check_writable_dir(sweep_dir, 'root_dir')
  logging.info('sweep %s: %d trials, %d at a time', sweep_dir, len(trials),
               FLAGS.parallel)
  try:
    results = pool.run_sweep(trials, sweep_dir, parallel=FLAGS.parallel,
                             timeout_s=FLAGS.trial_timeout_s or None,
                             on_progress=_Progress(),
                             fresh_process=FLAGS.fresh_process,
                             stack=FLAGS.stack,
                             threads=processes.trial_threads(
                                 FLAGS.trial_threads, FLAGS.parallel))
  except pool.Interrupted as e:
    logging.error('sweep %s %s; run the same command to resume', sweep_dir, e)
    return 128 + e.signum
  counts = {}
  for result in results:
    counts[result.status] = counts.get(result.status, 0) + 1
  logging.info('sweep %s: %s', sweep_dir, ', '.join(
      f'{n} {status}' for status, n in sorted(counts.items())))
  print(closing_table(results, sweep_dir))
  print(f'\ntensorboard --logdir {hparams.hparams_root(sweep_dir)}')
  return 1 if counts.get('failed') else 0


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
