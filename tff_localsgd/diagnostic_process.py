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
allows (`Lockstep.next(..., steps_per_call)`). Without the lockstep round
(--lockstep_drift=false) a diagnostic round is the ordinary round composed
with `end_drift`, which measures grad_diff_vs_start only. `ModelMeasures`
measure the averaged model: weight change, activation flips, grad F and F_i,
and the NTK.

`Diagnostics` is what the run loop uses: on a diagnostic round t it trains
with `train_round` and measures w^t with `measure_model`.
"""

import collections
import functools
import os

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_localsgd import diagnostics
from tff_localsgd import local_update
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import models
from tff_localsgd import packing
from tff_localsgd import process as process_lib
from tff_localsgd import results

DRIFT_STEP_METRICS = ('grad_diff', 'grad_diff_rel', 'smooth_eff',
                      'nonsmooth_frac')


# TFF's runtime keeps every value of a call alive until the call returns. The
# worker's peak in a lockstep call, measured at m=1024 with 8 clients for 1, 2,
# 5 and 10 steps per call (1.10, 1.25, 1.76, 2.25 GB), is about 28 + 4 x steps
# copies of every client's model (float32): the base is the broadcast model,
# the local models, their average, gradients and the client's end-of-round
# values; each step adds its local models, average and measurements.
LOCKSTEP_BYTES_PER_PARAMETER_CLIENT = 28 * 4
LOCKSTEP_BYTES_PER_PARAMETER_CLIENT_STEP = 4 * 4
# The worker's share of the machine; the Python process holds the rest.
LOCKSTEP_MEMORY_FRACTION = 0.75


def physical_memory() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def lockstep_steps_per_call(config, spec) -> int:
  """Local steps per TFF call of the lockstep round that fit in memory.

  0 if not even one step fits (the run is refused).
  """
  per_client_parameter = LOCKSTEP_MEMORY_FRACTION * physical_memory() / (
      config.cohort_size * spec.num_parameters(trainable_only=True))
  steps = ((per_client_parameter - LOCKSTEP_BYTES_PER_PARAMETER_CLIENT)
           // LOCKSTEP_BYTES_PER_PARAMETER_CLIENT_STEP)
  return int(min(config.local_steps, max(steps, 0)))


def check_lockstep_memory(config, spec):
  """Refuses, before any work, a lockstep round this machine cannot hold."""
  if not (config.diag_every and config.lockstep_drift):
    return
  if not lockstep_steps_per_call(config, spec):
    raise config_lib.ConfigError(
        'lockstep_drift', 'one local step of the lockstep round needs more '
        f'than {LOCKSTEP_MEMORY_FRACTION:.0%} of this machine\'s '
        f'{physical_memory() / 2**30:.0f} GB (clients_per_round x '
        'parameters); use '
        '--lockstep_drift=false, or fewer clients per round')


def end_drift(spec, loss: str, packed: bool):
  """The measured round's hook (process.round_with): for each client,

      grad_diff_vs_start_i = ||grad F_i(w_i^{t,K}) - grad F_i(w^t)||

  on its n_i examples; for a pack, the n_i-weighted mean over its members.
  """
  def unpacked_drift(weights, data, local):
    return {'grad_diff_vs_start': diagnostics.gradient_difference(
        spec.layers, loss, spec.with_trainable(weights, local), weights,
        spec.trainable_indices, data['x'], data['y'])}

  def packed_drift(weights, data, local):
    x, n = data['x'], tf.cast(data['num_examples'], tf.float32)
    start = [packing.stack(w, tf.shape(x)[0]) for w in spec.trainable(weights)]
    return {'grad_diff_vs_start': packing.pack_mean(
        diagnostics.gradient_difference(
            spec.layers, loss, spec.with_trainable(weights, local),
            spec.with_trainable(weights, start), spec.trainable_indices, x,
            data['y'], packing.example_mask(data['num_examples'],
                                            tf.shape(x)[1])), n)}
  return packed_drift if packed else unpacked_drift


def measured_round(proc):
  """The ordinary round (process.round_with) measuring grad_diff_vs_start."""
  return proc.round_with(end_drift(proc.spec, proc.config.loss,
                                   proc.config.clients_per_pack > 1))


def _client_computations(proc, config):
  """The lockstep round's client-side computations (one client, one step)."""
  spec, loss, lr = proc.spec, config.loss, config.lr
  layers, idx = spec.layers, spec.trainable_indices
  w_type, d_type = proc.weights_type, proc.client_data_type
  t_type = process_lib.weights_type(spec.trainable(spec.initial_weights))

  @tff.tensorflow.computation(w_type, t_type, d_type, np.int32)
  def client_step(weights, local, data, k):
    """(w^t, w_i^{t,k}, ClientData, k) -> w_i^{t,k+1}"""
    new, _ = local_update.sgd_step(
        spec, loss, weights, list(local), data['x'], data['y'],
        data['seed'], k, lr=lr, batch_size=config.batch_size,
        full_batch=config.algorithm == 'local_gd')
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

  return dict(client_step=client_step, client_measure=client_measure,
              client_end=client_end, t_type=t_type)


