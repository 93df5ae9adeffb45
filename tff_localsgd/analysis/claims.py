"""The paper's claims, each turned into a statistic, a criterion and a verdict.

A claim reads only recorded runs (analysis.runs) and returns a Claim row.
Verdicts: PASS (the criterion holds), FAIL (it does not: a result, reported
as such), INCONCLUSIVE (the data cannot decide: a run still converging when
its budget ran out, an interval that straddles a threshold, too few seeds,
a prediction not recorded, or a control that could not fail).

Every criterion below was written before the quick and paper presets of
tff_localsgd/suite.py were run. Notation: L_t the measured train/loss,
P_t the predicted curve (summary['theory']['curve'], the linearized Local GD
map M of tff_localsgd/theory.py), rho(M)^2 its asymptotic per-round ratio,
F_0 the zero predictor's loss, eps F_0 the target, T the first round with
L_T <= eps F_0, T_pred the same for P_t. Reaching the target is decided
by tff_localsgd/outcomes.py: reached, censored (still converging: the
claim is INCONCLUSIVE, with the projected round), plateau or diverged
(either one FAILs a claim that needs the run to converge).

Slopes against width m or examples n are per-seed least-squares slopes
with a Student t interval over >= suite.MIN_SLOPE_SEEDS seeds
(fits.seed_slope_fit); fewer seeds make the claim INCONCLUSIVE.
"""

import collections
import dataclasses
import math

import numpy as np

from tff_localsgd import suite as suite_lib
from tff_localsgd.analysis import fits
from tff_localsgd.analysis import runs as runs_lib

# Lazy training (module doc of models.py: A, W ~ N(0, 2/m), B ~ N(0, 1)):
# the kernel-regression solution moves the weights by ||dW||_F ~ m^{-1/2}
# (r^T H^{-1} r with H ~ m), and ||W^0||_F ~ m^{1/2} for an m x m layer, so
# the relative change of a hidden layer falls like m^{-1}; a d x m or m x c
# layer has ||W^0||_F ~ 1, so m^{-1/2}. A unit's preactivation is
# ~ m^{-1/2} and moves by ~ m^{-1}, so the fraction of flips falls like
# m^{-1/2}.
PREDICTED_SLOPE = {'hidden': -1.0, 'input': -0.5, 'output': -0.5,
                   'flips': -0.5}
# Half the distance between the lazy exponents and the non-lazy ones: in
# the catapult phase the kernel moves by O(1), the hidden weights by
# ||dW||_op ~ 1, ||dW||_F / ||W^0||_F ~ m^{-1/2} (slope -1/2 instead of -1),
# and the flips by O(1) (slope 0 instead of -1/2).
LAZY_TOLERANCE = 0.25
# C1: the measured curve may lie above the predicted one by at most this
# factor up to T_pred: above the largest log-gap an independent replica of
# the lineage's setting measured at m = 1024 (0.59) and m = 4096 (0.13)
# (THEORY.md), below which a run is as close to its linearization as the
# lineage's finite-width error allows.
CURVE_SLACK = 2.0
# C1: the late-window log-rate of L_t over that of P_t on the same rounds
# lies within a factor 4/3 either way. The proofs (Du et al. 2019) allow
# lambda_min(H(t)) down to lambda_min(H(0))/2, i.e. a rate ratio of 1/2;
# at the largest width a lazy run must do much better than that worst case.
RATE_TOLERANCE = 4 / 3
# C5: flat in width means the per-seed slope of max eta L_eff against m
# lies in +-0.25: a quarter of the slope +1 that eta L_eff (L_eff ~ H/n ~ m)
# would have if eta were not scaled by 1/m.
FLAT_TOLERANCE = 0.25
# C6, C7: measured round ratios agree with the linearized prediction's
# within this factor either way, chosen a priori: it leaves room for the
# finite-width log-gap of C1 at the rates of the suite (rho(M)^2 ~ 0.95).
PREDICTION_FACTOR = 1.5
# C6: local steps break down where K T(K) / T(1) > 2: K local steps then
# save less than half of the rounds they cost in local computation.
BREAKDOWN_EFFICIENCY = 2.0
# C2: R^2 margin between the power-law and the exponential model.
R2_MARGIN = 0.01


