"""Every claim on constructed run records (no training): a PASS, a FAIL and
an INCONCLUSIVE for each, built so the statistic sits on a known side of
its criterion. The FAIL cases are the ones the report's 'seen to FAIL on'
column names.

A run's loss crosses eps F_0 at T exactly: L_t = F_0 eps^(t/T), and its
prediction at T_pred: P_t = F_0 eps^(t/T_pred) (both geometric, so the
log-linear interpolated crossing is exact).
"""

import inspect
import math
import sys

import numpy as np
import pytest

from tff_localsgd.analysis import claims as claims_lib
from tff_localsgd.analysis import runs as runs_lib
from tff_localsgd.analysis.claims import base
from tff_localsgd.analysis.claims import federated
from tff_localsgd.analysis.claims import lazy
from tff_localsgd.analysis.claims import prediction
from tff_localsgd.analysis.claims import threshold

F0, EPS = 1.0, 1e-2
SEEDS = range(4)


def geometric(cross, rounds):
  return [F0 * EPS ** (t / cross) for t in range(rounds + 1)]


def make(study, group, seed=0, *, T=20.0, T_pred=20.0, rounds=None,
         status='completed', losses=None, theory=None, steps=(), last=None,
         **config):
  """A recorded run: config defaults of the theory's setting, a loss curve
  crossing eps F_0 at T (or `losses`), its prediction crossing at T_pred
  (None: no prediction), and `last`: {column: value} at the final round."""
  rounds = rounds or math.ceil(2 * (T_pred or T))
  cfg = dict(width=1024, num_examples=64, seed=seed, eps=EPS, client_lr=8.0,
             local_steps=5, depth=1, dataset='synthetic', partition='iid')
  cfg.update(config)
  losses = geometric(T, rounds) if losses is None else losses
  rows = [{'round': t, 'train_loss': v} for t, v in enumerate(losses)]
  rows[-1].update(last or {})
  summary = {'status': status, 'zero_predictor_loss': F0}
  if T_pred is not None:
    summary['theory'] = dict(
        gram_set='train', rounds_to_eps=T_pred, zero_predictor_loss=F0,
        curve=geometric(T_pred, max(rounds, math.ceil(T_pred) + 1)),
        lambda_min=0.1 * cfg['width'], zeta2=1.0, smooth_bound=1.0,
        **(theory or {}))
  name = '_'.join(f'{k}-{v}' for k, v in sorted(config.items())) + \
      f'_seed-{seed}'
  return runs_lib.Run(study=study, group=group, name=name, path='',
                      config=cfg, summary=summary, rows=rows,
                      steps=list(steps))


def verdict(claim, runs):
  result = claim(runs)
  return (result[0] if isinstance(result, list) else result).verdict


# The one rule for missing, crashed and failed trials.


def test_the_one_rule_names_every_trial_it_does_not_use():
  runs = [make('E1_width', 'lazy', 0),
          make('E1_width', 'lazy', 1, status='diverged'),
          make('E1_width', 'lazy', 2, status='failed'),
          make('E1_width', 'lazy', 3, T=100.0, T_pred=20.0, rounds=40)]
  trials = base.sort_trials(runs)
  assert [base.label(r) for r in trials.usable] == [base.label(runs[0])]
  assert trials.failed == ((base.label(runs[1]), 'diverged'),)
  assert [n for n, _ in trials.open] == [base.label(runs[2]),
                                        base.label(runs[3])]
  assert 'censored' in trials.open[1][1] and trials.verdict == 'FAIL'
  assert base.sort_trials(runs[2:]).verdict == 'INCONCLUSIVE'
  assert base.sort_trials(runs[:1]).verdict is None


def test_a_planned_trial_missing_from_disk_is_judged_missing():
  from tff_localsgd import suite
  steps = suite.plan('smoke', {'E1_width'})
  runs = claims_lib.with_missing([], steps)
  assert len(runs) == sum(len(t) for _, _, t in steps)
  assert {r.status for r in runs} == {'missing'}
  c9 = federated.C9()(runs)
  assert c9.verdict == 'INCONCLUSIVE' and 'status missing' in c9.statistic


