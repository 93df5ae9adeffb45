"""Tests of tff_localsgd.second_moment: enumeration, Local GD, Monte Carlo, and
the kit's own minibatch sampler."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from tff_localsgd import local_update
from tff_localsgd import second_moment
from tff_localsgd import theory

SIZES = (3, 4, 5)  # unequal client sizes n_i, n = 12


def clients_of(sizes):
  bounds = np.cumsum((0,) + tuple(sizes))
  return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def linear_problem(sizes=SIZES, p=24, seed=0):
  """f = J w: a random Jacobian J [n, P], w^0 [P] and targets y [n]."""
  rng = np.random.default_rng(seed)
  n = sum(sizes)
  return (rng.standard_normal((n, p)), rng.standard_normal(p),
          rng.standard_normal(n))


def symmetric(rng, n):
  a = rng.standard_normal((n, n))
  return a @ a.T


def truncated_permutations(num_examples, batch_size):
  """Every minibatch the kit can draw, as argsort(keys)[:B] of a uniformly
  random permutation: all n_i! permutations, truncated, equally likely."""
  return [np.array(p[:batch_size])
          for p in itertools.permutations(range(num_examples))]


def selector(n, indices):
  p = np.zeros((n, n))
  p[indices, indices] = 1.0
  return p


# The sampling probabilities, against an enumeration.


@pytest.mark.parametrize('n_i,b', [(1, 1), (4, 1), (4, 3), (5, 2), (5, 5)])
def test_pair_inclusion_is_the_mean_over_all_minibatches(n_i, b):
  x = symmetric(np.random.default_rng(1), n_i)
  batches = truncated_permutations(n_i, b)
  mean_p = sum(selector(n_i, s) for s in batches) / len(batches)
  mean_pxp = sum(selector(n_i, s) @ x @ selector(n_i, s)
                 for s in batches) / len(batches)
  q = second_moment.pair_inclusion(n_i, b)
  np.testing.assert_allclose(np.diag(np.diag(q)), mean_p, rtol=0, atol=1e-14)
  np.testing.assert_allclose(q * x, mean_pxp, rtol=1e-13, atol=1e-13)


def test_step_moment_is_the_mean_over_all_minibatches():
  rng = np.random.default_rng(2)
  n, d, lr, b = 8, np.arange(2, 7), 0.3, 2
  h, x = symmetric(rng, n), symmetric(rng, n)
  want = np.zeros((n, n))
  batches = truncated_permutations(len(d), b)
  for s in batches:
    a = np.eye(n) - (lr / b) * h @ selector(n, d[s])
    want += a @ x @ a.T / len(batches)
  got = second_moment.step_moment(h, x, d, lr=lr, batch_size=b)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(
      want).max())


# Local GD (B = n_i) is the deterministic special case.


def test_full_batch_is_the_local_gd_prediction():
  sizes = (4, 4, 4)
  j, w, y = linear_problem(sizes)
  h, r0 = j @ j.T, j @ w - y
  steps = dict(lr=0.08, local_steps=3, server_lr=0.8)
  clients = clients_of(sizes)
  got = second_moment.expected_loss_curve(
      h, clients, batch_size=4, r0=r0, rounds=20, **steps)
  want = theory.predicted_curve(theory.round_map(h, clients, **steps), r0, 20)
  assert want[-1] < 0.5 * want[0]
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# Monte Carlo: the linear model's Local SGD, step by step in weight space.


def local_sgd_round(j, y, w, clients, batches, *, lr, server_lr):
  """One round on `draws` independent models w [draws, P] at once.

  batches[i][k]: [draws, B] global indices of client i's step k. Each step
  is w <- w - (eta/B) J_S^T (J_S w - y_S), the gradient of the batch mean of
  1/2 (f - y)^2; the server adds eta_s sum_i p_i (w_i - w).
  """
  total = sum(len(d) for d in clients)
  delta = np.zeros_like(w)
  for d, client_batches in zip(clients, batches):
    wi = w
    for s in client_batches:
      js = j[s]                                           # [draws, B, P]
      rs = np.einsum('dbp,dp->db', js, wi) - y[s]
      wi = wi - (lr / s.shape[1]) * np.einsum('dbp,db->dp', js, rs)
    delta += len(d) / total * (wi - w)
  return w + server_lr * delta


def draw_batches(rng, clients, local_steps, batch_size, draws):
  """The kit's sampling: per step, argsort of fresh uniform keys, first B."""
  return [[d[np.argsort(rng.random((draws, len(d))), axis=1)[:, :batch_size]]
           for _ in range(local_steps)] for d in clients]


MC = dict(lr=0.04, local_steps=3, batch_size=2, server_lr=0.8)