@dataclasses.dataclass(frozen=True)
class Claim:
  id: str
  claim: str
  statistic: str
  criterion: str
  verdict: str
  figure: str
  data: dict = dataclasses.field(default_factory=dict)


def _by(runs, key):
  out = collections.defaultdict(list)
  for r in runs:
    out[r.config[key]].append(r)
  return dict(sorted(out.items()))


def _fmt_fit(fit):
  if math.isnan(fit.ci_low):
    return f'{fit.exponent:+.3f} (one seed: no interval)'
  return f'{fit.exponent:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}]'


def _missing(claim_id, claim, criterion, figure, why):
  return Claim(claim_id, claim, why, criterion, 'INCONCLUSIVE', figure)


def reach_verdict(outcomes) -> str:
  """FAIL on any plateau or divergence, INCONCLUSIVE on any censored or
  unjudged (None) run, else PASS."""
  statuses = [o.status if o else 'unjudged' for o in outcomes]
  if any(s in ('plateau', 'diverged') for s in statuses):
    return 'FAIL'
  if not statuses or any(s in ('censored', 'unjudged') for s in statuses):
    return 'INCONCLUSIVE'
  return 'PASS'


def _describe(outcome):
  return outcome.describe() if outcome else 'not judged (no F_0 recorded)'


def _worst(verdicts) -> str:
  """FAIL if any FAIL, else INCONCLUSIVE if any, else PASS."""
  verdicts = list(verdicts)
  if 'FAIL' in verdicts:
    return 'FAIL'
  return 'INCONCLUSIVE' if 'INCONCLUSIVE' in verdicts or not verdicts \
      else 'PASS'


def _seed_fit(points):
  """seed_slope_fit of [(x, y, seed)], or (None, why) if it cannot be fit."""
  seeds = {p[2] for p in points}
  if len(seeds) < suite_lib.MIN_SLOPE_SEEDS:
    return None, (f'{len(seeds)} seeds; a slope needs '
                  f'>= {suite_lib.MIN_SLOPE_SEEDS}')
  if any(not (math.isfinite(p[1]) and p[1] > 0) for p in points):
    return None, 'a non-finite or non-positive value'
  x, y, g = (np.array(v, float) for v in zip(*points))
  try:
    return fits.seed_slope_fit(x, y, g), ''
  except ValueError as e:
    return None, str(e)


# C1 and C12: the measured curve against the linearized prediction.


@dataclasses.dataclass(frozen=True)
class CurveCheck:
  """One run against its predicted curve P_t (C1, C12).

  max_excess: max over t <= window of log L_t - log P_t (C1's bound).
  max_gap: max over the same rounds of |log L_t - log P_t| (C12).
  rate_ratio: late-window log-rate of L over that of P (C1), or None when
    the run did not reach the target or the window has < 3 rounds.
  window: the last round compared, min(T_pred, last recorded round).
  """
  max_excess: float
  max_gap: float
  rate_ratio: float | None
  window: int


def predicted_curve(run):
  """The run's predicted train-set curve P_t, or None (probe Gram, theory
  not applicable, or not recorded)."""
  theory = run.theory
  if not theory or theory.get('gram_set') != 'train' or not theory.get(
      'curve'):
    return None
  # float() reads back the 'inf' / 'nan' strings recorders.write_json writes.
  return np.asarray([float(v) for v in theory['curve']], np.float64)


def _log_slope(rounds, values):
  return fits.linear_fit(rounds, np.log(values)).slope


