"""TFF computations that measure what the convergence proof rests on.

Notation: cohort S_t, weights p_i = n_i / sum_j n_j, K local steps, local
models w_i^{t,k}, their virtual average w_bar^{t,k} = sum_i p_i w_i^{t,k}.

`lockstep_next` is a round that gives the same w^{t+1} as the ordinary round
(the same `sgd_step`, the same weighted mean of deltas, the same server
update) but runs the K local steps one federated_map at a time, averaging the
local models after every step, broadcasting w_bar^{t,k} and measuring on every
client, at each local step k = 0..K-1 (the points where the local gradients
are taken; at k = 0 every w_i = w^t, so the first step's drift is 0):

    grad_diff_k      = sum_i p_i ||grad F_i(w_i^{t,k}) - grad F_i(w_bar^{t,k})||
    grad_diff_rel_k  = grad_diff_k / ||sum_i p_i grad F_i(w_bar^{t,k})||
    smooth_eff_k     = eta * grad_diff_k / sum_i p_i ||w_i^{t,k} - w_bar^{t,k}||
    nonsmooth_frac_k = sum_i p_i ||grad F_i(w_i) - grad F_i(w_bar)
                                    - hess F_i(w_bar)(w_i - w_bar)|| / grad_diff_k
    model_divergence = sum_i p_i ||w_i^{t,K} - w_bar^{t,K}||
    grad_diff_vs_start = sum_i p_i ||grad F_i(w_i^{t,K}) - grad F_i(w^t)||

The gradients are of the clients' full objectives F_i; the per-step values
are reported as their mean and max over k. 0/0 (one client, or K = 1) is
reported as 0; with one client or K = 1 the drift is exactly 0. Its type:

    (<weights@SERVER, {ClientData}@CLIENTS> ->
     <weights@SERVER, <per-step drift>@SERVER, <per-client drift>@CLIENTS>)

It has K + 1 aggregations, so it has no MapReduceForm; it runs on the native
(or remote) engine, in calls of a few local steps each, as many as memory
allows (`lockstep_next(..., steps_per_call)`). `measure_model` and `ntk_gram`
measure the averaged model: weight change, activation flips, grad F and F_i,
and the NTK.
"""

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import diagnostics
from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import process as process_lib

DRIFT_STEP_METRICS = ('grad_diff', 'grad_diff_rel', 'smooth_eff',
                      'nonsmooth_frac')