def test_check_prediction_reads_the_interpolated_crossings():
  run = make('E1_width', 'lazy', T=22.0, T_pred=20.0)
  check = base.check_prediction(run)
  assert check.rounds == pytest.approx(22.0, rel=1e-9)
  assert check.log_ratio == pytest.approx(math.log(22 / 20), rel=1e-9)
  # log L_t - log P_t = t log(eps) (1/22 - 1/20), largest at t = T_pred.
  assert check.signed_gap == pytest.approx(20 * math.log(EPS) *
                                           (1 / 22 - 1 / 20), rel=1e-9)
  assert check.signed_gap > 0 and check.max_gap == check.signed_gap


# C1 and C15: the widest width follows the prediction; the narrowest not.


def width_runs(study='E1_width', group='lazy', wide_T=20.0, narrow_T=30.0,
               widths=(256, 2048)):
  return [make(study, group, s, width=m,
               T=wide_T if m == widths[-1] else narrow_T)
          for m in widths for s in SEEDS]


def test_c1_passes_when_wide_follows_and_narrow_does_not():
  claim = prediction.C1()(width_runs())
  assert claim.verdict == 'PASS'
  assert 'control E1 lazy m=256: FAIL here' in claim.fails_on


def test_c1_fails_when_a_seed_misses_its_prediction():
  runs = width_runs()
  runs[-1] = make('E1_width', 'lazy', 3, width=2048, T=24.0)  # log 0.18
  assert prediction.C1()(runs).verdict == 'FAIL'
  runs[-1] = make('E1_width', 'lazy', 3, width=2048, status='diverged')
  assert prediction.C1()(runs).verdict == 'FAIL'


def test_c1_is_inconclusive_when_the_control_also_passes():
  claim = prediction.C1()(width_runs(narrow_T=20.0))
  assert claim.verdict == 'INCONCLUSIVE'
  assert 'Control m=256: PASS' in claim.statistic


def test_c1_is_inconclusive_on_a_crashed_seed():
  runs = width_runs()
  runs[-1] = make('E1_width', 'lazy', 3, width=2048, status='failed')
  claim = prediction.C1()(runs)
  assert claim.verdict == 'INCONCLUSIVE' and 'status failed' in \
      claim.statistic


def test_c15_fails_when_digits_miss_the_prediction():
  assert prediction.C15()(width_runs('E8_digits_theory', 'all')).verdict \
      == 'PASS'
  runs = width_runs('E8_digits_theory', 'all', wide_T=30.0)
  assert prediction.C15()(runs).verdict == 'FAIL'
  assert prediction.C15()([]).verdict == 'INCONCLUSIVE'


# C2: the rounds follow the prediction across n.


def grid_runs(exponent_error=0.0, narrow_factor=2.0):
  """E3 at m = 1024 (n = 32..128 and the n = 256 group) and m = 64:
  T_pred = 5 sqrt(n), T = T_pred (n/32)^exponent_error at the wide width."""
  runs = []
  for s in SEEDS:
    for n, group in ((32, 'grid'), (64, 'grid'), (128, 'grid'),
                     (256, 'n256')):
      t_pred = 5 * math.sqrt(n) * (1 + 0.01 * s)
      runs.append(make('E3_grid', group, s, num_examples=n, width=1024,
                       T_pred=t_pred,
                       T=t_pred * (n / 32) ** exponent_error))
      if group == 'grid':
        runs.append(make('E3_grid', group, s, num_examples=n, width=64,
                         T_pred=t_pred, T=t_pred * narrow_factor * 0.99,
                         rounds=math.ceil(2 * t_pred * narrow_factor)))
  return runs


def test_c2_passes_when_rounds_follow_the_prediction_in_n():
  claim = prediction.C2()(grid_runs())
  assert claim.verdict == 'PASS', claim.statistic
  assert 'lambda_min(H_0)/n by n: n=32: 3.2, n=64: 1.6' in claim.statistic
  assert 'control E3 m=64: FAIL here' in claim.fails_on


