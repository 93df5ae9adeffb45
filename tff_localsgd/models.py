"""Overparameterized ReLU networks: Keras definitions and a functional forward.

The Keras model defines the architecture and draws the initial weights w^0.
Training runs on a pure function `forward(layers, weights, x)` over a tuple of
weight tensors, because the TFF client update and the diagnostics need the
network as a function of its weights; `tests/test_models.py` shows it
computes what the Keras model computes.

`mlp` (the theory's network, Allen-Zhu, Li and Song 2019; no biases):
    h_0 = relu(A x),  h_l = relu(W_l h_{l-1}) for l = 1..L,  f(x) = B h_L
    A in R^{d x m}, W_l in R^{m x m}, B in R^{m x c};
    A, W_l ~ N(0, 2/m), B ~ N(0, 1/c).
`depth` is L, the number of m x m matrices (the network has L + 1 ReLU
layers); `width` is m. With train_layers=hidden only W_1..W_L train and A, B
stay at their initialization.

`cnn` (practice, image data): conv3x3(width) -> relu -> conv3x3 stride 2
(2 width) -> relu -> flatten -> dense(c), He-normal, no biases.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Layer:
  """One weighted layer of the functional network."""
  kind: str  # 'dense' or 'conv'
  activation: str  # 'relu', 'identity' (a linear network, for tests) or 'none'
  trainable: bool
  name: str
  stride: int = 1
  flatten_input: bool = False  # flatten the input before this dense layer


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A network as data: its layers and its initial weights w^0."""
  layers: tuple  # of Layer
  initial_weights: tuple  # of np.ndarray, one per layer

  @property
  def trainable_indices(self) -> tuple:
    return tuple(i for i, l in enumerate(self.layers) if l.trainable)

  def trainable(self, weights) -> tuple:
    return tuple(weights[i] for i in self.trainable_indices)

  def with_trainable(self, weights, trainable) -> tuple:
    """Returns `weights` with its trainable entries replaced by `trainable`."""
    out = list(weights)
    for i, w in zip(self.trainable_indices, trainable):
      out[i] = w
    return tuple(out)

  def num_parameters(self, trainable_only: bool = False) -> int:
    idx = self.trainable_indices if trainable_only else range(len(self.layers))
    return int(sum(np.prod(self.initial_weights[i].shape) for i in idx))


def _activate(h, activation):
  if activation == 'relu':
    return tf.nn.relu(h)
  return h


def preactivations(layers, weights, x):
  """Yields (layer index, pre-activation z_l) through the network.

  The output of the last layer is yielded too; forward() returns it.
  """
  h = x
  for i, (layer, w) in enumerate(zip(layers, weights)):
    if layer.kind == 'conv':
      z = tf.nn.conv2d(h, w, strides=layer.stride, padding='SAME')
    else:
      if layer.flatten_input:
        h = tf.reshape(h, [tf.shape(h)[0], -1])
      z = tf.matmul(h, w)
    yield i, z
    h = _activate(z, layer.activation)


def forward(layers, weights, x):
  """f(w; x): the network output for a batch x, as a function of `weights`.

  Dense layers also take a pack (packing.py): x [P, n, d] and weights [P, d, m]
  (or shared [d, m]) give [P, n, c], by batched matmuls.
  """
  out = None
  for _, z in preactivations(layers, weights, x):
    out = z
  return _activate(out, layers[-1].activation)


def loss_fn(loss: str, logits, y):
  """Per-example loss: mse = 1/2 ||f(x) - y||^2; xent = softmax cross-entropy."""
  if loss == 'mse':
    return 0.5 * tf.reduce_sum(tf.square(logits - y), axis=-1)
  return tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)


def objective(spec_layers, loss: str, weights, x, y, mask=None):
  """F_i(w) = (1/n_i) sum_j loss(f(w; x_j), y_j) over the examples given.

  For a pack of P clients (x [P, n, ...], weights stacked [P, ...] or shared)
  it is float32[P], one F_i per client; `mask` [P, n] (1 for the n_i real
  examples, 0 for padding) makes it the mean over the real examples only.
  """
  return mean_loss(loss, forward(spec_layers, weights, x), y, mask)


def mean_loss(loss: str, logits, y, mask=None):
  """F from the network's output f: the mean of loss_fn over the examples
  (axis -1 of loss_fn's result), or over the real ones of a `mask`."""
  per_example = loss_fn(loss, logits, y)
  if mask is None:
    return tf.reduce_mean(per_example, axis=-1)
  return (tf.reduce_sum(per_example * mask, axis=-1) /
          tf.reduce_sum(mask, axis=-1))


