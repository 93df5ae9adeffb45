"""The exact expected loss of linearized Local SGD: a second-moment recursion.

theory.py predicts minibatch Local SGD by its expected residual E r_t, whose
loss (1/2n) ||E r_t||^2 is below the expected loss E[L_t] by the minibatch
variance. This module computes E[L_t] itself, exactly, for the linearized
model of theory.py's module doc (same notation: n points in client order,
client i holds D_i with n_i = |D_i|, p_i = n_i / N over the cohort, eta the
client step, eta_s the server step, K local steps, B the batch size, H = J J^T
at w^0, r = f(w) - y, L = (1/2n) ||r||^2).

The kit's sampling (local_update.sample_batch): at local step k client i
sorts n_i uniform keys drawn from the stateless stream folded from its
round seed (seed, t * N + i) (process.client_data) and the step k, and takes
the first B indices: S is a uniformly random B-subset of D_i (a uniformly
random permutation, truncated; exactly so up to ties among the float32
keys, probability < n_i^2 2^-24 a step), drawn without replacement within
the step, afresh at every step; packing.sample_batches draws the same indices, and
config refuses B > n_i. So the steps of a round, the clients of a round and
the rounds draw independent minibatches; there is no epoch permutation
coupling the steps. The step minimizes (1/B) sum_{j in S} 1/2 (f_j - y_j)^2
(models.objective: the mean over the batch). Linearized,
w <- w - (eta/B) J_S^T r_S, so on all n points

    r <- A_S r,   A_S = I - (eta/B) H P_S,   P_S = E_S E_S^T

(P_S the diagonal 0/1 selector of S). With q_i = B/n_i:

    Pr(a in S) = q_i,  Pr(a, b in S) = B (B - 1) / (n_i (n_i - 1))  (a != b)

for a, b in D_i, and 0 outside D_i. So E[P_S] = q_i P_{D_i},
E[P_S X P_S] = Q_i o X (entrywise; Q_i[a, b] = Pr(a, b in S)), and for one
step with S independent of X

    E[A_S X A_S^T] = X - (eta/B) (H E[P_S] X + X E[P_S] H)
                     + (eta/B)^2 H E[P_S X P_S] H.                      (1)

Its mean map is E[A_S] = A_i = I - (eta/n_i) H P_{D_i}, theory.py's
full-batch step, and (1) with B = n_i (Q_i = 1 1^T on D_i) is A_i X A_i^T.

Client i's K steps Phi_i = A_{S_K} ... A_{S_1} draw independent S_k, so
V_i(X) = E[Phi_i X Phi_i^T] is (1) applied K times, from X, and
E[Phi_i] = A_i^K. The round moves w <- w + eta_s sum_i p_i (w_i - w), f is
affine in w and sum_i p_i = 1, so r+ = Psi r with

    Psi = (1 - eta_s) I + eta_s sum_i p_i Phi_i,   E[Psi] = M

(theory.round_map). r_t depends on the draws of the rounds before t only, so
Sigma_t = E[r_t r_t^T] follows Sigma_{t+1} = E[Psi Sigma_t Psi^T]. The
clients draw independently, so for i != j
E[Phi_i X Phi_j^T] = A_i^K X (A_j^K)^T, and every cross term is the mean's:

    Sigma_{t+1} = M Sigma_t M^T
                  + eta_s^2 sum_i p_i^2 (V_i(Sigma_t) - A_i^K Sigma_t (A_i^K)^T),

from Sigma_0 = r_0 r_0^T. The expected loss is E[L_t] = tr(Sigma_t) / (2n);
the loss of the mean residual, (1/2n) ||M^t r_0||^2 =
theory.predicted_curve(theory.round_map(...), r_0, t), is the same recursion
without the second term (the variance of Psi, zero for B = n_i).

Cost: (1) on client i is O(n^2 n_i), so a round costs O(K n^3), the curve
O(rounds K n^3): fine for n <= 128, and refused for n > MAX_POINTS.
"""

import numpy as np

from tff_localsgd import theory

# Past this n the curve's O(rounds K n^3) is minutes (n = 256, K = 5: about
# 0.7 GFLOP a round).
MAX_POINTS = 256


