"""Local steps, heterogeneity and convergence: C6, C7, C8, C9, C11, C16.

Round ratios are compared with the same ratios of the runs' own
predictions (T_pred from each run's H_0); a ratio of two rounds is told
within a factor RATIO_FACTOR: the committed quick run at a9caff7 agreed
within 4% (C6) and 3% (C7's shards), and two T's that each follow their
prediction within C1's 0.15 would give at most twice that; 1.2 (log 0.18)
sits between the two.
"""

import math

import numpy as np

from tff_localsgd import suite
from tff_localsgd.analysis import runs as runs_lib
from tff_localsgd.analysis import fits
from tff_localsgd.analysis.claims import base

RATIO_FACTOR = 1.2


def _per_seed(runs):
  """{seed: (T, T_pred)} of usable runs (T_pred may be None)."""
  return {r.seed: (r.outcome().round, base.predicted_rounds(r))
          for r in runs}


def _ratio_table(runs, groups, baseline):
  """{group: (measured median ratio, predicted median ratio, per-seed log
  measured ratios)} of each group's T over the baseline group's, paired by
  seed; trials sorted by the one rule first (returned as Trials)."""
  trials = base.sort_trials([r for r in runs if r.group in groups])
  rounds = {g: _per_seed([r for r in trials.usable if r.group == g])
            for g in groups}
  table = {}
  for g in groups:
    pairs = [(t / rounds[baseline][s][0],
              None if not (p and rounds[baseline][s][1]) else
              p / rounds[baseline][s][1])
             for s, (t, p) in rounds[g].items() if s in rounds[baseline]]
    measured = [a for a, _ in pairs]
    predicted = [b for _, b in pairs if b is not None]
    table[g] = (float(np.median(measured)) if measured else None,
                float(np.median(predicted)) if len(predicted) == len(pairs)
                and predicted else None,
                [math.log(a) for a in measured])
  return table, trials


def _agrees(measured, predicted) -> str:
  if measured is None or predicted is None:
    return 'INCONCLUSIVE'
  return ('PASS' if abs(math.log(measured / predicted)) <=
          math.log(RATIO_FACTOR) else 'FAIL')


def _fmt(value) -> str:
  return '-' if value is None else f'{value:.2f}'


