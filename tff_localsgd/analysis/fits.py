"""Fits of the paper's quantitative claims: scaling laws and linear rates.

Pure NumPy functions of arrays (no I/O); each returns a small frozen
dataclass with `to_dict()` (plain Python numbers; NaN and inf are kept, and
`recorders.write_json` turns them into strings).

Ordinary least squares (`linear_fit`), on n points with at least 2 distinct x:
    slope = S_xy / S_xx,   intercept = y-bar - slope x-bar,
    S_xx = sum (x_i - x-bar)^2,   S_xy = sum (x_i - x-bar)(y_i - y-bar),
    r2 = 1 - SS_res / SS_tot,   SS_res = sum (y_i - yhat_i)^2,
    SS_tot = sum (y_i - y-bar)^2.
A constant y (SS_tot == 0) is fit exactly by the line slope 0, so r2 = 1.0.

Power law (`power_law_fit`), e.g. rounds-to-eps against width m or local
steps K:  y = C x^a,  i.e.  log y = a log x + b,  exponent a, prefactor
C = exp(b). The confidence interval of a is a percentile bootstrap: the
(1 - confidence)/2 and (1 + confidence)/2 quantiles of a refit on B
resamples. With `groups` (the seed of each point) whole groups are drawn
with replacement (a cluster bootstrap): points of one seed share the seed's
initialization and data, so they are not independent and the seed is the
unit of replication. Without groups the points are resampled.
With few groups G the percentile interval is too narrow (it ignores the
(G - 1)/G shrinkage and the few distinct resamples): on synthetic power laws
with independent noise (1000 datasets, 7 points per seed) the nominal 95%
interval covered the true exponent 83% of the time at G = 5, 90% at G = 10,
92% at G = 20, and 94% when resampling the 35 points of 5 seeds. A 'PASS'
from `slope_verdict` on 5 seeds is therefore weaker than 95% suggests.

Linear convergence (`geometric_decay_fit`): loss_t ~ c rate^t, fit as
    log loss_t = slope t + log c,   rate = exp(slope),
the per-round contraction factor (rate < 1: linear convergence), on the
rounds before the loss reaches a floor (float round-off or the target
precision, where the geometric model no longer holds).

Time to accuracy (`rounds_to_eps`): min { t : loss_t <= eps loss_0 }
(relative) or min { t : loss_t <= eps } (absolute); inf if never reached.
"""

import dataclasses
import math
from typing import Optional

import numpy as np

# Default floor of geometric_decay_fit, relative to the first loss: below
# 1e-6 loss_0 float32 round-off dominates the loss of a trained network.
DEFAULT_RELATIVE_FLOOR = 1e-6

# A bootstrap resample with fewer than 2 distinct x has no slope; it is
# redrawn, at most this many times, before giving up.
_MAX_REDRAWS = 100

# Bootstrap resamples are drawn in chunks of about this many unit counts,
# bounding memory for many points.
_CHUNK_COUNTS = 2_000_000

VERDICTS = ('PASS', 'FAIL', 'INCONCLUSIVE')


def _plain(value):
  """A NumPy scalar as the Python number JSON writers understand."""
  return value.item() if isinstance(value, np.generic) else value


class _Dict:
  """to_dict() for the frozen result dataclasses."""

  def to_dict(self) -> dict:
    return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class LineFit(_Dict):
  slope: float
  intercept: float
  r2: float
  n: int


@dataclasses.dataclass(frozen=True)
class PowerLawFit(_Dict):
  """y = prefactor x^exponent; (ci_low, ci_high) the bootstrap CI of the
  exponent, (nan, nan) with a single group; num_groups the number of
  resampled units (distinct groups, or n when points are resampled)."""
  exponent: float
  prefactor: float
  r2: float
  ci_low: float
  ci_high: float
  n: int
  num_groups: int


@dataclasses.dataclass(frozen=True)
class DecayFit(_Dict):
  """loss_t ~ c rate^t on num_points rounds first_round..last_round."""
  rate: float
  slope: float
  r2: float
  num_points: int
  first_round: float
  last_round: float


def _vector(name: str, values) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1:
    raise ValueError(f'{name} must be 1-D, got shape {array.shape}')
  return array


def _pair(x_name: str, x, y_name: str, y):
  x, y = _vector(x_name, x), _vector(y_name, y)
  if x.shape != y.shape:
    raise ValueError(f'{x_name} and {y_name} differ in length: '
                     f'{x.size} != {y.size}')
  return x, y


def _rounds(rounds, losses):
  """Rounds (finite, strictly increasing) and losses of one curve."""
  rounds, losses = _pair('rounds', rounds, 'losses', losses)
  if rounds.size == 0:
    raise ValueError('empty curve')
  if not np.all(np.isfinite(rounds)):
    raise ValueError('rounds must be finite')
  if np.any(np.diff(rounds) <= 0):
    raise ValueError('rounds must be strictly increasing')
  return rounds, losses


