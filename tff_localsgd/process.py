"""Local SGD as TFF computations.

One round (`next`), as a federated computation with one broadcast, one client
map and one aggregation, so TFF can compile it to a MapReduceForm:

    next: (<weights@SERVER, {ClientData}@CLIENTS> -> <weights@SERVER, metrics@SERVER>)

    w^t broadcast to the cohort S_t;
    client i:  Delta_i = w_i^{t,K} - w^t            (local_update, K steps)
               returns n_i Delta_i and n_i
    server:    Delta = sum_{i in S_t} n_i Delta_i / sum_{i in S_t} n_i
                     = sum_{i in S_t} p_i Delta_i,  p_i = n_i / sum_{j in S_t} n_j
               w^{t+1} = w^t + server_lr * Delta     (trainable layers only)

With server_lr = 1 this is FedAvg's weighted average of the local models.
The two sums are tff.federated_sum: the bits of tff.federated_mean(Delta_i,
weight=n_i), which multiplies by n_i and divides by the sum the same way,
without its broadcast of n_i to the shape of every weight (a pass over
the m x m matrix per client).
`evaluate` computes the global objective F(w) = sum_i p_i F_i(w) over
whichever clients it is given (all of them, for train/loss). When every
client takes part, unpacked, the round computes the same sums at w^t
(metrics['start']), so that a run needs no `evaluate` call for F(w^t) when
round t+1 follows.

`round_with(measure)` is the same round with a measurement of each client's
local models w_i^{t,K} averaged beside the delta (the diagnostics' measured
round); `next` is `round_with()`.

With config.clients_per_pack = P > 1, the rounds take packs
of P clients (packing.py; `pack` makes them from client values) instead of
clients, and each pack returns the n_i-weighted mean of its clients' deltas
with weight sum n_i, so the round computes the same w^{t+1}. `evaluate` and
the diagnostics take unpacked client values.
"""

import collections
import copy
import gc

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import packing


def weights_type(arrays):
  """The TFF type of a tuple of float32 weight tensors."""
  return tff.StructWithPythonType(
      [tff.TensorType(np.float32, a.shape) for a in arrays], tuple)


def client_data_type(input_shape, output_dim):
  """{x: float32[n_i, ...], y: float32[n_i, c], seed: int64[2]}: one client."""
  return tff.StructWithPythonType([
      ('x', tff.TensorType(np.float32, [None, *input_shape])),
      ('y', tff.TensorType(np.float32, [None, output_dim])),
      ('seed', tff.TensorType(np.int64, [2])),
  ], collections.OrderedDict)


def pack_data_type(input_shape, output_dim):
  """{x: float32[P, n_max, ...], y: float32[P, n_max, c], num_examples: int32[P], seed: int64[P, 2]}: one pack."""
  return tff.StructWithPythonType([
      ('x', tff.TensorType(np.float32, [None, None, *input_shape])),
      ('y', tff.TensorType(np.float32, [None, None, output_dim])),
      ('num_examples', tff.TensorType(np.int32, [None])),
      ('seed', tff.TensorType(np.int64, [None, 2])),
  ], collections.OrderedDict)


def client_data(x, y, seed, round_num, client_id, num_clients):
  """A client's value of client_data_type for one round.

  The minibatch seed is (seed, t * N + i): a distinct, reproducible stream per
  round t and client i, independent of the cohort.
  """
  return collections.OrderedDict(
      x=x, y=y,
      seed=np.array([seed, round_num * num_clients + client_id], np.int64))


def initialize_computation(spec):
  """The `initialize` computation of the process (spec.initial_weights:
  stacked [S, ...] for stacking.py)."""
  initial = tuple(spec.initial_weights)

  @tff.tensorflow.computation
  def initial_weights():
    return tuple(tf.constant(w) for w in initial)

  @tff.federated_computation
  def initialize():
    """( -> weights@SERVER): w^0, drawn by the Keras model."""
    return tff.federated_eval(initial_weights, tff.SERVER)
  return initialize