class C6:
  """K local steps substitute for rounds as the prediction says (E2, at
  two client steps): for every K and step, the median over seeds of the
  efficiency K T(K) / T(1) is within RATIO_FACTOR of the predicted
  K T_pred(K) / T_pred(1) (FAIL if not).

  The breakdown K, the smallest with an efficiency above BREAKDOWN (local
  steps then save less than half the rounds they cost), is reported at
  each step, measured and predicted, to show it move with the step. It gets
  no verdict of its own: where the two breakdowns differ, some K has
  e > BREAKDOWN >= p (or the reverse) with e/p within RATIO_FACTOR, so both
  lie within RATIO_FACTOR of BREAKDOWN: a difference the ratio criterion
  already allows, and one it FAILs otherwise."""
  id = 'C6'
  figure = 'E2_local_steps.png'
  BREAKDOWN = 2.0
  claim = ('K local steps substitute for communication rounds: at each '
           'client step the efficiency K T(K) / T(1), and so the K where it '
           'breaks down, follow the linearized prediction.')
  tests = ('test_c6_fails_when_the_efficiency_departs',)

  def _breakdown(self, rows, column):
    return next((k for k, row in rows if row[column] is not None and
                 row[column] > self.BREAKDOWN), None)

  def _step(self, runs, lr):
    """(verdicts, text, [(K, measured, predicted efficiency)]) of one
    client step."""
    groups = sorted({r.group for r in runs if r.config['client_lr'] == lr},
                    key=lambda g: int(g[1:].split('_')[0]))
    k1 = next((g for g in groups if g.startswith('K1_')), None)
    if k1 is None:
      return ['INCONCLUSIVE'], f'lr {lr:g}: no K = 1 run', []
    table, trials = _ratio_table(runs, groups, k1)
    rows = []
    for g in groups:
      k = int(g[1:].split('_')[0])
      measured, predicted, _ = table[g]
      rows.append((k, (None if measured is None else k * measured,
                       None if predicted is None else k * predicted)))
    verdicts = [trials.verdict or 'PASS'] + [_agrees(*row)
                                            for _, row in rows]
    measured_k, predicted_k = (self._breakdown(rows, 0),
                               self._breakdown(rows, 1))
    text = (f'lr {lr:g}: ' + ', '.join(
        f'K={k}: {_fmt(e)} ({_fmt(p)})' for k, (e, p) in rows) +
            f'; breakdown K {measured_k} (predicted {predicted_k})' +
            (f'; not usable: {trials.describe()}' if trials.verdict else ''))
    return verdicts, text, [(k, e, p) for k, (e, p) in rows]

  def __call__(self, runs):
    criterion = (f'for every K and client step, the median over seeds of '
                 f'K T(K)/T(1) is within a factor {RATIO_FACTOR} of the '
                 f'predicted K T_pred(K)/T_pred(1) (the breakdown K, first '
                 f'efficiency > {self.BREAKDOWN:g}, is shown per step)')
    e2 = base.select(runs, suite.LOCAL_STEPS)
    verdicts, texts, efficiency = [], [], {}
    for lr in sorted({r.config['client_lr'] for r in e2}, reverse=True):
      v, text, efficiency[lr] = self._step(e2, lr)
      verdicts += v
      texts.append(text)
    return base.Claim(
        self.id, self.claim,
        'K T(K)/T(1) measured (predicted): ' + ('; '.join(texts) or 'no E2'),
        criterion, base.worst(verdicts), self.figure,
        {'efficiency': efficiency}, base.fails_on(self.tests))


def _zeta(runs, group):
  values = [r.theory['zeta2'] for r in runs if r.group == group and
            r.theory and r.theory.get('zeta2') is not None]
  return float(np.median(values)) if values else None


class C7:
  """Non-iid partitions slow Local GD by what the prediction says (E4 at
  the full client step): for each partition, the median over seeds of
  T(partition) / T(iid) is within RATIO_FACTOR of the predicted ratio
  (FAIL if not); and heterogeneity is measurable: some partition with
  zeta^2 >= ZETA_FACTOR zeta^2(iid) has a per-seed log(T/T_iid) whose 95%
  t-interval excludes 0 (otherwise the data cannot tell "non-iid matters
  as predicted" from "non-iid does not matter": INCONCLUSIVE)."""
  id = 'C7'
  figure = 'E4_heterogeneity.png'
  ZETA_FACTOR = 2.0
  claim = ('Non-iid partitions (Dirichlet label skew, shards) still converge '
           'at large width, slower than iid by what the linearized '
           'prediction says.')
  tests = ('test_c7_fails_when_a_partition_misses_its_predicted_ratio',
           'test_c7_is_inconclusive_when_heterogeneity_is_not_measurable')

  def __call__(self, runs):
    criterion = (f'each partition\'s median T/T(iid) within a factor '
                 f'{RATIO_FACTOR} of the predicted ratio; and for some '
                 f'partition with zeta^2 >= {self.ZETA_FACTOR:g} zeta^2(iid) '
                 'the per-seed log(T/T_iid) has a 95% t-interval excluding 0')
    e4 = [r for r in base.select(runs, suite.HETEROGENEITY)
          if not r.group.endswith('_half')]
    groups = sorted({r.group for r in e4})
    if 'iid' not in groups:
      return base.Claim(self.id, self.claim, 'no iid baseline', criterion,
                        'INCONCLUSIVE', self.figure,
                        fails_on=base.fails_on(self.tests))
    table, trials = _ratio_table(e4, groups, 'iid')
    zeta_iid = _zeta(e4, 'iid')
    verdicts = [trials.verdict or 'PASS']
    measurable, rows = False, []
    for g in groups:
      measured, predicted, logs = table[g]
      zeta = _zeta(e4, g)
      if g != 'iid':
        verdicts.append(_agrees(measured, predicted))
        strong = zeta and zeta_iid and zeta >= self.ZETA_FACTOR * zeta_iid
        fit = fits.mean_fit(logs) if strong and len(logs) > 1 else None
        measurable |= bool(fit and (fit.ci_low > 0 or fit.ci_high < 0))
      rows.append(f'{g}: {_fmt(measured)} ({_fmt(predicted)}), zeta^2 ' +
                  ('-' if zeta is None else f'{zeta:.3g}'))
    if not measurable:
      verdicts.append('INCONCLUSIVE')
    stat = ('T/T(iid) measured (predicted): ' + '; '.join(rows) +
            f'; heterogeneity measurable: {"yes" if measurable else "no"}' +
            (f'; not usable: {trials.describe()}' if trials.verdict else ''))
    return base.Claim(self.id, self.claim, stat, criterion,
                      base.worst(verdicts), self.figure,
                      {'ratios': {g: table[g][:2] for g in groups}},
                      base.fails_on(self.tests))


