"""Round throughput of every way to run Local SGD here, side by side.

  python -m benchmarks.throughput                   # writes reports/perf/PERF.md
  python -m benchmarks.throughput --grid=width=128,1024 --grid=num_clients=10,100 --grid=local_steps=10

Workload (the issue's): MLP d=64 -> m -> m -> 1 (depth 1), 100 examples per
client, K full-batch local GD steps (local_gd), every client in every round.
Settings:

  native, native_packed        TFF C++ runtime; P = 1, or one pack of all clients
  inprocess, inprocess_packed  MapReduceForm run in this process (+ _jit: XLA)
  stock_keras                  tff.learning.algorithms.build_weighted_fed_avg,
                               tff.learning.models.from_keras_model, tf.data
  stock_functional             the same with functional_model_from_keras and
                               LoopImplementation.DATASET_ITERATOR
  plain_tf                     no TFF: the clients' weights stacked, one
                               tf.function per round (the hardware reference)

Each cell runs in a child process of its own (clean peak RSS): one warm-up
round, then --rounds timed rounds (median). The child also times one large
matmul (4096^3, best of 5) on the same device: the achieved GFLOP/s is
reported against it. FLOPs are counted analytically: a dense layer of
P_l = fan_in x fan_out weights costs 2 P_l per example forward and 4 P_l
backward (2 P_l for the first layer, which needs no input gradient), so one
round costs K * sum_i n_i * (6 P - 2 d m). A cell whose estimated round time
at the machine's peak exceeds --budget_s is skipped and marked so.
"""

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import flags as flag_defs
from benchmarks import procstat
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import engines
from tff_localsgd import models
from tff_localsgd import process
from tff_localsgd import recorders
from tff_localsgd.sweep import grid as sweep
from tff_localsgd.engines import native

SETTINGS = ('native', 'native_packed', 'inprocess', 'inprocess_packed',
            'inprocess_packed_jit', 'stock_keras', 'stock_functional',
            'plain_tf')
INPUT_DIM = 64

GRID_KEYS = ('width', 'num_clients', 'local_steps')  # m, N, K
flags.DEFINE_multi_string(
    'grid', ['width=128,512,1024,4096', 'num_clients=10,100,1000',
             'local_steps=1,10'],
    'key=v1,v2,... as in benchmarks.sweep, for the keys '
    f'{", ".join(GRID_KEYS)}; the cells are their product')
flags.DEFINE_bool('large', False, 'also width 16384')
flags.DEFINE_list('rows', [], 'm:N:K triples to measure instead of the '
                  'product of --widths, --num_clients and --local_steps')
flags.DEFINE_list('settings', list(SETTINGS), 'settings to compare')
flags.DEFINE_integer('examples_per_client', 100, 'n_i')
flags.DEFINE_integer('rounds', 3, 'timed rounds per cell (after a warm-up)')
flags.DEFINE_float('budget_s', 20.0, 'skip cells whose round would take '
                   'longer than this at the measured peak')
flags.DEFINE_integer('seed', 0, 'seeds the data and the models')
flags.DEFINE_string('out', 'reports/perf/PERF.md', 'Markdown report; the '
                    'JSON and the plot go beside it')
flags.DEFINE_string('cell', '', 'internal: run one cell (JSON) and print '
                    'its result')
FLAGS = flags.FLAGS


def round_flops(width: int, depth: int, num_clients: int,
                examples_per_client: int, local_steps: int) -> float:
  """K * sum_i n_i * (6 P - 2 d m) for the MLP d -> m (x depth+1) -> 1."""
  params = INPUT_DIM * width + depth * width * width + width
  return (local_steps * num_clients * examples_per_client *
          (6 * params - 2 * INPUT_DIM * width))


def matmul_peak(device: str, size: int = 4096) -> float:
  """GFLOP/s of one size^3 fp32 matmul on device, best of 5."""
  with tf.device(device):
    a = tf.random.stateless_normal([size, size], seed=(1, 2))
    b = tf.random.stateless_normal([size, size], seed=(3, 4))
    matmul = tf.function(tf.matmul)
    matmul(a, b).numpy()
    best = float('inf')
    for _ in range(5):
      tick = time.perf_counter()
      matmul(a, b).numpy()
      best = min(best, time.perf_counter() - tick)
  return 2 * size**3 / best / 1e9