def curve_check(run, outcome):
  """CurveCheck of a run with a predicted curve (None without one).

  Window: rounds 0..min(T_pred, last recorded round) (T_pred the last
  round of the curve if the prediction never reaches eps F_0). Late window
  for the rate: rounds ceil(T/2)..T of the measured run's own T, both
  curves fitted by least squares of log loss on t over the same rounds.
  """
  curve = predicted_curve(run)
  if curve is None or outcome is None or outcome.status == 'diverged':
    return None
  rounds, losses = (np.asarray(v, np.float64) for v in run.series('train_loss'))
  t_pred = run.theory.get('rounds_to_eps')
  window = int(min(t_pred if t_pred is not None else len(curve) - 1,
                   rounds[-1], len(curve) - 1))
  keep = (rounds <= window) & (losses > 0)
  log_gap = np.log(losses[keep]) - np.log(curve[rounds[keep].astype(int)])
  ratio = None
  if outcome.status == 'reached':
    late = (rounds >= math.ceil(outcome.round / 2)) & (rounds <= outcome.round)
    if late.sum() >= 3:
      t = rounds[late]
      ratio = (_log_slope(t, losses[late]) /
               _log_slope(t, curve[t.astype(int)]))
  return CurveCheck(float(log_gap.max()), float(np.abs(log_gap).max()),
                    ratio, window)


def _lazy_e1(runs):
  return runs_lib.finished(runs, 'E1_width', 'lazy')


def prediction_bound(runs):
  claim = ('At the largest width Local GD follows the linearized (NTK) '
           'prediction: the loss stays under the predicted curve and decays '
           'at its rate until it reaches epsilon.')
  criterion = (f'every seed reaches eps F_0; L_t <= {CURVE_SLACK:g} P_t for '
               f't <= T_pred; the log-rate of L over rounds T/2..T within a '
               f'factor {RATE_TOLERANCE:.3g} of P\'s over the same rounds (a '
               'per-round ratio drifting toward 1 fails this)')
  e1 = _lazy_e1(runs)
  if not e1:
    return _missing('C1', claim, criterion, 'E1_loss.png', 'no E1 lazy run')
  widest = _by(e1, 'width')[max(r.config['width'] for r in e1)]
  rows, verdicts = [], []
  for r in widest:
    outcome = r.outcome()
    check = curve_check(r, outcome)
    verdict = reach_verdict([outcome])
    if verdict == 'PASS' and check is None:
      verdict = 'INCONCLUSIVE'
    elif check is not None and (
        check.max_excess > math.log(CURVE_SLACK) or
        (check.rate_ratio is not None and
         abs(math.log(check.rate_ratio)) > math.log(RATE_TOLERANCE))):
      verdict = 'FAIL'
    verdicts.append(verdict)
    rows.append((r, outcome, check))
  stat = f'm={widest[0].config["width"]}: ' + '; '.join(
      f'seed {r.seed}: {_describe(o)}' + (
          '' if c is None else
          f', max log(L/P) {c.max_excess:+.3f} to round {c.window}' + (
              '' if c.rate_ratio is None else
              f', late rate ratio {c.rate_ratio:.3f}')) +
      ('' if not r.theory else
       f', rho(M)^2 {r.theory.get("rate_per_round") or math.nan:.4f}')
      for r, o, c in rows)
  return Claim('C1', claim, stat, criterion, _worst(verdicts), 'E1_loss.png',
               {'checks': {r.name: dataclasses.asdict(c) if c else None
                           for r, _, c in rows}})


