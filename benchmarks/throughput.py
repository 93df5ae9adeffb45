"""Round throughput of every way to run Local SGD here, side by side.

  python -m benchmarks.throughput                   # writes reports/perf/PERF.md
  python -m benchmarks.throughput --grid=width=128,1024 --grid=num_clients=10,100 --grid=local_steps=10
  # the suite's rounds:
  python -m benchmarks.throughput --rows=64:4:5,1024:4:5 --examples_per_client=16 --input_dim=16 --train_layers=hidden --client_lr=8

Workload: the config flags (benchmarks/flags.py, with this binary's
defaults: MLP d=64 -> m -> m -> 1, K full-batch local GD steps, 100 examples
per client, every client in every round); each cell sets m, N and K
(--grid or --rows), n = N * --examples_per_client and, by its setting, the
execution fields. --rounds is T: a cell trains T timed rounds after one
untimed warm-up round (tracing, compilation) and reports their median;
--seed seeds the data and the models. Settings:

  native, native_packed        TFF C++ runtime; P = 1, or one pack of all clients
  inprocess, inprocess_packed  MapReduceForm run in this process (+ _jit: XLA)
  stock_keras                  tff.learning.algorithms.build_weighted_fed_avg,
                               tff.learning.models.from_keras_model, tf.data
  stock_functional             the same with functional_model_from_keras and
                               LoopImplementation.DATASET_ITERATOR
  inprocess_stacked            --stack seeds (--seed, --seed + 1, ...) of the
                               cell in one round (stacking.py), in-process,
                               every matmul batched over the seeds; its
                               time is per trial: the round's / S
  inprocess_stacked_looped     the same, each seed's own ops in the round's
                               graph (stacking.py's batched=False)
  plain_tf                     no TFF: the clients' weights stacked [N, ...],
                               one tf.function per round (batched matmuls)
  plain_tf_clients             no TFF: each client's own matmuls, all clients
                               in one tf.function per round
The plain TF rounds are the hardware reference: they compute what our round
computes (the trained layers of --train_layers, the n_i-weighted mean of
the local models, and F(w^t) when --eval_every=1, which our round then
evaluates too), with no TFF.

Each cell runs in a child process of its own (clean peak RSS). The child
also times one large matmul (4096^3, best of 5) on the same device: the
achieved GFLOP/s is reported against it. FLOPs are counted analytically
(round_flops). A cell whose estimated round time at the machine's peak
exceeds --budget_s is skipped and marked so.

On a shared machine a cell's median can be off by 2x when the load changes
between cells. --repeats=R measures a row's settings R times, taking turns
(A B C, B C A, ...), so that each setting sees the same moments of load, and
reports each cell's median repeat; its R times are in the JSON.
"""

import dataclasses
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
from tff_localsgd import stacking
from tff_localsgd.sweep import grid as sweep
from tff_localsgd.engines import native

SETTINGS = ('native', 'native_packed', 'inprocess', 'inprocess_packed',
            'inprocess_packed_jit', 'inprocess_stacked',
            'inprocess_stacked_looped', 'stock_keras', 'stock_functional',
            'plain_tf', 'plain_tf_clients')
OURS = ('native', 'inprocess')  # setting prefixes of our LocalSGDProcess
# S trials a round, not one trial's round: compared with inprocess.
STACKED = ('inprocess_stacked', 'inprocess_stacked_looped')
PLAIN = ('plain_tf', 'plain_tf_clients')

GRID_KEYS = ('width', 'num_clients', 'local_steps')  # m, N, K
# Config fields each cell sets: m, N, K, n, and the execution by setting.
CELL_FIELDS = GRID_KEYS + ('num_examples',) + config_lib.EXECUTION_FIELDS
flag_defs.define_config_flags()
for _name, _value in dict(input_dim=64, algorithm='local_gd', client_lr=0.1,
                          rounds=3).items():
  flags.FLAGS.set_default(_name, _value)
flags.DEFINE_multi_string(
    'grid', ['width=128,512,1024,4096', 'num_clients=10,100,1000',
             'local_steps=1,10'],
    'key=v1,v2,... as in benchmarks.sweep, for the keys '
    f'{", ".join(GRID_KEYS)}; the cells are their product')