def _weighted_mean(w_type):
  @tff.tensorflow.computation(w_type, np.float32)
  def weighted_mean(weighted_sum, total):
    """(sum_i n_i Delta_i, sum_i n_i) -> Delta, as tff.federated_mean."""
    return tuple(s / total for s in weighted_sum)
  return weighted_mean


def _server_update(spec, server_lr, w_type):
  @tff.tensorflow.computation(w_type,
                              weights_type(spec.trainable(spec.initial_weights)))
  def server_update(weights, delta):
    """(w^t, Delta) -> w^t + server_lr * Delta on the trainable layers."""
    trained = [w + server_lr * d
               for w, d in zip(spec.trainable(weights), delta)]
    return spec.with_trainable(weights, trained)
  return server_update


def evaluation_sums(spec, loss, weights, x, y, mask=None):
  """One client's <loss_sum, correct, num_examples> at w: sum_j l(f(w; x_j),
  y_j), the correct argmax predictions, n_i. Summed over clients, F(w) =
  loss_sum / num_examples (and the accuracy likewise).

  With `mask` [S, n_max] (stacking.py: x [S, n_max, ...], weights [S, ...],
  padding marked 0) each is float32[S], the sums over the real examples.
  """
  logits = models.forward(spec.layers, weights, x)
  per_example = models.loss_fn(loss, logits, y)
  hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)),
                 tf.float32)
  if mask is None:
    return collections.OrderedDict(
        loss_sum=tf.reduce_sum(per_example), correct=tf.reduce_sum(hits),
        num_examples=tf.cast(tf.shape(x)[0], tf.float32))
  return collections.OrderedDict(
      loss_sum=tf.reduce_sum(per_example * mask, axis=-1),
      correct=tf.reduce_sum(hits * mask, axis=-1),
      num_examples=tf.reduce_sum(mask, axis=-1))


def _evaluate(spec, loss, w_type, d_type):
  """(<weights@SERVER, {ClientData}@CLIENTS> -> <loss_sum, correct, num_examples>@SERVER)"""
  @tff.tensorflow.computation(w_type, d_type)
  def client_eval(weights, data):
    """(weights, ClientData) -> <loss_sum, correct, num_examples>"""
    return evaluation_sums(spec, loss, weights, data['x'], data['y'])

  @tff.federated_computation(tff.FederatedType(w_type, tff.SERVER),
                             tff.FederatedType(d_type, tff.CLIENTS))
  def evaluate(weights, data):
    """(<weights@SERVER, {ClientData}@CLIENTS> -> <loss_sum, correct, num_examples>@SERVER)"""
    out = tff.federated_map(client_eval,
                            (tff.federated_broadcast(weights), data))
    return tff.federated_sum(out)
  return evaluate


