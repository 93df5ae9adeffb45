"""How well the linearized prediction from H_0 gives the rounds to eps,
over every run.

Each synthetic Local GD trial gives one `Pair`: its measured rounds to eps,
T (the interpolated crossing of eps F_0; a censored run's projected round),
and the predicted curve's crossing T_pred. Natural logs throughout.

  err = |log(T / T_pred)|, one run's error; in text the percentage
        exp(err) - 1 (err = 0.0953 reads "10%"). A plateau or a diverged
        run never reaches eps: T = inf, so err = inf.
  Calibration over the runs with m >= M: N, the median and the 90th
        percentile (NumPy's linear interpolation) of err over the reached
        runs with both T and T_pred. Censored runs are reported beside them
        (their err at the projection, which outcomes.py notes is optimistic:
        the true round is later); every run left out is named with why.

width_threshold.py turns the same pairs into the width m*(n) from which
the prediction holds; calibration_figures.py draws both.
"""

import dataclasses
import math

import numpy as np

from tff_localsgd import outcomes

NO_PREDICTION = 'no prediction'


@dataclasses.dataclass(frozen=True)
class Pair:
  """One run's measured and predicted rounds to eps (module doc)."""
  study: str
  group: str
  trial: str
  n: int
  m: int
  seed: int
  depth: int
  rounds: float | None
  predicted: float | None
  status: str
  gap: float | None

  def __post_init__(self):
    if self.status not in outcomes.OUTCOMES:
      raise ValueError(f'{self.label}: status {self.status!r} is not one of '
                       f'{outcomes.OUTCOMES}')
    if self.n < 1 or self.m < 1:
      raise ValueError(f'{self.label}: n and m must be >= 1')
    needs_rounds = self.status in ('reached', 'censored')
    if needs_rounds != (self.rounds is not None):
      raise ValueError(f'{self.label}: a {self.status} run '
                       f'{"needs" if needs_rounds else "has no"} rounds')
    for name in ('rounds', 'predicted'):
      value = getattr(self, name)
      if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f'{self.label}: {name} must be finite and > 0, '
                         f'got {value}')
    if self.gap is not None and not self.gap >= 0:
      raise ValueError(f'{self.label}: gap must be >= 0, got {self.gap}')

  @property
  def label(self) -> str:
    return f'{self.study}/{self.group}/{self.trial}'

  @property
  def err(self) -> float | None:
    """|log(T / T_pred)|; inf for a plateau or divergence; None without
    T_pred."""
    if self.predicted is None:
      return None
    if self.rounds is None:
      return math.inf
    return abs(math.log(self.rounds / self.predicted))


@dataclasses.dataclass(frozen=True)
class Excluded:
  trial: str  # Pair.label
  reason: str


def percent(err: float) -> str:
  """An error in log rounds as the percentage exp(err) - 1."""
  return f'{100 * math.expm1(err):.1f}%'


# 1. Calibration over every run.


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The error over the reached runs with m >= min_width (module doc).

  median, p90: of err over the `count` runs (nan when none);
  censored_median: of err at the projection of the censored runs with
  m >= min_width (nan when none). excluded: every run not in `count`, with
  why (censored runs too).
  """
  min_width: int
  count: int
  median: float
  p90: float
  censored_count: int
  censored_median: float
  excluded: tuple

  def reasons(self) -> dict:
    """{reason: number of runs}, in the order first met."""
    counts = {}
    for item in self.excluded:
      counts[item.reason] = counts.get(item.reason, 0) + 1
    return counts


def _calibration_reason(pair, min_width):
  """Why a run is not among the N, or None: width, then status, then a
  missing prediction, then censoring (the first that applies)."""
  if pair.m < min_width:
    return f'm < {min_width}'
  if pair.status in ('plateau', 'diverged'):
    return pair.status
  if pair.predicted is None:
    return NO_PREDICTION
  return 'censored' if pair.status == 'censored' else None


def _median(values) -> float:
  return float(np.median(values)) if len(values) else math.nan


def calibration(pairs, min_width: int) -> Calibration:
  """N, median and 90th percentile of err over reached runs with
  m >= min_width and a prediction; censored runs apart (module doc)."""
  used, censored, excluded = [], [], []
  for pair in pairs:
    reason = _calibration_reason(pair, min_width)
    if reason is None:
      used.append(pair.err)
      continue
    excluded.append(Excluded(pair.label, reason))
    if reason == 'censored':
      censored.append(pair.err)
  return Calibration(
      min_width=min_width, count=len(used), median=_median(used),
      p90=float(np.percentile(used, 90)) if used else math.nan,
      censored_count=len(censored), censored_median=_median(censored),
      excluded=tuple(excluded))


def headline(result: Calibration) -> str:
  """The sentence at the top of REPORT.md, with every run it leaves out.

  "within X%" means exp(-err) >= 1/(1 + X) and exp(err) <= 1 + X: the
  ratio T/T_pred within a factor 1 + X either way.
  """
  scope = f'runs with m >= {result.min_width}'
  if result.count:
    text = (f'The linearized prediction from H0 gives the rounds to eps '
            f'within {percent(result.median)} (median) and '
            f'{percent(result.p90)} (90th percentile) over {result.count} '
            f'{scope}.')
  else:
    text = f'No {scope} reached eps with a prediction to compare.'
  parts = []
  for reason, count in result.reasons().items():
    if reason == 'censored':
      parts.append(f'{count} censored (still converging at the budget; '
                   f'median {percent(result.censored_median)} at the '
                   'projected round)')
    elif reason.startswith('m <'):
      parts.append(f'{count} narrower ({reason}, in the table by width)')
    else:
      parts.append(f'{count} {reason}')
  return text + (f' Not counted: {", ".join(parts)}.' if parts else '')


@dataclasses.dataclass(frozen=True)
class WidthRow:
  """err by width: count reached runs with a prediction, their median;
  censored, failed (plateau or diverged) and unpredicted runs counted."""
  width: int
  count: int
  median: float
  censored: int
  failed: int
  unpredicted: int


def width_table(pairs) -> tuple:
  """One WidthRow per width, ascending: the median err of reached runs."""
  pairs, rows = tuple(pairs), []
  for width in sorted({p.m for p in pairs}):
    members = [p for p in pairs if p.m == width]
    predicted = [p for p in members if p.predicted is not None]
    reached = [p.err for p in predicted if p.status == 'reached']
    rows.append(WidthRow(
        width=width, count=len(reached), median=_median(reached),
        censored=sum(p.status == 'censored' for p in predicted),
        failed=sum(p.status in ('plateau', 'diverged') for p in predicted),
        unpredicted=len(members) - len(predicted)))
  return tuple(rows)


def width_markdown(rows) -> str:
  """The width table as Markdown, the median also as a percentage."""
  lines = ['| m | runs reached | median abs log(T/T_pred) | as % | censored '
           '| plateau or diverged | no prediction |', '|' + ' --- |' * 7]
  for r in rows:
    median = ('n/a', 'n/a') if not r.count else (f'{r.median:.3f}',
                                                 percent(r.median))
    lines.append(f'| {r.width} | {r.count} | {median[0]} | {median[1]} | '
                 f'{r.censored} | {r.failed} | {r.unpredicted} |')
  return '\n'.join(lines)
