"""What every claim shares: its row, the one rule for missing trials, and
the comparison of a run with its prediction.

Verdicts: PASS (the criterion holds), FAIL (it does not: a result, reported
as such), INCONCLUSIVE (the data cannot decide; the row says why).

The one rule for the trials a claim reads (`sort_trials`), used by every
claim:
  - a trial that crashed, is missing from disk, did not finish, or is
    censored (still converging when its budget ran out) makes the claim
    INCONCLUSIVE, naming the trial;
  - a diverged trial, or a plateau (not converging), FAILs the claim;
  - nothing is dropped silently.

Notation: L_t the measured train/loss, P_t the predicted curve
(summary['theory']['curve'], the linearized Local GD map M of theory.py),
F_0 the zero predictor's loss, eps F_0 the target, T and T_pred the
interpolated rounds at which L and P cross it (outcomes.rounds_to_eps).
"""

import dataclasses
import math

import numpy as np

from tff_localsgd.analysis import runs as runs_lib
from tff_localsgd.analysis import fits

VERDICTS = ('PASS', 'FAIL', 'INCONCLUSIVE')
MIN_SLOPE_SEEDS = 4  # a t-interval of a slope over fewer seeds is too wide


@dataclasses.dataclass(frozen=True)
class Claim:
  """One row of the claims table.

  fails_on: where the same criterion has been seen to FAIL: the control of
  this run with its verdict, and the tests that construct a failing case.
  """
  id: str
  claim: str
  statistic: str
  criterion: str
  verdict: str
  figure: str
  data: dict = dataclasses.field(default_factory=dict)
  fails_on: str = ''

  def __post_init__(self):
    if self.verdict not in VERDICTS:
      raise ValueError(f'{self.id}: verdict {self.verdict!r}')


def worst(verdicts) -> str:
  """FAIL if any FAIL, else INCONCLUSIVE if any (or none at all), else
  PASS."""
  verdicts = list(verdicts)
  if 'FAIL' in verdicts:
    return 'FAIL'
  return 'INCONCLUSIVE' if 'INCONCLUSIVE' in verdicts or not verdicts \
      else 'PASS'


def label(run) -> str:
  return f'{run.study}/{run.group}/{run.name}'


@dataclasses.dataclass(frozen=True)
class Trials:
  """A claim's trials sorted by the one rule (module doc).

  usable: finished runs the claim can read (with reach=True: reached eps).
  open: (label, why) of trials that leave the claim INCONCLUSIVE.
  failed: (label, why) of trials that FAIL it.
  """
  usable: tuple
  open: tuple
  failed: tuple

  @property
  def verdict(self):
    """FAIL, INCONCLUSIVE, or None when every trial is usable."""
    return 'FAIL' if self.failed else 'INCONCLUSIVE' if self.open else None

  def describe(self) -> str:
    parts = [f'{name}: {why}' for name, why in self.failed + self.open]
    return '; '.join(parts)


def _why_not_usable(run, reach: bool):
  """(kind, why) for a run the claim cannot read, else None."""
  if run.status == 'diverged':
    return 'failed', 'diverged'
  if run.status != 'completed':
    return 'open', f'status {run.status}'
  if not reach:
    return None
  outcome = run.outcome()
  if outcome is None:
    return 'open', 'not judged (no F_0 or no loss recorded)'
  if outcome.status in ('plateau', 'diverged'):
    return 'failed', outcome.describe()
  if outcome.status == 'censored':
    return 'open', outcome.describe()
  return None


def sort_trials(runs, *, reach: bool = True) -> Trials:
  """The one rule for missing, crashed, censored and failed trials."""
  usable, open_, failed = [], [], []
  for run in runs:
    why = _why_not_usable(run, reach)
    if why is None:
      usable.append(run)
    else:
      (failed if why[0] == 'failed' else open_).append((label(run), why[1]))
  return Trials(tuple(usable), tuple(open_), tuple(failed))


def select(runs, study, group=None, **config) -> list:
  """The runs (planned ones included, missing or not) of a study and group
  whose config has the given values."""
  return [r for r in runs if r.study == study and
          (group is None or r.group == group) and
          all(r.config.get(k) == v for k, v in config.items())]


def by(runs, key) -> dict:
  out = {}
  for r in runs:
    out.setdefault(r.config[key], []).append(r)
  return dict(sorted(out.items()))


def fmt_fit(fit) -> str:
  if math.isnan(fit.ci_low):
    return f'{fit.exponent:+.3f} (one seed: no interval)'
  return f'{fit.exponent:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}]'