def mse_and_gradient(logits, y):
  """(F, dF/df) of F = (1/n) sum_j 1/2 ||f_j - y_j||^2 over the n examples
  (axis -2; a pack's F_i: float32[P]): dF/df_j = (1/2 (1 / n)) (2 (f_j - y_j)).

  F is mean_loss('mse'). dF/df is the gradient TensorFlow derives for it,
  the same float32 operations in the same order (Mean's 1 / n, Mul's 1/2,
  Square's 2 r), on a scalar scale: for a batch of unknown size the derived
  one spends ~19 ops a step on shapes (BroadcastTo, DynamicStitch,
  BroadcastGradientArgs), most of a small round's ops
  (reports/perf/PROFILE_round.md). Same bits: tests/test_models.py.
  """
  residual = logits - y
  value = tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(residual), axis=-1),
                         axis=-1)
  scale = 0.5 * (1.0 / tf.cast(tf.shape(residual)[-2], residual.dtype))
  return value, scale * (residual * 2.0)


def _dense(units, stddev, activation, name, seed):
  return tf.keras.layers.Dense(
      units, activation=activation, use_bias=False, name=name,
      kernel_initializer=tf.keras.initializers.RandomNormal(
          stddev=stddev, seed=seed))


def _mlp_names(depth: int) -> list:
  return ['input'] + [f'hidden_{l}' for l in range(1, depth + 1)] + ['output']


def keras_mlp(input_dim: int, output_dim: int, *, width: int, depth: int,
              activation: str = 'relu', seed: int = 0) -> tf.keras.Model:
  """The Keras form of build_mlp's network; its weights are w^0."""
  m = width
  keras_act = 'relu' if activation == 'relu' else None
  stds = [math.sqrt(2.0 / m)] * (depth + 1) + [math.sqrt(1.0 / output_dim)]
  units = [m] * (depth + 1) + [output_dim]
  acts = [keras_act] * (depth + 1) + [None]
  keras_layers = [tf.keras.Input(shape=(input_dim,))]
  for i, (name, std, u, act) in enumerate(zip(_mlp_names(depth), stds, units,
                                              acts)):
    keras_layers.append(_dense(u, std, act, name, seed * 1000 + i))
  return tf.keras.Sequential(keras_layers)


def build_mlp(input_dim: int, output_dim: int, *, width: int, depth: int,
              train_layers: str = 'all', activation: str = 'relu',
              seed: int = 0) -> ModelSpec:
  """The AZLS ReLU MLP: A (d x m), W_1..W_L (m x m), B (m x c); see module doc."""
  model = keras_mlp(input_dim, output_dim, width=width, depth=depth,
                    activation=activation, seed=seed)
  layers = []
  for i, name in enumerate(_mlp_names(depth)):
    hidden = 0 < i <= depth
    layers.append(Layer(
        kind='dense', name=name,
        activation=activation if i <= depth else 'none',
        trainable=hidden or train_layers == 'all'))
  return ModelSpec(tuple(layers), tuple(w.numpy() for w in model.weights))


def keras_cnn(input_shape, output_dim: int, *, width: int,
              seed: int = 0) -> tf.keras.Model:
  """The Keras form of build_cnn's network; its weights are w^0."""
  def he(i):
    return tf.keras.initializers.VarianceScaling(
        2.0, 'fan_in', 'untruncated_normal', seed=seed * 1000 + i)
  return tf.keras.Sequential([
      tf.keras.Input(shape=tuple(input_shape)),
      tf.keras.layers.Conv2D(width, 3, padding='same', activation='relu',
                             use_bias=False, kernel_initializer=he(0),
                             name='conv_1'),
      tf.keras.layers.Conv2D(2 * width, 3, strides=2, padding='same',
                             activation='relu', use_bias=False,
                             kernel_initializer=he(1), name='conv_2'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(output_dim, use_bias=False, name='output',
                            kernel_initializer=tf.keras.initializers.RandomNormal(
                                stddev=math.sqrt(1.0 / output_dim),
                                seed=seed * 1000 + 2)),
  ])


def build_cnn(input_shape, output_dim: int, *, width: int,
              seed: int = 0) -> ModelSpec:
  """Small ReLU conv net: conv(width) -> conv(2 width, stride 2) -> dense(c)."""
  model = keras_cnn(input_shape, output_dim, width=width, seed=seed)
  layers = (
      Layer('conv', 'relu', True, 'conv_1'),
      Layer('conv', 'relu', True, 'conv_2', stride=2),
      Layer('dense', 'none', True, 'output', flatten_input=True),
  )
  return ModelSpec(layers, tuple(w.numpy() for w in model.weights))


def build_model(config, input_shape, output_dim: int) -> ModelSpec:
  """The network named by config.model, with weights drawn from config.seed."""
  if config.model == 'cnn':
    return build_cnn(input_shape, output_dim, width=config.width,
                     seed=config.seed)
  return build_mlp(int(np.prod(input_shape)), output_dim, width=config.width,
                   depth=config.depth, train_layers=config.train_layers,
                   seed=config.seed)
