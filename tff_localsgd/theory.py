"""What the NTK at initialization predicts a Local (S)GD run to do.

Deng, Kamani and Mahdavi (2022) prove that Local (S)GD drives the training
loss of wide ReLU networks to zero at a linear rate. Only the paper's abstract
was available, so this prediction is not taken from its body: it is the
linearized (neural tangent kernel) dynamics of the lineage the paper builds
on, Du, Zhai, Poczos and Singh (2019) for two layers, Allen-Zhu, Li and Song
(2019) for deep networks, and FL-NTK (Huang, Li, Song and Yang, 2021) for
FedAvg with several local steps, written in this kit's normalization.

Notation: n training examples in client order; client i holds the index set
D_i, n_i = |D_i|; the cohort S of a round, N = sum_{j in S} n_j and
p_i = n_i / N (process.py); eta the client step (config.lr), eta_s the server
step, K the local steps. F_i(w) = (1/n_i) sum_{j in D_i} 1/2 (f(x_j; w) - y_j)^2
with a scalar output, and train/loss is L = (1/2n) ||r||^2 with the residual
r = f(w) - y in R^n. J (n x P) is the Jacobian of f over the trainable weights
at w^0 and H = J J^T the NTK Gram matrix.

Linearize f(w) = f(w^0) + J (w - w^0). One local GD step of client i,
w <- w - eta grad F_i(w) = w - (eta/n_i) J_{D_i}^T r_{D_i}, maps the residual
on all n points as

    r <- A_i r,   A_i = I - (eta/n_i) H[:, D_i] E_{D_i}^T,

E_{D_i} selecting the D_i coordinates. Client i's residual after K steps is
A_i^K r. With G_i = (eta/n_i) H[D_i, D_i] and S_i = sum_{k<K} (I - G_i)^k,

    A_i^K = I - (eta/n_i) H[:, D_i] S_i E_{D_i}^T         (induction on K).

The server sets w <- w + eta_s sum_i p_i (w_i - w); f is affine in w, so

    r <- M r,   M = (1 - eta_s) I + eta_s sum_{i in S} p_i A_i^K
                  = I - (eta_s eta / N) sum_{i in S} H[:, D_i] S_i E_{D_i}^T,

as p_i / n_i = 1/N. The predicted curve is L_t = (1/2n) ||M_t ... M_1 r_0||^2.
M is not symmetric, but M = I - (eta_s eta / N) H S with S symmetric (the
blocks S_i on the cohort's D_i, 0 elsewhere), so for H > 0 it is similar to
I - (eta_s eta / N) H^{1/2} S H^{1/2}: its eigenvalues are real, and for a
generic r_0, L(t+1)/L(t) tends to rho(M)^2, rho the spectral radius. For
small eta, S_i = K I + O(eta), so M = I - (eta_s K eta / n) H + O(eta^2) with
full participation, and rho(M) = 1 - eta_s K eta lambda_min(H)/n + O(eta^2):
the partition (heterogeneity) enters at second order only. With
eta = c/m (lr_scale=width), H grows like m, so one c serves every width.

Local SGD (minibatches of B drawn without replacement, independently per step)
has E[(1/B) E_xi E_xi^T] = (1/n_i) E_{D_i} E_{D_i}^T, so the expected step is
the full-batch step and the expected residual follows the same M. The curve
is the loss of the expected residual, (1/2n) ||E r_t||^2, which the expected
loss exceeds by the minibatch variance; for Local GD the two coincide.
"""

import dataclasses
import math

import numpy as np

from tff_localsgd import diagnostics
from tff_localsgd import models
from tff_localsgd import outcomes
from tff_localsgd import second_moment

# The largest n for which predict() builds H and M on the training set; time
# sets it. Measured on the 2-core CPU at n = 2048, m = 4096 (depth 1, all
# layers trained): H in 5 s, the whole predict() in 11 s, of which the
# eigenvalues of the non-symmetric n x n M take ~6 s and grow as n^3 (~45 s
# at n = 4096); the process peaked at 1.9 GB, H and M being 32 MB each.
MAX_GRAM_POINTS = 2048
# The longest predicted curve: past it, T_pred is extrapolated at rho(M)^2.
# At n = 512 a round of the curve is one 512 x 512 matrix-vector product, so
# the cap costs < 1 s; the suites' T_pred are < 10^3.
PREDICTION_CAP = 20000
# Minibatch runs also get their exact expected loss (second_moment.py) up to
# this n: its recursion costs O(rounds K n^3). 256 is the paper preset's n
# (E5's Local SGD: 73 s a trial here, to T_E ~ 390 rounds), whose budgets
# and C8 need that curve; at 128 they fell back to the mean residual's.
EXPECTED_MAX_POINTS = 256