def _helper_computations(proc, config, t_type, means_type):
  """The lockstep round's small pieces: shares, averages and step metrics."""
  spec, lr = proc.spec, config.lr

  @tff.tensorflow.computation(proc.weights_type)
  def trainable_of(weights):
    return tuple(spec.trainable(weights))

  @tff.tensorflow.computation(proc.client_data_type)
  def num_examples(data):
    return tf.cast(tf.shape(data['x'])[0], tf.float32)

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

  return dict(trainable_of=trainable_of, num_examples=num_examples,
              server_combine=server_combine, share=share, scale=scale,
              distance=distance)


class Lockstep:
  """The lockstep round, in TFF calls of a few local steps each.

  Steps 0..K-1 split into chunks because TFF's runtime keeps every value of a
  call alive until the call returns: a chunk's memory grows with its number
  of steps, and the local models cross between chunks as {t_type}@CLIENTS
  values. The first chunk starts from w^t; the last one ends the round.
  Types (first / middle / last chunk):

    (<weights@SERVER, {ClientData}@CLIENTS> -> <{local}@CLIENTS, steps@SERVER>)
    (<weights@SERVER, {local}@CLIENTS, {ClientData}@CLIENTS> -> <{local}@CLIENTS, steps@SERVER>)
    (<weights@SERVER, {local}@CLIENTS, {ClientData}@CLIENTS> ->
     <weights@SERVER, <steps, summary>@SERVER, per-client@CLIENTS>)
  """

  def __init__(self, proc, config):
    self.proc, self.num_steps = proc, config.local_steps
    c = _client_computations(proc, config)
    c.update(_helper_computations(
        proc, config, c['t_type'],
        c['client_measure'].type_signature.result))
    self.c = c
    self.chunk = functools.cache(self._chunk)

  def _virtual_average(self, local, p):
    # sum_i p_i w_i with p_i = n_i / n computed on the client: exact for a
    # single client (p = 1), unlike sum_i n_i w_i / n.
    return tff.federated_broadcast(
        tff.federated_sum(tff.federated_map(self.c['scale'], (local, p))))

  def _steps(self, broadcast, local, data, p, n, first, last):
    """Local steps first..last-1: (local models after them, step metrics)."""
    c, start = self.c, tff.federated_map(self.c['trainable_of'], broadcast)
    local = start if local is None else local
    steps, measured = [], None
    for k in range(first, last):
      # At k = 0 every client holds w^t: the average is w^t, exactly.
      average = start if k == 0 else self._virtual_average(local, p)
      measured = tff.federated_map(c['client_measure'],
                                   (broadcast, local, average, data))
      steps.append(tff.federated_map(
          c['server_combine'], tff.federated_mean(measured, weight=n)))
      step = tff.federated_broadcast(tff.federated_value(np.int32(k),
                                                         tff.SERVER))
      local = tff.federated_map(c['client_step'],
                                (broadcast, local, data, step))
    return local, tff.federated_zip(tuple(steps)), measured

  def _end(self, weights, broadcast, local, data, p, n, steps, measured):
    """The round's end: w^{t+1}, the summary and the per-client values."""
    c = self.c
    divergence = tff.federated_map(
        c['distance'], (local, self._virtual_average(local, p)))
    end = tff.federated_map(c['client_end'], (broadcast, local, data))
    delta = tff.federated_mean(end.delta, weight=n)
    new_weights = tff.federated_map(self.proc.server_update, (weights, delta))
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

  def _chunk(self, first: int, last: int):
    """Local steps first..last-1 of the round as one federated computation."""
    c = self.c

    def body(weights, local, data):
      broadcast = tff.federated_broadcast(weights)
      n = tff.federated_map(c['num_examples'], data)
      p = tff.federated_map(c['share'], (n, tff.federated_broadcast(
          tff.federated_sum(n))))
      local, steps, measured = self._steps(broadcast, local, data, p, n,
                                           first, last)
      if last < self.num_steps:
        return local, steps
      return self._end(weights, broadcast, local, data, p, n, steps, measured)

    server_w = tff.FederatedType(self.proc.weights_type, tff.SERVER)
    clients_d = tff.FederatedType(self.proc.client_data_type, tff.CLIENTS)
    if first == 0:
      return tff.federated_computation(server_w, clients_d)(
          lambda weights, data: body(weights, None, data))
    clients_t = tff.FederatedType(c['t_type'], tff.CLIENTS)
    return tff.federated_computation(server_w, clients_t, clients_d)(body)

  def next(self, weights, data, steps_per_call: int | None = None):
    """The lockstep round, in calls of at most steps_per_call local steps.

    (weights, [ClientData]) -> (w^{t+1}, {steps: per-step drift,
    model_divergence, grad_diff_vs_start}, per-client drift). The result does
    not depend on steps_per_call (tested); it only bounds the memory.
    """
    size = min(steps_per_call or self.num_steps, self.num_steps)
    bounds = list(range(0, self.num_steps, size)) + [self.num_steps]
    local, steps = None, []
    for first, last in zip(bounds, bounds[1:]):
      chunk = self.chunk(first, last)
      args = (weights, data) if first == 0 else (weights, local, data)
      if last < self.num_steps:
        local, chunk_steps = chunk(*args)
        steps.extend(chunk_steps)
      else:
        weights, summary, per_client = chunk(*args)
    summary['steps'] = tuple(steps) + tuple(summary['steps'])
    return weights, summary, per_client