class LocalSGDProcess:
  """The TFF computations of one experiment: initialize, next and evaluate."""

  def __init__(self, spec: models.ModelSpec, config, input_shape,
               output_dim: int):
    self.spec, self.config = spec, config
    self.clients_per_pack = config.clients_per_pack
    self.weights_type = weights_type(spec.initial_weights)
    self.client_data_type = client_data_type(input_shape, output_dim)
    # The data type of the round's clients: packs or single clients.
    self.work_type = (pack_data_type(input_shape, output_dim)
                      if config.clients_per_pack > 1 else
                      self.client_data_type)
    # The round also evaluates F(w^t), as `evaluate` would on all clients,
    # when its clients are all clients, unpacked and in order, and every
    # round is evaluated: the metric `start`, which saves the run an
    # evaluation call per round (and costs a forward pass a round).
    self.evaluates_start = (config.clients_per_pack == 1 and
                            config.cohort_size == config.num_clients and
                            config.eval_every == 1)
    self.server_update = _server_update(spec, config.server_lr,
                                        self.weights_type)
    self.evaluate = _evaluate(spec, config.loss, self.weights_type,
                              self.client_data_type)
    self.iterative_process = tff.templates.IterativeProcess(
        initialize_computation(spec), self.round_with())

  def with_initial(self, spec: models.ModelSpec) -> 'LocalSGDProcess':
    """This process for spec's initial weights w^0, of the same shapes: only
    `initialize` holds w^0, so every other computation is shared."""
    other = copy.copy(self)
    other.spec = spec
    other.iterative_process = tff.templates.IterativeProcess(
        initialize_computation(spec), self.iterative_process.next)
    return other

  def local_work(self, weights, data, measure=None):
    """K local steps of a client (or pack); `measure(weights, data, local)`,
    if given, adds its measurements of the local models to the output."""
    spec, config = self.spec, self.config
    step_args = dict(lr=config.lr, local_steps=config.local_steps,
                     batch_size=config.batch_size,
                     full_batch=config.algorithm == 'local_gd', jit=config.jit)
    if self.clients_per_pack > 1:
      return packing.pack_work(spec, config.loss, weights, data,
                               measure=measure, **step_args)
    delta, last_loss = local_update.local_steps_update(
        spec, config.loss, weights, data['x'], data['y'], data['seed'],
        **step_args)
    n = tf.cast(tf.shape(data['x'])[0], tf.float32)
    out = collections.OrderedDict(
        weighted_delta=tuple(d * n for d in delta), num_examples=n,
        local_loss=last_loss)
    if self.evaluates_start:
      out['start'] = evaluation_sums(spec, config.loss, weights, data['x'],
                                     data['y'])
    if measure is not None:
      local = [w + d for w, d in zip(spec.trainable(weights), delta)]
      out.update(measure(weights, data, local))
    return out

  def round_with(self, measure=None):
    """The round; with `measure`, also the p-weighted mean of what it
    measures on each client's local models (local_work's hook)."""
    @tff.tensorflow.computation(self.weights_type, self.work_type)
    def client_work(weights, data):
      """(weights, ClientData or Pack) -> <weighted_delta, num_examples, local_loss, ...>"""
      return self.local_work(weights, data, measure)

    names = [name for name, _ in
             tff.structure.iter_elements(client_work.type_signature.result)
             if name not in ('weighted_delta', 'num_examples', 'start')]
    server_update = self.server_update
    weighted_mean = _weighted_mean(
        weights_type(self.spec.trainable(self.spec.initial_weights)))

    @tff.federated_computation(
        tff.FederatedType(self.weights_type, tff.SERVER),
        tff.FederatedType(self.work_type, tff.CLIENTS))
    def next_fn(weights, data):
      """(<weights@SERVER, {ClientData or Pack}@CLIENTS> -> <weights@SERVER, metrics@SERVER>)"""
      broadcast = tff.federated_broadcast(weights)
      out = tff.federated_map(client_work, (broadcast, data))
      delta = tff.federated_map(weighted_mean, (
          tff.federated_sum(out.weighted_delta),
          tff.federated_sum(out.num_examples)))
      new_weights = tff.federated_map(server_update, (weights, delta))
      metrics = collections.OrderedDict(
          (name, tff.federated_mean(getattr(out, name),
                                    weight=out.num_examples))
          for name in names)
      if self.evaluates_start:
        metrics['start'] = tff.federated_sum(out.start)  # as `evaluate`
      return new_weights, tff.federated_zip(metrics)
    if self.config.jit:
      # The XLA tf.functions traced into client_work stay registered in
      # this process's eager context until collected, and TensorFlow
      # refuses to import TFF's serialized copy of one (its attributes
      # differ) under the same name: the in-process engine failed so with
      # P = 1. Collecting them now drops those registrations.
      gc.collect()
    return next_fn

  def pack(self, client_values) -> list:
    """The values `next` takes for these clients: packs of P, or the clients."""
    if self.clients_per_pack == 1:
      return client_values
    return packing.pack_clients(client_values, self.clients_per_pack)

  def initialize(self):
    return self.iterative_process.initialize()

  def next(self, weights, cohort_data):
    return self.iterative_process.next(weights, cohort_data)