def linear_fit(x, y) -> LineFit:
  """Ordinary least squares y = slope x + intercept (formulas above)."""
  x, y = _pair('x', x, 'y', y)
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError('linear_fit needs finite x and y')
  if np.unique(x).size < 2:
    raise ValueError(f'linear_fit needs at least 2 distinct x, got '
                     f'{np.unique(x).size} among {x.size} points')
  # Centering first: the normal equations on raw x lose digits when
  # |x-bar| >> spread (e.g. log of large widths).
  dx, dy = x - x.mean(), y - y.mean()
  slope = np.dot(dx, dy) / np.dot(dx, dx)
  intercept = y.mean() - slope * x.mean()
  ss_res = np.sum((dy - slope * dx) ** 2)
  ss_tot = np.dot(dy, dy)
  r2 = 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot
  return LineFit(slope=float(slope), intercept=float(intercept),
                 r2=float(r2), n=int(x.size))


def _unit_sums(x, y, unit_of_point, num_units) -> np.ndarray:
  """Per resampling unit, the sums of 1, x, y, x^2, xy over its points.

  A resample's OLS sums are counts @ these, so a bootstrap costs
  O(B num_units) instead of O(B n).
  """
  columns = (np.ones_like(x), x, y, x * x, x * y)
  return np.stack([np.bincount(unit_of_point, weights=c, minlength=num_units)
                   for c in columns], axis=1)


def _weighted_slopes(counts, sums) -> np.ndarray:
  """OLS slopes, one per row of unit counts (how often each unit was drawn);
  equal to the fit of the resample with repeated points. Center x and y
  before forming `sums`: the differences below then keep their digits."""
  s0, sx, sy, sxx, sxy = (counts @ sums).T
  return (sxy - sx * sy / s0) / (sxx - sx * sx / s0)


def _unit_ranges(x, unit_of_point, num_units):
  """Per unit, the smallest and largest x of its points."""
  low, high = np.full(num_units, np.inf), np.full(num_units, -np.inf)
  np.minimum.at(low, unit_of_point, x)
  np.maximum.at(high, unit_of_point, x)
  return low, high


def _resample_counts(rng, num_units, rows) -> np.ndarray:
  """rows resamples of num_units units drawn with replacement, as counts
  (rows, num_units) of how often each unit was drawn."""
  drawn = rng.integers(0, num_units, size=(rows, num_units))
  flat = (drawn + num_units * np.arange(rows)[:, None]).ravel()
  counts = np.bincount(flat, minlength=rows * num_units)
  return counts.reshape(rows, num_units).astype(np.float64)


def _draw_counts(rng, num_units, rows, ranges) -> np.ndarray:
  """Bootstrap resamples as unit counts; resamples with < 2 distinct x are
  redrawn, at most _MAX_REDRAWS times."""
  draw = lambda k: _resample_counts(rng, num_units, k)
  low, high = ranges
  counts = draw(rows)
  for _ in range(_MAX_REDRAWS):
    drawn = counts > 0
    bad = (np.where(drawn, high, -np.inf).max(axis=1)
           <= np.where(drawn, low, np.inf).min(axis=1))
    if not bad.any():
      return counts
    counts[bad] = draw(int(bad.sum()))
  raise ValueError(f'bootstrap: no resample with 2 distinct x in '
                   f'{_MAX_REDRAWS} redraws; too few x per group')


def _bootstrap_slopes(x, y, unit_of_point, num_units, num_bootstrap, rng):
  x, y = x - x.mean(), y - y.mean()
  sums = _unit_sums(x, y, unit_of_point, num_units)
  ranges = _unit_ranges(x, unit_of_point, num_units)
  chunk = max(1, _CHUNK_COUNTS // num_units)
  slopes = []
  for start in range(0, num_bootstrap, chunk):
    rows = min(chunk, num_bootstrap - start)
    counts = _draw_counts(rng, num_units, rows, ranges)
    slopes.append(_weighted_slopes(counts, sums))
  return np.concatenate(slopes)


def power_law_fit(x, y, groups=None, *, num_bootstrap: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> PowerLawFit:
  """Fits y = prefactor x^exponent with a bootstrap CI of the exponent.

  Args:
    x, y: 1-D arrays of positive, finite values. A non-positive or non-finite
      point raises ValueError: a diverged run must be handled by the caller,
      not silently dropped from a scaling law.
    groups: optional 1-D array, the group (seed) of each point; whole groups
      are resampled. None resamples points.
    num_bootstrap: number of resamples B.
    confidence: of the percentile interval, in (0, 1).
    seed: of the bootstrap's random stream.

  Returns:
    PowerLawFit; ci_low = ci_high = nan when there is a single group, as a
    bootstrap over one unit has no variation to show.
  """
  x, y = _pair('x', x, 'y', y)
  bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0))
  if bad.any():
    raise ValueError(f'power_law_fit needs finite x > 0 and y > 0: '
                     f'{int(bad.sum())} of {x.size} points are not')
  if not (isinstance(num_bootstrap, (int, np.integer)) and num_bootstrap > 0):
    raise ValueError(f'num_bootstrap must be a positive int, got '
                     f'{num_bootstrap!r}')
  if not 0 < confidence < 1:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}')
  log_x, log_y = np.log(x), np.log(y)
  line = linear_fit(log_x, log_y)
  if groups is None:
    unit_of_point, num_units = np.arange(x.size), x.size
  else:
    groups = np.asarray(groups)
    if groups.shape != x.shape:
      raise ValueError(f'groups must have one entry per point: shape '
                       f'{groups.shape} != {x.shape}')
    _, unit_of_point = np.unique(groups, return_inverse=True)
    num_units = int(unit_of_point.max()) + 1
  ci_low = ci_high = math.nan
  if num_units > 1:
    rng = np.random.default_rng(seed)
    slopes = _bootstrap_slopes(log_x, log_y, unit_of_point, num_units,
                               num_bootstrap, rng)
    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(slopes, [tail, 1 - tail])
  return PowerLawFit(exponent=line.slope, prefactor=math.exp(line.intercept),
                     r2=line.r2, ci_low=float(ci_low), ci_high=float(ci_high),
                     n=line.n, num_groups=num_units)


