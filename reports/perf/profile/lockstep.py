"""The lockstep diagnostic round at E1's shape (common.py's, K = 5, probe-free):
the native worker against the in-process graph (federated_graph.py), taking
turns call by call in one process, and the same TensorFlow work as one
tf.function (the floor: every client's K steps and K measures, no TFF).

    PYTHONPATH=.:reports/perf/profile python reports/perf/profile/lockstep.py 2048 [calls]

Prints the median (min) seconds of each, and whether the two engines'
w^{t+1} have the same bits.
"""
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

import common
from tff_localsgd import diagnostic_process
from tff_localsgd import diagnostics
from tff_localsgd import local_update
from tff_localsgd import process
from tff_localsgd.engines import inprocess


def floor_fn(config, spec, data):
  """The lockstep round's TensorFlow work, one tf.function."""
  xs = [tf.constant(x) for x in data.client_x]
  ys = [tf.constant(y) for y in data.client_y]
  idx, p = spec.trainable_indices, 1 / len(xs)

  @tf.function
  def run(weights):
    local = [[weights[i] for i in idx] for _ in xs]
    out = []
    for _ in range(config.local_steps):
      average = [tf.add_n([p * w[j] for w in local]) for j in range(len(idx))]
      for c, (x, y) in enumerate(zip(xs, ys)):
        drift = diagnostics.client_drift(
            spec.layers, config.loss, spec.with_trainable(weights, local[c]),
            spec.with_trainable(weights, average), idx, x, y)
        out.append(drift['grad_diff'] + drift['nonsmooth'] + tf.add_n(
            [tf.reduce_sum(g) for g in drift['grad_avg']]))
        _, grads = local_update.gradient(
            spec.layers, config.loss, spec.with_trainable(weights, local[c]),
            idx, x, y)
        local[c] = [w - config.lr * g for w, g in zip(local[c], grads)]
    return tf.add_n(out), local
  return run


def main(width: int, calls: int):
  config, data, spec, values = common.suite_round(width)
  proc = process.LocalSGDProcess(spec, config, data.input_shape,
                                 data.output_dim)
  lockstep = diagnostic_process.Lockstep(proc, config)
  comp = lockstep.chunk(0, config.local_steps)
  arg = (list(spec.initial_weights), values(1))
  floor = floor_fn(config, spec, data)
  weights = [tf.constant(w) for w in spec.initial_weights]
  times = {'native': [], 'inprocess': [], 'tf.function': []}
  with inprocess.inprocess_engine('/CPU:0') as context:
    runs = {'native': lambda: context.fallback.invoke(comp, arg),
            'inprocess': lambda: context.invoke(comp, arg),
            'tf.function': lambda: floor(weights)[0].numpy()}
    out = {name: run() for name, run in runs.items()}  # compile
    for _ in range(calls):
      for name, run in runs.items():
        tick = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - tick)
  same = all(np.array_equal(a, b) for a, b in
             zip(out['native'][0], out['inprocess'][0]))
  print(f'm = {width}, {calls} calls each, taking turns')
  for name, values_s in times.items():
    print(f'  {name:12s} {statistics.median(values_s):.4f} s '
          f'({min(values_s):.4f})')
  print(f'  w^(t+1) bit-identical between the engines: {same}')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 7)