def _peak_rss_gb() -> float:
  """VmHWM of this process plus its children (the TFF worker), in GB."""
  me = psutil.Process()
  return sum(procstat.peak_rss_bytes(p.pid) or 0
             for p in [me] + me.children(recursive=True)) / 2**30


def _config(cell) -> config_lib.ExperimentConfig:
  setting = cell['setting']
  packed = 'packed' in setting
  return config_lib.ExperimentConfig(
      num_examples=cell['num_clients'] * cell['examples_per_client'],
      input_dim=INPUT_DIM,
      num_clients=cell['num_clients'], width=cell['width'], depth=1,
      algorithm='local_gd', local_steps=cell['local_steps'], client_lr=0.1,
      rounds=cell['rounds'] + 1, seed=cell['seed'],
      engine='inprocess' if setting.startswith('inprocess') else 'native',
      device='/CPU:0' if setting.startswith('inprocess') and not
      tf.config.list_physical_devices('GPU') else '',
      clients_per_pack=cell['num_clients'] if packed else 1,
      jit=setting.endswith('_jit')).validate()


def _time_rounds(round_fn, rounds: int) -> float:
  round_fn(0)  # warm-up: tracing, compilation
  times = []
  for t in range(1, rounds + 1):
    tick = time.perf_counter()
    round_fn(t)
    times.append(time.perf_counter() - tick)
  return statistics.median(times)


def _library_round(config, data):
  """Our LocalSGDProcess on config.engine: a round function and a context."""
  spec = models.build_model(config, data.input_shape, data.output_dim)
  proc = process.LocalSGDProcess(spec, config, data.input_shape,
                                 data.output_dim)
  state = {}

  def round_fn(t):
    values = [process.client_data(x, y, config.seed, t, i, config.num_clients)
              for i, (x, y) in enumerate(zip(data.client_x, data.client_y))]
    if 'weights' not in state:
      state['weights'] = proc.initialize()
    state['weights'], _ = proc.next(state['weights'], proc.pack(values))
  return round_fn, engines.engine(config)


def _stock_round(config, data, functional: bool):
  """tff.learning's build_weighted_fed_avg on the same model and data."""
  x_spec = tf.TensorSpec([None, INPUT_DIM], tf.float32)
  input_spec = (x_spec, tf.TensorSpec([None, 1], tf.float32))

  def keras_model():
    initializer = tf.keras.initializers.HeNormal(seed=config.seed)
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(INPUT_DIM,)),
        tf.keras.layers.Dense(config.width, 'relu', use_bias=False,
                              kernel_initializer=initializer),
        tf.keras.layers.Dense(config.width, 'relu', use_bias=False,
                              kernel_initializer=initializer),
        tf.keras.layers.Dense(1, use_bias=False,
                              kernel_initializer=initializer)])

  client_opt = tff.learning.optimizers.build_sgdm(learning_rate=config.lr)
  server_opt = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  if functional:
    model = tff.learning.models.functional_model_from_keras(
        keras_model(), tf.keras.losses.MeanSquaredError(), input_spec)
    algorithm = tff.learning.algorithms.build_weighted_fed_avg(
        model, client_opt, server_opt,
        loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  else:
    algorithm = tff.learning.algorithms.build_weighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            keras_model(), tf.keras.losses.MeanSquaredError(), input_spec),
        client_opt, server_opt)
  # K full-batch steps: the client's data as one batch, repeated K times.
  datasets = [tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat(
      config.local_steps) for x, y in zip(data.client_x, data.client_y)]
  state = {}

  def round_fn(t):
    del t
    if 'state' not in state:
      state['state'] = algorithm.initialize()
    state['state'] = algorithm.next(state['state'], datasets).state
  return round_fn, native.native_engine()


