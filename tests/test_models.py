"""Tests for tff_localsgd.models, against Keras and a float64 NumPy reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from numpy_reference import assert_close_rel
from tff_localsgd import local_update
from tff_localsgd import models


# Functional forward == Keras.


@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
@pytest.mark.parametrize('depth', [0, 1, 3])
def test_mlp_forward_equals_keras(depth, train_layers):
  spec = models.build_mlp(7, 3, width=48, depth=depth,
                          train_layers=train_layers, seed=2)
  x = ref.unit_rows(np.random.default_rng(0), 20, 7)
  keras = models.keras_mlp(7, 3, width=48, depth=depth, seed=2)
  got = models.forward(spec.layers, spec.initial_weights, x).numpy()
  want = keras(x).numpy()
  assert got.shape == (20, 3)
  assert_close_rel(got, want, 1e-6)
  # The Keras model really holds w^0 (the forward is not trivially both 0).
  for w, kw in zip(spec.initial_weights, keras.weights):
    np.testing.assert_array_equal(w, kw.numpy())


def test_cnn_forward_equals_keras():
  spec = models.build_cnn((8, 8, 1), 4, width=6, seed=1)
  assert [w.shape for w in spec.initial_weights] == [
      (3, 3, 1, 6), (3, 3, 6, 12), (4 * 4 * 12, 4)]
  x = np.random.default_rng(1).random((5, 8, 8, 1)).astype(np.float32)
  got = models.forward(spec.layers, spec.initial_weights, x).numpy()
  want = models.keras_cnn((8, 8, 1), 4, width=6, seed=1)(x).numpy()
  assert got.shape == (5, 4)
  assert_close_rel(got, want, 1e-6)


def test_cnn_forward_uses_the_given_weights():
  """forward is a function of `weights`, not of the Keras variables."""
  spec = models.build_cnn((8, 8, 1), 2, width=4, seed=0)
  x = np.random.default_rng(2).random((3, 8, 8, 1)).astype(np.float32)
  doubled = tuple(2 * w for w in spec.initial_weights)
  # No biases and positively homogeneous ReLUs: f(2w) = 2^3 f(w).
  assert_close_rel(models.forward(spec.layers, doubled, x).numpy(),
                   8 * models.keras_cnn((8, 8, 1), 2, width=4,
                                        seed=0)(x).numpy(), 1e-6)


# Initialization.


def _check_normal(w, std, name):
  """Mean 0 and std `std` within 6 standard errors of the sample size.

  For N iid N(0, s^2) draws the sample std has relative standard error
  1/sqrt(2(N-1)) and the mean has standard error s/sqrt(N).
  """
  n = w.size
  rel_tol = 6.0 / math.sqrt(2 * (n - 1))
  assert abs(w.std() / std - 1) < rel_tol, (name, w.std(), std, rel_tol)
  assert abs(w.mean()) < 6 * std / math.sqrt(n), (name, w.mean())


def test_mlp_init_statistics():
  m, d, c = 4096, 32, 16
  spec = models.build_mlp(d, c, width=m, depth=1, seed=0)
  a, w1, b = spec.initial_weights
  assert a.shape == (d, m) and w1.shape == (m, m) and b.shape == (m, c)
  assert all(w.dtype == np.float32 for w in spec.initial_weights)
  # Tolerances: W_1 (16.8M draws) 0.10%, A (131k) 1.2%, B (65k) 1.7%.
  _check_normal(a, math.sqrt(2 / m), 'A')
  _check_normal(w1, math.sqrt(2 / m), 'W_1')
  _check_normal(b, math.sqrt(1 / c), 'B')
  # Gaussian, not truncated: about 4.55% of draws lie beyond 2 std
  # (binomial std error 0.005% at this sample size).
  tail = np.mean(np.abs(w1) > 2 * math.sqrt(2 / m))
  assert abs(tail - 0.0455) < 0.001, tail


def test_init_same_seed_identical_different_seed_different():
  a = models.build_mlp(5, 2, width=32, depth=2, seed=7).initial_weights
  b = models.build_mlp(5, 2, width=32, depth=2, seed=7).initial_weights
  c = models.build_mlp(5, 2, width=32, depth=2, seed=8).initial_weights
  for u, v, w in zip(a, b, c):
    np.testing.assert_array_equal(u, v)
    assert not np.any(u == w)
  # The two m x m layers are drawn independently of each other.
  assert abs(np.corrcoef(a[1].ravel(), a[2].ravel())[0, 1]) < 0.1
  cnn1 = models.build_cnn((8, 8, 1), 3, width=4, seed=3).initial_weights
  cnn2 = models.build_cnn((8, 8, 1), 3, width=4, seed=3).initial_weights
  cnn3 = models.build_cnn((8, 8, 1), 3, width=4, seed=4).initial_weights
  for u, v, w in zip(cnn1, cnn2, cnn3):
    np.testing.assert_array_equal(u, v)
    assert not np.any(u == w)


# Structure and trainable layers.


@pytest.mark.parametrize('depth', [1, 2, 4])
def test_depth_and_trainable_layers(depth):
  d, c, m = 6, 2, 16
  hidden = models.build_mlp(d, c, width=m, depth=depth, train_layers='hidden')
  full = models.build_mlp(d, c, width=m, depth=depth, train_layers='all')
  for spec in (hidden, full):
    shapes = [w.shape for w in spec.initial_weights]
    assert len(shapes) == depth + 2 == len(spec.layers)
    assert shapes == [(d, m)] + [(m, m)] * depth + [(m, c)]
    assert [l.activation for l in spec.layers] == ['relu'] * (depth + 1) + [
        'none']
  assert full.trainable_indices == tuple(range(depth + 2))
  assert hidden.trainable_indices == tuple(range(1, depth + 1))
  assert all(hidden.initial_weights[i].shape == (m, m)
             for i in hidden.trainable_indices)
  assert hidden.num_parameters(trainable_only=True) == depth * m * m
  assert hidden.num_parameters() == d * m + depth * m * m + m * c
  assert full.num_parameters(trainable_only=True) == full.num_parameters()

  w = hidden.initial_weights
  assert [t.shape for t in hidden.trainable(w)] == [(m, m)] * depth
  new = [np.full((m, m), float(l)) for l in range(depth)]
  replaced = hidden.with_trainable(w, new)
  np.testing.assert_array_equal(replaced[0], w[0])
  np.testing.assert_array_equal(replaced[-1], w[-1])
  for l in range(depth):
    np.testing.assert_array_equal(replaced[l + 1], new[l])


# The NumPy reference, validated against TF and finite differences.


@pytest.mark.parametrize('activation', ['relu', 'identity'])
@pytest.mark.parametrize('depth', [0, 1, 3])
def test_numpy_reference_forward_equals_models_forward(depth, activation):
  spec = models.build_mlp(6, 3, width=32, depth=depth, activation=activation,
                          seed=1)
  x = ref.unit_rows(np.random.default_rng(3), 15, 6)
  got = models.forward(spec.layers, spec.initial_weights, x).numpy()
  assert_close_rel(got, ref.forward(spec.initial_weights, x, activation), 1e-6)
  if activation == 'identity':
    product = np.linalg.multi_dot(
        [x.astype(np.float64)] + [w.astype(np.float64)
                                  for w in spec.initial_weights])
    assert_close_rel(ref.forward(spec.initial_weights, x, activation),
                     product, 1e-12)


def _problem(loss, seed=0, n=12, d=5, c=3):
  return ref.problem(loss, seed, n, d, c)


@pytest.mark.parametrize('loss', ['mse', 'xent'])
@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
def test_numpy_reference_gradient_equals_tf_gradient(loss, train_layers):
  spec = models.build_mlp(5, 3, width=24, depth=2, train_layers=train_layers,
                          seed=4)
  x, y = _problem(loss)
  idx = spec.trainable_indices
  want_value, want = ref.gradient(spec.initial_weights, x, y, loss)
  assert want_value == pytest.approx(
      ref.objective(spec.initial_weights, x, y, loss), rel=1e-14)

  # float64 through TF: agrees to rounding.
  w64 = [tf.constant(w, tf.float64) for w in spec.initial_weights]
  value, grads = local_update.gradient(spec.layers, loss, w64, idx,
                                       tf.constant(x, tf.float64),
                                       tf.constant(y, tf.float64))
  assert len(grads) == len(idx)
  assert float(value) == pytest.approx(want_value, rel=1e-12)
  for i, g in zip(idx, grads):
    assert_close_rel(g.numpy(), want[i], 1e-10)

  # float32, as training runs: agrees to float32 precision.
  w32 = [tf.constant(w) for w in spec.initial_weights]
  value, grads = local_update.gradient(spec.layers, loss, w32, idx, x, y)
  assert float(value) == pytest.approx(want_value, rel=1e-5)
  for i, g in zip(idx, grads):
    assert_close_rel(g.numpy(), want[i], 1e-5)


@pytest.mark.parametrize('loss', ['mse', 'xent'])
def test_numpy_reference_gradient_equals_finite_differences(loss):
  rng = np.random.default_rng(5)
  weights = [rng.standard_normal(s) * 0.7
             for s in [(4, 6), (6, 6), (6, 3)]]
  x, y = _problem(loss, seed=6, n=7, d=4, c=3)
  _, grads = ref.gradient(weights, x, y, loss)
  coordinates = [(l, int(rng.integers(w.shape[0])), int(rng.integers(
      w.shape[1]))) for l, w in enumerate(weights) for _ in range(4)]
  numeric = ref.numerical_gradient(
      lambda w: ref.objective(w, x, y, loss), weights, coordinates)
  analytic = np.array([grads[l][i, j] for l, i, j in coordinates])
  assert np.max(np.abs(analytic)) > 1e-3
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize('pack', [False, True])
@pytest.mark.parametrize('known_size', [False, True])
def test_mse_gradient_by_hand_has_the_bits_of_the_derived_one(pack,
                                                              known_size):
  # The training loss's hand-written gradient against the one TensorFlow
  # derives for mean_loss('mse'), inside a graph as a round runs it: its
  # float32 operations are meant to be the same, in the same order.
  shape = [3, 17, 2] if pack else [17, 2]
  rng = np.random.default_rng(8)
  logits, y = (rng.standard_normal(shape).astype(np.float32) for _ in '01')
  spec = tf.TensorSpec(shape if known_size else
                       [3, None, 2] if pack else [None, 2], tf.float32)

  @tf.function(input_signature=[spec, spec])
  def derived(f, y):
    with tf.GradientTape() as tape:
      tape.watch(f)
      value = models.mean_loss('mse', f, y)
    return value, tape.gradient(value, f)

  by_hand = tf.function(models.mse_and_gradient, input_signature=[spec, spec])
  want = [t.numpy() for t in derived(logits, y)]
  got = [t.numpy() for t in by_hand(logits, y)]
  # dF/df = (f - y) / n, independently.
  np.testing.assert_allclose(got[1], (logits - y) / 17, rtol=1e-6)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