def prediction_exact_with_width(runs):
  claim = ('The linearized prediction becomes exact as the width grows: the '
           'largest log-gap between the measured and the predicted loss '
           'falls with m.')
  criterion = ('per-seed slope of log(max_{t <= T_pred} |log L_t - log P_t|) '
               'against log m: 95% t-interval < 0 (FAIL if > 0); the '
               'linearization error of a wide net is O(m^{-1/2}) (Lee et al. '
               '2019), so about -0.5 is expected')
  points, missing = [], []
  for r in _lazy_e1(runs):
    check = curve_check(r, r.outcome())
    if check is None:
      missing.append(r.name)
    else:
      points.append((r.config['width'], check.max_gap, r.seed))
  if missing:
    return _missing('C12', claim, criterion, 'E1_gap.png',
                    f'{len(missing)} E1 lazy trials have no predicted curve '
                    'or diverged: ' + ', '.join(missing))
  fit, why = _seed_fit(points)
  if fit is None:
    return _missing('C12', claim, criterion, 'E1_gap.png', why)
  by_width = collections.defaultdict(list)
  for m, gap, _ in points:
    by_width[m].append(gap)
  stat = ('max log-gap by width (median over seeds): ' + ', '.join(
      f'm={m}: {np.median(g):.3f}' for m, g in sorted(by_width.items())) +
          f'; per-seed slope {_fmt_fit(fit)}')
  return Claim('C12', claim, stat, criterion,
               fits.slope_verdict(fit, below=0.0), 'E1_gap.png',
               {'fit': fit.to_dict(), 'points': points})


# C2: rounds to epsilon against n.


def _compare_models(r2_power, r2_exponential) -> str:
  if r2_power - r2_exponential > R2_MARGIN:
    return 'PASS'
  if r2_exponential - r2_power > R2_MARGIN:
    return 'FAIL'
  return 'INCONCLUSIVE'


def sample_size(runs):
  claim = ('Rounds to epsilon grow polynomially, not exponentially, in the '
           'number of examples n.')
  criterion = (f'every trial reaches eps F_0, >= {suite_lib.MIN_SLOPE_SEEDS} '
               f'seeds, and log T vs log n fits better (R^2 higher by > '
               f'{R2_MARGIN}) than log T vs n; within the margin the range '
               'of n cannot tell the two apart')
  e3 = runs_lib.finished(runs, 'E3_sample_size')
  if not e3:
    return _missing('C2', claim, criterion, 'E3_sample_size.png',
                    'no E3 run')
  outcomes = {r.name: r.outcome() for r in e3}
  verdict = reach_verdict(outcomes.values())
  if verdict != 'PASS':
    return Claim('C2', claim, '; '.join(
        f'n={r.config["num_examples"]} seed {r.seed}: '
        f'{_describe(outcomes[r.name])}' for r in e3
        if not outcomes[r.name] or outcomes[r.name].status != 'reached'),
                 criterion, verdict, 'E3_sample_size.png',
                 {'outcomes': {k: o.to_dict() if o else None
                               for k, o in outcomes.items()}})
  points = [(r.config['num_examples'], outcomes[r.name].round, r.seed)
            for r in e3]
  fit, why = _seed_fit(points)
  if fit is None:
    return _missing('C2', claim, criterion, 'E3_sample_size.png', why)
  n, t, _ = (np.array(v, float) for v in zip(*points))
  power = fits.linear_fit(np.log(n), np.log(t))
  expo = fits.linear_fit(n, np.log(t))
  return Claim(
      'C2', claim, f'T ~ n^a with per-seed a = {_fmt_fit(fit)}; R^2 of '
      f'log T vs log n {power.r2:.3f}, of log T vs n {expo.r2:.3f}',
      criterion, _compare_models(power.r2, expo.r2), 'E3_sample_size.png',
      {'fit': fit.to_dict(), 'points': points})


# C3, C4: lazy training, with the catapult group as the non-lazy control.


def _final_points(runs, column):
  """[(width, last value of column, seed)] of runs that recorded it."""
  out = []
  for r in runs:
    value = r.last(column)
    if value is not None:
      out.append((r.config['width'], value, r.seed))
  return out


def _lazy_group_verdict(runs, group, column, predicted):
  """(verdict, fit or None, why) of one E1 group's slope against the band;
  a group with a diverged or unfinished (failed, missing) trial has none."""
  members = [r for r in runs if r.experiment == 'E1_width' and
             r.group == group]
  broken = [f'{r.name} {r.status}' for r in members
            if r.status != 'completed']
  if broken:
    return 'INCONCLUSIVE', None, f'{len(broken)} trials ' + ', '.join(broken)
  fit, why = _seed_fit(_final_points(members, column))
  if fit is None:
    return 'INCONCLUSIVE', None, why
  return (fits.interval_verdict(fit, predicted - LAZY_TOLERANCE,
                                predicted + LAZY_TOLERANCE), fit, '')