class DiagnosticComputations:
  """The diagnostic computations for one LocalSGDProcess."""

  def __init__(self, proc: process_lib.LocalSGDProcess, config, probe_shape):
    spec, layers, idx = proc.spec, proc.spec.layers, proc.spec.trainable_indices
    loss, lr, num_steps = config.loss, config.lr, config.local_steps
    full_batch = config.algorithm == 'local_gd'
    w_type, d_type = proc.weights_type, proc.client_data_type
    t_type = process_lib.weights_type(spec.trainable(spec.initial_weights))
    probe_type = tff.TensorType(np.float32, [None, *probe_shape])

    @tff.tensorflow.computation(w_type)
    def trainable_of(weights):
      return tuple(spec.trainable(weights))

    @tff.tensorflow.computation(d_type)
    def num_examples(data):
      return tf.cast(tf.shape(data['x'])[0], tf.float32)

    @tff.tensorflow.computation(w_type, t_type, d_type, np.int32)
    def client_step(weights, local, data, k):
      """(w^t, w_i^{t,k}, ClientData, k) -> w_i^{t,k+1}"""
      new, _ = local_update.sgd_step(
          spec, loss, weights, list(local), data['x'], data['y'],
          data['seed'], k, lr=lr, batch_size=config.batch_size,
          full_batch=full_batch)
      return tuple(new)

    @tff.tensorflow.computation(w_type, t_type, t_type, d_type)
    def client_measure(weights, local, average, data):
      """(w^t, w_i^{t,k}, w_bar^{t,k}, ClientData) -> drift of client i"""
      drift = diagnostics.client_drift(
          layers, loss, spec.with_trainable(weights, local),
          spec.with_trainable(weights, average), idx, data['x'], data['y'])
      return collections.OrderedDict(
          grad_diff=drift['grad_diff'], weight_dist=drift['weight_dist'],
          nonsmooth=drift['nonsmooth'], grad_avg=tuple(drift['grad_avg']))

    @tff.tensorflow.computation(w_type, t_type, d_type)
    def client_end(weights, local, data):
      """(w^t, w_i^{t,K}, ClientData) -> <delta_i, grad_diff_vs_start_i>"""
      start = spec.trainable(weights)
      return collections.OrderedDict(
          delta=tuple(w - w0 for w, w0 in zip(local, start)),
          grad_diff_vs_start=diagnostics.gradient_difference(
              layers, loss, spec.with_trainable(weights, local), weights, idx,
              data['x'], data['y']))

    means_type = client_measure.type_signature.result

    @tff.tensorflow.computation(means_type)
    def server_combine(means):
      """p-weighted means at step k -> the step's drift metrics"""
      grad_norm = diagnostics.norm(means['grad_avg'])
      return collections.OrderedDict(
          grad_diff=means['grad_diff'],
          grad_diff_rel=tf.math.divide_no_nan(means['grad_diff'], grad_norm),
          smooth_eff=lr * tf.math.divide_no_nan(means['grad_diff'],
                                                means['weight_dist']),
          nonsmooth_frac=tf.math.divide_no_nan(means['nonsmooth'],
                                               means['grad_diff']))

    @tff.tensorflow.computation(np.float32, np.float32)
    def share(n, total):
      return n / total

    @tff.tensorflow.computation(t_type, np.float32)
    def scale(local, p):
      return tuple(p * w for w in local)

    @tff.tensorflow.computation(t_type, t_type)
    def distance(local, average):
      return diagnostics.norm(a - b for a, b in zip(local, average))

    def virtual_average(local, p):
      # sum_i p_i w_i with p_i = n_i / n computed on the client: exact for a
      # single client (p = 1), unlike sum_i n_i w_i / n.
      return tff.federated_broadcast(
          tff.federated_sum(tff.federated_map(scale, (local, p))))

    server_w = tff.FederatedType(w_type, tff.SERVER)
    clients_d = tff.FederatedType(d_type, tff.CLIENTS)
    clients_t = tff.FederatedType(t_type, tff.CLIENTS)

    def lockstep_chunk(first: int, last: int):
      """Local steps first..last-1 of the lockstep round, one TFF call.

      Steps 0..K-1 split into chunks because TFF's runtime keeps every value
      of a call alive until the call returns: a chunk's memory grows with its
      number of steps, and the local models cross between chunks as
      {t_type}@CLIENTS values. The first chunk starts from w^t; the last one
      ends the round. Types (first / middle / last chunk):

        (<weights@SERVER, {ClientData}@CLIENTS> -> <{local}@CLIENTS, steps@SERVER>)
        (<weights@SERVER, {local}@CLIENTS, {ClientData}@CLIENTS> -> <{local}@CLIENTS, steps@SERVER>)
        (<weights@SERVER, {local}@CLIENTS, {ClientData}@CLIENTS> ->
         <weights@SERVER, <steps, summary>@SERVER, per-client@CLIENTS>)
      """
      def body(weights, local, data):
        broadcast = tff.federated_broadcast(weights)
        n = tff.federated_map(num_examples, data)
        p = tff.federated_map(share, (n, tff.federated_broadcast(
            tff.federated_sum(n))))
        start = tff.federated_map(trainable_of, broadcast)
        if local is None:
          local = start
        steps = []
        for k in range(first, last):
          # At k = 0 every client holds w^t: the average is w^t, exactly.
          average = start if k == 0 else virtual_average(local, p)
          measured = tff.federated_map(client_measure,
                                       (broadcast, local, average, data))
          steps.append(tff.federated_map(
              server_combine, tff.federated_mean(measured, weight=n)))
          step = tff.federated_broadcast(tff.federated_value(np.int32(k),
                                                            tff.SERVER))
          local = tff.federated_map(client_step,
                                    (broadcast, local, data, step))
        steps = tff.federated_zip(tuple(steps))
        if last < num_steps:
          return local, steps
        divergence = tff.federated_map(distance,
                                       (local, virtual_average(local, p)))
        end = tff.federated_map(client_end, (broadcast, local, data))
        delta = tff.federated_mean(end.delta, weight=n)
        new_weights = tff.federated_map(proc.server_update, (weights, delta))
        summary = collections.OrderedDict(
            steps=steps,
            model_divergence=tff.federated_mean(divergence, weight=n),
            grad_diff_vs_start=tff.federated_mean(end.grad_diff_vs_start,
                                                  weight=n))
        per_client = collections.OrderedDict(
            grad_diff=measured.grad_diff, nonsmooth=measured.nonsmooth,
            model_divergence=divergence,
            grad_diff_vs_start=end.grad_diff_vs_start)
        return new_weights, tff.federated_zip(summary), per_client

      if first == 0:
        return tff.federated_computation(server_w, clients_d)(
            lambda weights, data: body(weights, None, data))
      return tff.federated_computation(server_w, clients_t, clients_d)(body)

    self._lockstep_chunk = functools.cache(lockstep_chunk)

    @tff.tensorflow.computation(w_type)
    def spectral_norms(weights):
      """w -> {layer: ||W_l||_2} for the hidden m x m layers"""
      return diagnostics.hidden_spectral_norms(layers, weights, idx)

    @tff.tensorflow.computation(w_type, probe_type)
    def ntk_gram(weights, probe_x):
      """(w, probe inputs) -> H, the empirical NTK Gram matrix [P, P]"""
      return diagnostics.ntk_gram(layers, weights, idx, probe_x)

    indexed_d_type = tff.StructWithPythonType(
        [('x', d_type.x), ('y', d_type.y),
         ('index', tff.TensorType(np.int32))], collections.OrderedDict)

    @tff.tensorflow.computation(w_type, indexed_d_type)
    def client_grad(weights, data):
      """(w, <x, y, index i>) -> <n_i grad F_i(w), n_i, F_i(w) e_i>"""
      value, grads = local_update.gradient(layers, loss, weights, idx,
                                           data['x'], data['y'])
      n = tf.cast(tf.shape(data['x'])[0], tf.float32)
      # scatter_nd, not value * one_hot: an infinite F_i must not turn the
      # other clients' entries into inf * 0 = NaN.
      return collections.OrderedDict(
          grad_sum=tuple(n * g for g in grads), num_examples=n,
          losses=tf.scatter_nd([[data['index']]], [value],
                               [config.num_clients]))

    model_type = tff.StructWithPythonType(
        [('weights', w_type), ('initial', w_type),
         ('initial_spectral', spectral_norms.type_signature.result),
         ('probe_x', probe_type)], collections.OrderedDict)

    @tff.tensorflow.computation(model_type, client_grad.type_signature.result)
    def summarize(model, sums):
      """(<w^t, w^0, ||W_l^0||_2, probe inputs>, client sums) -> the metrics"""
      weights, initial = model['weights'], model['initial']
      out = diagnostics.weight_change(
          layers, weights, initial, idx,
          initial_spectral=model['initial_spectral'])
      out.update(diagnostics.activation_flip_fraction(
          layers, weights, initial, model['probe_x']))
      out['grad_norm'] = diagnostics.norm(
          [g / sums['num_examples'] for g in sums['grad_sum']])
      out['client_losses'] = sums['losses']
      return out

    @tff.federated_computation(tff.FederatedType(model_type, tff.SERVER),
                               tff.FederatedType(indexed_d_type, tff.CLIENTS))
    def measure_model(model, data):
      """(<<w^t, w^0, ||W_l^0||_2, probe inputs>@SERVER, {<x, y, index>}@CLIENTS> -> metrics@SERVER)

      One broadcast and one federated_sum, so that it has a MapReduceForm
      and the in-process engine runs it; each client's F_i reaches the
      server as F_i e_i.
      """
      sums = tff.federated_sum(tff.federated_map(
          client_grad, (tff.federated_broadcast(model.weights), data)))
      return tff.federated_map(summarize, (model, sums))

    self.num_steps = num_steps
    self.spectral_norms = spectral_norms
    self.ntk_gram = ntk_gram
    self._measure_model = measure_model

  def lockstep_next(self, weights, data, steps_per_call: int | None = None):
    """The lockstep round, in calls of at most steps_per_call local steps.

    (weights, [ClientData]) -> (w^{t+1}, {steps: per-step drift,
    model_divergence, grad_diff_vs_start}, per-client drift). The result does
    not depend on steps_per_call (tested); it only bounds the memory.
    """
    size = min(steps_per_call or self.num_steps, self.num_steps)
    bounds = list(range(0, self.num_steps, size)) + [self.num_steps]
    local, steps = None, []
    for first, last in zip(bounds, bounds[1:]):
      chunk = self._lockstep_chunk(first, last)
      args = (weights, data) if first == 0 else (weights, local, data)
      if last < self.num_steps:
        local, chunk_steps = chunk(*args)
        steps.extend(chunk_steps)
      else:
        weights, summary, per_client = chunk(*args)
    summary['steps'] = tuple(steps) + tuple(summary['steps'])
    return weights, summary, per_client

  def measure_model(self, weights, initial, initial_spectral, probe_x,
                    clients):
    """The averaged model's diagnostics, in one TFF call.

    (w^t, w^0, {layer: ||W_l^0||_2}, probe inputs, the N clients' ClientData
    in client order) -> {weight_change_rel..., weight_change_spectral_rel...,
    activation_flip_frac..., grad_norm: ||grad F(w^t)||, client_losses:
    [F_i(w^t)]}, with grad F = sum_i p_i grad F_i over all clients.
    """
    return self._measure_model(
        collections.OrderedDict(weights=weights, initial=initial,
                                initial_spectral=initial_spectral,
                                probe_x=probe_x),
        [collections.OrderedDict(x=c['x'], y=c['y'], index=np.int32(i))
         for i, c in enumerate(clients)])