def seed_fit(points):
  """(fits.seed_slope_fit of [(x, y, seed)], '') or (None, why)."""
  seeds = {p[2] for p in points}
  if len(seeds) < MIN_SLOPE_SEEDS:
    return None, f'{len(seeds)} seeds; a slope needs >= {MIN_SLOPE_SEEDS}'
  if any(not (math.isfinite(p[1]) and p[1] > 0) for p in points):
    return None, 'a non-finite or non-positive value'
  x, y, g = (np.array(v, float) for v in zip(*points))
  try:
    return fits.seed_slope_fit(x, y, g), ''
  except ValueError as e:
    return None, str(e)


# A run against its own prediction.


@dataclasses.dataclass(frozen=True)
class PredictionCheck:
  """One reached run against its predicted curve.

  rounds, predicted: T and T_pred (interpolated crossings of eps F_0).
  log_ratio: log(T / T_pred). max_gap: max over t <= T_pred of
  |log L_t - log P_t|; signed_gap: log L_t - log P_t where that maximum is
  (positive: the measured loss lies above the prediction).
  """
  rounds: float
  predicted: float
  log_ratio: float
  max_gap: float
  signed_gap: float

  def describe(self) -> str:
    return (f'T {self.rounds:.1f} / T_pred {self.predicted:.1f} '
            f'(log {self.log_ratio:+.3f}), max log(L/P) to T_pred '
            f'{self.signed_gap:+.3f}')


def predicted_curve(run):
  """The run's predicted train-set curve P_t, or None (probe Gram, theory
  not applicable, or not recorded)."""
  theory = run.theory
  if not theory or theory.get('gram_set') != 'train' or not theory.get(
      'curve'):
    return None
  # float() reads back the 'inf' / 'nan' strings the JSON writer writes.
  return np.asarray([float(v) for v in theory['curve']], np.float64)


def predicted_rounds(run):
  theory = run.theory
  value = theory.get('rounds_to_eps') if theory else None
  return None if value is None else float(value)


def gap_to_prediction(run):
  """(max_{t <= T_pred} |log L_t - log P_t|, the signed log L_t - log P_t
  where it is largest) of a run whose record covers T_pred, else None."""
  curve, t_pred = predicted_curve(run), predicted_rounds(run)
  if curve is None or t_pred is None:
    return None
  rounds, losses = (np.asarray(v, np.float64)
                    for v in run.series(runs_lib.LOSS))
  end = min(math.ceil(t_pred), len(curve) - 1)
  if not len(rounds) or rounds[-1] < end:
    return None
  keep = (rounds <= end) & (losses > 0)
  gap = np.log(losses[keep]) - np.log(curve[rounds[keep].astype(int)])
  at = int(np.argmax(np.abs(gap)))
  return float(abs(gap[at])), float(gap[at])


def check_prediction(run):
  """PredictionCheck of a reached run with a prediction, else None."""
  outcome, t_pred = run.outcome(), predicted_rounds(run)
  gap = gap_to_prediction(run)
  if (outcome is None or outcome.status != 'reached' or gap is None or
      not t_pred or t_pred <= 0 or outcome.round <= 0):
    return None
  return PredictionCheck(outcome.round, t_pred,
                         math.log(outcome.round / t_pred), *gap)


def follows_prediction(runs, rounds_tol: float, gap_tol: float):
  """(verdict, {label: PredictionCheck or None}, Trials): PASS when every
  run reached eps with |log(T/T_pred)| <= rounds_tol and max gap <=
  gap_tol; FAIL when one misses either (or fails the one rule);
  INCONCLUSIVE when the rule says so or a prediction is missing."""
  trials = sort_trials(runs)
  checks = {label(r): check_prediction(r) for r in trials.usable}
  verdicts = [trials.verdict or 'PASS']
  for check in checks.values():
    if check is None:
      verdicts.append('INCONCLUSIVE')
    elif abs(check.log_ratio) > rounds_tol or check.max_gap > gap_tol:
      verdicts.append('FAIL')
  if not runs:
    verdicts.append('INCONCLUSIVE')
  return worst(verdicts), checks, trials


def fails_on(tests, control=None) -> str:
  """The 'seen to FAIL on' cell: the control of this run with its
  verdict (if the claim has one), then the tests that construct a FAIL."""
  parts = [] if control is None else [f'{control[0]}: {control[1]} here']
  return '; '.join(parts + [f'tests/test_claims.py::{t}' for t in tests])
