"""Diagnostics of the lazy-training regime of Local SGD on wide ReLU networks.

Pure TensorFlow functions of weight tuples (one tensor per layer, in
spec.layers order); each works eagerly and inside a tf.function or a
tff.tensorflow.computation. Notation as in Deng, Kamani and Mahdavi (2022):
w^0 the initialization, w_i the local model of client i, w-bar the average.

Weight change (how far training moves from w^0; small in the lazy regime):
    ||W_l - W_l^0||_F / ||W_l^0||_F   per trainable layer l,
    ||W_l - W_l^0||_2 / ||W_l^0||_2   per hidden m x m matrix W_l,
    ||w - w^0|| / ||w^0||             over all trainable layers.
The spectral norm is computed by power iteration on M^T M (spectral_norm).

Activation flips (the ReLU patterns' change, which the overparameterized
analysis bounds): over probe inputs x_j and units r of a ReLU layer l,
    (1 / #pairs) sum_{j, r} 1[ sign z_l(w; x_j)_r != sign z_l(w^0; x_j)_r ],
with sign z = 1[z > 0] and z_l the layer's pre-activation.

Empirical neural tangent kernel on probe inputs x_1..x_P, f = sum of outputs:
    H_ij = < d f(x_i) / dw, d f(x_j) / dw >   over the trainable weights.
For a dense layer z_l = a_{l-1} W_l, d f(x) / dW_l = a_{l-1}(x) (x) delta_l(x)
with delta_l = d f / d z_l, so its share of H is (A_l A_l^T) o (D_l D_l^T)
(rows of A_l, D_l: a_{l-1}(x_j), delta_l(x_j); o the Hadamard product).

Client drift, per client i, of the gradient F_i over its examples:
    grad_diff  = ||grad F_i(w_i) - grad F_i(w-bar)||,
    weight_dist = ||w_i - w-bar||,
    nonsmooth  = ||grad F_i(w_i) - grad F_i(w-bar)
                   - hess F_i(w-bar) (w_i - w-bar)||,
the last being the part of the gradient's change a second-order (smooth)
model misses; with fixed activation patterns and a squared loss on one
trained layer it is 0, so it measures the effect of activation flips.
"""

import collections

import tensorflow as tf

from tff_localsgd import local_update
from tff_localsgd import models

# Fixed seed of the power iteration's start vector: the diagnostic is a
# deterministic function of the matrix.
_POWER_ITERATION_SEED = (20220, 7)


def _sum_squares(tensors):
  return tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])


def norm(tensors, batched: bool = False):
  """||(t_1, ..., t_k)||: the Euclidean norm of the concatenated tensors.

  batched: tensors of a pack [P, ...]; float32[P], one norm per pack member.
  """
  if not batched:
    return tf.sqrt(_sum_squares(tensors))
  return tf.sqrt(tf.add_n([
      tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=1)
      for t in tensors]))


def _tensors(weights):
  return [tf.convert_to_tensor(w) for w in weights]


def spectral_norm(matrix, iterations: int = 500, tol: float = 1e-7):
  """||M||_2 = sigma_1(M) by power iteration on M^T M.

  v_{t+1} = M^T M v_t / ||M^T M v_t|| from a fixed pseudo-random unit v_0;
  returns ||M v_T||. For a unit vector ||M v|| <= sigma_1, so the result is a
  lower bound; its relative error decays like (sigma_2 / sigma_1)^{2T}, i.e.
  at the rate of the gap between the top two singular values. It stops early
  once ||M v|| grows by less than tol (relative) in a step: the weight change
  of lazy training is nearly low-rank (large gap) and converges in tens of
  steps. For a random square m x m matrix such as W^0, sigma_2 / sigma_1 =
  1 - O(m^{-2/3}), hence the large cap: 500 steps are exact to float32 on
  256 x 256 Gaussian matrices, while at m = 4096 the error can still be ~1e-3
  (measured). The zero matrix gives exactly 0.
  """
  m = tf.convert_to_tensor(matrix)
  v = tf.random.stateless_normal([tf.shape(m)[1], 1],
                                 seed=_POWER_ITERATION_SEED, dtype=m.dtype)
  v = v / tf.norm(v)
  zero = tf.zeros([], m.dtype)

  def step(t, v, _, sigma):
    u = tf.matmul(m, tf.matmul(m, v), transpose_a=True)
    # divide_no_nan: M v = 0 (e.g. M = 0) must give 0, not NaN.
    v = tf.math.divide_no_nan(u, tf.norm(u))
    return t + 1, v, sigma, tf.norm(tf.matmul(m, v))

  def growing(t, _, previous, sigma):
    return tf.logical_and(
        t < iterations,
        tf.logical_or(t < 2, sigma - previous > tol * sigma))

  _, _, _, sigma = tf.while_loop(growing, step, (tf.constant(0), v, zero,
                                                 tf.norm(tf.matmul(m, v))))
  return sigma