class ModelMeasures:
  """Computations that measure the averaged model w^t."""

  def __init__(self, proc, config, probe_shape):
    spec, layers, idx = proc.spec, proc.spec.layers, proc.spec.trainable_indices
    w_type, d_type = proc.weights_type, proc.client_data_type
    probe_type = tff.TensorType(np.float32, [None, *probe_shape])

    @tff.tensorflow.computation(w_type)
    def spectral_norms(weights):
      """w -> {layer: ||W_l||_2} for the hidden m x m layers"""
      return diagnostics.hidden_spectral_norms(layers, weights, idx)

    @tff.tensorflow.computation(w_type, probe_type)
    def ntk_gram(weights, probe_x):
      """(w, probe inputs) -> H, the empirical NTK Gram matrix [n_probe, n_probe]"""
      return diagnostics.ntk_gram(layers, weights, idx, probe_x)

    self.spectral_norms, self.ntk_gram = spectral_norms, ntk_gram
    self._indexed_d_type = tff.StructWithPythonType(
        [('x', d_type.x), ('y', d_type.y),
         ('index', tff.TensorType(np.int32))], collections.OrderedDict)
    self.measure_model = self._measure_computation(proc, config, probe_type)

  def _measure_computation(self, proc, config, probe_type):
    spec, loss = proc.spec, config.loss
    layers, idx = spec.layers, spec.trainable_indices

    @tff.tensorflow.computation(proc.weights_type, self._indexed_d_type)
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
        [('weights', proc.weights_type), ('initial', proc.weights_type),
         ('initial_spectral', self.spectral_norms.type_signature.result),
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
                               tff.FederatedType(self._indexed_d_type,
                                                 tff.CLIENTS))
    def measure_model(model, data):
      """(<<w^t, w^0, ||W_l^0||_2, probe inputs>@SERVER, {<x, y, index>}@CLIENTS> -> metrics@SERVER)

      One broadcast and one federated_sum, so that it has a MapReduceForm
      and the in-process engine runs it; each client's F_i reaches the
      server as F_i e_i.
      """
      sums = tff.federated_sum(tff.federated_map(
          client_grad, (tff.federated_broadcast(model.weights), data)))
      return tff.federated_map(summarize, (model, sums))
    return measure_model

  def measure(self, weights, initial, initial_spectral, probe_x, clients):
    """The averaged model's diagnostics, in one TFF call.

    (w^t, w^0, {layer: ||W_l^0||_2}, probe inputs, the N clients' ClientData
    in client order) -> {weight_change_rel..., weight_change_spectral_rel...,
    activation_flip_frac..., grad_norm: ||grad F(w^t)||, client_losses:
    [F_i(w^t)]}, with grad F = sum_i p_i grad F_i over all clients.
    """
    return self.measure_model(
        collections.OrderedDict(weights=weights, initial=initial,
                                initial_spectral=initial_spectral,
                                probe_x=probe_x),
        [collections.OrderedDict(x=c['x'], y=c['y'], index=np.int32(i))
         for i, c in enumerate(clients)])