def geometric_decay_fit(rounds, losses, *,
                        floor: Optional[float] = None) -> DecayFit:
  """Fits log loss_t = slope t + c on the rounds before the floor.

  The fit uses the longest prefix of the curve whose losses are finite and
  above the floor: it stops at the first non-finite loss (divergence) and at
  the first loss <= floor (round-off plateau), excluding them and all later
  rounds, since neither follows the geometric model.

  Args:
    rounds: strictly increasing round numbers.
    losses: the loss at each round.
    floor: absolute loss floor >= 0; None means
      DEFAULT_RELATIVE_FLOOR * losses[0].

  Raises:
    ValueError: fewer than 3 rounds remain (2 points always fit exactly).
  """
  rounds, losses = _rounds(rounds, losses)
  if floor is None:
    floor = DEFAULT_RELATIVE_FLOOR * losses[0]
  elif not (math.isfinite(floor) and floor >= 0):
    raise ValueError(f'floor must be finite and >= 0, got {floor}')
  # A negative or zero loss is <= any floor >= 0, so the log below is safe.
  stop = ~np.isfinite(losses) | (losses <= max(floor, 0.0))
  end = int(np.argmax(stop)) if stop.any() else losses.size
  if end < 3:
    raise ValueError(f'geometric_decay_fit needs >= 3 rounds with finite loss '
                     f'above the floor {floor:g}, got {end}')
  line = linear_fit(rounds[:end], np.log(losses[:end]))
  return DecayFit(rate=math.exp(line.slope), slope=line.slope, r2=line.r2,
                  num_points=end, first_round=_plain(rounds[0]),
                  last_round=_plain(rounds[end - 1]))


def rounds_to_eps(rounds, losses, eps: float, *,
                  relative: bool = True) -> float:
  """The first round with loss <= eps * losses[0] (or <= eps if absolute).

  Returns math.inf when the target is never reached (a NaN loss never
  reaches it). Such a run is censored, not missing: a scaling fit over
  rounds-to-eps must report the censored runs, not drop them, or it biases
  the fit toward the runs that happened to converge.
  """
  rounds, losses = _rounds(rounds, losses)
  if not (math.isfinite(eps) and eps > 0):
    raise ValueError(f'eps must be finite and > 0, got {eps}')
  target = eps
  if relative:
    if not (np.isfinite(losses[0]) and losses[0] > 0):
      raise ValueError(f'relative eps needs a finite first loss > 0, got '
                       f'{losses[0]}')
    target = eps * losses[0]
  reached = np.nonzero(losses <= target)[0]  # NaN <= target is False
  return float(rounds[reached[0]]) if reached.size else math.inf


def slope_verdict(fit, *, below: Optional[float] = None,
                  above: Optional[float] = None) -> str:
  """Tests a claim about a fit's exponent against its confidence interval.

  With `below`: 'PASS' if ci_high < below, 'FAIL' if ci_low > below (with
  `above` mirrored), else 'INCONCLUSIVE': the CI touches or straddles the
  threshold, or is nan (single group). Exactly one threshold is given.
  """
  if (below is None) == (above is None):
    raise ValueError('give exactly one of below= and above=')
  threshold = below if below is not None else above
  if not math.isfinite(threshold):
    raise ValueError(f'threshold must be finite, got {threshold}')
  low, high = fit.ci_low, fit.ci_high
  if math.isnan(low) or math.isnan(high):
    return 'INCONCLUSIVE'
  if below is not None:
    passed, failed = high < below, low > below
  else:
    passed, failed = low > above, high < above
  return 'PASS' if passed else 'FAIL' if failed else 'INCONCLUSIVE'
