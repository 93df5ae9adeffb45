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

import functools

import tensorflow as tf

from tff_localsgd import models


def step_keys(seed, step, num_examples):
  """The step's uniform sort keys in [0, 1), one per example: float32[n].

  seed: int64[2]; step: int32 scalar. Philox is counter-based, so the keys of
  a longer range(n') start with these (packing.sample_batches relies on it).
  """
  step_seed = tf.random.experimental.stateless_fold_in(
      seed, tf.cast(step, tf.int64))
  return tf.random.stateless_uniform([num_examples], seed=step_seed)


def sample_batch(seed, step, num_examples, batch_size):
  """Indices of the step's minibatch: batch_size distinct draws from range(n).

  seed: int64[2]; step: int32 scalar. A seeded random permutation, truncated.
  """
  return tf.argsort(step_keys(seed, step, num_examples))[:batch_size]


def gradient(layers, loss, weights, trainable_indices, x, y, mask=None):
  """(F_i(w), grad F_i(w)) over the trainable layers, on the examples x, y.

  Also for a pack (packing.py): x [P, n, ...], trainable weights [P, ...];
  then F_i is float32[P] and the gradient of sum_i F_i is, per client, that
  client's own gradient. `mask` [P, n] marks the real examples of padding.
  """
  trainable = [weights[i] for i in trainable_indices]
  with tf.GradientTape() as tape:
    tape.watch(trainable)
    logits = models.forward(layers, weights, x)
    if loss == 'mse' and mask is None:  # dF/df by hand: the tape from f
      value, d_logits = models.mse_and_gradient(logits, y)
      target, output_gradients = logits, d_logits
    else:
      value = models.mean_loss(loss, logits, y, mask)
      target, output_gradients = value, None
  return value, tape.gradient(target, trainable,
                              output_gradients=output_gradients)


def descend(spec, loss: str, weights, trainable, x, y, *, lr: float,
            mask=None):
  """w - eta * grad F(w; x, y) on the trainable layers; returns (new, F(w)).

  `weights` supplies the frozen layers. With --jit this is the part compiled
  by XLA; the minibatch stays outside, because XLA draws other random numbers
  from the same stateless seed.
  """
  full = spec.with_trainable(weights, trainable)
  value, grads = gradient(spec.layers, loss, full, spec.trainable_indices, x,
                          y, mask)
  return [w - lr * g for w, g in zip(trainable, grads)], value


def xla(fn, jit: bool):
  """fn, compiled with XLA when jit (a tf.function with jit_compile)."""
  return tf.function(fn, jit_compile=True, autograph=False) if jit else fn


def sgd_step(spec, loss: str, weights, trainable, x, y, seed, k, *, lr: float,
             batch_size: int, full_batch: bool, jit: bool = False):
  """One local step k: (w_i^{t,k} trainable) -> (w_i^{t,k+1} trainable, loss).

  `weights` supplies the frozen layers. The ordinary round runs this in a
  tf.while_loop; the lockstep diagnostic round runs it one federated_map at a
  time, so both follow the same trajectory.
  """
  if full_batch:
    xb, yb = x, y
  else:
    batch = sample_batch(seed, k, tf.shape(x)[0], batch_size)
    xb, yb = tf.gather(x, batch), tf.gather(y, batch)
  step = xla(functools.partial(descend, spec, loss, lr=lr), jit)
  return step(weights, trainable, xb, yb)


# Up to this many local steps are unrolled into the graph, beyond it a
# tf.while_loop runs them. Unrolled, the steps cost no loop bookkeeping
# (which dominates a small round) and Grappler shares what the steps have in
# common, as the frozen first layer's output and step 0's forward pass with
# the round's evaluation of w^t; each op still gets the same inputs, so the
# bits are the loop's (tests/test_local_update.py).
MAX_UNROLLED_STEPS = 10


def run_steps(step, start, local_steps: int, initial_loss):
  """K steps (k, trainable) -> (trainable', loss) from start: unrolled, or
  in a tf.while_loop when K > MAX_UNROLLED_STEPS.

  Returns (w^{t,K} trainable, the loss step K - 1 returned).
  """
  if local_steps <= MAX_UNROLLED_STEPS:
    trainable, loss = start, initial_loss
    for k in range(local_steps):
      trainable, loss = step(tf.constant(k), trainable)
    return trainable, loss
  _, final, last_loss = tf.while_loop(
      lambda k, *_: k < local_steps,
      lambda k, trainable, _: (k + 1, *step(k, trainable)),
      (tf.constant(0), start, initial_loss))
  return final, last_loss


def local_steps_update(spec, loss: str, weights, x, y, seed, *, lr: float,
                       local_steps: int, batch_size: int, full_batch: bool,
                       jit: bool = False):
  """K local steps from `weights`; returns (delta of trainable layers, loss).

  loss is f_i on the last local step's sample, before that step: a cheap
  running measure; the global objective is computed separately by evaluation.
  """
  start = list(spec.trainable(weights))

  def step(k, trainable):
    return sgd_step(spec, loss, weights, trainable, x, y, seed, k, lr=lr,
                    batch_size=batch_size, full_batch=full_batch, jit=jit)

  final, last_loss = run_steps(step, start, local_steps, tf.constant(0.0))
  return [w - w0 for w, w0 in zip(final, start)], last_loss
