"""Soak benchmark: does a long run stay flat in memory, file descriptors and
round time? (A benchmark, not a test: it takes tens of minutes.)

  python -m benchmarks.soak                      # 2000 rounds, 100 clients
  python -m benchmarks.soak --rounds=50 --out=/tmp/soak.md   # a quick look

Runs one experiment (every ExperimentConfig flag applies; the defaults below
are the soak's) in this process, on the engine the flags name (native on a
CPU machine: one worker_binary). A sampler thread records, every
--sample_every_s seconds, the rounds completed and, for this process and the
TFF worker, the resident set size and the number of open file descriptors.
Writes --out (Markdown) and the same path with .json (every sample, the
per-round times, the run's summary).
"""

import dataclasses
import os
import resource
import statistics
import tempfile
import threading
import time

from absl import app
from absl import flags
import psutil
import tensorflow as tf  # noqa: F401  (TF at module level)

from benchmarks import flags as flag_defs
from benchmarks import procstat
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import engines
from tff_localsgd import recorders
from tff_localsgd import recording
from tff_localsgd import training
from tff_localsgd.engines import native

flag_defs.define_config_flags()
flags.DEFINE_string('out', 'reports/perf/soak.md', 'Markdown report; the '
                    'JSON goes next to it')
flags.DEFINE_float('sample_every_s', 10.0, 'seconds between samples')
flags.DEFINE_integer('local_workers', 0, 'N > 0: start N TFF workers here and '
                     'run on them with --engine=remote (soaks the remote '
                     'engine)')
FLAGS = flags.FLAGS

# The soak's experiment: 100 clients of 20 points, m = 128, diagnostics (with
# the lockstep round) every 10 rounds; see docs/performance.md for its timing.
DEFAULTS = dict(rounds=2000, num_clients=100, num_examples=2000, input_dim=32,
                width=128, local_steps=5, batch_size=10, diag_every=10,
                eval_every=10, checkpoint_every=100, experiment='soak')
MB = 2**20


class Sampler(threading.Thread):
  """Samples rounds done, RSS and open fds of us and the TFF worker."""

  def __init__(self, every_s: float):
    super().__init__(daemon=True, name='soak-sampler')
    self.rounds_done = 0  # set by the run loop's consumer
    self.every_s = every_s
    self.samples = []
    self.worker_peak_rss = None
    self._done = threading.Event()
    self._me = psutil.Process()
    self._start = time.monotonic()

  def _workers(self):
    """The worker_binary processes under us: the native engine's, or the
    --local_workers a remote run uses."""
    found = []
    for child in self._me.children(recursive=True):
      try:
        if child.exe() == native.WORKER_BINARY:
          found.append(child)
      except psutil.Error:
        pass
    return found

  def sample(self):
    row = dict(t_s=round(time.monotonic() - self._start, 1),
               rounds=self.rounds_done,
               driver_rss_mb=self._me.memory_info().rss / MB,
               driver_fds=self._me.num_fds(),
               driver_threads=self._me.num_threads())
    workers = self._workers()
    try:
      if workers:  # summed over the workers; the peak is the largest one's
        row.update(worker_rss_mb=sum(w.memory_info().rss for w in workers) / MB,
                   worker_fds=sum(w.num_fds() for w in workers),
                   worker_threads=sum(w.num_threads() for w in workers))
        self.worker_peak_rss = max(
            [procstat.peak_rss_bytes(w.pid) or 0 for w in workers] +
            [self.worker_peak_rss or 0])
    except psutil.Error:
      pass
    self.samples.append(row)

  def run(self):
    while not self._done.wait(self.every_s):
      self.sample()

  def stop(self):
    self._done.set()
    self.join()


def _median(values):
  return statistics.median(values) if values else float('nan')


def plain_median(times, diag_every, lo, hi):
  """The median time of rounds lo..hi without diagnostics."""
  return _median([times[t] for t in range(lo, hi + 1) if t in times and not
                  (diag_every and t % diag_every == 0)])


