"""The width m*(n) from which the linearized prediction holds, and its
growth with n.

From the runs of a grid n x m x seeds (one study; calibration.Pair):

  e(n, m) = median over the seeds of a cell (n, m) of each run's statistic:
        err = |log(T/T_pred)| (statistic='rounds'; a censored run enters at
        its projected round, counted in Cell.censored; a plateau or a
        divergence enters as inf, counted in Cell.failed, so a cell whose
        median seed failed has e = inf), or the curve's gap
        max_{t <= T_pred} |log L_t - log P_t| (statistic='gap').
  m*(n) = the smallest width with e <= level, interpolated linearly in
        (log m, log e) between the last width above the level and the first
        at or below it. Right-censored (m* > the widest width) when no width
        reaches the level; left-censored (m* <= the narrowest width) when
        the narrowest already does. With e = inf above, m* is the width
        below; with e = 0 below, the width above (the limits of the line).
  b: m* = C n^b, OLS of log m* on log n over the uncensored n. Its interval
        is a percentile bootstrap that resamples the seeds within each cell
        (with replacement, the cell's own count) and recomputes e, m* and b
        over the same n. A draw in which m* is censored at one of them
        knows b only to a half-line: b is linear in log m*, so a censored
        m* moves it without limit one way, and b at the censoring bound is
        the other end. The interval takes the lower quantile of the draws'
        lower ends and the upper quantile of their upper ends
        (fits.percentile_interval): censoring widens it, never hides.
  Surface: log e = a + beta log m + gamma log n by OLS over the cells with
        finite e, e floored at FLOOR (log 0 = -inf; floored cells are
        listed). Then e = level at m* = (level e^-a)^(1/beta) n^(-gamma/beta),
        so b_surface = -gamma/beta, with the delta-method t-interval
        b +- t_{0.975, N-3} sqrt(g^T Sigma g), g = d b / d(a, beta, gamma)
        = (0, gamma/beta^2, -1/beta), Sigma the OLS covariance (fits).
        `agree`: whether its interval and the bootstrap b's overlap.
  Falls with m: at each n, the per-seed slope of log err on log m and its
        t-interval over the seeds (fits.seed_slope_fit; err floored at
        FLOOR, runs without a finite err left out and named); PASS when the
        interval lies below 0, FAIL when above.
"""

import dataclasses
import math

import numpy as np
from scipy import stats

from tff_localsgd.analysis import fits
from tff_localsgd.analysis.calibration import Excluded, NO_PREDICTION

STATISTICS = {'rounds': '|log(T/T_pred)|',
              'gap': 'max_{t <= T_pred} |log L_t - log P_t|'}
FLOOR = 1e-3  # e below it counts as FLOOR in log fits (log 0 = -inf)


def statistic_of(pair, statistic: str) -> float | None:
  """A run's statistic for e(n, m): its err or its gap (module doc)."""
  return pair.err if statistic == 'rounds' else pair.gap


@dataclasses.dataclass(frozen=True)
class Cell:
  """e(n, m): the median over `seeds` of `values` (one per seed, in order);
  censored: seeds at their projected round; failed: plateau or diverged."""
  n: int
  m: int
  e: float
  seeds: tuple
  values: tuple
  censored: int
  failed: int


@dataclasses.dataclass(frozen=True)
class ErrorGrid:
  """The cells sorted by (n, m); runs without the statistic excluded."""
  statistic: str
  cells: tuple
  excluded: tuple

  @property
  def ns(self) -> tuple:
    return tuple(sorted({c.n for c in self.cells}))

  @property
  def widths(self) -> tuple:
    return tuple(sorted({c.m for c in self.cells}))

  def row(self, n: int) -> tuple:
    """The cells at n, by width."""
    return tuple(c for c in self.cells if c.n == n)


def _check_statistic(statistic):
  if statistic not in STATISTICS:
    raise ValueError(f'statistic must be one of {tuple(STATISTICS)}, got '
                     f'{statistic!r}')