def test_c2_fails_when_the_exponent_in_n_departs():
  # T = T_pred (n/32)^0.25: at n = 256 log(T/T_pred) = 0.52 > log 1.25.
  assert prediction.C2()(grid_runs(exponent_error=0.25)).verdict == 'FAIL'
  # A small departure within the per-run bound still moves the exponent:
  # the paired difference 0.1 sits inside +-0.2, so it passes.
  assert prediction.C2()(grid_runs(exponent_error=0.05)).verdict == 'PASS'


def test_c2_is_inconclusive_when_the_narrow_control_passes_too():
  assert prediction.C2()(grid_runs(narrow_factor=1.0)).verdict == \
      'INCONCLUSIVE'


# C10: per depth.


def test_c10_fails_when_one_depth_misses_its_prediction():
  runs = [make('E6_depth', f'L{d}', s, depth=d, T=20.0)
          for d in (1, 2, 4) for s in (0, 1)]
  assert prediction.C10()(runs).verdict == 'PASS'
  runs[-1] = make('E6_depth', 'L4', 1, depth=4, T=25.0)
  claim = prediction.C10()(runs)
  assert claim.verdict == 'FAIL' and 'L=4: FAIL' in claim.statistic


# C12: the gap falls with width.


def gap_runs(exponent):
  """E3 grid runs whose loss sits above P_t by a constant factor
  exp(0.5 (m/64)^exponent) at every round, so the max gap is that."""
  runs = []
  for n in (16, 32):
    for s in SEEDS:
      for m in (64, 256, 1024):
        gap = 0.5 * (m / 64) ** exponent * math.exp(0.02 * s)
        pred = geometric(20.0, 40)
        runs.append(make('E3_grid', 'grid', s, width=m, num_examples=n,
                         losses=[v * math.exp(gap) for v in pred]))
  return runs


def test_c12_passes_for_a_gap_falling_like_m_to_the_minus_half():
  claim = prediction.C12()(gap_runs(-0.5))
  assert claim.verdict == 'PASS'
  assert claim.data['fit']['exponent'] == pytest.approx(-0.5, abs=1e-9)


def test_c12_fails_when_the_gap_does_not_fall_with_width():
  assert prediction.C12()(gap_runs(0.0)).verdict == 'FAIL'
  assert prediction.C12()(gap_runs(-1.5)).verdict == 'FAIL'


# C3, C4, C13: slopes against width, lazy against the catapult control.


def slope_runs(column, lazy_slope, control_slope, noise=0.05):
  runs = []
  for group, slope in (('lazy', lazy_slope), ('catapult', control_slope)):
    for s in SEEDS:
      rng = np.random.default_rng(s)
      for m in (256, 512, 1024, 2048):
        value = 3.0 * m ** slope * math.exp(rng.normal(0, noise))
        runs.append(make('E1_width', group, s, width=m,
                         last={column: value}))
  return runs


WEIGHT = 'lazy_weight_change_rel_hidden_1'


def test_c3_passes_when_lazy_falls_as_predicted_and_the_control_does_not():
  claims = lazy.C3()(slope_runs(WEIGHT, -1.0, -0.5))
  assert [c.id for c in claims] == ['C3.hidden_1']
  assert claims[0].verdict == 'PASS'
  assert 'control E1 catapult: FAIL here' in claims[0].fails_on


def test_c3_fails_when_the_lazy_slope_is_outside_its_band():
  assert lazy.C3()(slope_runs(WEIGHT, -0.5, -0.5))[0].verdict == 'FAIL'


def test_c3_is_inconclusive_when_the_control_is_not_told_apart():
  # The control slope -0.9 passes the band; the paired difference -0.1 is
  # not below -0.25.
  claim = lazy.C3()(slope_runs(WEIGHT, -1.0, -0.9))[0]
  assert claim.verdict == 'INCONCLUSIVE'
  # A control inside the band but far enough in the paired difference:
  # lazy -1.1, control -0.8 (difference -0.3 < -0.25) separates.
  assert lazy.C3()(slope_runs(WEIGHT, -1.1, -0.8))[0].verdict == 'PASS'