def _float64(arrays):
  return tuple(np.asarray(a, np.float64) for a in arrays)


def gram(spec, weights, x) -> np.ndarray:
  """H = J J^T [n, n] in float64 over spec's trainable weights, at `weights`.

  H_jk = <d f(x_j)/dw, d f(x_k)/dw> for a network with one output. It is
  diagnostics.ntk_gram evaluated on the weights and inputs cast to float64,
  so it is exact for the given (float32) weights up to float64 rounding. A
  dense layer adds (A A^T) o (D D^T) without forming J (n x m^2: 275 GB at
  n = 2048, m = 4096), so the largest tensors are n x m.
  """
  if np.shape(weights[-1])[-1] != 1:
    raise ValueError(f'H is defined for one output; the network has '
                     f'{np.shape(weights[-1])[-1]}')
  h = diagnostics.ntk_gram(spec.layers, _float64(weights),
                           spec.trainable_indices, np.asarray(x, np.float64))
  return h.numpy()


def residual(spec, weights, x, y) -> np.ndarray:
  """r = f(w; x) - y in R^n (float64 forward pass), for one output."""
  f = models.forward(spec.layers, _float64(weights), np.asarray(x, np.float64))
  return (f.numpy() - np.asarray(y, np.float64)).reshape(-1)


def round_map(h, client_indices, lr, local_steps, server_lr) -> np.ndarray:
  """M = (1 - eta_s) I + eta_s sum_i p_i A_i^K on the residual (module doc).

  client_indices: the cohort's index sets D_i (rows of h), p_i = n_i / N.
  Computed as M[:, D_i] -= (eta_s eta / N) H[:, D_i] S_i with
  S_i = sum_{k<K} (I - G_i)^k by Horner, S <- I + (I - G_i) S; points of
  clients outside the cohort keep identity columns.
  """
  h = np.asarray(h, np.float64)
  total = sum(len(d) for d in client_indices)
  m = np.eye(len(h))
  for d in client_indices:
    d = np.asarray(d)
    g = (lr / len(d)) * h[np.ix_(d, d)]
    s = np.eye(len(d))
    for _ in range(local_steps - 1):
      s = np.eye(len(d)) + s - g @ s
    m[:, d] -= (server_lr * lr / total) * (h[:, d] @ s)
  return m


def predicted_curve(maps, r0, rounds) -> np.ndarray:
  """L_t = (1/2n) ||M_t ... M_1 r_0||^2 for t = 0..rounds: float64[rounds + 1].

  maps: one M [n, n] used every round, or an iterable of exactly `rounds`
  per-round maps M_1, M_2, ... (sampled cohorts), applied in that order.
  """
  if isinstance(maps, np.ndarray) and maps.ndim == 2:
    maps = [maps] * rounds
  r = np.asarray(r0, np.float64)
  losses = [r @ r]
  for m in maps:
    r = m @ r
    losses.append(r @ r)
  if len(losses) != rounds + 1:
    raise ValueError(f'{len(losses) - 1} maps for {rounds} rounds')
  return np.asarray(losses) / (2 * len(r))


def curve_to_crossing(m, r0, rounds, target, rate, cap=PREDICTION_CAP):
  """The fixed-map curve L_t = (1/2n) ||M^t r_0||^2 for t = 0..T_end.

  With rho(M)^2 = rate < 1, T_end is the first t >= rounds at which the
  curve is at or below `target`, at most `cap`: the crossing lies inside the
  curve whatever the run's budget, so T_pred does not depend on the budget
  (and a budget drawn from T_pred cannot move it). With rate >= 1 the curve
  never settles and stops at t = rounds; where it grows past float64's
  range its values are inf (a catapult step at hundreds of rounds), which is
  the prediction: the linearized run diverges.
  """
  end = rounds if rate >= 1 else cap
  r = np.asarray(r0, np.float64)
  losses = [r @ r]
  with np.errstate(over='ignore', invalid='ignore'):
    for t in range(1, end + 1):
      r = m @ r
      losses.append(r @ r)
      if t >= rounds and losses[-1] <= 2 * len(r) * target:
        break
  return np.asarray(losses) / (2 * len(r))


def spectral_radius(m) -> float:
  """rho(M) = max |eigenvalue| (M need not be symmetric)."""
  return float(np.max(np.abs(np.linalg.eigvals(m))))