def _cell_members(pairs, statistic):
  """{(n, m): [(pair, value)] by seed} and the runs without a value."""
  _check_statistic(statistic)
  members, excluded, seen = {}, [], {}
  for pair in pairs:
    key = (pair.n, pair.m, pair.seed)
    if key in seen:
      raise ValueError(f'two runs at n={pair.n}, m={pair.m}, seed='
                       f'{pair.seed}: {seen[key]} and {pair.label} (pass '
                       'one study)')
    seen[key] = pair.label
    value = statistic_of(pair, statistic)
    if value is None:
      excluded.append(Excluded(pair.label, NO_PREDICTION if pair.predicted
                               is None else f'no {statistic}'))
    else:
      members.setdefault(key[:2], []).append((pair, float(value)))
  for rows in members.values():
    rows.sort(key=lambda row: row[0].seed)
  return members, excluded


def error_grid(pairs, statistic: str = 'rounds') -> ErrorGrid:
  """e(n, m) = the median over seeds of each run's statistic (module doc)."""
  members, excluded = _cell_members(pairs, statistic)
  cells = []
  for (n, m), rows in sorted(members.items()):
    values = tuple(v for _, v in rows)
    cells.append(Cell(
        n=n, m=m, e=float(np.median(values)),
        seeds=tuple(p.seed for p, _ in rows), values=values,
        censored=sum(p.status == 'censored' for p, _ in rows),
        failed=sum(p.status in ('plateau', 'diverged') for p, _ in rows)))
  return ErrorGrid(statistic=statistic, cells=tuple(cells),
                   excluded=tuple(excluded))


@dataclasses.dataclass(frozen=True)
class Threshold:
  """m*(n) (module doc). censoring: 'none' (value = m*), 'right' (m* >
  value, the widest width) or 'left' (m* <= value, the narrowest).
  bracket: the widths interpolated between (None when censored);
  stays_below: every width wider than m* also has e <= level."""
  n: int
  level: float
  value: float
  censoring: str
  widths: tuple
  errors: tuple
  bracket: tuple | None
  stays_below: bool


def _crossing(widths, errors, level):
  """(value, censoring, index of the first e <= level or None)."""
  below = [j for j, e in enumerate(errors) if e <= level]
  if not below:
    return float(widths[-1]), 'right', None
  j = below[0]
  if j == 0:
    return float(widths[0]), 'left', 0
  (m_a, m_b), (e_a, e_b) = widths[j - 1:j + 1], errors[j - 1:j + 1]
  if math.isinf(e_a):
    return float(m_b), 'none', j
  if e_b == 0:
    return float(m_a), 'none', j
  t = (math.log(e_a) - math.log(level)) / (math.log(e_a) - math.log(e_b))
  return math.exp(math.log(m_a) + t * math.log(m_b / m_a)), 'none', j


def threshold(grid: ErrorGrid, level: float = 0.1) -> tuple:
  """m*(n) for every n of the grid, censored or not (module doc)."""
  if not (math.isfinite(level) and level > 0):
    raise ValueError(f'level must be finite and > 0, got {level}')
  result = []
  for n in grid.ns:
    row = grid.row(n)
    widths, errors = [c.m for c in row], [c.e for c in row]
    value, censoring, j = _crossing(widths, errors, level)
    result.append(Threshold(
        n=n, level=level, value=value, censoring=censoring,
        widths=tuple(widths), errors=tuple(errors),
        bracket=(widths[j - 1], widths[j]) if censoring == 'none' else None,
        stays_below=j is not None and all(e <= level for e in errors[j:])))
  return tuple(result)


