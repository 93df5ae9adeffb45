"""Tests of tff_localsgd.theory against NumPy float64 and the kit's own step."""

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tff_localsgd import config as config_lib
from tff_localsgd import data
from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import second_moment
from tff_localsgd import theory

SIZES = (2, 3, 5, 4)  # unequal client sizes n_i


def clients_of(sizes):
  bounds = np.cumsum((0,) + tuple(sizes))
  return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def linear_problem(seed=0, p=30):
  """f = J w: a random Jacobian J [n, P], w^0 and targets y, in float64."""
  rng = np.random.default_rng(seed)
  n = sum(SIZES)
  return (rng.standard_normal((n, p)), rng.standard_normal((p, 1)),
          rng.standard_normal((n, 1)))


def simulate_linear(j, w, y, cohorts, *, lr, steps, server_lr):
  """Residuals J w_t - y of Local GD run step by step by numpy_reference."""
  clients = clients_of(SIZES)
  residuals = [(j @ w - y).ravel()]
  for cohort in cohorts:
    data_ = [(j[clients[i]], y[clients[i]]) for i in cohort]
    (w,), _ = ref.local_sgd_round([w], data_, lr=lr, steps=steps,
                                  server_lr=server_lr, activation='identity')
    residuals.append((j @ w - y).ravel())
  return np.array(residuals)


def test_round_map_is_local_gd_on_a_linear_model():
  j, w, y = linear_problem()
  h = j @ j.T
  lr = 0.5 * min(SIZES) / np.linalg.eigvalsh(h)[-1]
  steps = dict(lr=lr, local_steps=4, server_lr=0.7)
  rounds = 25
  every = [range(len(SIZES))] * rounds
  simulated = simulate_linear(j, w, y, every, **dict(
      lr=lr, steps=4, server_lr=0.7))
  m = theory.round_map(h, clients_of(SIZES), **steps)
  r = simulated[0]
  for t in range(rounds + 1):
    np.testing.assert_allclose(r, simulated[t], rtol=0, atol=1e-10)
    r = m @ r
  assert simulated[-1] @ simulated[-1] < 0.9 * simulated[0] @ simulated[0]


def test_round_maps_of_sampled_cohorts_follow_local_gd():
  j, w, y = linear_problem(seed=1)
  h = j @ j.T
  lr = 0.5 * min(SIZES) / np.linalg.eigvalsh(h)[-1]
  cohorts = [(0, 2), (1, 3), (3,), (0, 1, 2)]
  simulated = simulate_linear(j, w, y, cohorts, lr=lr, steps=3, server_lr=1.3)
  clients = clients_of(SIZES)
  maps = [theory.round_map(h, [clients[i] for i in c], lr, 3, 1.3)
          for c in cohorts]
  curve = theory.predicted_curve(maps, simulated[0], len(cohorts))
  np.testing.assert_allclose(
      curve, np.sum(simulated ** 2, axis=1) / (2 * len(h)), rtol=1e-12)


def test_expected_minibatch_round_is_the_full_batch_map():
  # Local SGD, B = 2 without replacement, K = 2 independent steps: the mean of
  # A_xi2 A_xi1 over all pairs of minibatches, averaged over clients.
  j, _, _ = linear_problem(seed=6)
  h = j @ j.T
  lr = 0.5 * min(SIZES) / np.linalg.eigvalsh(h)[-1]
  expected = np.zeros_like(h)
  for p, d in zip(np.array(SIZES) / sum(SIZES), clients_of(SIZES)):
    steps = []
    for batch in itertools.combinations(d, 2):
      batch = list(batch)
      a = np.eye(len(h))
      a[:, batch] -= (lr / 2) * h[:, batch]
      steps.append(a)
    expected += p * np.mean([a2 @ a1 for a1 in steps for a2 in steps], axis=0)
  m = theory.round_map(h, clients_of(SIZES), lr, 2, 0.6)
  np.testing.assert_allclose(m, 0.4 * np.eye(len(h)) + 0.6 * expected,
                             rtol=0, atol=1e-13)


