"""The paper's claims, each turned into a statistic, a criterion and a verdict.

A claim reads only recorded runs (analysis.runs) and returns a Claim row.
Verdicts: PASS (the criterion holds), FAIL (it does not: a result, reported
as such), INCONCLUSIVE (the data cannot decide: too few points, a confidence
interval that straddles the threshold, runs that did not reach epsilon).
Scaling exponents come with 95% bootstrap intervals over seeds.
"""

import collections
import dataclasses
import math

import numpy as np

from tff_localsgd.analysis import fits
from tff_localsgd.analysis import runs as runs_lib

# What the lazy-training analysis predicts for the log-log slope against m.
PREDICTED_SLOPE = {'hidden': -1.0, 'input': -0.5, 'output': -0.5,
                   'flips': -0.5}


@dataclasses.dataclass
class Claim:
  id: str
  claim: str
  statistic: str
  criterion: str
  verdict: str
  figure: str
  data: dict = dataclasses.field(default_factory=dict)


def _completed(runs, experiment, group=None):
  return [r for r in runs if r.experiment == experiment and r.status ==
          'completed' and (group is None or r.group == group)]


def _by(runs, key):
  out = collections.defaultdict(list)
  for r in runs:
    out[r.config[key]].append(r)
  return dict(sorted(out.items()))


def _fmt_fit(fit):
  return (f'{fit.exponent:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}]'
          if math.isfinite(fit.ci_low) else f'{fit.exponent:+.3f} (one seed: '
          'no interval)')


def _missing(claim_id, claim, criterion, figure, why):
  return Claim(claim_id, claim, why, criterion, 'INCONCLUSIVE', figure)


def geometric_decay(runs, eps):
  claim = ('At the largest width the training loss decays geometrically '
           '(linearly in log scale) until it reaches its floor.')
  criterion = 'fit of log train_loss vs round: slope < 0 and R^2 >= 0.95, every seed'
  e1 = _completed(runs, 'E1_width')
  if not e1:
    return _missing('C1', claim, criterion, 'E1_loss.png', 'no completed E1 run')
  widest = _by(e1, 'width')[max(r.config['width'] for r in e1)]
  rows = []
  for r in widest:
    try:
      rows.append(fits.geometric_decay_fit(*r.series('train_loss')))
    except ValueError as e:
      return _missing('C1', claim, criterion, 'E1_loss.png', str(e))
  ok = all(f.slope < 0 and f.r2 >= 0.95 for f in rows)
  return Claim(
      'C1', claim,
      f'm={widest[0].config["width"]}: rate per round '
      f'{np.median([f.rate for f in rows]):.3f}, R^2 min '
      f'{min(f.r2 for f in rows):.3f} over {len(rows)} seeds',
      criterion, 'PASS' if ok else 'FAIL', 'E1_loss.png',
      {'fits': [f.to_dict() for f in rows]})


def _width_fit(runs, column, reducer):
  """Power-law fit of reducer(run's column) against width, grouped by seed."""
  x, y, g = [], [], []
  for r in runs:
    _, values = r.series(column)
    if values:
      x.append(r.config['width'])
      y.append(reducer(values))
      g.append(r.seed)
  return fits.power_law_fit(x, y, groups=g), list(zip(x, y, g))


def lazy_training(runs):
  """Relative weight change per trained layer, and flips, fall with width."""
  out = []
  e1 = _completed(runs, 'E1_width')
  if not e1:
    return [_missing('C3', 'Relative weight change falls with width.', '',
                     'E1_lazy.png', 'no completed E1 run')]
  layers = sorted({c[len('lazy_weight_change_rel_'):] for c in e1[0].rows[0]
                   if c.startswith('lazy_weight_change_rel_')})
  for layer in layers:
    kind = 'hidden' if layer.startswith('hidden') else layer
    fit, points = _width_fit(e1, f'lazy_weight_change_rel_{layer}',
                             lambda v: v[-1])
    out.append(Claim(
        f'C3.{layer}',
        f'The relative weight change ||W-W0||_F/||W0||_F of layer {layer} '
        'decreases with width (lazy training).',
        f'log-log slope vs m {_fmt_fit(fit)} (lazy-training prediction '
        f'about {PREDICTED_SLOPE.get(kind, float("nan")):+.1f}), R^2 '
        f'{fit.r2:.2f}',
        '95% CI of the slope < 0', fits.slope_verdict(fit, below=0.0),
        'E1_lazy.png', {'fit': fit.to_dict(), 'points': points}))
  fit, points = _width_fit(e1, 'lazy_activation_flip_frac', lambda v: v[-1])
  out.append(Claim(
      'C4', 'The fraction of ReLU activation patterns that flip during '
      'training decreases with width.',
      f'log-log slope vs m {_fmt_fit(fit)} (prediction about '
      f'{PREDICTED_SLOPE["flips"]:+.1f}), R^2 {fit.r2:.2f}',
      '95% CI of the slope < 0', fits.slope_verdict(fit, below=0.0),
      'E1_lazy.png', {'fit': fit.to_dict(), 'points': points}))
  return out