def _fmt_group(result):
  verdict, fit, why = result
  return f'slope {_fmt_fit(fit)}: {verdict}' if fit else f'no slope ({why})'


def _lazy_claim(runs, claim_id, text, column, predicted):
  criterion = (f'per-seed slope of the final value against log m: 95% '
               f't-interval inside {predicted:+.2f} +- {LAZY_TOLERANCE} (FAIL '
               f'if outside), and the same criterion must not pass on the '
               f'catapult control (client_lr {suite_lib.CATAPULT_CLIENT_LR:g}, '
               'non-lazy, suite.py); a control with a diverged or unfinished '
               'trial, or one that passes, leaves the claim INCONCLUSIVE')
  lazy = _lazy_group_verdict(runs, 'lazy', column, predicted)
  control = _lazy_group_verdict(runs, 'catapult', column, predicted)
  stat = f'lazy: {_fmt_group(lazy)}; control: {_fmt_group(control)}'
  if lazy[0] != 'PASS':
    verdict = lazy[0]
  elif control[1] is None or control[0] == 'PASS':
    verdict = 'INCONCLUSIVE'
  else:
    verdict = 'PASS'
  data = {'points': _final_points(_lazy_e1(runs), column),
          'control_points': _final_points(
              runs_lib.finished(runs, 'E1_width', 'catapult'), column),
          'fit': lazy[1].to_dict() if lazy[1] else None,
          'control_fit': control[1].to_dict() if control[1] else None}
  return Claim(claim_id, text, stat, criterion, verdict, 'E1_lazy.png', data)


def lazy_training(runs):
  """C3 per trained layer (relative weight change), C4 (flips)."""
  e1 = _lazy_e1(runs)
  if not e1 or not e1[0].rows:
    return [_missing('C3', 'Relative weight change falls with width.', '',
                     'E1_lazy.png', 'no E1 lazy run')]
  prefix = 'lazy_weight_change_rel_'
  layers = sorted({c[len(prefix):] for row in e1[0].rows for c in row
                   if c.startswith(prefix)})
  out = []
  for layer in layers:
    kind = 'hidden' if layer.startswith('hidden') else layer
    out.append(_lazy_claim(
        runs, f'C3.{layer}', f'The relative weight change ||W-W0||_F/||W0||_F '
        f'of layer {layer} falls like m^{PREDICTED_SLOPE[kind]:+g} (lazy '
        'training).', prefix + layer, PREDICTED_SLOPE[kind]))
  out.append(_lazy_claim(
      runs, 'C4', 'The fraction of ReLU activation patterns that flip during '
      f'training falls like m^{PREDICTED_SLOPE["flips"]:+g}.',
      'lazy_activation_flip_frac', PREDICTED_SLOPE['flips']))
  return out


# C5: the key lemma's form, ||grad F_i(w_i) - grad F_i(w_bar)|| <= L_eff
# ||w_i - w_bar||, measured as smooth_eff = eta sum p_i ||...|| / sum p_i
# ||w_i - w_bar|| at local steps k >= 1.


def smoothness_bound(run):
  """eta lambda_max(H) / min_i n_i, or None without a train-set Gram.

  For the linearized net grad F_i(w) - grad F_i(w') = (1/n_i) J_i^T J_i
  (w - w'), so smooth_eff <= eta max_i lambda_max(H_ii) / n_i, which a
  principal block's lambda_max(H_ii) <= lambda_max(H) bounds by this.
  """
  theory = run.theory
  if not theory or theory.get('gram_set') != 'train':
    return None
  lr = run.config['client_lr'] / (run.config['width']
                                  if run.config['lr_scale'] == 'width' else 1)
  return lr * theory['lambda_max'] / min(run.summary['client_sizes'])


