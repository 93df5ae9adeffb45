"""Lazy training and the key lemma against width (E1): C3, C4, C5, C13.

Each claim compares the lazy group with the catapult group (client_lr 20,
suite.py), the same sweep in a regime where the kernel moves by O(1): a
lazy-training criterion that the control passes as well cannot tell lazy
from non-lazy, and so decides nothing.
"""

import math

import numpy as np

from tff_localsgd import suite
from tff_localsgd import metrics
from tff_localsgd.analysis import fits
from tff_localsgd.analysis.claims import base

# Half the distance between the lazy exponents and the non-lazy ones: in
# the catapult phase the kernel moves by O(1), the hidden weights by
# ||dW||_op ~ 1, ||dW||_F / ||W^0||_F ~ m^{-1/2} (slope -1/2 instead of -1),
# and the flips by O(1) (slope 0 instead of -1/2).
LAZY_TOLERANCE = 0.25


def _final_points(runs, column):
  """[(width, last value of column, seed)] of the runs that recorded it."""
  out = []
  for r in runs:
    value = r.last(column)
    if value is not None:
      out.append((r.config['width'], value, r.seed))
  return out


def _group_fit(runs, group, column, predicted):
  """(verdict, fit or None, why) of one E1 group's slope against the band
  predicted +- LAZY_TOLERANCE, after the one rule (reach=False). A control
  group with a diverged trial is INCONCLUSIVE, not FAIL: a run that blew up
  says nothing about how far a stable non-lazy run's weights move."""
  trials = base.sort_trials(base.select(runs, suite.WIDTH, group),
                            reach=False)
  if trials.verdict:
    verdict = 'INCONCLUSIVE' if group == 'catapult' else trials.verdict
    return verdict, None, trials.describe()
  fit, why = base.seed_fit(_final_points(trials.usable, column))
  if fit is None:
    return 'INCONCLUSIVE', None, why
  return (fits.interval_verdict(fit, predicted - LAZY_TOLERANCE,
                                predicted + LAZY_TOLERANCE), fit, '')


def _fmt_group(result):
  verdict, fit, why = result
  return (f'slope {base.fmt_fit(fit)}: {verdict}' if fit
          else f'{verdict} ({why})')


def _separation(lazy_fit, control_fit):
  """The paired per-seed difference (lazy - control) of the slopes."""
  if lazy_fit is None or control_fit is None:
    return None
  pairs = list(zip(lazy_fit.per_seed, control_fit.per_seed))
  if len(pairs) < 2:
    return None
  return fits.mean_fit([a - b for a, b in pairs])


class _LazySlope:
  """A quantity's final value falls with width like m^predicted in the
  lazy group: per-seed slope of log value on log m, 95% t-interval inside
  predicted +- LAZY_TOLERANCE (FAIL if outside). It is told apart from the
  catapult control if the control FAILs the same criterion outright, or
  the paired per-seed difference (lazy - control) of the slopes has a
  95% t-interval below -SEPARATION; otherwise the claim is INCONCLUSIVE."""
  figure = 'E1_lazy.png'
  SEPARATION = 0.25

  def _judge(self, claim_id, text, column, predicted, tests, runs):
    criterion = (f'per-seed slope of the final value against log m: 95% '
                 f't-interval inside {predicted:+.2f} +- {LAZY_TOLERANCE} '
                 '(FAIL if outside); and the catapult control either FAILs '
                 f'the same or the paired (lazy - control) slope difference '
                 f'has its interval below -{self.SEPARATION} (else '
                 'INCONCLUSIVE)')
    lazy = _group_fit(runs, 'lazy', column, predicted)
    control = _group_fit(runs, 'catapult', column, predicted)
    diff = _separation(lazy[1], control[1])
    separated = control[0] == 'FAIL' or (
        diff is not None and diff.ci_high < -self.SEPARATION)
    verdict = lazy[0] if lazy[0] != 'PASS' or separated else 'INCONCLUSIVE'
    stat = (f'lazy: {_fmt_group(lazy)}; control: {_fmt_group(control)}; '
            f'paired difference ' +
            (base.fmt_fit(diff) if diff else 'not available'))
    data = {'points': _final_points(base.select(runs, suite.WIDTH, 'lazy'),
                                    column),
            'control_points': _final_points(
                base.select(runs, suite.WIDTH, 'catapult'), column),
            'fit': lazy[1].to_dict() if lazy[1] else None,
            'control_fit': control[1].to_dict() if control[1] else None}
    return base.Claim(claim_id, text, stat, criterion, verdict, self.figure,
                      data, base.fails_on(tests, ('control E1 catapult',
                                                  control[0])))