flags.DEFINE_bool('large', False, 'also width 16384')
flags.DEFINE_list('rows', [], 'm:N:K triples to measure instead of the '
                  'product of --grid')
flags.DEFINE_list('settings', list(SETTINGS), 'settings to compare')
flags.DEFINE_integer('stack', 4, 'S: the seeds the inprocess_stacked '
                     'settings train in one round')
flags.DEFINE_integer('examples_per_client', 100, 'n_i')
flags.DEFINE_integer('repeats', 1, 'R: each cell is measured R times, '
                     'in fresh processes, the settings of a row taking '
                     'turns (rotated each repeat); a cell reports the '
                     'repeat of median time')
flags.DEFINE_float('budget_s', 20.0, 'skip cells whose round would take '
                   'longer than this at the measured peak')
flags.DEFINE_string('out', 'reports/perf/PERF.md', 'Markdown report; the '
                    'JSON and the plot go beside it')
flags.DEFINE_string('cell', '', 'internal: run one cell (JSON) and print '
                    'its result')
FLAGS = flags.FLAGS


def dense_layers(config) -> list:
  """[(fan_in, fan_out, trained)] of the mlp d -> m (x depth) -> c."""
  sizes = ([config.input_dim] + [config.width] * (config.depth + 1) +
           [config.output_dim])
  return [(fan_in, fan_out,
           config.train_layers == 'all' or 0 < i <= config.depth)
          for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]))]


