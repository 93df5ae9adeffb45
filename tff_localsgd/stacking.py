"""Stacking: S seeds of one configuration trained as one TFF computation.

S trials that differ only in their seed s_1..s_S run one round as one
federated computation. Every seed's weights (all layers: w^0 and the frozen
layers differ by seed) are stacked on a leading axis [S, ...], and one TFF
client value is the j-th cohort member of every seed, stacked and padded as
a pack is (packing.pack_clients):

    {x: float32[S, n_max, ...], y: float32[S, n_max, c],
     num_examples: int32[S], seed: int64[S, 2]}

row s holding seed s's client i_{s,j} (its cohort S_t^s and its partition
are its own, so its n_{s,j} too) and that client's minibatch seed
(s, t * N + i_{s,j}), process.client_data's. The client runs the K local
steps of all S seeds from their own w_s^t, in one graph: each seed's own
local_update on its unpadded rows (the default: the bits of S separate
runs), or batched (packing.pack_local_steps: every matmul batched over S;
within 1e-6 of them); see StackedProcess. It returns, per seed,
n_{s,j} Delta_{s,j} and n_{s,j}; the server sums them over the cohort and
divides per seed:

    w_s^{t+1} = w_s^t + server_lr * sum_j n_{s,j} Delta_{s,j} / sum_j n_{s,j}
              = w_s^t + server_lr * sum_{i in S_t^s} p_{s,i} Delta_{s,i},

process.py's round for each seed. No operation mixes two seeds, so a seed
whose weights become non-finite leaves the others' bits alone
(tests/test_stacking.py). `evaluate` gives the evaluation sums of each seed,
float32[S] each, F_s(w_s) = loss_sum[s] / num_examples[s]; the round gives
them at w_s^t as `start` when process.py's round would (every client, every
round evaluated).

StackedClients makes the client values round after round, each stacked
client's x and y padded once.

Refused (ExperimentConfig.check_stackable): the diagnostics (they measure one model), packs (the
leading axis is the seed's), and the cnn (conv layers do not batch over a
stack of filters).
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import packing
from tff_localsgd import process


def stacked_spec(specs) -> models.ModelSpec:
  """The seeds' specs as one: their layers, w^0 stacked [S, ...]."""
  layers = {spec.layers for spec in specs}
  if len(layers) != 1:
    raise ValueError('stacked seeds must share one architecture')
  return models.ModelSpec(
      specs[0].layers,
      tuple(np.stack(ws) for ws in zip(*(s.initial_weights for s in specs))))


def stack_clients(per_seed) -> list:
  """per_seed[s][j]: seed s's j-th cohort member (process.client_data);
  returns the stacked client values, j = 0..|S_t|-1 (module doc)."""
  if len({len(values) for values in per_seed}) != 1:
    raise ValueError('every seed needs a cohort of the same size')
  return [packing.pack_clients(list(members), len(members))[0]
          for members in zip(*per_seed)]


# Stacked x and y StackedClients keeps for the next rounds (the first made
# go first): the suite's cohorts, all clients every round, hold 4 to 16.
HELD_CLIENTS = 64


class StackedClients:
  """The stacked client values of S seeds' data, round after round.

  A stacked client's x, y and num_examples depend on its members only, so
  they are padded once and kept read-only (the in-process engine converts
  a read-only array to a tensor once); each round adds its seeds.
  """

  def __init__(self, seeds, data, num_clients: int):
    """seeds: s_1..s_S; data: each seed's FederatedData; N clients."""
    self.seeds, self.data = tuple(seeds), tuple(data)
    self.num_clients = num_clients
    self._held = collections.OrderedDict()  # (i_1..i_S) -> stacked value

  def _value(self, seed, data, i, round_num):
    return process.client_data(data.client_x[i], data.client_y[i], seed,
                               round_num, i, self.num_clients)

  def cohort(self, cohorts, round_num: int) -> list:
    """cohorts[s]: seed s's S_t (training.sample_cohort); round t's values,
    stack_clients of each seed's process.client_data."""
    out = []
    for members in zip(*cohorts):
      key = tuple(int(i) for i in members)
      rows = list(zip(self.seeds, self.data, key))
      if key not in self._held:
        padded, = stack_clients([[self._value(*row, 0)] for row in rows])
        for array in padded.values():
          array.setflags(write=False)
        self._held[key] = padded
      out.append(collections.OrderedDict(self._held[key], seed=np.stack(
          [self._value(*row, round_num)['seed'] for row in rows])))
    while len(self._held) > HELD_CLIENTS:
      self._held.popitem(last=False)
    return out


def seed_weights(weights, s: int) -> tuple:
  """Seed s's weights from the stacked ones."""
  return tuple(np.asarray(w)[s] for w in weights)


def _seed_axis(values, like):
  """values [S], shaped to broadcast over like [S, ...] seed by seed."""
  return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