class C16:
  """Heterogeneity is second order in the step (THEORY.md: sum_i p_i A_i^K =
  I - (eta K/n) H + O((eta K)^2), the first order independent of the
  partition): at half the client step (E4 '*_half', budgets again from
  the prediction, so about twice the rounds) the non-iid penalty
  T(shards_1)/T(iid) - 1 shrinks by the factor the runs' own predictions
  give, within SHRINK_FACTOR (the penalty is a difference of two ratios
  each within RATIO_FACTOR's noise, so its ratio gets a wider factor);
  INCONCLUSIVE if the full-step penalty is below MIN_PENALTY (nothing to
  shrink). In this parametrization (eta = c/m, H ~ m) eta H tends to a
  limit as m grows, so the predicted penalty tends to a nonzero limit:
  heterogeneity does not vanish with width in the rounds to eps here.
  """
  id = 'C16'
  figure = 'E4_heterogeneity.png'
  SHRINK_FACTOR = 1.3
  MIN_PENALTY = 0.05
  claim = ('Heterogeneity is second order in the step: halving the client '
           'step shrinks the non-iid penalty T(shards)/T(iid) - 1 by the '
           'factor the linearized prediction gives.')
  tests = ('test_c16_fails_when_the_penalty_does_not_shrink_as_predicted',)

  def __call__(self, runs):
    criterion = (f'(median T(shards_1)/T(iid) - 1) at half the step over the '
                 f'same at the full step, within a factor '
                 f'{self.SHRINK_FACTOR} of the predicted shrink (from T_pred); '
                 f'INCONCLUSIVE if the full-step penalty < {self.MIN_PENALTY}')
    e4 = base.select(runs, suite.HETEROGENEITY)
    full, f_trials = _ratio_table(e4, ['iid', 'shards_1'], 'iid')
    half, h_trials = _ratio_table(e4, ['iid_half', 'shards_1_half'],
                                  'iid_half')
    (pm, pp, _), (hm, hp, _) = full['shards_1'], half['shards_1_half']
    verdicts = [f_trials.verdict or 'PASS', h_trials.verdict or 'PASS']
    if None in (pm, pp, hm, hp) or pm - 1 < self.MIN_PENALTY or pp <= 1:
      verdicts.append('INCONCLUSIVE')
      shrink = predicted = None
    else:
      shrink, predicted = (hm - 1) / (pm - 1), (hp - 1) / (pp - 1)
      verdicts.append('FAIL' if shrink <= 0 or abs(math.log(
          shrink / predicted)) > math.log(self.SHRINK_FACTOR) else 'PASS')
    stat = (f'penalty at the full step {_fmt(pm and pm - 1)} (predicted '
            f'{_fmt(pp and pp - 1)}), at half the step {_fmt(hm and hm - 1)} '
            f'(predicted {_fmt(hp and hp - 1)}); shrink {_fmt(shrink)} '
            f'(predicted {_fmt(predicted)})')
    for trials in (f_trials, h_trials):
      if trials.verdict:
        stat += f'; not usable: {trials.describe()}'
    return base.Claim(self.id, self.claim, stat, criterion,
                      base.worst(verdicts), self.figure,
                      {'shrink': shrink, 'predicted_shrink': predicted},
                      base.fails_on(self.tests))


