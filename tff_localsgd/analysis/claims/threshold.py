"""The width at which the prediction starts to hold, m*(n): C14; and the
(T, T_pred) pair of every run, which the calibration and C14 read.

The statistic, chosen before the grid ran: e(n, m) = the median over seeds
of |log(T / T_pred)|, the error of the headline quantity (the rounds to
eps); the curve's gap is C12's. A run that never reaches eps (plateau,
divergence) has T = inf there and a censored run enters at its projected
round: at a narrow width these are the measurement of where the prediction
fails, not a failure of the claim, so C14 is the one claim that reads them
as data (width_threshold.py). A crashed or missing trial still makes it
INCONCLUSIVE (base.sort_trials).
"""

import dataclasses

from tff_localsgd import suite
from tff_localsgd.analysis import calibration
from tff_localsgd.analysis import width_threshold
from tff_localsgd.analysis.claims import base

# The synthetic Local GD trials, whose T_pred is exact for the linearized
# net: every study but the catapult control (rho(M) > 1), Local SGD and
# minibatch SGD (predicted only in expectation) and real data.
CALIBRATED = {suite.WIDTH: ('lazy',), suite.LOCAL_STEPS: None,
              suite.GRID: None, suite.HETEROGENEITY: None,
              suite.ALGORITHMS: ('local_gd', 'centralized_gd'),
              suite.DEPTH: None}


def pair(run):
  """The run's calibration.Pair, or None when it has no outcome."""
  outcome = run.outcome()
  if outcome is None:
    return None
  gap = base.gap_to_prediction(run)
  reached = outcome.status in ('reached', 'censored')
  return calibration.Pair(
      study=run.study, group=run.group, trial=run.name,
      n=run.config['num_examples'], m=run.config['width'], seed=run.seed,
      depth=run.config.get('depth', 1),
      rounds=outcome.round if reached else None,
      predicted=base.predicted_rounds(run) or None, status=outcome.status,
      gap=None if gap is None else gap[0])


def calibrated_pairs(runs) -> tuple:
  """(pairs of every finished synthetic Local GD run, Trials of them)."""
  members = [r for r in runs if r.study in CALIBRATED and (
      CALIBRATED[r.study] is None or
      r.group in CALIBRATED[r.study])]
  trials = base.sort_trials(members, reach=False)
  pairs = [pair(r) for r in trials.usable]
  return tuple(p for p in pairs if p is not None), trials


class C14:
  """The width threshold m*(n) is polynomial in n (E3's n x m grid).

  m*(n): the smallest width with e(n, m) <= LEVEL, interpolated in
  (log m, log e) (width_threshold.threshold; censored when the grid does
  not bracket it). b: OLS of log m* on log n with a seed bootstrap 95%
  interval (censored draws widen it); the surface fit -gamma/beta is shown
  beside it.
  PASS: at every n the error falls with m (the per-seed slope of log err
  on log m has its 95% t-interval below 0) and b's interval is finite with
  its upper end <= B_MAX: the threshold then grows no faster than n^B_MAX
  over the range, as a polynomial does; B_MAX = 6 is the exponent of the
  lineage's first sufficient width (Du et al. 2019, m = Omega(n^6)), so a
  measured threshold steeper than the proven one would contradict it.
  FAIL: at some n the error grows with m (interval above 0), or b's
  interval lies above B_MAX. Otherwise INCONCLUSIVE, also when fewer than
  MIN_NS values of n have m* inside the grid (a censored m*(n) only bounds
  the threshold, and a line through two points has no interval worth the
  name).
  """
  id = 'C14'
  figure = 'E3_threshold.png'
  LEVEL = 0.1
  B_MAX = 6.0
  MIN_NS = 3
  claim = ('The width from which the linearized prediction gives the rounds '
           'to epsilon within 10%, m*(n), grows polynomially in n, and at '
           'every n the prediction\'s error falls with the width.')
  tests = ('test_c14_fails_when_the_error_grows_with_width',
           'test_c14_fails_when_the_threshold_is_steeper_than_proven')

  def criterion(self):
    return (f'e(n, m) = median over seeds of |log(T/T_pred)|; m*(n) the '
            f'smallest m with e <= {self.LEVEL}; PASS if at every n the '
            f'per-seed slope of log err on log m has its 95% interval < 0 and '
            f'b (m* ~ n^b, seed bootstrap 95% interval) is finite with upper '
            f'end <= {self.B_MAX:g}, over >= {self.MIN_NS} n with m* inside '
            f'the grid; FAIL if some n has the slope > 0 or b > '
            f'{self.B_MAX:g} throughout its interval')

  def judge(self, pairs):
    """(verdict, exponent fit, surface fit, falls) over the grid's pairs."""
    falls = width_threshold.falls_with_m(pairs)
    fit = width_threshold.exponent_fit(pairs, level=self.LEVEL)
    surface = width_threshold.surface_fit(pairs)
    verdicts = [f.verdict for f in falls] or ['INCONCLUSIVE']
    if fit.ci_low > self.B_MAX:
      verdicts.append('FAIL')
    elif not fit.ci_high <= self.B_MAX or len(fit.ns) < self.MIN_NS:
      verdicts.append('INCONCLUSIVE')  # nan, inf, or too few n
    return base.worst(verdicts), fit, surface, falls

  def __call__(self, runs):
    trials = base.sort_trials(base.select(runs, suite.GRID, 'grid'),
                              reach=False)
    pairs = [p for p in map(pair, trials.usable) if p is not None]
    if not pairs:
      return base.Claim(self.id, self.claim, 'no E3 grid run' + (
          f'; {trials.describe()}' if trials.verdict else ''),
                        self.criterion(), 'INCONCLUSIVE', self.figure,
                        fails_on=base.fails_on(self.tests))
    verdict, fit, surface, falls = self.judge(pairs)
    if trials.open:
      verdict = base.worst([verdict, 'INCONCLUSIVE'])
    thresholds = ', '.join(
        f'n={t.n}: ' + ({'none': f'{t.value:.0f}', 'left': f'<= {t.value:g}',
                         'right': f'> {t.value:g}'}[t.censoring])
        for t in fit.thresholds)
    stat = (f'm*(n): {thresholds}; b = {fit.b:.2f} [{fit.ci_low:.2f}, '
            f'{fit.ci_high:.2f}] ({fit.censored_draws} of {fit.n_boot} draws '
            f'censored); surface fit b = {surface.b:.2f} '
            f'[{surface.ci_low:.2f}, {surface.ci_high:.2f}]; error slope in '
            'm by n: ' + ', '.join(
                f'n={f.n}: ' + (base.fmt_fit(f.fit) if f.fit else 'none')
                for f in falls) +
            (f'; not usable: {base.Trials((), trials.open, ()).describe()}'
             if trials.open else ''))
    return base.Claim(self.id, self.claim, stat, self.criterion(), verdict,
                      self.figure, {'fit': dataclasses.asdict(fit),
                                    'surface': dataclasses.asdict(surface)},
                      base.fails_on(self.tests))
