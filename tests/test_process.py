"""Tests for tff_localsgd.process: TFF rounds against the NumPy reference.

Every TFF call runs on one native engine shared by the module.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import numpy_reference as ref
from tff_localsgd import config as config_lib
from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import process
from tff_localsgd.engines import native

TOL = 1e-5
D, C = 6, 3
SIZES = (5, 11, 23, 8)  # unequal n_i
DATA_SEED = 7


@pytest.fixture(scope='module', autouse=True)
def engine():
  with native.native_engine() as worker:
    yield worker


def make_config(*, sizes=SIZES, **overrides):
  values = dict(dataset='synthetic', input_dim=D, output_dim=C,
                num_examples=sum(sizes), num_clients=len(sizes), model='mlp',
                width=32, depth=1, local_steps=3, batch_size=4, client_lr=0.3,
                lr_scale='none', seed=0)
  values.update(overrides)
  return config_lib.ExperimentConfig(**values).validate().validate_against_data(
      sizes)


def make_clients(loss='mse', seed=0, *, sizes=SIZES):
  rng = np.random.default_rng(seed)
  clients = []
  for n in sizes:
    x = ref.unit_rows(rng, n, D)
    if loss == 'xent':
      y = ref.one_hot(rng.integers(0, C, n), C)
    else:
      y = rng.standard_normal((n, C)).astype(np.float32)
    clients.append((x, y))
  return clients


def round_data(clients, round_num):
  return [process.client_data(x, y, DATA_SEED, round_num, i, len(clients))
          for i, (x, y) in enumerate(clients)]


def round_batches(clients, round_num, steps, batch_size):
  """The minibatch indices of every client and step: the shared stream."""
  out = []
  for i, (x, _) in enumerate(clients):
    seed = tf.constant([DATA_SEED, round_num * len(clients) + i], tf.int64)
    out.append([local_update.sample_batch(seed, k, len(x), batch_size).numpy()
                for k in range(steps)])
  return out


def build(config):
  spec = models.build_model(config, (D,), C)
  return spec, process.LocalSGDProcess(spec, config, (D,), C)


def max_gap(a, b):
  return max(float(np.max(np.abs(np.asarray(u, np.float64) - v)))
             for u, v in zip(a, b))


def assert_weights_close(got, want, spec):
  assert len(got) == len(want) == len(spec.layers)
  for i, (g, w) in enumerate(zip(got, want)):
    assert g.shape == w.shape and g.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=0, atol=TOL, err_msg=f'layer {i}')


# One round against the reference.

ROUND_CASES = {
    # name: (config overrides, the step size eta the reference uses)
    'local_sgd': (dict(algorithm='local_sgd'), 0.3),
    'lr_scale_width': (dict(client_lr=8.0, lr_scale='width'), 0.25),
    'server_lr_half': (dict(server_lr=0.5), 0.3),
    'local_gd': (dict(algorithm='local_gd'), 0.3),
    'hidden': (dict(train_layers='hidden', depth=2, client_lr=0.5), 0.5),
    'minibatch_sgd': (dict(algorithm='minibatch_sgd', local_steps=1), 0.3),
    'xent': (dict(dataset='digits', loss='xent', client_lr=1.0), 1.0),
}


@pytest.mark.parametrize('case', sorted(ROUND_CASES))
def test_rounds_equal_numpy_local_sgd_and_weighted_average(case):
  overrides, lr = ROUND_CASES[case]
  config = make_config(**overrides)
  spec, proc = build(config)
  clients = make_clients(config.loss, seed=1)
  k, b = config.local_steps, config.batch_size
  full_batch = config.algorithm == 'local_gd'
  trainable = spec.trainable_indices

  weights = proc.initialize()
  for got, want in zip(weights, spec.initial_weights):
    np.testing.assert_array_equal(got, want)
  want = [w.astype(np.float64) for w in spec.initial_weights]
  for r in range(2):
    batches = None if full_batch else round_batches(clients, r, k, b)
    previous = want
    want, want_loss = ref.local_sgd_round(
        previous, clients, lr=lr, steps=k, trainable=trainable,
        batches=batches, server_lr=config.server_lr, loss=config.loss)
    weights, metrics = proc.next(weights, round_data(clients, r))
    assert_weights_close(weights, want, spec)
    assert float(metrics['local_loss']) == pytest.approx(want_loss, rel=1e-5)
    # The round moves the model well beyond the tolerance...
    assert max_gap(previous, want) > 100 * TOL
    # ... and the unweighted average of the same local models ends elsewhere.
    unweighted = _uniform_round(previous, clients, lr, k, trainable, batches,
                                config)
    assert max_gap(unweighted, want) > 100 * TOL
  for i in set(range(len(spec.layers))) - set(trainable):
    np.testing.assert_array_equal(weights[i], spec.initial_weights[i])


def _uniform_round(weights, clients, lr, steps, trainable, batches, config):
  """The same round with p_i = 1/N instead of n_i/n (a wrong aggregation)."""
  finals = [ref.gd_steps(weights, x, y, lr=lr, steps=steps,
                         trainable=trainable,
                         batches=None if batches is None else batches[i],
                         loss=config.loss)[0]
            for i, (x, y) in enumerate(clients)]
  avg = ref.weighted_average(finals, [1] * len(finals))
  return [w + config.server_lr * (a - w) for w, a in zip(weights, avg)]


def test_local_gd_one_step_equals_centralized_gd():
  """K=1 local GD averaged with p_i = n_i/n is full-batch GD on the union."""
  config = make_config(algorithm='local_gd', local_steps=1, client_lr=0.5)
  spec, proc = build(config)
  clients = make_clients(seed=2)
  x_all = np.concatenate([x for x, _ in clients])
  y_all = np.concatenate([y for _, y in clients])
  weights = proc.initialize()
  want = [w.astype(np.float64) for w in spec.initial_weights]
  losses = []
  for r in range(5):
    weights, _ = proc.next(weights, round_data(clients, r))
    want, step_losses = ref.gd_steps(want, x_all, y_all, lr=0.5, steps=1)
    losses += step_losses
    assert_weights_close(weights, want, spec)
  assert max_gap(spec.initial_weights, want) > 100 * TOL
  assert losses[-1] < losses[0]


# Evaluation.


@pytest.mark.parametrize('loss', ['mse', 'xent'])
def test_evaluate_is_the_global_objective_and_accuracy(loss):
  dataset = 'digits' if loss == 'xent' else 'synthetic'
  config = make_config(loss=loss, dataset=dataset)
  spec, proc = build(config)
  clients = make_clients(loss, seed=3)
  rng = np.random.default_rng(4)
  # Evaluate at weights that are not w^0, to see they are the ones used.
  weights = tuple((w + 0.3 * rng.standard_normal(w.shape) * np.std(w)).astype(
      np.float32) for w in spec.initial_weights)
  out = proc.evaluate(weights, round_data(clients, 0))
  x_all = np.concatenate([x for x, _ in clients])
  y_all = np.concatenate([y for _, y in clients])
  n = sum(SIZES)
  assert float(out['num_examples']) == n
  want = ref.objective(weights, x_all, y_all, loss)
  assert float(out['loss_sum']) / float(out['num_examples']) == pytest.approx(
      want, rel=1e-5)
  assert want != pytest.approx(
      ref.objective(spec.initial_weights, x_all, y_all, loss), rel=1e-3)
  predicted = np.argmax(ref.forward(weights, x_all), axis=1)
  correct = int(np.sum(predicted == np.argmax(y_all, axis=1)))
  assert float(out['correct']) == correct
  if loss == 'xent':
    assert 0 < correct < n  # the count is informative at these weights


# Compilation.


@pytest.mark.parametrize('overrides', [
    dict(algorithm='local_sgd'),
    dict(algorithm='local_gd', train_layers='hidden', depth=2)])
def test_round_compiles_to_map_reduce_form(overrides):
  _, proc = build(make_config(**overrides))
  form = tff.backends.mapreduce.get_map_reduce_form_for_computation(
      proc.iterative_process.next)
  assert isinstance(form, tff.backends.mapreduce.MapReduceForm)