def test_predicted_curve_applies_per_round_maps_in_order():
  rng = np.random.default_rng(2)
  maps = [np.eye(5) + 0.3 * rng.standard_normal((5, 5)) for _ in range(3)]
  r0 = rng.standard_normal(5)
  curve = theory.predicted_curve(maps, r0, 3)
  r3 = maps[2] @ (maps[1] @ (maps[0] @ r0))
  assert curve[0] == pytest.approx(r0 @ r0 / 10, rel=1e-14)
  assert curve[3] == pytest.approx(r3 @ r3 / 10, rel=1e-12)
  reversed_ = maps[0] @ (maps[1] @ (maps[2] @ r0))
  assert abs(curve[3] - reversed_ @ reversed_ / 10) > 1e-3 * curve[3]
  np.testing.assert_allclose(theory.predicted_curve(maps[0], r0, 2),
                             theory.predicted_curve(maps[:1] * 2, r0, 2),
                             rtol=0)
  with pytest.raises(ValueError):
    theory.predicted_curve(maps, r0, 4)


def first_order_error(h, lr):
  rho = theory.spectral_radius(
      theory.round_map(h, clients_of(SIZES), lr, 3, 0.5))
  return rho - (1 - 0.5 * 3 * lr * np.linalg.eigvalsh(h)[0] / len(h))


def test_spectral_radius_to_first_order_in_lr():
  j, _, _ = linear_problem(seed=3)
  h = j @ j.T
  lr = 0.2 * len(h) / np.linalg.eigvalsh(h)[-1]
  errors = [first_order_error(h, lr / 2 ** k) for k in range(4)]
  assert abs(errors[0]) > 1e-6
  for big, small in zip(errors, errors[1:]):
    assert 3.5 < big / small < 4.5  # O(eta^2): halving eta quarters it


def test_loss_ratio_tends_to_spectral_radius_squared():
  j, _, _ = linear_problem(seed=4)
  h = j @ j.T
  lr = 0.8 * min(SIZES) / np.linalg.eigvalsh(h)[-1]
  m = theory.round_map(h, clients_of(SIZES), lr, 5, 1.0)
  # Not symmetric: compare with the round's change I - M, not with the I in M.
  assert np.linalg.norm(m - m.T) > 0.1 * np.linalg.norm(np.eye(len(m)) - m)
  eig = np.linalg.eigvals(m)
  np.testing.assert_allclose(eig.imag, 0, atol=1e-10)  # similar to symmetric
  curve = theory.predicted_curve(m, np.random.default_rng(5).normal(
      size=len(h)), 2000)
  rate = theory.spectral_radius(m) ** 2
  assert 0.9 < rate < 0.9999
  assert curve[-1] / curve[-2] == pytest.approx(rate, rel=1e-6)


def numpy_gram(weights, x, trainable):
  """J J^T from per-example gradients of f by numpy_reference's backprop."""
  rows = []
  for xj in np.asarray(x, np.float64):
    f = ref.forward(weights, xj[None])
    # d/dw of 1/2 (f - (f - 1))^2 is d f / d w.
    _, grads = ref.gradient(weights, xj[None], f - 1)
    rows.append(np.concatenate([grads[l].ravel() for l in trainable]))
  j = np.array(rows)
  return j @ j.T


@pytest.mark.parametrize('depth', [1, 2])
@pytest.mark.parametrize('train_layers', ['hidden', 'all'])
def test_gram_matches_a_float64_jacobian(depth, train_layers):
  spec = models.build_mlp(5, 1, width=16, depth=depth,
                          train_layers=train_layers, seed=depth)
  x, _ = ref.problem('mse', seed=depth, n=12, d=5, c=1)
  h = theory.gram(spec, spec.initial_weights, x)
  assert h.dtype == np.float64
  expected = numpy_gram(spec.initial_weights, x, spec.trainable_indices)
  np.testing.assert_allclose(h, expected, rtol=1e-12,
                             atol=1e-12 * np.abs(expected).max())
  np.testing.assert_array_equal(h, h.T)
  assert np.linalg.eigvalsh(h)[0] > -1e-12 * np.abs(h).max()


def test_gram_needs_one_output():
  spec = models.build_mlp(5, 3, width=8, depth=1)
  with pytest.raises(ValueError):
    theory.gram(spec, spec.initial_weights, np.ones((2, 5), np.float32))