def _is_hidden_square(layer, w):
  shape = w.shape
  return (layer.kind == 'dense' and layer.activation == 'relu'
          and shape.rank == 2 and shape[0] is not None
          and shape[0] == shape[1])


def hidden_spectral_norms(layers, weights, trainable_indices,
                          iterations: int = 500):
  """{layer name: ||W_l||_2} for the trainable hidden m x m matrices."""
  weights = _tensors(weights)
  return collections.OrderedDict(
      (layers[i].name, spectral_norm(weights[i], iterations))
      for i in trainable_indices if _is_hidden_square(layers[i], weights[i]))


def weight_change(layers, weights, initial_weights, trainable_indices,
                  spectral_iterations: int = 500, initial_spectral=None):
  """Relative distance of the trainable weights from w^0.

  Returns an OrderedDict of scalars: 'weight_change_rel/<layer>' (Frobenius)
  for each trainable layer, 'weight_change_spectral_rel/<layer>' for each
  trainable hidden m x m dense ReLU matrix, and 'weight_change_rel' over all
  trainable layers together. initial_spectral, {layer name: ||W_l^0||_2},
  saves recomputing the slow-to-converge norms of w^0 every round.
  """
  weights, initial_weights = _tensors(weights), _tensors(initial_weights)
  out = collections.OrderedDict()
  deltas, inits = [], []
  for i in trainable_indices:
    layer, w, w0 = layers[i], weights[i], initial_weights[i]
    delta = w - w0
    deltas.append(delta)
    inits.append(w0)
    out[f'weight_change_rel/{layer.name}'] = tf.norm(delta) / tf.norm(w0)
    if _is_hidden_square(layer, w0):
      if initial_spectral is None:
        norm0 = spectral_norm(w0, spectral_iterations)
      else:
        norm0 = initial_spectral[layer.name]
      out[f'weight_change_spectral_rel/{layer.name}'] = (
          spectral_norm(delta, spectral_iterations) / norm0)
  out['weight_change_rel'] = norm(deltas) / norm(inits)
  return out


def _relu_signs(layers, weights, x):
  """{layer index: z_l > 0} for every ReLU layer, on the batch x."""
  return {i: z > 0 for i, z in models.preactivations(layers, weights, x)
          if layers[i].activation == 'relu'}


def activation_flip_fraction(layers, weights, initial_weights, probe_x):
  """Fraction of (example, unit) pairs whose ReLU pattern differs from w^0.

  Units of a conv layer are its spatial positions x channels. Returns an
  OrderedDict: 'activation_flip_frac/<layer>' per ReLU layer and
  'activation_flip_frac' = total flips / total pairs (0 without ReLUs).
  """
  weights, initial_weights = _tensors(weights), _tensors(initial_weights)
  x = tf.cast(probe_x, weights[0].dtype)
  now = _relu_signs(layers, weights, x)
  before = _relu_signs(layers, initial_weights, x)
  out = collections.OrderedDict()
  flips, pairs = [], []
  for i in sorted(now):
    flipped = tf.reduce_sum(
        tf.cast(tf.not_equal(now[i], before[i]), tf.float32))
    size = tf.cast(tf.size(now[i]), tf.float32)
    out[f'activation_flip_frac/{layers[i].name}'] = flipped / size
    flips.append(flipped)
    pairs.append(size)
  if flips:
    out['activation_flip_frac'] = tf.add_n(flips) / tf.add_n(pairs)
  else:
    out['activation_flip_frac'] = tf.constant(0.0)
  return out


def _layer_input(layers, zs, i, x):
  """a_{i-1}: the input of layer i as preactivations() forms it."""
  if i == 0:
    h = x
  else:
    h = models._activate(zs[i - 1], layers[i - 1].activation)  # pylint: disable=protected-access
  if layers[i].kind == 'dense' and layers[i].flatten_input:
    h = tf.reshape(h, [tf.shape(h)[0], -1])
  return h