@dataclasses.dataclass(frozen=True)
class ExponentFit:
  """b in m* = prefactor n^b over the uncensored n (module doc).

  b, prefactor, ci_*: nan with fewer than 2 uncensored n. censored:
  ((n, 'left' | 'right'), ...). censored_draws: bootstrap draws with a
  censored m* at some fitted n, each known only to lie in a half-line
  (all n_boot when there is no fit).
  """
  b: float
  prefactor: float
  ci_low: float
  ci_high: float
  ns: tuple
  censored: tuple
  level: float
  n_boot: int
  censored_draws: int
  thresholds: tuple


def _boot_errors(grid, n_boot, rng):
  """{(n, m): the cell's e recomputed in each of n_boot seed resamples}."""
  boot = {}
  for cell in grid.cells:
    values = np.asarray(cell.values)
    draw = rng.integers(0, values.size, size=(n_boot, values.size))
    boot[(cell.n, cell.m)] = np.median(values[draw], axis=1)
  return boot


def _boot_exponent(grid, ns, boot, draw, level):
  """(low, high): the range of b in one bootstrap draw (module doc).

  b = sum_i w_i log m*_i with w_i = (x_i - x-bar) / S_xx, x = log n, so a
  censored m*_i (known only to lie beyond its bound) moves b without
  limit on one side: left-censored (m*_i <= bound) lowers b if w_i > 0 and
  raises it if w_i < 0; right-censored the reverse. The other end is b at
  the bound.
  """
  x = np.log(ns)
  weights = (x - x.mean()) / np.dot(x - x.mean(), x - x.mean())
  log_m, low, high = [], None, None
  for n, w in zip(ns, weights):
    row = grid.row(n)
    value, censoring, _ = _crossing(
        [c.m for c in row], [boot[(n, c.m)][draw] for c in row], level)
    log_m.append(math.log(value))
    if censoring != 'none' and w != 0:
      if (censoring == 'left') == (w > 0):
        low = -math.inf
      else:
        high = math.inf
  b = fits.linear_fit(x, log_m).slope
  return (b if low is None else low), (b if high is None else high)


def exponent_fit(pairs, level: float = 0.1, n_boot: int = 2000,
                 seed: int = 0, statistic: str = 'rounds',
                 confidence: float = 0.95) -> ExponentFit:
  """b by OLS of log m* on log n, with a seed bootstrap (module doc)."""
  if n_boot < 1:
    raise ValueError(f'n_boot must be >= 1, got {n_boot}')
  grid = error_grid(pairs, statistic)
  found = threshold(grid, level)
  ns = tuple(t.n for t in found if t.censoring == 'none')
  censored = tuple((t.n, t.censoring) for t in found if t.censoring != 'none')
  if len(ns) < 2:
    return ExponentFit(math.nan, math.nan, math.nan, math.nan, ns, censored,
                       level, n_boot, n_boot, found)
  line = fits.linear_fit(
      np.log(ns), [math.log(t.value) for t in found if t.n in ns])
  boot = _boot_errors(grid, n_boot, np.random.default_rng(seed))
  lows, highs = np.array([_boot_exponent(grid, ns, boot, d, level)
                          for d in range(n_boot)]).T
  low, high = fits.percentile_interval(lows, highs, confidence=confidence)
  return ExponentFit(
      b=line.slope, prefactor=math.exp(line.intercept), ci_low=low,
      ci_high=high, ns=ns, censored=censored, level=level, n_boot=n_boot,
      censored_draws=int(np.sum(lows != highs)), thresholds=found)


@dataclasses.dataclass(frozen=True)
class SurfaceFit:
  """log e = a + beta log m + gamma log n; b = -gamma/beta (module doc).

  floored: (n, m) cells whose e < floor entered as floor; excluded: cells
  with e = inf (left out of the fit).
  """
  a: float
  beta: float
  gamma: float
  b: float
  ci_low: float
  ci_high: float
  r2: float
  cells: int
  floor: float
  floored: tuple
  excluded: tuple