def _reach_claim(claim_id, claim, criterion, figure, tests, runs):
  trials = base.sort_trials(runs)
  verdict = trials.verdict or ('PASS' if runs else 'INCONCLUSIVE')
  stat = '; '.join([f'{base.label(r)}: {r.outcome().describe()}'
                    for r in trials.usable] +
                   [f'{n}: {why}' for n, why in trials.failed + trials.open])
  return base.Claim(claim_id, claim, stat or 'no run', criterion, verdict,
                    figure, fails_on=base.fails_on(tests))


class C8:
  """Local SGD follows its own prediction, the exact expected loss of the
  linearized run (second_moment.py; summary['theory']['expected_curve']):
  over E5's local_sgd seeds (B = suite.LOCAL_SGD_BATCH),

    D = max_{t <= T_E} |log(mean_s L_{s,t} / mean_s E_s[L_t])|,

  T_E the median over seeds of the expected curve's crossing of eps F_0,
  within the band Z max_t sd_t / sqrt(S) + G: sd_t the sd over the S seeds
  of log(L_{s,t} / E_s[L_t]) (Z = 4 standard errors of their mean), and G
  the linearization error the full-batch run shows at the same setting,
  the median over E5's local_gd seeds of their max gap to their curve.
  Control: the same D for the loss of the expected residual (P_t, the
  Local GD curve, which leaves out the minibatch variance) must lie
  outside the band; if it does not, the band cannot tell the expected loss
  from the mean, and the claim is INCONCLUSIVE. Every trial must also reach
  eps (the one rule)."""
  id = 'C8'
  Z = 4.0
  figure = 'E5_algorithms.png'
  claim = ('Local SGD (stochastic minibatches) converges, and its loss '
           'averaged over seeds follows the exact expected loss of the '
           'linearized run, not the loss of its expected residual.')
  tests = ('test_c8_fails_on_a_plateau',
           'test_c8_fails_when_the_mean_loss_leaves_its_prediction')

  def criterion(self):
    return (f'every Local SGD trial reaches eps F_0; max over t <= T_E of '
            f'|log(mean_s L / mean_s E[L])| <= {self.Z:g} max_t sd_t/sqrt(S) '
            '+ the Local GD gap at the same setting; the expected-residual '
            'curve must fall outside that band (else INCONCLUSIVE)')

  def _gap(self, runs):
    gaps = [g[0] for g in map(base.gap_to_prediction, runs) if g]
    return float(np.median(gaps)) if gaps else None

  def _distances(self, runs):
    """(D to E[L], D to the mean residual's curve, max_t sd_t, T_E)."""
    theories = [r.theory for r in runs]
    t_e = float(np.median([t['expected_rounds_to_eps'] for t in theories]))
    end = min([math.ceil(t_e)] + [len(t['expected_curve']) - 1
                                  for t in theories] +
              [r.series(runs_lib.LOSS)[0][-1] for r in runs])
    losses = np.array([r.series(runs_lib.LOSS)[1][:end + 1] for r in runs])
    expected = np.array([t['expected_curve'][:end + 1] for t in theories])
    mean = np.array([t['curve'][:end + 1] for t in theories])
    d = np.max(np.abs(np.log(losses.mean(0) / expected.mean(0))))
    d_mean = np.max(np.abs(np.log(losses.mean(0) / mean.mean(0))))
    sd = np.max(np.std(np.log(losses / expected), axis=0, ddof=1))
    return float(d), float(d_mean), float(sd), t_e

  def __call__(self, runs):
    trials = base.sort_trials(base.select(runs, suite.ALGORITHMS, 'local_sgd'))
    usable = [r for r in trials.usable if r.theory and
              r.theory.get('expected_curve') and
              r.theory.get('expected_rounds_to_eps')]
    gap = self._gap(base.sort_trials(base.select(
        runs, suite.ALGORITHMS, 'local_gd')).usable)
    verdicts = [trials.verdict or 'PASS']
    if len(usable) < 2 or gap is None or len(usable) < len(trials.usable):
      verdicts.append('INCONCLUSIVE')
      stat = (f'{len(usable)} seeds with an expected curve, Local GD gap '
              f'{gap}; ' + trials.describe())
      return base.Claim(self.id, self.claim, stat, self.criterion(),
                        base.worst(verdicts), self.figure,
                        fails_on=base.fails_on(self.tests))
    d, d_mean, sd, t_e = self._distances(usable)
    band = self.Z * sd / math.sqrt(len(usable)) + gap
    control = 'FAIL' if d_mean > band else 'PASS'
    verdicts.append('FAIL' if d > band else 'PASS')
    if control != 'FAIL':
      verdicts.append('INCONCLUSIVE')
    stat = (f'{len(usable)} seeds, B = {usable[0].config["batch_size"]}: '
            f'D = {d:.3f} to E[L] over t <= {t_e:.1f}, band {band:.3f} '
            f'({self.Z:g} x {sd:.3f}/sqrt({len(usable)}) + Local GD gap '
            f'{gap:.3f}); control, D to the expected residual\'s loss: '
            f'{d_mean:.3f}: {control}' +
            (f'; not usable: {trials.describe()}' if trials.verdict else ''))
    return base.Claim(self.id, self.claim, stat, self.criterion(),
                      base.worst(verdicts), self.figure,
                      {'d': d, 'd_mean': d_mean, 'band': band},
                      base.fails_on(self.tests, ('control: the expected '
                                                 'residual\'s curve', control)))