def _bounded(values) -> bool:
  """Bounded through training: finite, and the second half's maximum is at
  most twice the first half's (it does not grow as training goes on)."""
  if not values or not all(math.isfinite(v) for v in values):
    return False
  half = max(1, len(values) // 2)
  first, second = max(values[:half]), max(values[half:] or values[:half])
  return second <= 2 * first or second == 0


def drift_bounded(runs):
  claim = ('The gradient at the local models stays close to the gradient at '
           'the averaged model: the relative difference stays bounded through '
           'training at every width.')
  criterion = ('every trial: drift/grad_diff_rel finite and its maximum over '
               'the second half of training <= 2x the first half')
  e1 = [r for r in _completed(runs, 'E1_width') if r.series('drift_grad_diff_rel')[1]]
  if not e1:
    return [_missing('C5', claim, criterion, 'E1_drift.png',
                     'no E1 run with drift diagnostics')]
  out = []
  for column, cid, text in (
      ('drift_grad_diff_rel', 'C5', claim),
      ('drift_smooth_eff', 'C5b', 'The effective smoothness smooth_eff = '
       'eta sum p_i||dF_i(w_i)-dF_i(w_bar)|| / sum p_i||w_i-w_bar|| stays '
       'bounded through training at every width.')):
    bounded = {r.name: _bounded(r.series(column)[1]) for r in e1}
    fit, points = _width_fit(e1, column, max)
    stat = (f'{sum(bounded.values())}/{len(bounded)} trials bounded; width '
            f'trend of the maximum: log-log slope {_fmt_fit(fit)}')
    if column == 'drift_smooth_eff':
      frac_fit, frac_points = _width_fit(e1, 'drift_nonsmooth_frac',
                                         lambda v: float(np.mean(v)))
      stat += (f'; nonsmooth_frac (mean over rounds) by width: ' + ', '.join(
          f'm={int(x)}: {y:.3f}' for x, y, g in sorted(frac_points)
          if g == min(p[2] for p in frac_points)) +
               f' (first seed); slope {_fmt_fit(frac_fit)}')
    out.append(Claim(cid, text, stat, criterion.replace(
        'drift/grad_diff_rel', 'drift/' + column[len('drift_'):]),
                     'PASS' if all(bounded.values()) else 'FAIL',
                     'E1_drift.png', {'bounded': bounded, 'trend': fit.to_dict(),
                                      'points': points}))
  return out


def local_steps(runs, eps):
  claim = ('More local steps K need fewer communication rounds to reach '
           'epsilon, up to a point.')
  criterion = ('at fixed rounds: some K > 1 reaches epsilon in fewer rounds '
               'than K = 1')
  e2 = [r for r in _completed(runs, 'E2_local_steps')
        if r.group.startswith('fixed_rounds')]
  t_eps = {r.config['local_steps']: runs_lib.rounds_to_eps(r, eps) for r in e2}
  if 1 not in t_eps or not math.isfinite(min(t_eps.values(), default=math.inf)):
    return Claim('C6', claim, f'rounds to epsilon by K: {t_eps}', criterion,
                 'INCONCLUSIVE', 'E2_local_steps.png', {'rounds_to_eps': t_eps})
  best = min(t_eps, key=lambda k: (t_eps[k], k))
  better = any(t < t_eps[1] for k, t in t_eps.items() if k > 1)
  return Claim(
      'C6', claim, 'rounds to epsilon by K: ' + ', '.join(
          f'K={k}: {t:g}' for k, t in sorted(t_eps.items())) +
      f'; fewest at K={best}', criterion, 'PASS' if better else 'FAIL',
      'E2_local_steps.png', {'rounds_to_eps': t_eps})


R2_MARGIN = 0.01


def _compare_models(r2_power, r2_exponential) -> str:
  if r2_power - r2_exponential > R2_MARGIN:
    return 'PASS'
  if r2_exponential - r2_power > R2_MARGIN:
    return 'FAIL'
  return 'INCONCLUSIVE'


def sample_size(runs, eps):
  claim = ('Rounds to epsilon grow polynomially, not exponentially, in the '
           'number of examples n.')
  criterion = ('every trial reaches epsilon, and log T vs log n fits better '
               f'(R^2 higher by > {R2_MARGIN}) than log T vs n; within the margin '
               'the range of n cannot tell the two apart')
  e3 = _completed(runs, 'E3_sample_size')
  points = [(r.config['num_examples'], runs_lib.rounds_to_eps(r, eps), r.seed)
            for r in e3]
  censored = [p for p in points if not math.isfinite(p[1])]
  if len(points) < 3 or censored:
    return Claim('C2', claim, f'{len(censored)} of {len(points)} trials did '
                 'not reach epsilon (' + ', '.join(
                     f'n={n} seed {s}' for n, _, s in censored) + ')'
                 if points else 'no completed E3 run',
                 criterion, 'INCONCLUSIVE', 'E3_sample_size.png',
                 {'points': points})
  n, t, g = (np.array(v, float) for v in zip(*points))
  power = fits.power_law_fit(n, t, groups=g)
  expo = fits.linear_fit(n, np.log(t))
  return Claim(
      'C2', claim, f'T_eps ~ n^a with a = {_fmt_fit(power)}, R^2 '
      f'{power.r2:.3f}; exponential model log T = b n + c: R^2 {expo.r2:.3f}',
      criterion, _compare_models(power.r2, expo.r2),
      'E3_sample_size.png', {'power_law': power.to_dict(),
                             'exponential': expo.to_dict(), 'points': points})


def _reach(runs, eps, claim_id, claim, criterion, figure, label):
  if not runs:
    return _missing(claim_id, claim, criterion, figure, 'no completed run')
  t_eps = {label(r): runs_lib.rounds_to_eps(r, eps) for r in runs}
  ok = all(math.isfinite(t) for t in t_eps.values())
  return Claim(claim_id, claim, ', '.join(
      f'{k}: {"not reached" if not math.isfinite(t) else f"{t:g} rounds"}'
      for k, t in t_eps.items()), criterion, 'PASS' if ok else 'FAIL',
               figure, {'rounds_to_eps': t_eps})


def convergence_claims(runs, eps):
  e1 = _completed(runs, 'E1_width')
  widths = _by(e1, 'width') if e1 else {}
  out = []
  if widths:
    widest = max(widths)
    reached = {m: sum(math.isfinite(runs_lib.rounds_to_eps(r, eps))
                      for r in rs) for m, rs in widths.items()}
    out.append(Claim(
        'C9', 'Wide networks reach epsilon (narrow ones may not).',
        'seeds reaching epsilon by width: ' + ', '.join(
            f'm={m}: {k}/{len(widths[m])}' for m, k in reached.items()),
        'the largest width reaches epsilon in every seed',
        'PASS' if reached[widest] == len(widths[widest]) else 'FAIL',
        'E1_loss.png', {'reached': reached}))
  e4 = _completed(runs, 'E4_heterogeneity')
  if e4:
    wide = max(r.config['width'] for r in e4)
    out.append(_reach(
        [r for r in e4 if r.config['width'] == wide], eps, 'C7',
        'Non-iid data (Dirichlet label skew, shards) still converges at large '
        'width.', f'every partition reaches epsilon at m={wide}',
        'E4_heterogeneity.png', lambda r: r.group))
  out.append(_reach(
      [r for r in _completed(runs, 'E5_algorithms') if r.group == 'local_sgd'],
      eps, 'C8', 'Local SGD (stochastic minibatches) converges too.',
      'every Local SGD trial reaches epsilon', 'E5_algorithms.png',
      lambda r: f'seed {r.seed}'))
  out.append(_reach(
      _completed(runs, 'E6_depth'), eps, 'C10', 'Deeper networks converge '
      'at large width too.', 'every depth reaches epsilon', 'E6_depth.png',
      lambda r: f'L={r.config["depth"]}'))
  return out


def real_data(runs):
  e7 = _completed(runs, 'E7_real_data')
  claim = 'On real data (digits) Local SGD lowers the training loss.'
  if not e7:
    return _missing('C11', claim, '', 'E7_real_data.png', 'no completed run')
  stats = {r.config['dataset']: (r.series('train_loss')[1][0],
                                 r.series('train_loss')[1][-1],
                                 r.last('train_accuracy'), r.last('test_accuracy'))
           for r in e7}
  ok = all(final < first for first, final, _, _ in stats.values())
  return Claim('C11', claim, '; '.join(
      f'{d}: loss {a:.3g} -> {b:.3g}, train acc {c:.3f}, test acc {t:.3f}'
      for d, (a, b, c, t) in stats.items()),
               'final train_loss < initial', 'PASS' if ok else 'FAIL',
               'E7_real_data.png', {'datasets': stats})


def evaluate_claims(runs, eps) -> list:
  """Every claim of the report, in order."""
  return ([geometric_decay(runs, eps), sample_size(runs, eps)] +
          lazy_training(runs) + drift_bounded(runs) +
          [local_steps(runs, eps)] + convergence_claims(runs, eps) +
          [real_data(runs)])