def test_predicted_rounds_to_eps():
  curve = [1.0, 0.5, 0.25, 0.125]
  # Inside the curve, log-linear: 0.5^t = 0.3 at t = 1.737.
  assert theory.predicted_rounds_to_eps(curve, 0.3, 0.5) == pytest.approx(
      math.log(0.3) / math.log(0.5), rel=1e-12)
  assert theory.predicted_rounds_to_eps(curve, 1.0, 0.5) == 0
  # Past round 3 at the rate: 0.125 * 0.5^s = 0.01 at s = 3.644.
  assert theory.predicted_rounds_to_eps(curve, 0.01, 0.5) == pytest.approx(
      3 + math.log(0.08) / math.log(0.5), rel=1e-12)
  assert theory.predicted_rounds_to_eps(curve, 0.01, 0.9) == pytest.approx(
      3 + math.log(0.08) / math.log(0.9), rel=1e-12)  # 23.97
  assert theory.predicted_rounds_to_eps(curve, 0.01, 1.0) is None
  assert theory.predicted_rounds_to_eps(curve, 0.01, None) is None
  assert theory.predicted_rounds_to_eps(None, 0.01, 0.5) is None


def test_curve_to_crossing_runs_to_its_crossing_or_diverges_to_inf():
  r0 = np.array([2.0, 0.0])  # L_0 = (1/4) 4 = 1
  # M = 0.5 I: L_t = 0.25^t, below 1e-3 first at t = 5 (0.25^5 = 9.8e-4).
  curve = theory.curve_to_crossing(0.5 * np.eye(2), r0, rounds=3,
                                   target=1e-3, rate=0.25)
  np.testing.assert_allclose(curve, 0.25 ** np.arange(6), rtol=1e-15)
  # A budget past the crossing: the curve runs to the budget.
  assert len(theory.curve_to_crossing(0.5 * np.eye(2), r0, rounds=8,
                                      target=1e-3, rate=0.25)) == 9
  # rho = 1000: L_t = 1e6^t passes float64's range at t = 52: inf, no
  # warning, and the curve stops at the run's rounds.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    curve = theory.curve_to_crossing(1000 * np.eye(2), r0, rounds=60,
                                     target=1e-3, rate=1e6)
  assert len(curve) == 61 and curve[51] == pytest.approx(1e306)
  assert np.isinf(curve[52:]).all()


def wide_problem(width):
  spec = models.build_mlp(8, 1, width=width, depth=1, train_layers='hidden',
                          seed=3)
  x, y, _, _ = data.synthetic_data(16, 8, 1, 'teacher',
                                   np.random.default_rng(3))
  clients = clients_of((3, 4, 4, 5))
  return (spec, tuple(x[d] for d in clients), tuple(y[d] for d in clients))


def kit_local_gd(spec, client_x, client_y, *, lr, local_steps, server_lr,
                 rounds):
  """train/loss per round of Local GD with the kit's own local update."""
  weights = spec.initial_weights
  sizes = np.array([len(x) for x in client_x], np.float32)
  x, y = np.concatenate(client_x), np.concatenate(client_y)
  seed = tf.constant([0, 0], tf.int64)  # unused by full-batch steps
  losses = []
  for _ in range(rounds + 1):
    losses.append(float(models.objective(spec.layers, 'mse', weights, x, y)))
    deltas = [local_update.local_steps_update(
        spec, 'mse', [tf.constant(w) for w in weights], xi, yi, seed, lr=lr,
        local_steps=local_steps, batch_size=len(xi), full_batch=True)[0]
              for xi, yi in zip(client_x, client_y)]
    mean = [sum(p * d[l].numpy() for p, d in zip(sizes / sizes.sum(), deltas))
            for l in range(len(deltas[0]))]
    weights = spec.with_trainable(weights, [
        w + server_lr * d for w, d in zip(spec.trainable(weights), mean)])
  return np.array(losses)