def test_c4_fails_when_the_flips_do_not_fall():
  column = 'lazy_activation_flip_frac'
  assert lazy.C4()(slope_runs(column, -0.5, 0.0)).verdict == 'PASS'
  assert lazy.C4()(slope_runs(column, 0.0, 0.0)).verdict == 'FAIL'


def test_c13_fails_when_the_kernel_moves_with_width():
  column = 'ntk_rel_change'
  assert lazy.C13()(slope_runs(column, -0.5, 0.0)).verdict == 'PASS'
  assert lazy.C13()(slope_runs(column, 0.0, 0.0)).verdict == 'FAIL'


# C5: the per-client bound and flatness in width.


def drift_runs(ratio=0.8, slope=0.0, control_ratio=1.5):
  runs = []
  for group, r in (('lazy', ratio), ('catapult', control_ratio)):
    for s in SEEDS:
      for m in (256, 512, 1024, 2048):
        bound = 0.9 * (m / 256) ** slope
        steps = [{'round': t, 'local_step': k,
                  'smooth_eff': 0.0 if k == 0 else r * bound * (1 + 0.01 * s)}
                 for t in (10, 20) for k in range(5)]
        runs.append(make('E1_width', group, s, width=m, steps=steps))
        runs[-1].summary['theory']['smooth_bound'] = bound
  return runs


def test_c5_passes_under_the_bound_and_flat():
  claim = lazy.C5()(drift_runs())
  assert claim.verdict == 'PASS', claim.statistic
  assert 'control E1 catapult: FAIL here' in claim.fails_on


def test_c5_fails_above_the_per_client_bound():
  claim = lazy.C5()(drift_runs(ratio=1.12))
  assert claim.verdict == 'FAIL' and 'max' in claim.statistic
  assert lazy.C5()(drift_runs(ratio=1.05)).verdict == 'PASS'  # within 10%


def test_c5_fails_when_the_constant_grows_with_width():
  assert lazy.C5()(drift_runs(slope=0.6)).verdict == 'FAIL'


# C6: efficiency of local steps.


def local_step_runs(k5_factor=1.0):
  """T_pred(K) = 40 / K^0.8 at lr 8 and twice that at lr 4."""
  runs = []
  for lr in (8.0, 4.0):
    for k in (1, 5, 20):
      for s in range(3):
        t_pred = 40 / k ** 0.8 * (8 / lr) * (1 + 0.02 * s)
        runs.append(make('E2_local_steps', f'K{k}_lr{lr:g}', s,
                         local_steps=k, client_lr=lr, T_pred=t_pred,
                         T=t_pred * (k5_factor if k == 5 else 1.0)))
  return runs


def test_c6_passes_and_reports_the_breakdown_per_step():
  claim = federated.C6()(local_step_runs())
  assert claim.verdict == 'PASS', claim.statistic
  # K^0.2 efficiency: 5^0.2 = 1.38 <= 2 < 20^0.2 = 1.82? no: 20^0.2 = 1.82,
  # so no K breaks down; the statistic says so at both steps.
  assert claim.statistic.count('breakdown K None (predicted None)') == 2
  assert set(claim.data['efficiency']) == {8.0, 4.0}


def test_c6_fails_when_the_efficiency_departs():
  assert federated.C6()(local_step_runs(k5_factor=1.3)).verdict == 'FAIL'
  assert federated.C6()(local_step_runs(k5_factor=1.15)).verdict == 'PASS'


# C7 and C16: heterogeneity.


