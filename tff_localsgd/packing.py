"""Client packing: one TFF client trains a pack of P virtual clients at once.

With --clients_per_pack=P the cohort S_t is cut, in cohort order, into
ceil(|S_t| / P) packs of P clients; the last pack holds the remainder (fewer
than P clients: the pack axis of the type is unknown, so there are no dummy
clients and no wasted work). One pack is one TFF client value:

    {x: float32[P, n_max, d], y: float32[P, n_max, c],
     num_examples: int32[P], seed: int64[P, 2]}

client i of the pack holding x[i, :n_i], zero-padded to n_max = max_i n_i, and
its own minibatch seed (seed, t * N + i). Its trainable weights are stacked on
a leading axis [P, ...] and every step is one batched computation over the
pack (models.forward: batched matmuls), with the same local steps as
local_update:

- minibatches: sample_batches gives client i exactly the indices
  local_update.sample_batch gives it unpacked (same seed, same step k);
- full batch (local_gd): F_i is the mean over the n_i real examples (mask).

The pack returns the n_i-weighted means over its clients

    Delta = sum_{i in pack} n_i Delta_i / sum_{i in pack} n_i,  n = sum n_i

(and the same for the metrics), so the round's sum of n Delta over the packs,
divided by the sum of n, is sum_{i in S_t} p_i Delta_i with
p_i = n_i / sum_{j in S_t} n_j, as without packing (tests/test_packing.py
checks the weights and metrics). The mlp only:
conv layers do not batch over a stack of filters (config.validate refuses
--model=cnn with P > 1).
"""

import collections

import numpy as np
import tensorflow as tf

from tff_localsgd import local_update

# Sort key of padding: larger than every uniform key in [0, 1), so padding
# sorts after the n_i real examples.
_PADDING_KEY = 2.0


def pack_clients(client_values, clients_per_pack: int) -> list:
  """Packs of clients_per_pack client values (process.client_data), in order.

  NumPy: stacks and zero-pads each pack's arrays; the last pack may be smaller.
  """
  packs = []
  for start in range(0, len(client_values), clients_per_pack):
    members = client_values[start:start + clients_per_pack]
    sizes = [len(c['x']) for c in members]
    n_max = max(sizes)

    def stacked(key):
      first = np.asarray(members[0][key])
      out = np.zeros((len(members), n_max, *first.shape[1:]), first.dtype)
      for i, c in enumerate(members):
        out[i, :sizes[i]] = c[key]
      return out

    packs.append(collections.OrderedDict(
        x=stacked('x'), y=stacked('y'),
        num_examples=np.asarray(sizes, np.int32),
        seed=np.stack([np.asarray(c['seed'], np.int64) for c in members])))
  return packs


def example_mask(num_examples, padded_size):
  """float32[P, n_max]: 1 on the n_i real examples of each client, 0 after."""
  return tf.sequence_mask(num_examples, padded_size, dtype=tf.float32)


def sample_batches(seeds, step, num_examples, padded_size, batch_size):
  """int32[P, B]: row i = local_update.sample_batch(seeds[i], step, n_i, B).

  The keys of range(n_max) start with the keys of range(n_i) (a counter-based
  stream), and padding keys sort last, so argsort (top_k: ties go to the
  lower index, per row) ranks the real examples as the unpacked sample does.
  """
  keys = tf.map_fn(
      lambda seed: local_update.step_keys(seed, step, padded_size), seeds,
      fn_output_signature=tf.float32)
  keys = tf.where(example_mask(num_examples, padded_size) > 0, keys,
                  _PADDING_KEY)
  return tf.argsort(keys, axis=-1)[:, :batch_size]


def stack(tensor, pack_size):
  """tensor repeated on a new leading axis: [P, ...]."""
  return tf.broadcast_to(tensor, tf.concat([[pack_size], tf.shape(tensor)], 0))


def pack_local_steps(spec, loss: str, weights, data, *, lr: float,
                     local_steps: int, batch_size: int, full_batch: bool,
                     jit: bool = False, start=None):
  """K local steps of every client of a pack, from the broadcast `weights`.

  Returns (w_i^{t,K} trainable, stacked [P, ...]; the loss f_i of step K - 1,
  float32[P]), local_update.local_steps_update for every member. `start`:
  the trainable weights each member starts from, already stacked [P, ...]
  (stacking.py: a seed's own w_s^t); by default the broadcast ones.
  """
  x, y = data['x'], data['y']
  num_examples, seeds = data['num_examples'], data['seed']
  pack_size, padded_size = tf.shape(x)[0], tf.shape(x)[1]
  mask = example_mask(num_examples, padded_size) if full_batch else None
  descend = local_update.xla(
      lambda w, trainable, xb, yb, mask: local_update.descend(
          spec, loss, w, trainable, xb, yb, lr=lr, mask=mask), jit)

  def step(k, trainable):
    if full_batch:
      return descend(weights, trainable, x, y, mask)
    batch = sample_batches(seeds, k, num_examples, padded_size, batch_size)
    return descend(weights, trainable, tf.gather(x, batch, batch_dims=1),
                   tf.gather(y, batch, batch_dims=1), None)

  if start is None:
    start = [stack(w, pack_size) for w in spec.trainable(weights)]
  return local_update.run_steps(step, start, local_steps,
                                tf.zeros([pack_size]))


def pack_mean(values, weights):
  """sum_i w_i values[i] / sum_i w_i over the pack axis (values [P, ...])."""
  p = weights / tf.reduce_sum(weights)
  return tf.tensordot(p, values, axes=1)


def pack_work(spec, loss: str, weights, data, *, measure=None, **step_args):
  """(weights, Pack) -> <weighted_delta, num_examples, local_loss, ...>

  The pack's n_i-weighted means (module doc), the delta's times n = sum_i
  n_i (process.py's round sums n Delta); `step_args` are pack_local_steps'
  keyword arguments; `measure(weights, data, local)` adds its measurements
  of the stacked local models.
  """
  local, last_loss = pack_local_steps(spec, loss, weights, data,
                                      **step_args)
  n = tf.cast(data['num_examples'], tf.float32)
  total = tf.reduce_sum(n)
  out = collections.OrderedDict(
      # tensordot forgets the static shape, which the round's sum needs.
      weighted_delta=tuple(
          tf.ensure_shape(pack_mean(w - w0, n) * total, w0.shape)
          for w, w0 in zip(local, spec.trainable(weights))),
      num_examples=total,
      local_loss=pack_mean(last_loss, n))
  if measure is not None:
    out.update(measure(weights, data, local))
  return out