def drift_bounded(runs):
  claim = ('The local gradients stay close to the gradient at the averaged '
           'model in proportion to the distance between the models (the key '
           'lemma), with a constant bounded and flat in width.')
  criterion = (f'every trial and diagnostic round: smooth_eff (mean over local '
               f'steps k >= 1) <= eta lambda_max(H)/min n_i (the linearized '
               f'net\'s bound); and the per-seed slope of its maximum against '
               f'log m has a 95% t-interval inside +-{FLAT_TOLERANCE} (FAIL '
               'if outside)')
  e1 = [r for r in _lazy_e1(runs) if r.steps]
  if not e1:
    return _missing('C5', claim, criterion, 'E1_drift.png',
                    'no E1 lazy run with per-step drift (drift_steps.csv)')
  points, over, unbounded = [], [], []
  for r in e1:
    _, values = r.step_means('smooth_eff')
    bound = smoothness_bound(r)
    if bound is None:
      unbounded.append(r.name)
    elif not values or max(values) > bound or not all(
        math.isfinite(v) for v in values):
      over.append(f'{r.name} (max {max(values, default=math.nan):.3g} > '
                  f'{bound:.3g})')
    points.append((r.config['width'], max(values, default=math.nan), r.seed))
  fit, why = _seed_fit(points)
  flat = fits.interval_verdict(fit, -FLAT_TOLERANCE, FLAT_TOLERANCE) \
      if fit else 'INCONCLUSIVE'
  verdict = 'FAIL' if over else _worst(
      [flat, 'INCONCLUSIVE' if unbounded else 'PASS'])
  by_width = collections.defaultdict(list)
  for m, v, _ in points:
    by_width[m].append(v)
  stat = ('max smooth_eff (k >= 1) by width, median over seeds: ' +
          ', '.join(f'm={m}: {np.median(v):.3g}'
                    for m, v in sorted(by_width.items())) +
          f'; above the bound: {", ".join(over) or "none"}' +
          (f'; no bound recorded: {len(unbounded)} trials' if unbounded
           else '') + f'; width slope {_fmt_fit(fit) if fit else why}')
  return Claim('C5', claim, stat, criterion, verdict, 'E1_drift.png',
               {'points': points, 'fit': fit.to_dict() if fit else None,
                'over_bound': over})


# C6, C7: round ratios against the prediction's.


def _predicted_rounds(run):
  theory = run.theory
  return None if not theory else theory.get('rounds_to_eps')


def _ratio_rows(pairs):
  """[(label, measured ratio, predicted ratio)] -> verdict of agreement
  within PREDICTION_FACTOR (INCONCLUSIVE where a prediction is missing)."""
  verdicts = []
  for _, measured, predicted in pairs:
    if predicted is None or measured is None:
      verdicts.append('INCONCLUSIVE')
    else:
      verdicts.append('PASS' if abs(math.log(measured / predicted)) <=
                      math.log(PREDICTION_FACTOR) else 'FAIL')
  return _worst(verdicts)


def _fmt_ratio(value):
  return '-' if value is None else f'{value:.2f}'


