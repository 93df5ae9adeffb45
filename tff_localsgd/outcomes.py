"""Whether, and when, a recorded loss curve reaches epsilon: the one place.

A run reaches epsilon where its loss first gets to

    L_t <= eps F_0,   F_0 = (1/2n) sum_j ||y_j||^2,

F_0 the loss of the zero predictor f = 0: a scale of the data alone, so every
seed of the initialization aims at the same loss (config.py's `eps`). The
alternative, a symmetric initialization with f(w^0) = 0, would change the
model and move w^0 away from the standard initialization the theory analyses.

Every curve is exactly one of four outcomes, decided from its rounds
t_0 < ... < t_T and losses L_t:

  diverged   the run's status says so, or some L_t is not finite.
  reached    some L_t <= target; `round` is the interpolated crossing
             (rounds_to_eps), between the first such t_j and the round
             before it.
  censored   not reached, but still converging when the budget ran out:
             the tail fit (below) has slope s < 0 and its projection
                 t_hat = t_T + (log target - log L_T) / s
             is within PLATEAU_FACTOR * t_T rounds; `round` is t_hat.
  plateau    not reached and not converging: s >= 0, or t_hat beyond
             PLATEAU_FACTOR * t_T.

The tail fit is least squares of log L_t on t over the last TAIL_FRACTION
of the recorded rounds (at least MIN_TAIL_POINTS points). The late window
skips the fast early transient: the NTK loss is a sum of exponentials, so
log L is convex in t and its local slope only flattens; a projection from
the late slope is therefore optimistic (the true round is later), which is
why a projection beyond PLATEAU_FACTOR times the budget counts as a plateau.
A censored run says nothing against a claim; a plateau or a divergence does.
"""

import dataclasses
import math

import numpy as np

OUTCOMES = ('reached', 'censored', 'plateau', 'diverged')
TAIL_FRACTION = 1 / 3
MIN_TAIL_POINTS = 3
PLATEAU_FACTOR = 10.0


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a curve ends against its target (module doc).

  status: one of OUTCOMES. round: the interpolated crossing of the target
  (reached; rounds_to_eps), the projected round (censored), else None. tail_rate:
  exp(s), the tail's per-round loss ratio (None with too few rounds).
  last_round, last_loss: where the record stops.
  """
  status: str
  round: float | None
  target: float
  tail_rate: float | None
  last_round: int
  last_loss: float

  @property
  def decided(self) -> bool:
    """Whether the curve settles a claim: reached, plateau or diverged."""
    return self.status != 'censored'

  def describe(self) -> str:
    """A short human reading; never 'inf'."""
    if self.status == 'reached':
      return f'{self.round:.1f} rounds'
    if self.status == 'censored':
      return (f'censored at round {self.last_round:g} (loss {self.last_loss:.3g}'
              f' > target {self.target:.3g}), projected {self.round:.0f}')
    if self.status == 'plateau':
      rate = '' if self.tail_rate is None else f', tail rate {self.tail_rate:.4f}'
      return (f'plateau at {self.last_loss:.3g} > target {self.target:.3g} '
              f'(round {self.last_round:g}{rate})')
    return f'diverged by round {self.last_round:g}'

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def rounds_to_eps(rounds, losses, target: float):
  """T: the round at which the curve crosses the target (= eps F_0), or None.

  With j the first index whose loss is <= target, T is the log-linear
  interpolation between the round before and t_j:

      T = t_{j-1} + (t_j - t_{j-1}) (log L_{j-1} - log target)
                                     / (log L_{j-1} - log L_j),

  so T is a real number in (t_{j-1}, t_j] rather than the integer t_j (an
  integer crossing moves by up to a whole round, which at T ~ 20 is a 5%
  error in every ratio of rounds). T = t_0 when the first loss already
  qualifies. A loss of None, NaN or <= 0 never qualifies and is skipped as
  the point before a crossing (a zero loss at t_j gives T = t_j).
  """
  before = None
  for t, loss in zip(rounds, losses):
    if loss is None or not loss == loss:  # None or NaN
      continue
    if loss <= target:
      if before is None or loss <= 0:
        return float(t)
      t0, l0 = before
      return float(t0 + (t - t0) * (math.log(l0) - math.log(target)) /
                   (math.log(l0) - math.log(loss)))
    before = (t, loss)
  return None


def tail_slope(rounds, losses):
  """Least-squares slope s of log L on t over the tail window, or None."""
  size = max(MIN_TAIL_POINTS, math.ceil(len(rounds) * TAIL_FRACTION))
  if len(rounds) < size:
    return None
  t = np.asarray(rounds[-size:], np.float64)
  log_loss = np.log(np.asarray(losses[-size:], np.float64))
  t = t - t.mean()
  return float(np.dot(t, log_loss - log_loss.mean()) / np.dot(t, t))


def classify(rounds, losses, target: float, *,
             diverged: bool = False) -> Outcome:
  """The outcome of one curve against `target` (= eps F_0; module doc).

  Args:
    rounds: strictly increasing round numbers (non-empty).
    losses: train/loss at those rounds.
    target: the loss to reach, finite and > 0.
    diverged: the run's own status is 'diverged'.
  """
  rounds = [int(t) for t in rounds]
  losses = [float(v) for v in losses]
  if not rounds or len(rounds) != len(losses):
    raise ValueError(f'need equal, non-empty rounds and losses: '
                     f'{len(rounds)} and {len(losses)}')
  if not (math.isfinite(target) and target > 0):
    raise ValueError(f'target must be finite and > 0, got {target}')
  if any(b <= a for a, b in zip(rounds, rounds[1:])):
    raise ValueError('rounds must be strictly increasing')
  end = dict(target=target, last_round=rounds[-1], last_loss=losses[-1])
  if diverged or not all(math.isfinite(v) for v in losses):
    return Outcome('diverged', None, tail_rate=None, **end)
  reached = rounds_to_eps(rounds, losses, target)
  slope = tail_slope(rounds, losses) if min(losses) > 0 else None
  rate = None if slope is None else math.exp(slope)
  if reached is not None:
    return Outcome('reached', reached, tail_rate=rate, **end)
  if slope is not None and slope < 0:
    projected = rounds[-1] + (math.log(target) - math.log(losses[-1])) / slope
    if projected <= PLATEAU_FACTOR * max(rounds[-1], 1.0):
      return Outcome('censored', projected, tail_rate=rate, **end)
  return Outcome('plateau', None, tail_rate=rate, **end)