def test_prediction_follows_the_kits_local_gd_on_a_wide_mlp():
  width = 2048
  spec, client_x, client_y = wide_problem(width)
  steps = dict(lr=2.0 / width, local_steps=3, server_lr=0.8)
  rounds = 8
  prediction = theory.predict(spec, spec.initial_weights, client_x, client_y,
                              rounds=rounds, eps=1e-3, delta=0.1, **steps)
  measured = kit_local_gd(spec, client_x, client_y, rounds=rounds, **steps)
  curve = np.array(prediction.curve[:rounds + 1])
  assert curve[-1] < 0.1 * curve[0]  # a real decrease to follow
  # Linearization error: H drifts from H(w^0) by O(1/sqrt(m)) as the weights
  # move, and the drift compounds round by round in log L. Measured over these
  # 8 rounds: max log-gap 0.058 (m = 512), 0.024 (2048), 0.016 (8192); 0.05
  # is twice the m = 2048 value, while a 10% error in eta, or uniform p_i
  # instead of n_i / N, gives 0.14 to 0.20 here.
  gap = np.max(np.abs(np.log(measured) - np.log(curve)))
  assert gap < 0.05


def test_predict_fields_and_probe_subset():
  spec, client_x, client_y = wide_problem(64)
  kwargs = dict(lr=1.0 / 64, local_steps=2, server_lr=1.0, rounds=3,
                eps=1e-2, delta=0.25)
  full = theory.predict(spec, spec.initial_weights, client_x, client_y,
                        **kwargs)
  y = np.concatenate(client_y).astype(np.float64)
  assert full.zero_predictor_loss == pytest.approx(np.sum(y ** 2) / 32)
  # The curve runs past the budget (3 rounds) to its own crossing.
  assert full.gram_set == 'train' and full.gram_points == 16
  assert len(full.curve) - 2 < full.rounds_to_eps <= len(full.curve) - 1
  assert full.curve[-1] <= 1e-2 * full.zero_predictor_loss < full.curve[-2]
  h = numpy_gram(spec.initial_weights, np.concatenate(client_x),
                 spec.trainable_indices)
  eig = np.linalg.eigvalsh(h)
  assert (full.lambda_min, full.lambda_max) == pytest.approx(
      (eig[0], eig[-1]), rel=1e-10)
  m = theory.round_map(h, clients_of((3, 4, 4, 5)), 1.0 / 64, 2, 1.0)
  assert full.rate_per_round == pytest.approx(
      theory.spectral_radius(m) ** 2, rel=1e-10)
  assert full.rate_first_order == pytest.approx(
      (1 - 2 * eig[0] / 64 / 16) ** 2, rel=1e-10)
  assert full.rounds_to_eps == theory.predicted_rounds_to_eps(
      full.curve, 1e-2 * full.zero_predictor_loss, full.rate_per_round) > 3
  # The crossing does not depend on the budget.
  longer = theory.predict(spec, spec.initial_weights, client_x, client_y,
                          **dict(kwargs, rounds=40))
  assert longer.rounds_to_eps == full.rounds_to_eps
  assert longer.curve[:len(full.curve)] == full.curve
  # The per-client bound from the blocks of an independent NumPy Gram.
  blocks = clients_of((3, 4, 4, 5))
  assert full.smooth_bound == pytest.approx(max(
      np.linalg.eigvalsh(h[np.ix_(d, d)])[-1] / 64 / len(d) for d in blocks),
      rel=1e-10)
  assert full.smooth_bound < eig[-1] / 64 / 3  # tighter than the loose bound
  json.dumps(full.to_dict())
  probe = theory.predict(spec, spec.initial_weights, client_x, client_y,
                         max_points=8, **kwargs)
  assert (probe.gram_set, probe.gram_points) == ('probe', 8)
  assert probe.curve is None and probe.rounds_to_eps is None
  assert probe.rate_per_round is None
  assert probe.lambda_min >= full.lambda_min  # Cauchy interlacing
  assert probe.zero_predictor_loss == full.zero_predictor_loss