class C9:
  """Wide networks reach eps: every seed at E1's widest lazy width."""
  id = 'C9'
  tests = ('test_c9_fails_when_a_wide_run_diverges',)

  def __call__(self, runs):
    lazy = base.select(runs, suite.WIDTH, 'lazy')
    widest = base.select(lazy, suite.WIDTH, 'lazy', width=max(
        (r.config['width'] for r in lazy), default=0))
    return _reach_claim(self.id, 'Wide networks reach epsilon.',
                        'every seed at the largest width of E1 reaches eps '
                        'F_0', 'E1_loss.png', self.tests, widest)


class C11:
  """A demonstration outside the theory (E7: cross-entropy, all layers):
  the final train/loss is below the initial one."""
  id = 'C11'
  tests = ('test_c11_fails_when_the_loss_does_not_fall',)

  def __call__(self, runs):
    claim = ('Demonstration outside the theory (cross-entropy, all layers '
             'trained): on real data (digits) Local SGD lowers the training '
             'loss.')
    trials = base.sort_trials(base.select(runs, suite.REAL_DATA), reach=False)
    verdicts, rows = [trials.verdict or 'PASS'], []
    for r in trials.usable:
      _, losses = r.series(runs_lib.LOSS)
      first, final = losses[0], losses[-1]
      verdicts.append('PASS' if final < first else 'FAIL')
      rows.append(f'{r.config["dataset"]}: loss {first:.3g} -> {final:.3g}, '
                  f'train acc {r.last(runs_lib.TRAIN_ACCURACY) or math.nan:.3f}, '
                  f'test acc {r.last(runs_lib.TEST_ACCURACY) or math.nan:.3f}')
    if not runs_present(trials):
      verdicts.append('INCONCLUSIVE')
    stat = '; '.join(rows + ([trials.describe()] if trials.verdict else []))
    return base.Claim(self.id, claim, stat or 'no run',
                      'final train/loss < initial', base.worst(verdicts),
                      'E7_real_data.png', fails_on=base.fails_on(self.tests))


def runs_present(trials) -> bool:
  return bool(trials.usable or trials.open or trials.failed)
