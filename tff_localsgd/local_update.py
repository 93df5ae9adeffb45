"""The client's local update, in pure TensorFlow.

Starting from the broadcast model w^t, client i takes K = local_steps steps

    w_i^{t,k+1} = w_i^{t,k} - eta * grad f_i(w_i^{t,k}; xi_i^{t,k}),  k = 0..K-1,

where the gradient is over the trainable layers only, and xi_i^{t,k} is a
minibatch of batch_size examples drawn without replacement (local_sgd,
minibatch_sgd) or the whole client dataset (local_gd). It returns the model
delta w_i^{t,K} - w^t of the trainable layers.

Minibatches come from a stateless stream keyed by the client's seed
(seed, round, client) and the step k, so a client's sample does not depend on
which other clients are in the cohort, on the engine, or on resuming.
"""

import tensorflow as tf

from tff_localsgd import models


def sample_batch(seed, step, num_examples, batch_size):
  """Indices of the step's minibatch: batch_size distinct draws from range(n).

  seed: int64[2]; step: int32 scalar. A seeded random permutation, truncated.
  """
  step_seed = tf.random.experimental.stateless_fold_in(
      seed, tf.cast(step, tf.int64))
  keys = tf.random.stateless_uniform([num_examples], seed=step_seed)
  return tf.argsort(keys)[:batch_size]


def gradient(layers, loss, weights, trainable_indices, x, y):
  """(F_i(w), grad F_i(w)) over the trainable layers, on the examples x, y."""
  trainable = [weights[i] for i in trainable_indices]
  with tf.GradientTape() as tape:
    tape.watch(trainable)
    value = models.objective(layers, loss, weights, x, y)
  return value, tape.gradient(value, trainable)


def sgd_step(spec, loss: str, weights, trainable, x, y, seed, k, *, lr: float,
             batch_size: int, full_batch: bool):
  """One local step k: (w_i^{t,k} trainable) -> (w_i^{t,k+1} trainable, loss).

  `weights` supplies the frozen layers. The ordinary round runs this in a
  tf.while_loop; the lockstep diagnostic round runs it one federated_map at a
  time, so both follow the same trajectory.
  """
  full = spec.with_trainable(weights, trainable)
  if full_batch:
    xb, yb = x, y
  else:
    batch = sample_batch(seed, k, tf.shape(x)[0], batch_size)
    xb, yb = tf.gather(x, batch), tf.gather(y, batch)
  value, grads = gradient(spec.layers, loss, full, spec.trainable_indices, xb,
                          yb)
  return [w - lr * g for w, g in zip(trainable, grads)], value


def local_steps_update(spec, loss: str, weights, x, y, seed, *, lr: float,
                       local_steps: int, batch_size: int, full_batch: bool):
  """K local steps from `weights`; returns (delta of trainable layers, loss).

  loss is f_i on the last local step's sample, before that step: a cheap
  running measure; the global objective is computed separately by evaluation.
  """
  start = list(spec.trainable(weights))

  def step(k, trainable, _):
    new, value = sgd_step(spec, loss, weights, trainable, x, y, seed, k, lr=lr,
                          batch_size=batch_size, full_batch=full_batch)
    return k + 1, new, value

  _, final, last_loss = tf.while_loop(
      lambda k, *_: k < local_steps, step,
      (tf.constant(0), start, tf.constant(0.0)))
  return [w - w0 for w, w0 in zip(final, start)], last_loss