class StackedProcess:
  """The TFF computations of S stacked seeds: initialize, next, evaluate.

  specs: each seed's ModelSpec (build_model with that seed); config: the
  shared configuration (its seed unused: the seeds enter through specs and
  the client values' minibatch seeds). batched: every matmul batched over
  the seeds (packing's steps, padding masked); else the client runs each
  seed's local_update on its own rows, one seed after another in the same
  graph: the ops of the separate runs, so the same bits
  (tests/test_stacking.py). Looped is the default: on the 2-core CPU it
  was the faster of the two at every width measured (reports/perf/STACK.md,
  where batched lost to S separate runs); batched is for a device whose
  16-row matmuls leave it idle (a GPU: not measured here).
  """

  def __init__(self, specs, config, input_shape, output_dim: int,
               batched: bool = False):
    config.check_stackable()
    self.batched = batched
    self.spec, self.config = stacked_spec(specs), config
    self.num_seeds = len(specs)
    self.weights_type = process.weights_type(self.spec.initial_weights)
    self.data_type = process.pack_data_type(input_shape, output_dim)
    self.evaluates_start = (config.cohort_size == config.num_clients and
                            config.eval_every == 1)
    self.evaluate = self._evaluate()
    self.iterative_process = tff.templates.IterativeProcess(
        process.initialize_computation(self.spec), self._round())

  def _seed(self, weights, data, s: int) -> tuple:
    """Seed s's (w_s, x, y, minibatch seed), its padding cut off."""
    n = data['num_examples'][s]
    return (tuple(w[s] for w in weights), data['x'][s, :n],
            data['y'][s, :n], data['seed'][s])

  def sums(self, weights, data):
    """Each seed's evaluation sums at its w_s: float32[S] each."""
    if self.batched:
      mask = packing.example_mask(data['num_examples'],
                                  tf.shape(data['x'])[1])
      sums = process.evaluation_sums(self.spec, self.config.loss, weights,
                                     data['x'], data['y'], mask)
    else:
      each = [process.evaluation_sums(self.spec, self.config.loss,
                                      *self._seed(weights, data, s)[:3])
              for s in range(self.num_seeds)]
      sums = {name: tf.stack([e[name] for e in each]) for name in each[0]}
    # The round's sum over clients needs the static [S].
    return collections.OrderedDict(
        (name, tf.ensure_shape(v, [self.num_seeds]))
        for name, v in sums.items())

  def _local_steps(self, weights, data) -> tuple:
    """(Delta_s stacked [S, ...] per trainable layer, f_s [S]): the K local
    steps of every seed, batched (packing) or one seed after another
    (local_update, on the seed's own unpadded data)."""
    spec, config = self.spec, self.config
    step_args = dict(lr=config.lr, local_steps=config.local_steps,
                     batch_size=config.batch_size,
                     full_batch=config.algorithm == 'local_gd',
                     jit=config.jit)
    if self.batched:
      local, last_loss = packing.pack_local_steps(
          spec, config.loss, weights, data,
          start=list(spec.trainable(weights)), **step_args)
      return ([w - w0 for w, w0 in zip(local, spec.trainable(weights))],
              last_loss)
    each = [local_update.local_steps_update(
        spec, config.loss, *self._seed(weights, data, s), **step_args)
            for s in range(self.num_seeds)]
    return ([tf.stack(layer) for layer in zip(*(d for d, _ in each))],
            tf.stack([loss for _, loss in each]))

  def local_work(self, weights, data):
    """(w^t [S, ...], stacked client) -> <n Delta [S, ...], n [S],
    n f [S] (the last local loss), start (sums at w_s^t)>."""
    delta, last_loss = self._local_steps(weights, data)
    n = tf.ensure_shape(tf.cast(data['num_examples'], tf.float32),
                        [self.num_seeds])
    out = collections.OrderedDict(
        # As process.py's d * n, per seed: n_s broadcast over its weights.
        weighted_delta=tuple(d * _seed_axis(n, d) for d in delta),
        num_examples=n, local_loss=last_loss * n)
    if self.evaluates_start:
      out['start'] = self.sums(weights, data)
    return out

  def _round(self):
    """(<weights@SERVER, {Stacked}@CLIENTS> -> <weights@SERVER, metrics@SERVER>)"""
    spec, server_lr = self.spec, self.config.server_lr

    @tff.tensorflow.computation(self.weights_type, self.data_type)
    def client_work(weights, data):
      return self.local_work(weights, data)

    sums_type = client_work.type_signature.result

    @tff.tensorflow.computation(self.weights_type, sums_type)
    def server_update(weights, sums):
      """w_s + server_lr * (sum_j n Delta)_s / (sum_j n)_s, trainable layers."""
      total = sums['num_examples']
      delta = [s / _seed_axis(total, s) for s in sums['weighted_delta']]
      return spec.with_trainable(weights, [
          w + server_lr * d for w, d in zip(spec.trainable(weights), delta)])

    @tff.tensorflow.computation(sums_type)
    def server_metrics(sums):
      """local_loss [S] (n-weighted mean per seed) and start's sums."""
      out = collections.OrderedDict(
          local_loss=sums['local_loss'] / sums['num_examples'])
      if 'start' in sums:
        out['start'] = sums['start']
      return out

    @tff.federated_computation(
        tff.FederatedType(self.weights_type, tff.SERVER),
        tff.FederatedType(self.data_type, tff.CLIENTS))
    def next_fn(weights, data):
      """(<weights@SERVER, {Stacked}@CLIENTS> -> <weights@SERVER, metrics@SERVER>)"""
      out = tff.federated_map(client_work,
                              (tff.federated_broadcast(weights), data))
      sums = tff.federated_sum(out)
      return (tff.federated_map(server_update, (weights, sums)),
              tff.federated_map(server_metrics, sums))
    return next_fn

  def _evaluate(self):
    """(<weights@SERVER, {Stacked}@CLIENTS> -> <loss_sum, correct, num_examples>@SERVER), each [S]"""
    @tff.tensorflow.computation(self.weights_type, self.data_type)
    def client_eval(weights, data):
      return self.sums(weights, data)

    @tff.federated_computation(tff.FederatedType(self.weights_type, tff.SERVER),
                               tff.FederatedType(self.data_type, tff.CLIENTS))
    def evaluate(weights, data):
      """Each seed's evaluation sums over the clients given, float32[S]."""
      return tff.federated_sum(tff.federated_map(
          client_eval, (tff.federated_broadcast(weights), data)))
    return evaluate

  def initialize(self):
    return self.iterative_process.initialize()

  def next(self, weights, stacked_data):
    return self.iterative_process.next(weights, stacked_data)