def round_flops(config, examples_per_client: int) -> float:
  """A round's FLOPs: K * sum_i n_i * (forward + backward) per example, plus
  a forward pass when the round evaluates F(w^t) (--eval_every=1).

  A dense layer of P_l = fan_in x fan_out weights costs 2 P_l per example
  forward; backward, 2 P_l for its weight gradient if it trains and 2 P_l
  for its input gradient if a layer below it trains (all layers trained:
  6 P - 2 d m).
  """
  forward = backward = 0
  layers = dense_layers(config)
  for i, (fan_in, fan_out, trained) in enumerate(layers):
    forward += 2 * fan_in * fan_out
    backward += 2 * fan_in * fan_out * (
        trained + any(t for _, _, t in layers[:i]))
  examples = config.num_clients * examples_per_client
  evaluation = forward if config.eval_every == 1 else 0
  return examples * (config.local_steps * (forward + backward) + evaluation)


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
  """The cell's config: the flags' (cell['config']), with the cell's m, N,
  K, n and its setting's execution fields."""
  setting = cell['setting']
  inprocess = setting.startswith('inprocess')
  return dataclasses.replace(
      config_lib.ExperimentConfig.from_dict(cell['config']),
      num_examples=cell['num_clients'] * cell['examples_per_client'],
      num_clients=cell['num_clients'], width=cell['width'],
      local_steps=cell['local_steps'],
      engine='inprocess' if inprocess else 'native', workers='',
      device='/CPU:0' if inprocess and not
      tf.config.list_physical_devices('GPU') else '',
      clients_per_pack=cell['num_clients'] if 'packed' in setting else 1,
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


def _stacked_round(config, num_seeds: int, batched: bool):
  """S seeds of config (--seed + s) stacked: a round function, a context."""
  configs = [dataclasses.replace(config, seed=config.seed + s)
             for s in range(num_seeds)]
  data = [data_lib.load_federated_data(c) for c in configs]
  specs = [models.build_model(c, d.input_shape, d.output_dim)
           for c, d in zip(configs, data)]
  proc = stacking.StackedProcess(specs, config, data[0].input_shape,
                                 data[0].output_dim, batched)
  clients = stacking.StackedClients([c.seed for c in configs], data,
                                    config.num_clients)
  every = [range(config.num_clients)] * num_seeds
  state = {}

  def round_fn(t):
    if 'weights' not in state:
      state['weights'] = proc.initialize()
    state['weights'], _ = proc.next(state['weights'], clients.cohort(every, t))
  return round_fn, engines.engine(config)


def _stock_round(config, data, functional: bool):
  """tff.learning's build_weighted_fed_avg on the same model and data."""
  if config.train_layers != 'all' or config.depth != 1:
    raise ValueError('the stock settings train every layer of d -> m -> m '
                     '-> 1: --train_layers=all --depth=1')
  x_spec = tf.TensorSpec([None, config.input_dim], tf.float32)
  input_spec = (x_spec, tf.TensorSpec([None, config.output_dim], tf.float32))

  def keras_model():
    initializer = tf.keras.initializers.HeNormal(seed=config.seed)
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(config.input_dim,)),
        tf.keras.layers.Dense(config.width, 'relu', use_bias=False,
                              kernel_initializer=initializer),
        tf.keras.layers.Dense(config.width, 'relu', use_bias=False,
                              kernel_initializer=initializer),
        tf.keras.layers.Dense(config.output_dim, use_bias=False,
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


def _mse(weights, x, y):
  """F_i(w) = (1/n_i) sum_j 1/2 ||f(w; x_j) - y_j||^2 of the mlp (relu on
  every layer but the last); x [n, d] or stacked [N, n, d] (then F is [N])."""
  h = x
  for w in weights[:-1]:
    h = tf.nn.relu(tf.matmul(h, w))
  return 0.5 * tf.reduce_mean(
      tf.reduce_sum(tf.square(tf.matmul(h, weights[-1]) - y), -1), -1)


def plain_round_fn(spec, config, client_x, client_y, stacked: bool):
  """No TFF: w^t -> (w^{t+1}, sum_i n_i F_i(w^t) or None) in one
  tf.function: K full-batch GD steps of every client on the trained layers
  from w^t, then sum_i p_i w_i^{t,K}. stacked: the clients' weights stacked
  [N, ...] (batched matmuls); else each client its own matmuls. F(w^t) is
  computed when our round computes it (--eval_every=1)."""
  sizes = [len(x) for x in client_x]
  if stacked and len(set(sizes)) != 1:
    raise ValueError('plain_tf needs equal client sizes')
  x = [tf.constant(v) for v in client_x]
  y = [tf.constant(v) for v in client_y]
  if stacked:
    x, y = [tf.stack(x)], [tf.stack(y)]
  p = np.asarray(sizes, np.float32) / np.float32(sum(sizes))
  trained, lr = spec.trainable_indices, config.lr

  def local_models(weights, xi, yi):
    local = [tf.broadcast_to(weights[i], [len(sizes), *weights[i].shape])
             if stacked else weights[i] for i in trained]
    for _ in range(config.local_steps):
      with tf.GradientTape() as tape:
        tape.watch(local)
        value = tf.reduce_sum(_mse(spec.with_trainable(weights, local), xi,
                                   yi))
      local = [w - lr * g for w, g in zip(local, tape.gradient(value, local))]
    return local

  # The clients' sizes n_i, as the groups of x and y.
  n = [np.float32(sizes)] if stacked else [np.float32(v) for v in sizes]

  @tf.function
  def round_tf(weights):
    local = [local_models(weights, xi, yi) for xi, yi in zip(x, y)]
    new = ([tf.tensordot(p, w, 1) for w in local[0]] if stacked else
           [tf.add_n([pi * w[j] for pi, w in zip(p, local)])
            for j in range(len(trained))])
    loss_sum = None
    if config.eval_every == 1:
      loss_sum = tf.add_n([tf.reduce_sum(_mse(weights, xi, yi) * ni)
                           for xi, yi, ni in zip(x, y, n)])
    return spec.with_trainable(weights, new), loss_sum
  return round_tf


def _plain_round(config, data, stacked: bool):
  """plain_round_fn from w^0 of our model: a round function, a context."""
  spec = models.build_model(config, data.input_shape, data.output_dim)
  round_tf = plain_round_fn(spec, config, data.client_x, data.client_y,
                            stacked)
  state = {'weights': spec.initial_weights}

  def round_fn(t):
    del t
    new, _ = round_tf(state['weights'])
    state['weights'] = [w.numpy() for w in new]
  return round_fn, tf.device('/CPU:0')


def run_cell(cell) -> dict:
  """One (setting, width, num_clients, local_steps) cell, in this process."""
  config = _config(cell)
  data = data_lib.load_federated_data(config)
  setting = cell['setting']
  trials = cell['trials_per_round']
  if setting in STACKED:
    round_fn, context = _stacked_round(config, trials,
                                       batched=setting == STACKED[0])
  elif setting.startswith(OURS):
    round_fn, context = _library_round(config, data)
  elif setting.startswith('stock'):
    round_fn, context = _stock_round(config, data,
                                     functional=setting == 'stock_functional')
  else:
    round_fn, context = _plain_round(config, data,
                                     stacked=setting == 'plain_tf')
  device = '/GPU:0' if (tf.config.list_physical_devices('GPU') and
                        setting.startswith('inprocess')) else '/CPU:0'
  peak = matmul_peak(device)
  with context:
    seconds = _time_rounds(round_fn, config.rounds) / trials
  examples = config.examples_per_round(data.client_sizes)
  flops = round_flops(config, cell['examples_per_client'])
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


def _by_row(cells) -> list[list]:
  """cells grouped by their (m, N, K), in order."""
  rows = {}
  for cell in cells:
    rows.setdefault(tuple(cell[k] for k in GRID_KEYS), []).append(cell)
  return list(rows.values())


def turns(num_settings: int, repeats: int) -> list[int]:
  """The order a row's settings are measured in: R rounds of turns, the
  r-th starting at setting r mod S (0 1 2, 1 2 0, 2 0 1, ...)."""
  return [(r + i) % num_settings for r in range(repeats)
          for i in range(num_settings)]


def median_repeat(runs: list[dict]) -> dict:
  """A cell's R runs as one: the run of median seconds_per_round (the lower
  of the two middle ones when R is even), with every run's time in
  repeat_seconds; a failed run fails the cell."""
  failed = [run for run in runs if 'error' in run]
  if failed:
    return failed[0]
  times = [run['seconds_per_round'] for run in runs]
  middle = sorted(range(len(runs)), key=times.__getitem__)[(len(runs) - 1) // 2]
  return dict(runs[middle], repeat_seconds=times)


def _table(results, settings) -> list[str]:
  """Markdown: s/round (fraction of peak) per setting, and the ratios."""
  def key(r):
    return r['width'], r['num_clients'], r['local_steps']

  rows = sorted({key(r) for r in results})
  by = {(*key(r), r['setting']): r for r in results}
  lines = ['| m | N | K | ' + ' | '.join(settings) + ' | best of ours | '
           'best / stock_keras | best / stock_functional | best plain TF | '
           'best of ours time / best plain TF time | ' +
           ' | '.join(f'{s} / inprocess (per trial)' for s in STACKED) + ' |',
           '|' + '---|' * (len(settings) + 8 + len(STACKED))]

  def ratio(a, b):
    return f'{a / b:.2f}x' if a and b else ''

  def fastest(speed, names):
    return max((s for s in speed if s.startswith(names) and s not in STACKED),
               key=speed.get, default='')

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
    best, plain = fastest(speed, OURS), fastest(speed, PLAIN)
    lines.append('| ' + ' | '.join(map(str, row)) + ' | ' + ' | '.join(cells + [
        best, ratio(speed.get(best), speed.get('stock_keras')),
        ratio(speed.get(best), speed.get('stock_functional')), plain,
        ratio(speed.get(plain), speed.get(best))] + [
            ratio(speed.get(s), speed.get('inprocess')) for s in STACKED]) +
                 ' |')
  return lines


def _plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  measured = [r for r in results if 'peak_fraction' in r]
  # The (N, K) of the most cells, against m.
  shapes = [(r['num_clients'], r['local_steps']) for r in measured]
  clients, steps = max(shapes, key=shapes.count, default=(0, 0))
  for setting in SETTINGS:
    points = sorted((r['width'], r['peak_fraction']) for r in measured
                    if r['setting'] == setting and r['num_clients'] == clients
                    and r['local_steps'] == steps)
    if points:
      ax.plot(*zip(*points), marker='o', label=setting)
  ax.set(xscale='log', xlabel='width m', ylabel='fraction of matmul peak',
         title=f'N={clients} clients, K={steps} local steps, '
         f'n_i={FLAGS.examples_per_client}')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _workload(config) -> str:
  """The round the cells time, in words."""
  sizes = [config.input_dim] + ['m'] * (config.depth + 1) + [config.output_dim]
  return (f'MLP {" -> ".join(map(str, sizes))}, '
          f'train_layers={config.train_layers}, '
          f'{FLAGS.examples_per_client} examples per client, K '
          f'{config.algorithm} local steps, every client in every round'
          + (', F(w^t) evaluated in the round (--eval_every=1)'
             if config.eval_every == 1 else ''))


def write_report(results, peak: float, config, out: str):
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
      f'{config.rounds} after a warm-up'
      + (f', in the median of {FLAGS.repeats} repeats, the settings of a row '
         'taking turns' if FLAGS.repeats > 1 else '') +
      f'; {" and ".join(STACKED)}: per '
      f'trial, a round of {FLAGS.stack} seeds / {FLAGS.stack}) and, in '
      'brackets, the achieved '
      'GFLOP/s as a fraction of the matmul peak measured in that cell\'s own '
      f'process. The workload: {_workload(config)}. Ratios are of rounds/s '
      '(best of ours time / best plain TF time: of seconds per round), '
      'measured in the same run.',
      ''] + _table(results, FLAGS.settings) + [
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


def _cells(rows, config) -> list:
  """Every (m, N, K) x setting cell, its config checked; exits 2 if bad."""
  for name in CELL_FIELDS:
    if FLAGS[name].present:
      flag_defs.exit_bad_input(f'--{name}: each cell sets it (--rows or '
                               '--grid, --examples_per_client, --settings)')
  if config.dataset != 'synthetic':
    flag_defs.exit_bad_input('--dataset: the throughput workload is '
                             'synthetic data')
  unknown = sorted(set(FLAGS.settings) - set(SETTINGS))
  if unknown:
    flag_defs.exit_bad_input(f'--settings: unknown {unknown}; choose from '
                             f'{", ".join(SETTINGS)}')
  if FLAGS.repeats < 1:
    flag_defs.exit_bad_input(f'--repeats: must be >= 1, got {FLAGS.repeats}')
  if FLAGS.stack < 1:
    flag_defs.exit_bad_input(f'--stack: must be >= 1, got {FLAGS.stack}')
  cells = [dict(setting=setting, width=width, num_clients=n_clients,
                local_steps=k, examples_per_client=FLAGS.examples_per_client,
                trials_per_round=FLAGS.stack if setting in STACKED else 1,
                config=dataclasses.asdict(config))
           for width, n_clients, k in rows for setting in FLAGS.settings]
  try:
    for cell in cells:
      cell_config = _config(cell)
      if cell['setting'] in STACKED:
        cell_config.check_stackable()
  except config_lib.ConfigError as e:
    flag_defs.exit_bad_input(str(e))
  return cells


def main(argv):
  if len(argv) > 1:
    flag_defs.exit_bad_input(f'unexpected arguments {argv[1:]}')
  if FLAGS.cell:
    print(json.dumps(run_cell(json.loads(FLAGS.cell))), flush=True)
    return 0
  config = flag_defs.config_from_flags()
  cells = _cells(_rows(), config)
  peak = matmul_peak('/CPU:0')
  results = []
  for row in _by_row(cells):
    estimates = [round_flops(_config(cell), FLAGS.examples_per_client) / 1e9
                 / peak for cell in row]
    results += [dict(cell, skipped=f'~{estimate:.0f} s/round at peak')
                for cell, estimate in zip(row, estimates)
                if estimate > FLAGS.budget_s]
    row = [cell for cell, estimate in zip(row, estimates)
           if estimate <= FLAGS.budget_s]
    runs = [[] for _ in row]
    for i in turns(len(row), FLAGS.repeats):
      runs[i].append(_run_child(row[i]))
      print(json.dumps(runs[i][-1]), flush=True)
    results += [median_repeat(cell_runs) for cell_runs in runs]
    # An interrupted run keeps its rows.
    write_report(results, peak, config, FLAGS.out)
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=flag_defs.parse_flags)