class C3(_LazySlope):
  """The relative weight change ||W - W0||_F / ||W0||_F of each trained
  layer falls like m^-1 for an m x m layer and m^-1/2 for the input and
  output layers (models.py: A, W ~ N(0, 2/m), B ~ N(0, 1); the kernel
  regression solution moves the weights by ~m^{-1/2})."""
  id = 'C3'
  PREDICTED = {'hidden': -1.0, 'input': -0.5, 'output': -0.5}
  tests = ('test_c3_fails_when_the_lazy_slope_is_outside_its_band',
           'test_c3_is_inconclusive_when_the_control_is_not_told_apart')

  def __call__(self, runs):
    prefix = 'lazy/weight_change_rel/'
    layers = _layers(base.select(runs, suite.WIDTH, 'lazy'), prefix)
    if not layers:
      return [base.Claim(self.id, 'Relative weight change falls with width.',
                         'no E1 lazy run with lazy diagnostics', '',
                         'INCONCLUSIVE', self.figure,
                         fails_on=base.fails_on(self.tests))]
    out = []
    for layer in layers:
      kind = 'hidden' if layer.startswith('hidden') else layer
      predicted = self.PREDICTED[kind]
      out.append(self._judge(
          f'{self.id}.{layer}', f'The relative weight change '
          f'||W-W0||_F/||W0||_F of layer {layer} falls like '
          f'm^{predicted:+g} (lazy training).',
          metrics.column(prefix + layer), predicted, self.tests, runs))
    return out


def _layers(runs, prefix) -> list:
  """The layers whose tag prefix + layer is a column of the runs."""
  layers = set()
  for column in {c for r in runs for row in r.rows for c in row}:
    try:
      tag = metrics.tag(column)
    except KeyError:
      continue
    if tag.startswith(prefix):
      layers.add(tag[len(prefix):])
  return sorted(layers)


class C4(_LazySlope):
  """The fraction of ReLU patterns that flip falls like m^-1/2: a unit's
  preactivation is ~m^{-1/2} and moves by ~m^{-1}."""
  id = 'C4'
  PREDICTED = -0.5
  tests = ('test_c4_fails_when_the_flips_do_not_fall',)

  def __call__(self, runs):
    return self._judge(
        self.id, 'The fraction of ReLU activation patterns that flip during '
        f'training falls like m^{self.PREDICTED:+g}.',
        metrics.column('lazy/activation_flip_frac'), self.PREDICTED,
        self.tests, runs)


class C13(_LazySlope):
  """The kernel stays put: ||H_t - H_0||_F / ||H_0||_F on the probe set
  (ntk/rel_change) falls like m^-1/2 in the lazy group (the lineage bounds
  ||H(t) - H(0)|| by O(m^{-1/2}): Du et al. 2019, Lee et al. 2019); in the
  catapult phase the kernel moves by O(1) (slope 0)."""
  id = 'C13'
  PREDICTED = -0.5
  tests = ('test_c13_fails_when_the_kernel_moves_with_width',)

  def __call__(self, runs):
    return self._judge(
        self.id, 'The neural tangent kernel moves less as the width grows: '
        'its relative change falls like m^-0.5 (lazy training), and not in '
        'the catapult control.', metrics.column('ntk/rel_change'),
        self.PREDICTED, self.tests, runs)