def _plain_round(config, data):
  """No TFF: stacked client weights [N, ...], K GD steps, weighted mean."""
  n = [len(x) for x in data.client_x]
  if len(set(n)) != 1:
    raise ValueError('plain_tf needs equal client sizes')
  x = tf.constant(np.stack(data.client_x))
  y = tf.constant(np.stack(data.client_y))
  p = tf.constant(np.array(n, np.float32) / np.float32(sum(n)))
  rng = np.random.default_rng(config.seed)
  shapes = [(INPUT_DIM, config.width), (config.width, config.width),
            (config.width, 1)]
  weights = [tf.constant(rng.standard_normal(s).astype(np.float32) *
                         np.sqrt(2 / s[0])) for s in shapes]
  lr, clients = config.lr, config.num_clients

  @tf.function
  def round_tf(weights):
    local = [tf.tile(w[None], [clients, 1, 1]) for w in weights]
    for _ in range(config.local_steps):
      with tf.GradientTape() as tape:
        tape.watch(local)
        h = x
        for w in local[:-1]:
          h = tf.nn.relu(tf.matmul(h, w))
        per_client = 0.5 * tf.reduce_mean(
            tf.reduce_sum(tf.square(tf.matmul(h, local[-1]) - y), -1), -1)
        total = tf.reduce_sum(per_client)
      local = [w - lr * g for w, g in zip(local, tape.gradient(total, local))]
    return [tf.tensordot(p, w, 1) for w in local]

  state = {'weights': weights}

  def round_fn(t):
    del t
    state['weights'] = [w.numpy() for w in round_tf(state['weights'])]
  return round_fn, tf.device('/CPU:0')


def run_cell(cell) -> dict:
  """One (setting, width, num_clients, local_steps) cell, in this process."""
  config = _config(cell)
  data = data_lib.load_federated_data(config)
  setting = cell['setting']
  if setting.startswith(('native', 'inprocess')):
    round_fn, context = _library_round(config, data)
  elif setting.startswith('stock'):
    round_fn, context = _stock_round(config, data,
                                     functional=setting == 'stock_functional')
  else:
    round_fn, context = _plain_round(config, data)
  device = '/GPU:0' if (tf.config.list_physical_devices('GPU') and
                        setting.startswith('inprocess')) else '/CPU:0'
  peak = matmul_peak(device)
  with context:
    seconds = _time_rounds(round_fn, cell['rounds'])
  examples = (cell['local_steps'] * cell['num_clients'] *
              cell['examples_per_client'])
  flops = round_flops(cell['width'], 1, cell['num_clients'],
                      cell['examples_per_client'], cell['local_steps'])
  return dict(cell, seconds_per_round=seconds, rounds_per_s=1 / seconds,
              examples_per_s=examples / seconds,
              gflops=flops / seconds / 1e9, peak_gflops=peak,
              peak_fraction=flops / seconds / 1e9 / peak,
              peak_rss_gb=_peak_rss_gb(), device=device)


def _run_child(cell) -> dict:
  """run_cell in a fresh process; a failure is recorded, not raised."""
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.throughput', f'--cell={json.dumps(cell)}'],
      capture_output=True, text=True, check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
  if result.returncode or not lines:
    return dict(cell, error=result.stderr.strip().splitlines()[-3:])
  return json.loads(lines[-1])


def _table(results, settings) -> list[str]:
  """Markdown: s/round (fraction of peak) per setting, and the ratios."""
  def key(r):
    return r['width'], r['num_clients'], r['local_steps']

  rows = sorted({key(r) for r in results})
  by = {(*key(r), r['setting']): r for r in results}
  lines = ['| m | N | K | ' + ' | '.join(settings) + ' | best of ours | '
           'best / stock_keras | best / stock_functional | '
           'native_packed time / plain_tf time |',
           '|' + '---|' * (len(settings) + 7)]

  def ratio(a, b):
    return f'{a / b:.2f}x' if a and b else ''

  for row in rows:
    cells, speed = [], {}
    for s in settings:
      r = by.get((*row, s), {})
      if 'seconds_per_round' in r:
        speed[s] = r['rounds_per_s']
        cells.append(f"{r['seconds_per_round']:.3g} s "
                     f"({r['peak_fraction']:.0%})")
      else:
        cells.append('skipped' if 'skipped' in r else
                     'failed' if 'error' in r else '')
    ours = {s: v for s, v in speed.items()
            if s.startswith(('native', 'inprocess'))}
    best = max(ours, key=ours.get) if ours else ''
    lines.append('| ' + ' | '.join(map(str, row)) + ' | ' + ' | '.join(cells + [
        best, ratio(ours.get(best), speed.get('stock_keras')),
        ratio(ours.get(best), speed.get('stock_functional')),
        ratio(speed.get('plain_tf'), speed.get('native_packed'))]) + ' |')
  return lines