def partition_runs(ratio=1.6, predicted=1.6, half_ratio=1.3,
                   half_predicted=1.3, zeta=3.0):
  runs = []
  for s in SEEDS:
    jitter = 1 + 0.02 * s
    for group, t, t_pred, z in (
        ('iid', 20.0, 20.0, 1.0),
        ('shards_1', 20.0 * ratio * jitter, 20.0 * predicted, zeta),
        ('iid_half', 40.0, 40.0, 1.0),
        ('shards_1_half', 40.0 * half_ratio * jitter, 40 * half_predicted,
         zeta)):
      runs.append(make('E4_heterogeneity', group, s, T=t, T_pred=t_pred,
                       theory=None))
      runs[-1].summary['theory']['zeta2'] = z
  return runs


def test_c7_passes_when_heterogeneity_matters_as_predicted():
  claim = federated.C7()(partition_runs())
  assert claim.verdict == 'PASS', claim.statistic
  assert 'heterogeneity measurable: yes' in claim.statistic


def test_c7_fails_when_a_partition_misses_its_predicted_ratio():
  assert federated.C7()(partition_runs(ratio=1.0)).verdict == 'FAIL'


def test_c7_is_inconclusive_when_heterogeneity_is_not_measurable():
  claim = federated.C7()(partition_runs(ratio=1.0, predicted=1.0))
  assert claim.verdict == 'INCONCLUSIVE'
  # Measurable only counts partitions with zeta^2 >= 2 zeta^2(iid).
  assert federated.C7()(partition_runs(zeta=1.5)).verdict == 'INCONCLUSIVE'


def test_c16_passes_when_the_penalty_shrinks_as_predicted():
  claim = federated.C16()(partition_runs())
  assert claim.verdict == 'PASS', claim.statistic
  assert claim.data['predicted_shrink'] == pytest.approx(0.3 / 0.6)


def test_c16_fails_when_the_penalty_does_not_shrink_as_predicted():
  assert federated.C16()(partition_runs(half_ratio=1.6)).verdict == 'FAIL'
  # No penalty at the full step: nothing to shrink.
  assert federated.C16()(partition_runs(ratio=1.0, predicted=1.0)).verdict \
      == 'INCONCLUSIVE'


# C8, C9, C11: reaching eps; the demonstration.


def sgd_runs(factor=1.0, variance=2.0, seeds=SEEDS):
  """E5: Local SGD whose seed losses are factor E[L_t] (jittered), E[L_t]
  = variance P_t (the expected residual's loss P_t = geometric, T_pred 20),
  and Local GD runs on their curve (gap 0.05)."""
  runs = []
  for s in seeds:
    pred = geometric(20.0, 60)
    expected = [variance ** min(1.0, t / 5) * v for t, v in enumerate(pred)]
    jitter = np.exp(np.random.default_rng(s).normal(0, 0.03, len(pred)))
    run = make('E5_algorithms', 'local_sgd', s, algorithm='local_sgd',
               batch_size=2, losses=list(factor * np.array(expected) *
                                         jitter))
    cross = next(t for t, v in enumerate(expected) if v <= EPS * F0)
    run.summary['theory'].update(expected_curve=expected,
                                 expected_rounds_to_eps=float(cross))
    runs.append(run)
    runs.append(make('E5_algorithms', 'local_gd', s, losses=[
        v * math.exp(0.05) for v in geometric(20.0, 40)]))
  return runs


def test_c8_passes_when_the_mean_loss_follows_the_expected_loss():
  claim = federated.C8()(sgd_runs())
  assert claim.verdict == 'PASS', claim.statistic
  assert claim.data['d'] < claim.data['band'] < claim.data['d_mean']


def test_c8_fails_when_the_mean_loss_leaves_its_prediction():
  assert federated.C8()(sgd_runs(factor=1.6)).verdict == 'FAIL'
  # With no minibatch variance to tell apart, the control passes too.
  assert federated.C8()(sgd_runs(variance=1.01)).verdict == 'INCONCLUSIVE'


def test_c8_fails_on_a_plateau():
  runs = sgd_runs()
  flat = make('E5_algorithms', 'local_sgd', 1, losses=[1.0] * 40)
  runs = [r for r in runs if not (r.group == 'local_sgd' and r.seed == 1)]
  claim = federated.C8()(runs + [flat])
  assert claim.verdict == 'FAIL' and 'plateau' in claim.statistic