def test_the_simulated_round_is_the_reference_local_sgd_round():
  j, w0, y = linear_problem()
  clients = clients_of(SIZES)
  rng = np.random.default_rng(3)
  w = np.stack([w0, rng.standard_normal(len(w0))])
  batches = draw_batches(rng, clients, MC['local_steps'], MC['batch_size'], 2)
  got = local_sgd_round(j, y, w, clients, batches, lr=MC['lr'],
                        server_lr=MC['server_lr'])
  for draw in range(2):
    data_ = [(j[d], y[d][:, None]) for d in clients]
    local = [[s[draw] - d[0] for s in b] for d, b in zip(clients, batches)]
    (want,), _ = ref.local_sgd_round(
        [w[draw][:, None]], data_, lr=MC['lr'], steps=MC['local_steps'],
        batches=local, server_lr=MC['server_lr'], activation='identity')
    np.testing.assert_allclose(got[draw], want.ravel(), rtol=1e-12)


def monte_carlo_losses(rounds, draws, seed):
  """L_t = ||J w_t - y||^2 / (2n) of `draws` independent runs: [draws, T+1]."""
  j, w0, y = linear_problem()
  clients = clients_of(SIZES)
  rng = np.random.default_rng(seed)
  w = np.repeat(w0[None], draws, axis=0)
  losses = [w @ j.T - y]
  for _ in range(rounds):
    batches = draw_batches(rng, clients, MC['local_steps'], MC['batch_size'],
                           draws)
    w = local_sgd_round(j, y, w, clients, batches, lr=MC['lr'],
                        server_lr=MC['server_lr'])
    losses.append(w @ j.T - y)
  return np.sum(np.square(losses), axis=-1).T / (2 * len(y))


def z_scores(samples, curve):
  """(mean over draws - curve) / standard error, for t >= 1."""
  se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
  return (samples.mean(axis=0) - curve)[1:] / se[1:]


def test_expected_loss_matches_monte_carlo_and_the_mean_does_not():
  rounds = 8
  samples = monte_carlo_losses(rounds, draws=20000, seed=4)
  j, w0, y = linear_problem()
  h, r0, clients = j @ j.T, j @ w0 - y, clients_of(SIZES)
  expected = second_moment.expected_loss_curve(h, clients, r0=r0,
                                               rounds=rounds, **MC)
  steps = {k: v for k, v in MC.items() if k != 'batch_size'}
  mean = theory.predicted_curve(theory.round_map(h, clients, **steps), r0,
                                rounds)
  assert samples.mean(axis=0)[-1] < 0.2 * samples[0, 0]  # it trains
  np.testing.assert_allclose(samples[:, 0], expected[0], rtol=1e-12)
  assert np.max(np.abs(z_scores(samples, expected))) < 4
  # Power: the same test rejects the loss of the mean residual.
  assert np.max(np.abs(z_scores(samples, mean))) > 4


# Input checks.


def test_refuses_large_n_and_bad_batch_sizes():
  steps = dict(lr=0.1, local_steps=2, server_lr=1.0, rounds=3)
  n = second_moment.MAX_POINTS + 1
  with pytest.raises(ValueError, match=f'n = {n} points'):
    second_moment.expected_loss_curve(np.eye(n), [np.arange(n)], batch_size=2,
                                      r0=np.ones(n), **steps)
  for b in (0, 4):
    with pytest.raises(ValueError, match='batch_size'):
      second_moment.expected_loss_curve(np.eye(7), clients_of((3, 4)),
                                        batch_size=b, r0=np.ones(7), **steps)


# The kit's own sampler draws what the recursion assumes.


def kit_batches(num_rounds, num_examples, batch_size, step):
  """local_update.sample_batch for round seeds (7, t) at local step k."""
  seeds = tf.constant([[7, t] for t in range(num_rounds)], tf.int64)
  fn = tf.function(lambda seeds: tf.map_fn(
      lambda s: local_update.sample_batch(s, step, num_examples, batch_size),
      seeds, fn_output_signature=tf.int32))
  return fn(seeds).numpy()


def indicators(batches, num_examples):
  """[draws, n_i] 0/1: which examples each minibatch holds."""
  out = np.zeros((len(batches), num_examples))
  np.put_along_axis(out, batches, 1.0, axis=1)
  return out


def test_the_kits_sampler_has_these_pair_and_step_probabilities():
  # Bernoulli frequencies over `draws` seeds, each within 5 sd. With
  # replacement (Pr(a in S) = 0.36, Pr(a, b) = 0.08) would fail by > 6 sd.
  n_i, b, draws = 5, 2, 10000
  first = indicators(kit_batches(draws, n_i, b, step=0), n_i)
  second = indicators(kit_batches(draws, n_i, b, step=1), n_i)
  q = second_moment.pair_inclusion(n_i, b)
  within = [first.T @ first / draws, second.T @ second / draws]
  across = first.T @ second / draws   # independent steps: q_i^2
  for freq, prob in [(within[0], q), (within[1], q),
                     (across, np.full_like(q, (b / n_i) ** 2))]:
    sd = np.sqrt(prob * (1 - prob) / draws)
    assert np.all(np.abs(freq - prob) < 5 * sd)
  sd_pair, sd_one = (np.sqrt(p * (1 - p) / draws) for p in (0.1, 0.4))
  assert 0.1 - 0.08 > 6 * sd_pair and 0.4 - 0.36 > 6 * sd_one