def report(config, sampler, summary, times, wall_s, local=()):
  """(result dict, Markdown) of the soak; times: {round: round time}."""
  last = config.rounds
  marks = [t for t in (100, last) if t in times]
  s = sampler.samples
  # Rows for the table: samples taken while the worker was up (the engine
  # stops it when the run ends), the first one at or after each round.
  with_worker = [x for x in s if 'worker_rss_mb' in x]
  first_after = lambda r: next((x for x in with_worker if x['rounds'] >= r),
                               with_worker[-1] if with_worker else None)
  checkpoints = sorted({min(last, r) for r in
                        (10, 100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000,
                         last)})
  result = dict(
      config={k: getattr(config, k) for k in (
          'rounds', 'num_clients', 'num_examples', 'input_dim', 'width',
          'depth', 'local_steps', 'batch_size', 'diag_every', 'lockstep_drift',
          'eval_every', 'checkpoint_every')},
      engine=engines.resolve(config),
      status=summary['status'], wall_time_s=wall_s,
      driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      / 1024, worker_peak_rss_mb=(sampler.worker_peak_rss or 0) / MB,
      round_time_s={t: times[t] for t in marks},
      plain_round_median_s={t: plain_median(times, config.diag_every,
                                            max(1, t - 19), t)
                            for t in marks},
      diag_round_median_s={t: _median([times[r] for r in range(max(1, t - 99),
                                                              t + 1)
                                       if config.diag_every and
                                       r % config.diag_every == 0 and
                                       r in times]) for t in marks},
      samples=s, round_times=times,
      final_train_loss=summary.get('final', {}).get('train/loss'),
      versions=summary.get('versions'))
  lines = [
      '# Soak: a long run, watched', '',
      f'{config.rounds} rounds, {config.num_clients} clients (synthetic, n = '
      f'{config.num_examples}, d = {config.input_dim}), m = {config.width}, '
      f'K = {config.local_steps}, B = {config.batch_size}, diagnostics with '
      f'the lockstep round every {config.diag_every} rounds, evaluation every '
      f'{config.eval_every}, checkpoint every {config.checkpoint_every}; '
      f'engine {result["engine"]}. Status {summary["status"]}, wall time '
      f'{wall_s / 60:.1f} min, final train/loss '
      f'{result["final_train_loss"]}.', '',
      f'Peak RSS (kernel high-water mark): driver '
      f'{result["driver_peak_rss_mb"]:.0f} MB, TFF worker '
      f'{result["worker_peak_rss_mb"]:.0f} MB'
      + (f' (the largest of {len(local)}; the sample columns sum them)'
         if len(local) > 1 else '') + '.', '',
      '| round | round time (s) | median plain round, last 20 (s) | median '
      'diagnostic round, last 100 (s) |', '|---|---|---|---|']
  for t in marks:
    lines.append(f'| {t} | {times[t]:.3f} | '
                 f'{result["plain_round_median_s"][t]:.3f} | '
                 f'{result["diag_round_median_s"][t]:.3f} |')
  lines += ['', 'Samples (the first taken once the run had completed the '
            'round):', '',
            '| rounds done | time (s) | wall s/round since the row above | '
            'driver RSS (MB) | driver fds | driver threads | worker RSS (MB) | '
            'worker fds | worker threads |',
            '|---|---|---|---|---|---|---|---|---|']
  previous = None
  for r in checkpoints:
    x = first_after(r)
    if x and x is not previous:
      pace = ((x['t_s'] - previous['t_s']) / (x['rounds'] - previous['rounds'])
              if previous and x['rounds'] > previous['rounds'] else None)
      previous = x
      lines.append(
          f'| {x["rounds"]} | {x["t_s"]:.0f} | '
          f'{"-" if pace is None else f"{pace:.2f}"} | '
          f'{x["driver_rss_mb"]:.0f} | '
          f'{x["driver_fds"]} | {x["driver_threads"]} | '
          f'{x.get("worker_rss_mb", float("nan")):.0f} | '
          f'{x.get("worker_fds", "-")} | {x.get("worker_threads", "-")} |')
  lines += ['', f'Machine: {os.cpu_count()} CPUs, '
            f'{psutil.virtual_memory().total / 2**30:.0f} GB; load average at '
            f'the end {", ".join(f"{x:.1f}" for x in os.getloadavg())} (other '
            'jobs share the machine). Written by `python -m benchmarks.soak`.',
            '']
  return result, '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  config = flag_defs.config_from_flags()
  local = [native.Worker() for _ in range(max(FLAGS.local_workers, 0))]
  if local:
    config = dataclasses.replace(config, engine='remote', workers=','.join(
        w.address for w in local))
  try:
    return _soak(config, local)
  finally:
    for w in local:
      w.stop()


def _soak(config, local):
  with tempfile.TemporaryDirectory() as root:
    if not FLAGS['root_dir'].present:
      config = dataclasses.replace(config, root_dir=root)
    try:
      setup = training.Setup.prepare(config)
    except (config_lib.ConfigError, data_lib.DataUnavailableError) as e:
      flag_defs.exit_bad_input(str(e))
    sampler = Sampler(FLAGS.sample_every_s)
    sampler.start()
    start = time.monotonic()
    recorded = recording.RecordedRun(setup)
    times = {}  # round -> its time, rounds 1..T
    try:
      for result in recorded:
        sampler.rounds_done = result.round
        if result.round:
          times[result.round] = result.timings['system/round_time_s']
    finally:
      sampler.sample()
      sampler.stop()
    wall_s = time.monotonic() - start
    summary = recorded.summary
  result, markdown = report(config, sampler, summary, times, wall_s, local)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  recorders.atomic_write(FLAGS.out, markdown)
  recorders.write_json(os.path.splitext(FLAGS.out)[0] + '.json', result)
  print(markdown)


if __name__ == '__main__':
  for name, value in DEFAULTS.items():
    flags.FLAGS.set_default(name, value)
  app.run(main, flags_parser=flag_defs.parse_flags)