def test_predict_with_cohorts():
  spec, client_x, client_y = wide_problem(64)
  kwargs = dict(lr=1.0 / 64, local_steps=2, server_lr=0.9, rounds=3,
                eps=1e-2, delta=0.25)
  args = (spec, spec.initial_weights, client_x, client_y)
  full = theory.predict(*args, **kwargs)
  every = theory.predict(*args, cohorts=[range(4)] * 3, **kwargs)
  # Sampled cohorts stop at the budget; the fixed map runs to its crossing.
  assert every.curve == full.curve[:4]
  # The mean of three equal maps, (M + M + M) / 3, differs from M by rounding.
  assert every.rate_per_round == pytest.approx(full.rate_per_round, rel=1e-13)
  cohorts = [(3, 0), (2,), (1, 2)]
  sampled = theory.predict(*args, cohorts=cohorts, **kwargs)
  x, y = np.concatenate(client_x), np.concatenate(client_y)
  h = numpy_gram(spec.initial_weights, x, spec.trainable_indices)
  clients = clients_of((3, 4, 4, 5))
  maps = [theory.round_map(h, [clients[i] for i in c], 1.0 / 64, 2, 0.9)
          for c in cohorts]
  r0 = (ref.forward(spec.initial_weights, x) - y).ravel()
  np.testing.assert_allclose(sampled.curve,
                             theory.predicted_curve(maps, r0, 3), rtol=1e-9)
  assert sampled.rate_per_round == pytest.approx(
      theory.spectral_radius(sum(maps) / 3) ** 2, rel=1e-9)
  with pytest.raises(ValueError):
    theory.predict(*args, cohorts=cohorts[:2], **kwargs)


def test_applies():
  config = config_lib.ExperimentConfig
  assert theory.applies(config(output_dim=1)) is None
  assert 'loss' in theory.applies(config(dataset='digits', loss='xent'))
  assert 'output' in theory.applies(config(output_dim=2))
  assert 'output' in theory.applies(config(dataset='digits'))
  assert 'mlp' in theory.applies(config(dataset='digits', model='cnn'))


def test_dissimilarity_is_the_clients_gradient_spread():
  """zeta^2 from H and r_0 equals sum_i p_i ||grad F_i - grad F||^2 from
  the kit's own gradients (TF autodiff, float32) at w^0."""
  spec, client_x, client_y = wide_problem(64)
  weights = tuple(spec.initial_weights)
  x, y = np.concatenate(client_x), np.concatenate(client_y)
  n = len(x)
  h = theory.gram(spec, weights, x)
  indices = theory._client_indices(client_x)
  got = theory.dissimilarity(h, theory.residual(spec, weights, x, y), indices)
  grads = [np.concatenate([g.numpy().ravel() for g in local_update.gradient(
      spec.layers, 'mse', [tf.constant(w) for w in weights],
      spec.trainable_indices, cx, cy)[1]])
           for cx, cy in zip(client_x, client_y)]
  mean = sum(len(cx) / n * g for cx, g in zip(client_x, grads))
  want = sum(len(cx) / n * np.sum((g - mean) ** 2)
             for cx, g in zip(client_x, grads))
  assert want > 0
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_a_minibatch_run_is_also_predicted_by_its_expected_loss():
  spec, client_x, client_y = wide_problem(64)
  kwargs = dict(lr=1.0 / 64, local_steps=2, server_lr=1.0, rounds=3,
                eps=1e-2, delta=0.25)
  args = (spec, spec.initial_weights, client_x, client_y)
  gd = theory.predict(*args, **kwargs)
  assert gd.expected_curve is None and gd.expected_rounds_to_eps is None
  sgd = theory.predict(*args, batch_size=2, **kwargs)
  h = numpy_gram(spec.initial_weights, np.concatenate(client_x),
                 spec.trainable_indices)
  r0 = theory.residual(spec, spec.initial_weights, np.concatenate(client_x),
                       np.concatenate(client_y))
  rounds = 2 * (len(sgd.curve) - 1)
  assert sgd.expected_curve == pytest.approx(list(
      second_moment.expected_loss_curve(
          h, clients_of((3, 4, 4, 5)), lr=1.0 / 64, local_steps=2,
          batch_size=2, server_lr=1.0, r0=r0, rounds=rounds)), rel=1e-9)
  # The minibatch variance puts E[L_t] above the expected residual's loss,
  # so it crosses eps later.
  assert all(e >= c for e, c in zip(sgd.expected_curve[1:], sgd.curve[1:]))
  assert sgd.expected_rounds_to_eps > sgd.rounds_to_eps