class C5:
  """The key lemma's form, ||grad F_i(w_i) - grad F_i(w_bar)|| <= L_eff
  ||w_i - w_bar||, measured as smooth_eff (drift_steps.csv, the mean over
  local steps k >= 1: at k = 0 every w_i = w_bar) against the linearized
  net's per-client bound max_i eta lambda_max(H_ii)/n_i (theory.
  smoothness_bound, recorded as summary['theory']['smooth_bound']):

  every lazy trial and diagnostic round: smooth_eff <= (1 + OVER) bound
  (OVER = 10% for the finite-width drift of H; FAIL if exceeded);
  flat in width: the per-seed slope of the largest smooth_eff against
  log m has a 95% t-interval inside +-FLAT_TOLERANCE (FAIL if outside).
  FLAT_TOLERANCE is a quarter of the slope +1 that eta L_eff would have if
  eta were not scaled by 1/m. The control (catapult) is reported beside it:
  the lemma's bound is the linearized net's, which the catapult leaves.
  """
  id = 'C5'
  figure = 'E1_drift.png'
  OVER = 0.10
  FLAT_TOLERANCE = 0.25
  claim = ('The local gradients stay close to the gradient at the averaged '
           'model in proportion to the distance between the models (the key '
           'lemma), with a constant under the linearized per-client bound '
           'and flat in width.')
  tests = ('test_c5_fails_above_the_per_client_bound',
           'test_c5_fails_when_the_constant_grows_with_width')

  def criterion(self):
    return (f'every trial and diagnostic round: smooth_eff (mean over local '
            f'steps k >= 1) <= {1 + self.OVER:g} x max_i eta lambda_max(H_ii)'
            f'/n_i (per-client bound; FAIL if above), and the per-seed slope '
            f'of its maximum against log m has a 95% t-interval inside '
            f'+-{self.FLAT_TOLERANCE} (FAIL if outside)')

  def bound_check(self, runs):
    """(points [(m, max smooth_eff, seed)], over [text], open [text])."""
    points, over, missing = [], [], []
    for r in runs:
      _, values = r.step_means(metrics.column('drift_per_step/smooth_eff'))
      bound = (r.theory or {}).get('smooth_bound')
      if not values or bound is None:
        missing.append(f'{base.label(r)}: no drift or no bound recorded')
        continue
      peak = max(values)
      if not math.isfinite(peak) or peak > (1 + self.OVER) * bound:
        over.append(f'{base.label(r)} (max {peak:.3g} > bound {bound:.3g})')
      points.append((r.config['width'], peak, r.seed))
    return points, over, missing

  def __call__(self, runs):
    trials = base.sort_trials(base.select(runs, suite.WIDTH, 'lazy'),
                              reach=False)
    points, over, missing = self.bound_check(trials.usable)
    fit, why = base.seed_fit(points)
    flat = fits.interval_verdict(fit, -self.FLAT_TOLERANCE,
                                 self.FLAT_TOLERANCE) if fit else 'INCONCLUSIVE'
    verdict = 'FAIL' if over else base.worst(
        [flat, trials.verdict or 'PASS',
         'INCONCLUSIVE' if missing else 'PASS'])
    control = base.sort_trials(base.select(runs, suite.WIDTH, 'catapult'),
                               reach=False)
    _, control_over, _ = self.bound_check(control.usable)
    control_verdict = 'FAIL' if control_over else 'PASS'
    widths = {}
    for m, v, _ in points:
      widths.setdefault(m, []).append(v)
    stat = ('max smooth_eff (k >= 1) by width, median over seeds: ' +
            ', '.join(f'm={m}: {np.median(v):.3g}'
                      for m, v in sorted(widths.items())) +
            f'; above the bound: {", ".join(over) or "none"}' +
            (f'; {"; ".join(missing)}' if missing else '') +
            f'; width slope {base.fmt_fit(fit) if fit else why}' +
            (f'; not usable: {trials.describe()}' if trials.verdict else '') +
            f'. Control (catapult) above the bound in {len(control_over)} of '
            f'{len(control.usable)} trials')
    return base.Claim(self.id, self.claim, stat, self.criterion(), verdict,
                      self.figure, {'points': points, 'over_bound': over,
                                    'fit': fit.to_dict() if fit else None},
                      base.fails_on(self.tests, ('control E1 catapult',
                                                 control_verdict)))