def predicted_rounds_to_eps(curve, target, rate):
  """T_pred: the curve's interpolated crossing of target (outcomes.
  rounds_to_eps), or None if never predicted.

  Beyond the curve's last round T the loss is extrapolated as
  L_T rate^(t - T), crossing at T + log(target / L_T) / log(rate); with
  rate >= 1 (or no curve) the target is never reached.
  """
  if curve is None:
    return None
  hit = outcomes.rounds_to_eps(range(len(curve)), curve, target)
  if hit is not None:
    return hit
  if rate is None or rate >= 1:
    return None
  last = len(curve) - 1
  if rate == 0:
    return float(last + 1)
  return last + math.log(target / curve[-1]) / math.log(rate)


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A run predicted from the NTK at w^0 (module doc).

  lambda_min, lambda_max: extreme eigenvalues of H on the gram_set points.
  delta: the data separation (min pairwise distance of the inputs).
  rate_per_round: rho(M)^2, the asymptotic L(t+1)/L(t).
  rate_first_order: (1 - eta_s K eta lambda_min / n)^2, its small-eta form
    with full participation.
  zero_predictor_loss: F_0 = (1/2n) sum_j ||y_j||^2, the loss of f = 0.
  rounds_to_eps: T_pred, the interpolated crossing of eps F_0 by the curve
    (predicted_rounds_to_eps).
  curve: L_t for t = 0..T_end: with every client in every round, T_end is
    at least the run's rounds and reaches past T_pred (curve_to_crossing),
    up to PREDICTION_CAP; with sampled cohorts it stops at the run's rounds.
  zeta2: the clients' gradient dissimilarity at w^0 (dissimilarity()).
  expected_curve, expected_rounds_to_eps: for minibatch runs (batch_size
    given) with every client in every round and n <= EXPECTED_MAX_POINTS,
    the exact expected loss E[L_t] of the linearized run
    (second_moment.expected_loss_curve) to twice the curve's length, and
    its crossing of eps F_0; else None. `curve` is then the loss of the
    expected residual, below E[L_t] by the minibatch variance.
  smooth_bound: max_i eta lambda_max(H_ii) / n_i over the clients' diagonal
    blocks H_ii = H[D_i, D_i] (smoothness_bound()), the linearized net's
    bound on the drift diagnostic smooth_eff.
  gram_points, gram_set: H was computed on gram_points examples, all training
    examples ('train') or a subset ('probe'; then the rates, curve and
    rounds_to_eps are None, and by Cauchy interlacing lambda_min is an upper
    bound of lambda_min(H) on all n points).
  """
  lambda_min: float
  lambda_max: float
  delta: float
  rate_per_round: float | None
  rate_first_order: float | None
  zero_predictor_loss: float
  eps: float
  rounds_to_eps: float | None
  curve: list | None
  gram_points: int
  gram_set: str
  zeta2: float | None
  smooth_bound: float | None = None
  expected_curve: list | None = None
  expected_rounds_to_eps: float | None = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _num_outputs(config) -> int:
  """c: output_dim for synthetic targets, 1 for digits_binary's +-1 targets;
  the other image data sets have 10."""
  if config.dataset == 'digits_binary':
    return 1
  return config.output_dim if config.dataset == 'synthetic' else 10


def applies(config):
  """Why the prediction does not apply to config, or None if it does."""
  if config.loss != 'mse':
    return f'the prediction is for the squared loss, not loss={config.loss}'
  if config.model != 'mlp':
    return f'the prediction is for the mlp, not model={config.model}'
  if _num_outputs(config) != 1:
    return f'the prediction is for one output, not c={_num_outputs(config)}'
  return None


def dissimilarity(h, r, client_indices) -> float:
  """zeta^2 = sum_i p_i ||grad F_i(w^0) - grad F(w^0)||^2 over all clients.

  p_i = n_i / n. At w^0, grad F_i = J^T E_{D_i} r_{D_i} / n_i and
  grad F = J^T r / n exactly, so with v_i = E_{D_i} r_{D_i} / n_i - r / n,
  ||grad F_i - grad F||^2 = v_i^T H v_i.
  """
  n, total = len(r), 0.0
  for indices in client_indices:
    v = -r / n
    v[indices] += r[indices] / len(indices)
    total += len(indices) / n * float(v @ h @ v)
  return total


def smoothness_bound(h, client_indices, lr) -> float:
  """max_i eta lambda_max(H_ii) / n_i, H_ii = H[D_i, D_i].

  In the linearized net grad F_i(w) - grad F_i(w') = (1/n_i) J_{D_i}^T
  J_{D_i} (w - w'), whose operator norm is lambda_max(J_{D_i}^T J_{D_i}) / n_i
  = lambda_max(H_ii) / n_i (J^T J and J J^T share their nonzero
  eigenvalues), so eta ||grad F_i(w) - grad F_i(w')|| <= this times
  ||w - w'|| on client i, the per-client form of the key lemma. The bound
  eta lambda_max(H) / min_i n_i is also true but looser (THEORY.md).
  """
  return max(lr * float(np.linalg.eigvalsh(h[np.ix_(d, d)])[-1]) / len(d)
             for d in client_indices)


def _client_indices(client_x):
  bounds = np.cumsum([0] + [len(x) for x in client_x])
  return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _maps_and_rate(h, client_x, cohorts, steps):
  """The round maps (one M, or a generator over cohorts) and rho(M-bar)^2."""
  indices = _client_indices(client_x)
  if cohorts is None:
    m = round_map(h, indices, **steps)
    return m, spectral_radius(m) ** 2

  def maps():
    for cohort in cohorts:
      yield round_map(h, [indices[i] for i in cohort], **steps)
  mean = sum(maps()) / len(cohorts)
  return maps(), spectral_radius(mean) ** 2


def _expected(h, indices, r0, curve, target, rate, steps, batch_size):
  """(E[L_t] to 2 T_end, its crossing) of a minibatch run (Prediction)."""
  expected = second_moment.expected_loss_curve(
      h, indices, batch_size=batch_size, r0=r0, rounds=2 * (len(curve) - 1),
      **steps)
  return ([float(v) for v in expected],
          predicted_rounds_to_eps(expected, target, rate))


def predict(spec, weights, client_x, client_y, *, lr, local_steps, server_lr,
            rounds, eps, delta, cohorts=None, max_points=MAX_GRAM_POINTS,
            batch_size=None):
  """The Prediction of a run from w^0 (weights: tuple of arrays), or None.

  None when the network has other than one output or a conv layer (check
  applies(config) for the loss). H uses all n training points in client
  order; if n > max_points it uses max_points evenly spaced ones instead
  (gram_set='probe') and predicts no rate, curve or rounds_to_eps, because
  H's principal submatrices overestimate lambda_min(H) and M needs all n.
  cohorts: a sequence of `rounds` cohorts, each the client indices of one
  round (None: every client every round); the curve follows them in order,
  and rate_per_round is then rho(M-bar)^2 of their mean map M-bar, the rate
  of the expected residual if cohorts are drawn independently per round.
  Minibatch Local SGD is predicted by its expected residual (module doc),
  and with batch_size (B of a minibatch run) also by its exact expected
  loss (expected_curve).
  """
  y = np.concatenate(client_y).astype(np.float64)
  if y.shape[1] != 1 or any(l.kind != 'dense' for l in spec.layers):
    return None
  x = np.concatenate(client_x)
  n = len(x)
  common = dict(delta=float(delta), eps=float(eps),
                zero_predictor_loss=float(np.sum(y ** 2) / (2 * n)))
  if n > max_points:
    keep = np.round(np.linspace(0, n - 1, max_points)).astype(int)
    eig = np.linalg.eigvalsh(gram(spec, weights, x[keep]))
    return Prediction(
        lambda_min=float(eig[0]), lambda_max=float(eig[-1]),
        rate_per_round=None, rate_first_order=None, rounds_to_eps=None,
        curve=None, gram_points=max_points, gram_set='probe', zeta2=None,
        **common)
  h = gram(spec, weights, x)
  eig = np.linalg.eigvalsh(h)
  steps = dict(lr=lr, local_steps=local_steps, server_lr=server_lr)
  maps, rate = _maps_and_rate(h, client_x, cohorts, steps)
  r0 = residual(spec, weights, x, y)
  target = eps * common['zero_predictor_loss']
  if cohorts is None:
    curve = curve_to_crossing(maps, r0, rounds, target, rate)
  else:
    curve = predicted_curve(maps, r0, rounds)
  indices = _client_indices(client_x)
  expected = (None, None)
  if batch_size and cohorts is None and n <= EXPECTED_MAX_POINTS:
    expected = _expected(h, indices, r0, curve, target, rate, steps,
                         batch_size)
  return Prediction(
      lambda_min=float(eig[0]), lambda_max=float(eig[-1]),
      rate_per_round=rate,
      rate_first_order=float(1 - server_lr * local_steps * lr * eig[0] / n)**2,
      rounds_to_eps=predicted_rounds_to_eps(curve, target, rate),
      curve=[float(v) for v in curve], gram_points=n, gram_set='train',
      zeta2=dissimilarity(h, r0, indices),
      smooth_bound=smoothness_bound(h, indices, lr),
      expected_curve=expected[0], expected_rounds_to_eps=expected[1],
      **common)