def ntk_gram(layers, weights, trainable_indices, probe_x):
  """Empirical NTK H [n_probe, n_probe] on the probe inputs, over the trainable layers.

  f(x) = sum of the network's outputs. Dense layers use the outer-product
  identity (module doc), so no per-example Jacobian is ever formed: D_l is
  the gradient of sum_j f(x_j) with respect to z_l, whose row j equals
  d f(x_j) / d z_l(x_j) because examples do not interact. Conv layers use
  explicit per-example Jacobians J_l [P, #params] and add J_l J_l^T (fine
  for the small cnn). Returned symmetrized, in the weights' dtype.
  """
  weights = _tensors(weights)
  x = tf.cast(probe_x, weights[0].dtype)
  conv = [i for i in trainable_indices if layers[i].kind == 'conv']
  dense = [i for i in trainable_indices if layers[i].kind != 'conv']
  with tf.GradientTape(persistent=True) as tape:
    # Watching x records every z_l, so d total / d z_l is defined.
    tape.watch([x] + [weights[i] for i in conv])
    zs = []
    for _, z in models.preactivations(layers, weights, x):
      zs.append(z)
    out = models._activate(zs[-1], layers[-1].activation)  # pylint: disable=protected-access
    f = tf.reduce_sum(tf.reshape(out, [tf.shape(out)[0], -1]), axis=1)
    total = tf.reduce_sum(f)
  terms = []
  if dense:
    deltas = tape.gradient(total, [zs[i] for i in dense],
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for i, d in zip(dense, deltas):
      a = _layer_input(layers, zs, i, x)
      terms.append(tf.matmul(a, a, transpose_b=True)
                   * tf.matmul(d, d, transpose_b=True))
  if conv:
    jacobians = tape.jacobian(
        f, [weights[i] for i in conv],
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for j in jacobians:
      j = tf.reshape(j, [tf.shape(j)[0], -1])
      terms.append(tf.matmul(j, j, transpose_b=True))
  del tape
  gram = tf.add_n(terms)
  # Exactly symmetric (the float sums of the two triangles differ slightly).
  return 0.5 * (gram + tf.transpose(gram))


def ntk_summary(gram, initial_gram):
  """'ntk/lambda_min', 'ntk/lambda_max' of H; 'ntk/rel_change' ||H-H0||_F/||H0||_F."""
  gram = tf.convert_to_tensor(gram)
  initial_gram = tf.convert_to_tensor(initial_gram)
  eig = tf.linalg.eigvalsh(0.5 * (gram + tf.transpose(gram)))
  return collections.OrderedDict([
      ('ntk/lambda_min', eig[0]),
      ('ntk/lambda_max', eig[-1]),
      ('ntk/rel_change', tf.norm(gram - initial_gram) / tf.norm(initial_gram)),
  ])


def hessian_vector_product(layers, loss, weights, trainable_indices, x, y,
                           tangents):
  """(F_i(w), grad F_i(w), hess F_i(w) v) over the trainable layers.

  Forward-over-backward: a ForwardAccumulator pushes the tangent v (one
  tensor per trainable layer) through the backward pass of the gradient, so
  the Hessian is never formed.
  """
  weights = _tensors(weights)
  primals = [weights[i] for i in trainable_indices]
  # The accumulator must watch the very tensors gradient() differentiates.
  with tf.autodiff.ForwardAccumulator(primals, list(tangents)) as acc:
    value, grads = local_update.gradient(layers, loss, weights,
                                         trainable_indices, x, y)
  hvp = acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return value, grads, hvp


def gradient_difference(layers, loss, local_weights, average_weights,
                        trainable_indices, x, y, mask=None):
  """||grad F_i(w_i) - grad F_i(w-bar)||: client_drift's grad_diff, no HVP.

  For a pack (packing.py: weights stacked [P, ...], x [P, n, ...], `mask`
  [P, n] of the real examples) float32[P], one value per pack member.
  """
  _, g_local = local_update.gradient(layers, loss, _tensors(local_weights),
                                     trainable_indices, x, y, mask)
  _, g_avg = local_update.gradient(layers, loss, _tensors(average_weights),
                                   trainable_indices, x, y, mask)
  return norm([a - b for a, b in zip(g_local, g_avg)],
              batched=mask is not None)


def client_drift(layers, loss, local_weights, average_weights,
                 trainable_indices, x, y):
  """How client i's gradient changes between w-bar and its local model w_i.

  Returns an OrderedDict with scalars 'grad_diff', 'weight_dist',
  'nonsmooth' (module doc) and 'grad_avg', the list of grad F_i(w-bar)
  tensors (the caller averages it over clients for grad F(w-bar)).
  """
  local_weights = _tensors(local_weights)
  average_weights = _tensors(average_weights)
  v = [local_weights[i] - average_weights[i] for i in trainable_indices]
  _, grad_avg, hvp = hessian_vector_product(
      layers, loss, average_weights, trainable_indices, x, y, v)
  _, grad_local = local_update.gradient(layers, loss, local_weights,
                                        trainable_indices, x, y)
  diff = [g - g0 for g, g0 in zip(grad_local, grad_avg)]
  return collections.OrderedDict([
      ('grad_diff', norm(diff)),
      ('weight_dist', norm(v)),
      ('nonsmooth', norm([d - h for d, h in zip(diff, hvp)])),
      ('grad_avg', grad_avg),
  ])