def pair_inclusion(num_examples: int, batch_size: int) -> np.ndarray:
  """Q [n_i, n_i]: Q[a, b] = Pr(a in S and b in S), S a uniform B-subset.

  Diagonal B/n_i = Pr(a in S) (so E[P_S] = diag(Q)); off the diagonal
  B (B - 1) / (n_i (n_i - 1)), and 1 everywhere when B = n_i.
  """
  if not 1 <= batch_size <= num_examples:
    raise ValueError(f'batch_size {batch_size} must be in 1..{num_examples} '
                     '(the client size): minibatches are drawn without '
                     'replacement')
  n, b = num_examples, batch_size
  off = b * (b - 1) / (n * (n - 1)) if n > 1 else 1.0
  q = np.full((n, n), off)
  np.fill_diagonal(q, b / n)
  return q


def step_moment(h, x, indices, *, lr, batch_size) -> np.ndarray:
  """E[A_S X A_S^T] for one minibatch step of the client holding `indices`.

  Formula (1) of the module doc, restricted to the D_i rows and columns that
  P_S touches: H E[P_S] X = q_i H[:, D_i] X[D_i, :] and
  H E[P_S X P_S] H = H[:, D_i] (Q_i o X[D_i, D_i]) H[D_i, :], O(n^2 n_i).
  H and X symmetric [n, n], so X E[P_S] H is the transpose of H E[P_S] X.
  """
  d = np.asarray(indices)
  q = pair_inclusion(len(d), batch_size)
  c = lr / batch_size
  hd = h[:, d]
  drift = q[0, 0] * hd @ x[d, :]
  return (x - c * (drift + drift.T)
          + c * c * hd @ (q * x[np.ix_(d, d)]) @ hd.T)


def client_moment(h, x, indices, *, lr, local_steps, batch_size):
  """V_i(X) = E[Phi_i X Phi_i^T]: step_moment applied K times from X.

  With batch_size = n_i it is A_i^K X (A_i^K)^T, the mean's part.
  """
  for _ in range(local_steps):
    x = step_moment(h, x, indices, lr=lr, batch_size=batch_size)
  return x


def round_moment(h, sigma, client_indices, m, *, lr, local_steps, batch_size,
                 server_lr) -> np.ndarray:
  """Sigma_{t+1} = M Sigma M^T + eta_s^2 sum_i p_i^2 (V_i(Sigma) -
  A_i^K Sigma (A_i^K)^T) (module doc); m is theory.round_map's M."""
  total = sum(len(d) for d in client_indices)
  out = m @ sigma @ m.T
  for d in client_indices:
    steps = dict(lr=lr, local_steps=local_steps)
    noisy = client_moment(h, sigma, d, batch_size=batch_size, **steps)
    mean = client_moment(h, sigma, d, batch_size=len(d), **steps)
    out += (server_lr * len(d) / total) ** 2 * (noisy - mean)
  return out


def expected_loss_curve(h, client_indices, *, lr, local_steps, batch_size,
                        server_lr, r0, rounds) -> np.ndarray:
  """E[L_t] = tr(Sigma_t) / (2n) for t = 0..rounds: float64[rounds + 1].

  h: H [n, n]; client_indices: the D_i of the clients in every round's
  cohort (rows of h); r0: r_0 [n]; batch_size: B, 1 <= B <= min_i n_i as
  config requires. The loss of the mean residual, for comparison, is
  theory.predicted_curve(theory.round_map(...), r0, rounds). Raises
  ValueError for n > MAX_POINTS or a bad batch_size, before any work.
  """
  h = np.asarray(h, np.float64)
  n = len(h)
  if n > MAX_POINTS:
    raise ValueError(f'n = {n} points: the second-moment curve costs '
                     f'O(rounds K n^3) and is computed for n <= {MAX_POINTS}')
  for d in client_indices:
    pair_inclusion(len(d), batch_size)
  m = theory.round_map(h, client_indices, lr, local_steps, server_lr)
  r = np.asarray(r0, np.float64)
  sigma = np.outer(r, r)
  losses = [np.trace(sigma)]
  for _ in range(rounds):
    sigma = round_moment(h, sigma, client_indices, m, lr=lr,
                         local_steps=local_steps, batch_size=batch_size,
                         server_lr=server_lr)
    losses.append(np.trace(sigma))
  return np.asarray(losses) / (2 * n)