def build_computations(proc, config, input_shape) -> tuple:
  """(ModelMeasures, the diagnostic round: Lockstep or the measured round)."""
  return (ModelMeasures(proc, config, input_shape),
          Lockstep(proc, config) if config.lockstep_drift else
          measured_round(proc))


class Diagnostics:
  """The diagnostics of a run: which rounds, and their metrics by tag.

  On a diagnostic round t (t % diag_every == 0) the run loop trains with
  `train_round` (the lockstep round, or the measured round) and measures
  w^t with `measure_model`; round 0 has only the latter.
  """

  def __init__(self, proc, setup, computations=None):
    """computations: build_computations(proc, config, input shape), perhaps a
    run's whose config differs only in its seed (they hold no w^0)."""
    config, data, spec = setup.config, setup.data, setup.spec
    self.config, self.proc = config, proc
    self.model, train = computations or build_computations(
        proc, config, data.input_shape)
    self.lockstep = train if config.lockstep_drift else None
    self.measured_next = None if config.lockstep_drift else train
    self.probe_x = data_lib.probe_set(data, config.probe_size, config.seed)
    self.initial = tuple(spec.initial_weights)
    self.initial_gram = None
    self.initial_spectral = None
    self.steps_per_call = lockstep_steps_per_call(config, spec)

  def due(self, round_num) -> bool:
    return round_num % self.config.diag_every == 0

  def in_process(self) -> list:
    """What the in-process engine compiles before the first round (the
    lockstep round's chunks compile at their first call)."""
    return [self.model.measure_model] + (
        [self.measured_next] if self.measured_next else [])

  def train_round(self, weights, cohort_data) -> results.TrainedRound:
    """A diagnostic round from w^t: w^{t+1} with its metrics, histograms,
    step rows, and the evaluation sums of w^t (the measured round's
    `start`; the lockstep round computes none)."""
    if self.lockstep is None:
      weights, out = self.measured_next(weights, self.proc.pack(cohort_data))
      metrics = {'train/local_loss': float(out['local_loss']),
                 'drift/grad_diff_vs_start': float(out['grad_diff_vs_start'])}
      return results.TrainedRound(weights, metrics, start=out.get('start'))
    weights, summary, per_client = self.lockstep.next(
        weights, cohort_data, steps_per_call=self.steps_per_call)
    steps = summary['steps']
    metrics = {'drift/grad_diff_vs_start': float(summary['grad_diff_vs_start']),
               'drift/model_divergence': float(summary['model_divergence'])}
    for name in DRIFT_STEP_METRICS:
      values = [float(step[name]) for step in steps]
      metrics[f'drift/{name}'] = float(np.mean(values))
      metrics[f'drift/{name}_max'] = max(values)
    histograms = {f'per_client/drift/{k}': np.asarray(v, np.float32)
                  for k, v in per_client.items()}
    step_rows = ()
    if self.config.diag_per_step:
      step_rows = tuple({'local_step': k, **{name: float(step[name])
                                             for name in step}}
                        for k, step in enumerate(steps))
    return results.TrainedRound(weights, metrics, histograms, step_rows)

  def measure_model(self, weights, all_clients, round_num):
    """Diagnostics of the averaged model w^t: lazy/*, ntk/*, train/grad_norm."""
    if self.initial_spectral is None:
      self.initial_spectral = self.model.spectral_norms(self.initial)
    out = self.model.measure(weights, self.initial, self.initial_spectral,
                             self.probe_x, all_clients)
    client_losses = out.pop('client_losses')
    grad_norm = out.pop('grad_norm')
    metrics = {f'lazy/{k}': float(v) for k, v in out.items()}
    metrics['train/grad_norm'] = float(grad_norm)
    ntk_every = self.config.ntk_every
    if ntk_every and round_num % ntk_every == 0:
      metrics.update(self._ntk(weights))
    histograms = {'per_client/train_loss': np.asarray(client_losses, np.float32)}
    return metrics, histograms

  def _ntk(self, weights) -> dict:
    gram = np.asarray(self.model.ntk_gram(weights, self.probe_x), np.float64)
    if self.initial_gram is None:
      self.initial_gram = np.asarray(
          self.model.ntk_gram(self.initial, self.probe_x), np.float64)
    return {k: float(v) for k, v in diagnostics.ntk_summary(
        tf.constant(gram), tf.constant(self.initial_gram)).items()}
