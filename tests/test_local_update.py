"""Tests for tff_localsgd.local_update against the float64 NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tff_localsgd import local_update
from tff_localsgd import models

TOL = 1e-5


def batch(seed, step, n, b):
  return local_update.sample_batch(tf.constant(seed, tf.int64), step, n,
                                   b).numpy()


# sample_batch.


@pytest.mark.parametrize('n,b', [(10, 3), (23, 4), (50, 50), (7, 1)])
def test_sample_batch_distinct_in_range_deterministic(n, b):
  for seed in ([0, 0], [3, 17]):
    for step in range(5):
      idx = batch(seed, step, n, b)
      assert idx.shape == (b,)
      assert len(set(idx.tolist())) == b
      assert idx.min() >= 0 and idx.max() < n
      np.testing.assert_array_equal(idx, batch(seed, step, n, b))


def test_sample_batch_full_size_is_a_permutation_and_batches_are_prefixes():
  n = 31
  for step in range(4):
    perm = batch([5, 2], step, n, n)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    assert not np.array_equal(perm, np.arange(n))
    np.testing.assert_array_equal(batch([5, 2], step, n, 6), perm[:6])


def test_sample_batch_differs_across_steps_and_seeds():
  n, b = 40, 8
  by_step = [tuple(batch([1, 2], k, n, b)) for k in range(10)]
  assert len(set(by_step)) == 10
  by_seed = [tuple(batch(s, 0, n, b))
             for s in ([1, 2], [1, 3], [2, 2], [0, 0])]
  assert len(set(by_seed)) == 4


def test_sample_batch_is_uniform():
  # Each index lands in a batch with probability b/n. Over T steps, its count
  # is Binomial(T, b/n): mean 300, std 14.5 here; allow 5 std.
  n, b, t = 10, 3, 1000
  fn = tf.function(lambda k: local_update.sample_batch(
      tf.constant([9, 9], tf.int64), k, n, b))
  counts = np.bincount(np.concatenate([fn(tf.constant(k)).numpy()
                                      for k in range(t)]),
                       minlength=n)
  sd = np.sqrt(t * b / n * (1 - b / n))
  np.testing.assert_allclose(counts, t * b / n, atol=5 * sd)


# local_steps_update.


def _data(n=23, d=6, c=2, seed=0):
  rng = np.random.default_rng(seed)
  x = ref.unit_rows(rng, n, d)
  y = rng.standard_normal((n, c)).astype(np.float32)
  return x, y


def _run(spec, x, y, seed, *, lr, steps, batch_size, full_batch, loss='mse'):
  """local_steps_update traced in a tf.function, as TFF runs it."""

  @tf.function
  def fn(weights, x, y, seed):
    return local_update.local_steps_update(
        spec, loss, weights, x, y, seed, lr=lr, local_steps=steps,
        batch_size=batch_size, full_batch=full_batch)

  weights = tuple(tf.constant(w) for w in spec.initial_weights)
  delta, last_loss = fn(weights, tf.constant(x), tf.constant(y),
                        tf.constant(seed, tf.int64))
  return [d.numpy() for d in delta], float(last_loss)


def _check(spec, delta, want):
  """Delta of the trainable layers equals the reference, and is not tiny."""
  idx = spec.trainable_indices
  assert len(delta) == len(idx)
  moved = max(np.max(np.abs(want[i] - spec.initial_weights[i])) for i in idx)
  assert moved > 100 * TOL, moved  # the test can tell a step from no step
  for d, i in zip(delta, idx):
    np.testing.assert_allclose(spec.initial_weights[i] + d, want[i], rtol=0,
                               atol=TOL)
  for i in set(range(len(spec.layers))) - set(idx):
    np.testing.assert_array_equal(want[i], spec.initial_weights[i])


@pytest.mark.parametrize('train_layers,depth', [('all', 1), ('hidden', 2)])
def test_local_gd_equals_numpy_gd(train_layers, depth):
  spec = models.build_mlp(6, 2, width=32, depth=depth,
                          train_layers=train_layers, seed=1)
  x, y = _data()
  lr, k = 0.3, 4
  delta, last_loss = _run(spec, x, y, [0, 0], lr=lr, steps=k, batch_size=5,
                          full_batch=True)
  want, losses = ref.gd_steps(spec.initial_weights, x, y, lr=lr, steps=k,
                              trainable=spec.trainable_indices)
  _check(spec, delta, want)
  assert last_loss == pytest.approx(losses[-1], rel=1e-5)
  assert losses[-1] < losses[0]


@pytest.mark.parametrize('train_layers,depth,loss', [
    ('all', 1, 'mse'), ('hidden', 2, 'mse'), ('all', 2, 'xent')])
def test_local_sgd_equals_numpy_sgd_with_the_shared_batches(
    train_layers, depth, loss):
  spec = models.build_mlp(6, 3, width=32, depth=depth,
                          train_layers=train_layers, seed=2)
  n, b, k, lr = 23, 5, 6, 0.4
  x, y = _data(n=n, c=3, seed=1)
  if loss == 'xent':
    y = ref.one_hot(np.random.default_rng(4).integers(0, 3, n), 3)
  seed = [4, 11]
  delta, last_loss = _run(spec, x, y, seed, lr=lr, steps=k, batch_size=b,
                          full_batch=False, loss=loss)
  batches = [batch(seed, step, n, b) for step in range(k)]
  want, losses = ref.gd_steps(spec.initial_weights, x, y, lr=lr, steps=k,
                              trainable=spec.trainable_indices,
                              batches=batches, loss=loss)
  _check(spec, delta, want)
  assert last_loss == pytest.approx(losses[-1], rel=1e-5)

  # The batches matter: full-batch GD or another seed's batches end elsewhere.
  for other in (ref.gd_steps(spec.initial_weights, x, y, lr=lr, steps=k,
                             trainable=spec.trainable_indices, loss=loss)[0],
                ref.gd_steps(spec.initial_weights, x, y, lr=lr, steps=k,
                             trainable=spec.trainable_indices, loss=loss,
                             batches=[batch([4, 12], s, n, b)
                                      for s in range(k)])[0]):
    gap = max(np.max(np.abs(o - w)) for o, w in zip(other, want))
    assert gap > 100 * TOL


def test_one_step_is_minus_lr_times_gradient():
  spec = models.build_mlp(6, 2, width=16, depth=1, seed=3)
  x, y = _data(n=9, seed=2)
  lr = 0.25
  delta, last_loss = _run(spec, x, y, [0, 1], lr=lr, steps=1, batch_size=9,
                          full_batch=True)
  value, grads = ref.gradient(spec.initial_weights, x, y)
  assert last_loss == pytest.approx(value, rel=1e-5)
  for d, g in zip(delta, grads):
    assert np.max(np.abs(g)) > 0
    np.testing.assert_allclose(d, -lr * g, rtol=0,
                               atol=1e-5 * lr * np.max(np.abs(g)) + 1e-7)


@pytest.mark.parametrize('full_batch', [True, False])
def test_unrolled_steps_have_the_bits_of_the_loop(monkeypatch, full_batch):
  # K <= MAX_UNROLLED_STEPS steps are unrolled into the graph, where Grappler
  # shares ops between steps; every op must still see the loop's inputs.
  spec = models.build_mlp(6, 2, width=32, depth=1, train_layers='hidden',
                          seed=1)
  x, y = _data(n=13)
  args = dict(lr=0.3, steps=4, batch_size=5, full_batch=full_batch)
  assert args['steps'] <= local_update.MAX_UNROLLED_STEPS
  unrolled = _run(spec, x, y, [3, 9], **args)
  monkeypatch.setattr(local_update, 'MAX_UNROLLED_STEPS', 0)
  looped = _run(spec, x, y, [3, 9], **args)
  assert np.max(np.abs(unrolled[0][0])) > 1e-3
  for u, w in zip(unrolled[0], looped[0]):
    np.testing.assert_array_equal(u, w)
  assert unrolled[1] == looped[1]
