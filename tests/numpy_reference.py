"""An independent float64 NumPy reference for the no-bias MLP and Local SGD.

Pure NumPy (no TensorFlow), written from the math in the module docs, so
tests can check the TensorFlow/TFF code against it:

    h_0 = x,  h_{l+1} = act(h_l @ W_l) for all but the last layer,
    f(x) = h_L @ W_L  (the output layer has no activation);
    mse:  F(w) = (1/n) sum_j 1/2 ||f(x_j) - y_j||^2
    xent: F(w) = (1/n) sum_j -sum_k y_jk log softmax(f(x_j))_k

`weights` is a sequence of 2-D arrays [A, W_1, ..., W_L, B] with x @ A.
"""

import numpy as np


def _as64(arrays):
  return [np.asarray(a, dtype=np.float64) for a in arrays]


def _act(z, activation):
  if activation == 'relu':
    return np.maximum(z, 0.0)
  if activation in ('identity', 'none'):
    return z
  raise ValueError(activation)


def _act_derivative(z, activation):
  if activation == 'relu':
    return (z > 0).astype(np.float64)
  return np.ones_like(z)


def forward(weights, x, activation='relu', return_cache=False):
  """f(w; x) for a batch x [n, d]; optionally the layer inputs and pre-activations."""
  weights = _as64(weights)
  h = np.asarray(x, dtype=np.float64)
  inputs, pre = [], []
  for l, w in enumerate(weights):
    inputs.append(h)
    z = h @ w
    pre.append(z)
    h = z if l == len(weights) - 1 else _act(z, activation)
  if return_cache:
    return h, inputs, pre
  return h


def log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def per_example_loss(out, y, loss='mse'):
  y = np.asarray(y, dtype=np.float64)
  if loss == 'mse':
    return 0.5 * np.sum((out - y) ** 2, axis=-1)
  if loss == 'xent':
    return -np.sum(y * log_softmax(out), axis=-1)
  raise ValueError(loss)


def objective(weights, x, y, loss='mse', activation='relu'):
  """F(w): the mean per-example loss over the examples given."""
  return float(np.mean(per_example_loss(forward(weights, x, activation), y,
                                        loss)))


def _output_gradient(out, y, loss):
  """d F / d f(x_j) for every example j, F being the mean loss."""
  y = np.asarray(y, dtype=np.float64)
  n = out.shape[0]
  if loss == 'mse':
    return (out - y) / n
  if loss == 'xent':
    softmax = np.exp(log_softmax(out))
    return (softmax * y.sum(axis=-1, keepdims=True) - y) / n
  raise ValueError(loss)


def gradient(weights, x, y, loss='mse', activation='relu'):
  """(F(w), [dF/dW for every layer]) by hand-written backpropagation."""
  weights = _as64(weights)
  out, inputs, pre = forward(weights, x, activation, return_cache=True)
  value = float(np.mean(per_example_loss(out, y, loss)))
  g = _output_gradient(out, y, loss)  # dF/dz for the current layer
  grads = [None] * len(weights)
  for l in range(len(weights) - 1, -1, -1):
    grads[l] = inputs[l].T @ g
    if l > 0:
      g = (g @ weights[l].T) * _act_derivative(pre[l - 1], activation)
  return value, grads


def numerical_gradient(fun, weights, coordinates, h=1e-6):
  """Central differences (fun(w + h e) - fun(w - h e)) / 2h at (layer, i, j)."""
  weights = _as64(weights)
  out = []
  for layer, i, j in coordinates:
    plus = [w.copy() for w in weights]
    minus = [w.copy() for w in weights]
    plus[layer][i, j] += h
    minus[layer][i, j] -= h
    out.append((fun(plus) - fun(minus)) / (2 * h))
  return np.array(out)


def gd_steps(weights, x, y, *, lr, steps, trainable=None, batches=None,
             loss='mse', activation='relu'):
  """K steps w <- w - lr * grad F_batch(w) on the trainable layers only.

  batches: None (full batch: every step uses all of x, y) or a list of K
  index arrays, step k using x[batches[k]]. Returns (weights, losses) where
  losses[k] is F on step k's sample before step k.
  """
  w = _as64(weights)
  trainable = range(len(w)) if trainable is None else trainable
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  losses = []
  for k in range(steps):
    if batches is None:
      xb, yb = x, y
    else:
      idx = np.asarray(batches[k])
      xb, yb = x[idx], y[idx]
    value, grads = gradient(w, xb, yb, loss, activation)
    losses.append(value)
    w = [wl - lr * grads[l] if l in trainable else wl
         for l, wl in enumerate(w)]
  return w, losses


def weighted_average(models, counts):
  """sum_i (n_i / n) w_i, layer by layer."""
  counts = np.asarray(counts, dtype=np.float64)
  p = counts / counts.sum()
  return [sum(pi * _as64(m)[l] for pi, m in zip(p, models))
          for l in range(len(models[0]))]


def local_sgd_round(weights, clients, *, lr, steps, trainable=None,
                    batches=None, server_lr=1.0, loss='mse',
                    activation='relu'):
  """One round of Local SGD / FedAvg with example-count weights.

  clients: list of (x_i, y_i); batches: None (local GD) or, per client, the
  list of K index arrays. Every client runs gd_steps from `weights`; the
  server moves w + server_lr * (sum_i p_i w_i^K - w), p_i = n_i / n.
  Returns (new weights, sum_i p_i * (client i's loss before its last step)).
  """
  w = _as64(weights)
  finals, last_losses = [], []
  for i, (x, y) in enumerate(clients):
    wi, losses = gd_steps(w, x, y, lr=lr, steps=steps, trainable=trainable,
                          batches=None if batches is None else batches[i],
                          loss=loss, activation=activation)
    finals.append(wi)
    last_losses.append(losses[-1])
  counts = [len(x) for x, _ in clients]
  avg = weighted_average(finals, counts)
  new = [wl + server_lr * (al - wl) for wl, al in zip(w, avg)]
  p = np.asarray(counts, np.float64) / np.sum(counts)
  return new, float(np.dot(p, last_losses))


def unit_rows(rng, n, d):
  """n points uniform on the unit sphere in R^d (float32)."""
  x = rng.standard_normal((n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def one_hot(labels, c):
  return np.eye(c, dtype=np.float32)[np.asarray(labels)]


def assert_close_rel(actual, desired, rtol):
  """|actual - desired| <= rtol * max|desired|, elementwise."""
  actual, desired = np.asarray(actual), np.asarray(desired)
  assert actual.shape == desired.shape
  scale = np.max(np.abs(desired))
  assert scale > 0
  np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


def problem(loss, seed=0, n=12, d=5, c=3):
  """n unit-norm inputs in R^d with Gaussian targets (mse) or one-hot labels."""
  rng = np.random.default_rng(seed)
  x = unit_rows(rng, n, d)
  if loss == 'xent':
    return x, one_hot(rng.integers(0, c, n), c)
  return x, rng.standard_normal((n, c)).astype(np.float32)