def local_steps(runs):
  claim = ('K local steps substitute for communication rounds: at fixed '
           'total computation the efficiency K T(K) / T(1) stays near 1 up to '
           'a breakdown K, as the linearized prediction says.')
  criterion = (f'every trial reaches eps F_0; for every K, the median over '
               f'seeds of K T(K)/T(1) is within a factor {PREDICTION_FACTOR:g} '
               f'of the predicted K T_pred(K)/T_pred(1); breakdown: the '
               f'smallest K with K T(K)/T(1) > {BREAKDOWN_EFFICIENCY:g}')
  e2 = runs_lib.finished(runs, 'E2_local_steps')
  if not e2:
    return _missing('C6', claim, criterion, 'E2_local_steps.png', 'no E2 run')
  outcomes = {r.name + r.group: r.outcome() for r in e2}
  verdict = reach_verdict(outcomes.values())
  by_seed = {(r.config['local_steps'], r.seed): r for r in e2}
  rows = []
  for k in sorted({r.config['local_steps'] for r in e2}):
    measured, predicted = [], []
    for (kk, seed), r in by_seed.items():
      base = by_seed.get((1, seed))
      if kk != k or base is None:
        continue
      o, o1 = outcomes[r.name + r.group], outcomes[base.name + base.group]
      if o and o1 and o.status == o1.status == 'reached' and o1.round > 0:
        measured.append(k * o.round / o1.round)
      tp, tp1 = _predicted_rounds(r), _predicted_rounds(base)
      if tp and tp1:
        predicted.append(k * tp / tp1)
    rows.append((k, float(np.median(measured)) if measured else None,
                 float(np.median(predicted)) if predicted else None))
  if verdict == 'PASS':
    verdict = _ratio_rows(rows)
  breakdown = [k for k, e, _ in rows if e is not None and
               e > BREAKDOWN_EFFICIENCY]
  breakdown_pred = [k for k, _, e in rows if e is not None and
                    e > BREAKDOWN_EFFICIENCY]
  stat = ('K T(K)/T(1) measured (predicted): ' + ', '.join(
      f'K={k}: {_fmt_ratio(e)} ({_fmt_ratio(p)})' for k, e, p in rows) +
          f'; breakdown K measured {breakdown[0] if breakdown else "none"}, '
          f'predicted {breakdown_pred[0] if breakdown_pred else "none"}')
  unreached = [f'{r.group} seed {r.seed}: {_describe(outcomes[r.name + r.group])}'
               for r in e2 if not outcomes[r.name + r.group] or
               outcomes[r.name + r.group].status != 'reached']
  if unreached:
    stat += '; not reached: ' + '; '.join(unreached)
  return Claim('C6', claim, stat, criterion, verdict, 'E2_local_steps.png',
               {'efficiency': rows})


def heterogeneity(runs):
  claim = ('Non-iid partitions (Dirichlet label skew, shards) still converge '
           'at large width, slower than iid by what the linearized '
           'prediction says.')
  criterion = (f'every trial reaches eps F_0; for each partition, the median '
               f'over seeds of T(partition)/T(iid) is within a factor '
               f'{PREDICTION_FACTOR:g} of the predicted ratio; zeta^2 = sum_i '
               'p_i ||grad F_i(w0) - grad F(w0)||^2 measures the partition')
  e4 = runs_lib.finished(runs, 'E4_heterogeneity')
  iid = {r.seed: r for r in e4 if r.group == 'iid'}
  if not e4 or not iid:
    return _missing('C7', claim, criterion, 'E4_heterogeneity.png',
                    'no E4 run with an iid baseline')
  outcomes = {(r.group, r.seed): r.outcome() for r in e4}
  verdict = reach_verdict(outcomes.values())
  rows, zeta = [], {}
  for group, members in sorted(_by_group(e4).items()):
    measured, predicted = [], []
    for r in members:
      o, o1 = outcomes[(group, r.seed)], outcomes.get(('iid', r.seed))
      if o and o1 and o.status == o1.status == 'reached' and o1.round > 0:
        measured.append(o.round / o1.round)
      tp = _predicted_rounds(r)
      tp1 = _predicted_rounds(iid[r.seed]) if r.seed in iid else None
      if tp and tp1:
        predicted.append(tp / tp1)
    zetas = [r.theory.get('zeta2') for r in members
             if r.theory and r.theory.get('zeta2') is not None]
    zeta[group] = float(np.median(zetas)) if zetas else None
    rows.append((group, float(np.median(measured)) if measured else None,
                 float(np.median(predicted)) if predicted else None))
  if verdict == 'PASS':
    verdict = _ratio_rows([row for row in rows if row[0] != 'iid'])
  stat = ('T/T(iid) measured (predicted), zeta^2: ' + ', '.join(
      f'{g}: {_fmt_ratio(e)} ({_fmt_ratio(p)}), ' + (
          'zeta^2 not recorded' if zeta[g] is None else
          f'zeta^2 {zeta[g]:.3g}') for g, e, p in rows))
  unreached = [f'{g} seed {s}: {_describe(o)}' for (g, s), o in
               outcomes.items() if not o or o.status != 'reached']
  if unreached:
    stat += '; not reached: ' + '; '.join(unreached)
  return Claim('C7', claim, stat, criterion, verdict, 'E4_heterogeneity.png',
               {'ratios': rows, 'zeta2': zeta})