def surface_fit(pairs, floor: float = FLOOR, statistic: str = 'rounds',
                confidence: float = 0.95) -> SurfaceFit:
  """OLS of log e on (1, log m, log n) over the cells and b = -gamma/beta
  with its delta-method interval (module doc). ValueError when the cells
  do not span (log m, log n)."""
  if not floor > 0:
    raise ValueError(f'floor must be > 0, got {floor}')
  grid = error_grid(pairs, statistic)
  used = [c for c in grid.cells if math.isfinite(c.e)]
  plane = fits.plane_fit([math.log(c.m) for c in used],
                         [math.log(c.n) for c in used],
                         [math.log(max(c.e, floor)) for c in used])
  beta, gamma = plane.slope1, plane.slope2
  gradient = np.array([0.0, gamma / beta ** 2, -1.0 / beta])
  se = math.sqrt(gradient @ np.array(plane.cov) @ gradient)
  half = (stats.t.ppf((1 + confidence) / 2, plane.n - 3) * se
          if plane.n > 3 else math.nan)
  b = -gamma / beta
  return SurfaceFit(
      a=plane.intercept, beta=beta, gamma=gamma, b=b, ci_low=b - half,
      ci_high=b + half, r2=plane.r2, cells=plane.n, floor=floor,
      floored=tuple((c.n, c.m) for c in used if c.e < floor),
      excluded=tuple((c.n, c.m) for c in grid.cells
                     if not math.isfinite(c.e)))


def agree(fit: ExponentFit, surface: SurfaceFit) -> bool:
  """Whether the two estimates of b are consistent: their intervals
  [ci_low, ci_high] overlap (False when either is nan, i.e. missing)."""
  bounds = (fit.ci_low, fit.ci_high, surface.ci_low, surface.ci_high)
  if any(math.isnan(v) for v in bounds):
    return False
  return fit.ci_low <= surface.ci_high and surface.ci_low <= fit.ci_high


@dataclasses.dataclass(frozen=True)
class Fall:
  """At one n: the mean per-seed slope of log err on log m (None without
  a usable seed) and fits.slope_verdict(fit, below=0): PASS when the
  interval lies below 0 (the error falls with m), FAIL when above."""
  n: int
  fit: fits.SlopeFit | None
  verdict: str
  excluded: tuple


def _fall_points(members, floor):
  """The usable (m, value, seed) points and the excluded runs of one n."""
  finite = [(p, v) for p, v in members if math.isfinite(v)]
  excluded = [Excluded(p.label, f'{p.status}: no finite value')
              for p, v in members if not math.isfinite(v)]
  widths = {}
  for p, _ in finite:
    widths.setdefault(p.seed, set()).add(p.m)
  points = []
  for p, v in finite:
    if len(widths[p.seed]) < 2:
      excluded.append(Excluded(p.label, 'its seed has < 2 widths'))
    else:
      points.append((p.m, max(v, floor), p.seed))
  return points, tuple(excluded)


def falls_with_m(pairs, statistic: str = 'rounds',
                 floor: float = FLOOR) -> tuple:
  """Per n: the per-seed power-law slope of the error in m with its
  t-interval (fits.seed_slope_fit); values below `floor` count as floor;
  runs without a finite value (plateau, diverged, no prediction) and seeds
  with fewer than 2 widths are excluded, named."""
  pairs = tuple(pairs)
  members, excluded = _cell_members(pairs, statistic)
  n_of = {p.label: p.n for p in pairs}
  result = []
  for n in sorted(set(n_of.values())):
    rows = [row for (n_cell, _), cell in sorted(members.items())
            if n_cell == n for row in cell]
    points, left_out = _fall_points(rows, floor)
    fit = fits.seed_slope_fit(*zip(*points)) if points else None
    result.append(Fall(
        n=n, fit=fit,
        excluded=tuple(e for e in excluded if n_of[e.trial] == n) + left_out,
        verdict=fits.slope_verdict(fit, below=0.0) if fit else
        'INCONCLUSIVE'))
  return tuple(result)