def test_c9_fails_when_a_wide_run_diverges():
  runs = width_runs()
  assert federated.C9()(runs).verdict == 'PASS'
  runs[-1] = make('E1_width', 'lazy', 3, width=2048, status='diverged')
  assert federated.C9()(runs).verdict == 'FAIL'


def test_c11_fails_when_the_loss_does_not_fall():
  falling = make('E7_real_data', 'all', dataset='digits')
  assert federated.C11()([falling]).verdict == 'PASS'
  rising = make('E7_real_data', 'all', dataset='digits',
                losses=[1.0, 1.2, 1.5])
  assert federated.C11()([rising]).verdict == 'FAIL'
  assert federated.C11()([]).verdict == 'INCONCLUSIVE'


# Every claim names tests that construct its FAIL, and they exist.


def test_every_claim_names_failing_tests_that_exist():
  here = sys.modules[__name__]
  for claim in claims_lib.CLAIMS:
    assert claim.tests, type(claim).__name__
    for name in claim.tests:
      test = getattr(here, name, None)
      assert test is not None and inspect.isfunction(test), name
      assert "'FAIL'" in inspect.getsource(test) or \
          "'INCONCLUSIVE'" in inspect.getsource(test), name


def test_evaluate_claims_orders_every_claim_by_number():
  claims = claims_lib.evaluate_claims([])
  ids = [c.id for c in claims]
  assert ids == sorted(ids, key=lambda i: (int(i[1:].split('.')[0]), i))
  assert {c.verdict for c in claims} == {'INCONCLUSIVE'}
  assert all(c.fails_on for c in claims)


# C14: the width threshold.


def threshold_runs(beta=-1.0, gamma=1.0, ns=(16, 32, 64),
                   widths=(64, 128, 256, 512, 1024, 2048), scale=8):
  """E3 grid runs with err = |log T/T_pred| = 0.1 (m / m*(n))^beta,
  m*(n) = scale (n / 16)^gamma 16, jittered 1% per seed (capped at 5)."""
  runs = []
  for n in ns:
    for s in SEEDS:
      for m in widths:
        star = scale * 16 * (n / 16) ** gamma
        err = min(5.0, 0.1 * (m / star) ** beta * (1 + 0.01 * s))
        runs.append(make('E3_grid', 'grid', s, width=m, num_examples=n,
                         T_pred=20.0, T=20.0 * math.exp(err)))
  return runs


def test_c14_passes_for_a_threshold_growing_like_n():
  claim = threshold.C14()(threshold_runs())
  assert claim.verdict == 'PASS', claim.statistic
  # m*(n) = 8 n, the seeds' jitter moving it by 1-3%: b = 1.
  assert claim.data['fit']['b'] == pytest.approx(1.0, abs=0.02)


def test_c14_fails_when_the_error_grows_with_width():
  assert threshold.C14()(threshold_runs(beta=0.5)).verdict == 'FAIL'


def test_c14_fails_when_the_threshold_is_steeper_than_proven():
  # m*(n) = 128 (n/16)^7 over n = 16..20: 128 to 610, inside the grid.
  runs = threshold_runs(gamma=7.0, ns=(16, 18, 20))
  assert threshold.C14()(threshold_runs(gamma=5.0, ns=(16, 18, 20))
                         ).verdict == 'PASS'
  claim = threshold.C14()(runs)
  assert claim.data['fit']['ci_low'] > threshold.C14.B_MAX
  assert claim.verdict == 'FAIL'


def test_c14_is_inconclusive_when_the_grid_misses_the_threshold():
  # m*(n) = 128 (n/16)^3 is beyond 2048 at n = 64: right-censored there,
  # which leaves two n to fit b.
  claim = threshold.C14()(threshold_runs(gamma=3.0))
  assert claim.verdict == 'INCONCLUSIVE', claim.statistic
  assert 'n=64: > 2048' in claim.statistic