def _by_group(runs):
  out = collections.defaultdict(list)
  for r in runs:
    out[r.group].append(r)
  return out


# C8-C10: reaching epsilon.


def _reach(runs, claim_id, claim, criterion, figure, label):
  if not runs:
    return _missing(claim_id, claim, criterion, figure, 'no finished run')
  outcomes = [(label(r), r.outcome()) for r in runs]
  return Claim(claim_id, claim, '; '.join(
      f'{k}: {_describe(o)}' for k, o in outcomes), criterion,
               reach_verdict([o for _, o in outcomes]), figure,
               {'outcomes': {k: o.to_dict() if o else None
                             for k, o in outcomes}})


def convergence_claims(runs):
  e1 = _lazy_e1(runs)
  widest = [r for r in e1 if r.config['width'] == max(
      (r.config['width'] for r in e1), default=0)]
  return [
      _reach(runs_lib.finished(runs, 'E5_algorithms', 'local_sgd'), 'C8',
             'Local SGD (stochastic minibatches) '
             'converges too.', 'every Local SGD trial reaches eps F_0',
             'E5_algorithms.png', lambda r: f'seed {r.seed}'),
      _reach(widest, 'C9', 'Wide networks reach epsilon.',
             'every seed at the largest width of E1 reaches eps F_0 (the '
             'narrower widths are shown in the figure)', 'E1_loss.png',
             lambda r: f'm={r.config["width"]} seed {r.seed}'),
      _reach(runs_lib.finished(runs, 'E6_depth'), 'C10',
             'Deeper networks converge at large width too.',
             'every depth reaches eps F_0', 'E6_depth.png',
             lambda r: f'L={r.config["depth"]}'),
  ]


def real_data(runs):
  e7 = runs_lib.finished(runs, 'E7_real_data')
  claim = ('Demonstration outside the theory (cross-entropy, all layers '
           'trained): on real data (digits) Local SGD lowers the training '
           'loss.')
  criterion = 'final train/loss < initial'
  if not e7:
    return _missing('C11', claim, criterion, 'E7_real_data.png', 'no run')
  stats = {r.config['dataset']: (r.series('train_loss')[1][0],
                                 r.series('train_loss')[1][-1],
                                 r.last('train_accuracy'), r.last('test_accuracy'))
           for r in e7}
  ok = all(final < first for first, final, _, _ in stats.values())
  return Claim('C11', claim, '; '.join(
      f'{d}: loss {a:.3g} -> {b:.3g}, train acc {c or math.nan:.3f}, test acc '
      f'{t or math.nan:.3f}' for d, (a, b, c, t) in stats.items()),
               criterion, 'PASS' if ok else 'FAIL', 'E7_real_data.png',
               {'datasets': stats})


def _order(claim):
  number, _, suffix = claim.id[1:].partition('.')
  return int(number), suffix


def evaluate_claims(runs) -> list:
  """Every claim of the report, in numeric order."""
  claims = ([prediction_bound(runs), sample_size(runs)] +
            lazy_training(runs) + [drift_bounded(runs), local_steps(runs),
                                   heterogeneity(runs)] +
            convergence_claims(runs) +
            [real_data(runs), prediction_exact_with_width(runs)])
  return sorted(claims, key=_order)