def _plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for setting in SETTINGS:
    points = sorted((r['width'], r['peak_fraction']) for r in results
                    if r['setting'] == setting and r['num_clients'] == 10 and
                    r['local_steps'] == 10 and 'peak_fraction' in r)
    if points:
      ax.plot(*zip(*points), marker='o', label=setting)
  ax.set(xscale='log', xlabel='width m', ylabel='fraction of matmul peak',
         title='N=10 clients, K=10 full-batch steps, n_i=100')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(results, peak: float, out: str):
  """PERF.md, its JSON and its plot, each written atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  base = os.path.splitext(out)[0]
  recorders.write_json(base + '.json', results)
  _plot(results, base + '.png')
  lines = [
      '# Throughput of Local SGD rounds', '',
      f'Generated by `python -m benchmarks.throughput {" ".join(sys.argv[1:])}` '
      f'on {platform.processor() or platform.machine()}, '
      f'{os.cpu_count()} cores; one large fp32 matmul at the start: '
      f'{peak:.0f} GFLOP/s. Each cell: seconds per round (median of '
      f'{FLAGS.rounds} after a warm-up) and, in brackets, the achieved '
      'GFLOP/s as a fraction of the matmul peak measured in that cell\'s own '
      'process. The workload: MLP '
      f'{INPUT_DIM} -> m -> m -> 1, {FLAGS.examples_per_client} examples per '
      'client, K full-batch local steps. Ratios are of rounds/s, measured in '
      'the same run.', ''] + _table(results, FLAGS.settings) + [
          '', f'![GFLOP/s fraction]({os.path.basename(base)}.png)', '',
          'Peak RSS (GB, this process and its TFF worker) per cell is in '
          f'`{os.path.basename(base)}.json`; failed cells carry their error '
          'there.']
  recorders.atomic_write(out, '\n'.join(lines) + '\n')


def _rows() -> list:
  """The (m, N, K) cells of --rows, or else of --grid; exits 2 if bad."""
  try:
    if FLAGS.rows:
      rows = [tuple(int(v) for v in row.split(':')) for row in FLAGS.rows]
    else:
      grid = sweep.parse_grid(FLAGS.grid)
      unknown = sorted(set(grid) ^ set(GRID_KEYS))
      if unknown:
        raise config_lib.ConfigError(
            'grid', f'give exactly the keys {", ".join(GRID_KEYS)}; '
            f'not {", ".join(unknown)}')
      values = {k: [config_lib.parse_value(k, v, ' (in --grid)')
                    for v in grid[k]] for k in GRID_KEYS}
      values['width'] += [16384] if FLAGS.large else []
      rows = list(itertools.product(*values.values()))
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  except ValueError as e:
    flag_defs.exit_bad_input(f'--rows: {e}')
  if any(len(row) != 3 or min(row) <= 0 for row in rows):
    flag_defs.exit_bad_input('--rows/--grid: cells are m:N:K with m, N, K > 0')
  return rows


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if FLAGS.cell:
    print(json.dumps(run_cell(json.loads(FLAGS.cell))), flush=True)
    return 0
  rows = _rows()
  if FLAGS.rounds <= 0:
    flag_defs.exit_bad_input('--rounds: must be > 0')
  unknown = sorted(set(FLAGS.settings) - set(SETTINGS))
  if unknown:
    flag_defs.exit_bad_input(f'--settings: unknown {unknown}; choose from '
                             f'{", ".join(SETTINGS)}')
  peak = matmul_peak('/CPU:0')
  results = []
  for width, n_clients, k in rows:
    for setting in FLAGS.settings:
      cell = dict(setting=setting, width=width, num_clients=n_clients,
                  local_steps=k, examples_per_client=FLAGS.examples_per_client,
                  rounds=FLAGS.rounds, seed=FLAGS.seed)
      estimate = round_flops(width, 1, n_clients, FLAGS.examples_per_client,
                             k) / 1e9 / peak
      if estimate > FLAGS.budget_s:
        results.append(dict(cell, skipped=f'~{estimate:.0f} s/round at peak'))
        continue
      results.append(_run_child(cell))
      print(json.dumps(results[-1]), flush=True)
      write_report(results, peak, FLAGS.out)  # an interrupted run keeps its cells
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
