"""Tests for the calibration over every run, the width threshold m*(n), its
exponent b, the figures and the theory's widths, on constructed pairs with
known answers (err = c m^beta n^gamma exactly, or hand-computed cases)."""

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tff_localsgd.analysis import calibration as cal
from tff_localsgd.analysis import calibration_figures
from tff_localsgd.analysis import theory_widths
from tff_localsgd.analysis import width_threshold as wt

NS = (16, 32, 64, 128)
WIDTHS = (64, 128, 256, 512, 1024, 2048)
SEEDS = range(4)
C, BETA, GAMMA = math.sqrt(0.012), -0.5, 0.75  # m*(16) = 76.8, m*(128) = 1738
LEVEL = 0.1
T_PRED = 20.0


def pair(n=32, m=256, seed=0, err=0.0, status='reached', predicted=T_PRED,
         gap=None, study='E1', trial=None):
  """A run whose |log(T/T_pred)| is err (T below T_pred for odd seeds);
  without a prediction its T is T_PRED exp(+-err)."""
  sign = -1 if seed % 2 else 1
  rounds = ((predicted or T_PRED) * math.exp(sign * err)
            if status in ('reached', 'censored') else None)
  return cal.Pair(study=study, group='g', trial=trial or f'n{n}_m{m}_s{seed}',
                  n=n, m=m, seed=seed, depth=1, rounds=rounds,
                  predicted=predicted, status=status, gap=gap)


def power_law(n, m):
  return C * m ** BETA * n ** GAMMA


def power_grid(noise=None):
  """err = c m^beta n^gamma in every run, times exp(noise[seed]) if given."""
  return [pair(n, m, s, power_law(n, m) * (1 if noise is None else
                                           math.exp(noise[s])))
          for n in NS for m in WIDTHS for s in SEEDS]


def grid_of(errors_by_cell):
  """Pairs from {(n, m): [err per seed]}; an infinite err is a plateau."""
  return [pair(n, m, s, e, status='plateau' if math.isinf(e) else 'reached')
          for (n, m), errs in errors_by_cell.items()
          for s, e in enumerate(errs)]


# The pair and its error.


def test_err_is_the_absolute_log_ratio():
  assert pair(err=0.3).err == pytest.approx(0.3, abs=1e-15)
  assert pair(seed=1, err=0.3).err == pytest.approx(0.3, abs=1e-15)
  late = cal.Pair('E1', 'g', 't', 32, 256, 0, 1, rounds=11.0, predicted=10.0,
                  status='reached', gap=None)
  assert late.err == pytest.approx(math.log(1.1), rel=1e-14)
  assert pair(status='plateau').err == math.inf
  assert pair(status='diverged').err == math.inf
  assert pair(predicted=None).err is None
  assert cal.percent(math.log(1.1)) == '10.0%'


@pytest.mark.parametrize('changes, match', [
    (dict(status='stalled'), 'status'),
    (dict(status='reached', rounds=None), 'needs rounds'),
    (dict(status='plateau', rounds=5.0), 'has no rounds'),
    (dict(predicted=0.0), 'predicted must be finite'),
    (dict(rounds=math.inf), 'rounds must be finite'),
    (dict(gap=math.nan), 'gap must be >= 0'),
    (dict(m=0), 'n and m'),
])
def test_pair_rejects_bad_input(changes, match):
  fields = dict(study='E1', group='g', trial='t', n=32, m=256, seed=0,
                depth=1, rounds=10.0, predicted=10.0, status='reached',
                gap=None)
  with pytest.raises(ValueError, match=match):
    cal.Pair(**{**fields, **changes})


# 1. Calibration.


def calibration_pairs():
  rng = np.random.default_rng(3)
  reached = [pair(32, m, s, float(rng.uniform(0, 0.4)))
             for m in (256, 512, 1024, 2048) for s in range(5)]
  others = [
      pair(32, 1024, 10, 0.7, status='censored', trial='cens1'),
      pair(32, 2048, 11, 0.1, status='censored', trial='cens2'),
      pair(32, 1024, 12, status='plateau', trial='flat'),
      pair(32, 512, 13, status='diverged', trial='boom'),
      pair(32, 2048, 14, 0.05, predicted=None, trial='nopred'),
      pair(32, 256, 15, status='plateau', trial='narrowflat')]
  return reached, others


def test_calibration_matches_numpy_and_names_every_excluded_run():
  reached, others = calibration_pairs()
  result = cal.calibration(reached + others, min_width=512)
  # Independently: the ratios T/T_pred of the reached runs with m >= 512.
  errors = [abs(math.log(p.rounds / p.predicted)) for p in reached
            if p.m >= 512]
  assert result.count == len(errors) == 15
  assert result.median == pytest.approx(np.median(errors), rel=1e-14)
  assert result.p90 == pytest.approx(np.percentile(errors, 90), rel=1e-14)
  assert result.censored_count == 2
  assert result.censored_median == pytest.approx((0.7 + 0.1) / 2, rel=1e-12)
  excluded = {e.trial.split('/')[-1]: e.reason for e in result.excluded}
  assert {k: v for k, v in excluded.items() if not k.startswith('n32_')} == {
      'cens1': 'censored', 'cens2': 'censored', 'flat': 'plateau',
      'boom': 'diverged', 'nopred': 'no prediction', 'narrowflat': 'm < 512'}
  narrow = [p.label for p in reached if p.m < 512]
  assert [e.trial for e in result.excluded if e.reason == 'm < 512'] == (
      narrow + ['E1/g/narrowflat'])
  assert len(result.excluded) + result.count == len(reached + others)


def test_headline_gives_the_percentages_and_every_count():
  runs = [pair(m=512, seed=s, err=math.log(r))
          for s, r in enumerate((1.05, 1.10, 1.20))]
  runs += [pair(m=512, seed=7, err=math.log(1.3), status='censored'),
           pair(m=512, seed=8, status='plateau'),
           pair(m=64, seed=9, err=0.0)]
  text = cal.headline(cal.calibration(runs, min_width=512))
  # The 90th percentile of (l1, l2, l3) is l2 + 0.8 (l3 - l2), by hand.
  p90 = 1.10 * (1.20 / 1.10) ** 0.8 - 1
  assert text.startswith(
      'The linearized prediction from H0 gives the rounds to eps within '
      f'10.0% (median) and {100 * p90:.1f}% (90th percentile) over 3 runs '
      'with m >= 512.')
  assert ('Not counted: 1 censored (still converging at the budget; median '
          '30.0% at the projected round), 1 plateau, 1 narrower (m < 512, '
          'in the table by width).') in text


def test_headline_without_runs_says_so():
  text = cal.headline(cal.calibration([pair(status='plateau')], 512))
  assert text.startswith('No runs with m >= 512 reached eps')
  assert '1 m < 512' not in text and '1 narrower' in text


def test_width_table_counts_and_medians():
  runs = [pair(m=64, seed=s, err=e) for s, e in enumerate((0.1, 0.3, 0.2))]
  runs += [pair(m=64, seed=5, err=9.0, status='censored'),
           pair(m=128, seed=0, err=0.05), pair(m=128, seed=1, status='plateau'),
           pair(m=128, seed=2, predicted=None, err=0.01)]
  rows = cal.width_table(runs)
  assert rows == (
      cal.WidthRow(width=64, count=3, median=pytest.approx(0.2), censored=1,
                   failed=0, unpredicted=0),
      cal.WidthRow(width=128, count=1, median=pytest.approx(0.05),
                   censored=0, failed=1, unpredicted=1))
  table = cal.width_markdown(rows)
  assert '| 64 | 3 | 0.200 | 22.1% | 1 | 0 | 0 |' in table
  assert '| 128 | 1 | 0.050 | 5.1% | 0 | 1 | 1 |' in table


# 2. The grid and the threshold.


def test_error_grid_is_the_power_law_with_seed_counts():
  grid = wt.error_grid(power_grid())
  assert grid.ns == NS and grid.widths == WIDTHS
  for cell in grid.cells:
    assert cell.e == pytest.approx(power_law(cell.n, cell.m), rel=1e-12)
    assert cell.seeds == tuple(SEEDS) and cell.censored == cell.failed == 0


def test_error_grid_median_counts_censored_and_failed_seeds():
  runs = [pair(seed=0, err=0.1), pair(seed=1, err=0.5, status='censored'),
          pair(seed=2, status='plateau'), pair(seed=3, predicted=None)]
  grid = wt.error_grid(runs)
  (cell,) = grid.cells
  # Median of (0.1, 0.5, inf): the censored run at its projection counts.
  assert cell.e == pytest.approx(0.5) and cell.values[2] == math.inf
  assert (cell.seeds, cell.censored, cell.failed) == ((0, 1, 2), 1, 1)
  assert grid.excluded == (cal.Excluded('E1/g/n32_m256_s3', 'no prediction'),)
  two_failed = runs[:1] + [pair(seed=s, status='diverged') for s in (1, 2)]
  assert wt.error_grid(two_failed).cells[0].e == math.inf


def test_error_grid_on_the_gap_and_its_checks():
  runs = [pair(seed=s, err=0.3, gap=g) for s, g in enumerate((0.2, 0.4, 0.9))]
  runs.append(pair(seed=3, err=0.3, gap=None))
  grid = wt.error_grid(runs, statistic='gap')
  assert grid.cells[0].e == pytest.approx(0.4)
  assert grid.excluded == (cal.Excluded('E1/g/n32_m256_s3', 'no gap'),)
  with pytest.raises(ValueError, match='statistic'):
    wt.error_grid(runs, statistic='loss')
  with pytest.raises(ValueError, match='two runs at n=32, m=256, seed=0'):
    wt.error_grid([pair(), pair(study='E2')])


def one_row(errors, widths=(64, 128, 256), level=LEVEL):
  """m*(32) from one seed per width with the given errors."""
  grid = wt.error_grid(grid_of({(32, m): [e] for m, e in zip(widths, errors)}))
  (found,) = wt.threshold(grid, level)
  return found


def test_threshold_interpolates_in_log_m_and_log_e_by_hand():
  # Between (128, 0.2) and (256, 0.05): t = log(2)/log(4) = 1/2.
  found = one_row((0.4, 0.2, 0.05))
  assert found.value == pytest.approx(128 * math.sqrt(2), rel=1e-12)
  assert (found.censoring, found.bracket, found.stays_below) == (
      'none', (128, 256), True)
  assert found.widths == (64, 128, 256)
  np.testing.assert_allclose(found.errors, (0.4, 0.2, 0.05), rtol=1e-12)


def test_threshold_takes_the_first_crossing_and_flags_a_rise():
  # Between (64, 0.4) and (128, 0.05): t = log(4)/log(8) = 2/3.
  found = one_row((0.4, 0.05, 0.2))
  assert found.value == pytest.approx(64 * 2 ** (2 / 3), rel=1e-12)
  assert found.stays_below is False


def test_threshold_censored_both_ways_never_absent():
  right = one_row((0.5, 0.3, 0.11))
  assert (right.censoring, right.value, right.bracket) == ('right', 256, None)
  left = one_row((0.09, 0.05, 0.01))
  assert (left.censoring, left.value, left.stays_below) == ('left', 64, True)


def test_threshold_limits_at_inf_above_and_zero_below():
  assert one_row((math.inf, 0.05, 0.01)).value == 128
  assert one_row((0.3, 0.2, 0.0)).value == 128
  with pytest.raises(ValueError, match='level'):
    one_row((0.3, 0.2, 0.0), level=0.0)


def test_threshold_of_the_power_law_is_analytic():
  found = wt.threshold(wt.error_grid(power_grid()), LEVEL)
  for t in found:
    # e = level at m* = (level / (c n^gamma))^(1/beta); the line in
    # (log m, log e) is exact for a power law.
    expected = (LEVEL / (C * t.n ** GAMMA)) ** (1 / BETA)
    assert t.censoring == 'none'
    assert t.value == pytest.approx(expected, rel=1e-12)


# The exponent b.


def test_exponent_fit_recovers_minus_gamma_over_beta_exactly():
  fit = wt.exponent_fit(power_grid(), LEVEL, n_boot=200)
  assert fit.b == pytest.approx(-GAMMA / BETA, rel=1e-12)
  assert fit.prefactor == pytest.approx((LEVEL / C) ** (1 / BETA), rel=1e-12)
  # Every seed has the same error: every draw gives the same b.
  assert fit.ci_low == pytest.approx(fit.b, rel=1e-12)
  assert fit.ci_high == pytest.approx(fit.b, rel=1e-12)
  assert (fit.ns, fit.censored, fit.censored_draws) == (NS, (), 0)


def test_exponent_fit_leaves_censored_n_out_and_names_them():
  errors = {(n, m): [power_law(n, m)] * 2 for n in NS for m in WIDTHS}
  errors.update({(16, m): [0.01] * 2 for m in WIDTHS})  # left-censored
  errors.update({(128, m): [1.0] * 2 for m in WIDTHS})  # right-censored
  fit = wt.exponent_fit(grid_of(errors), LEVEL, n_boot=50)
  assert fit.ns == (32, 64) and fit.censored == ((16, 'left'),
                                                  (128, 'right'))
  assert fit.b == pytest.approx(-GAMMA / BETA, rel=1e-12)


def test_exponent_fit_needs_two_uncensored_n():
  errors = {(n, m): [1.0] for n in NS for m in WIDTHS}
  errors[(32, 64)], errors[(32, 128)] = [0.2], [0.05]
  fit = wt.exponent_fit(grid_of(errors), LEVEL, n_boot=10)
  assert math.isnan(fit.b) and math.isnan(fit.ci_low)
  assert fit.ns == (32,) and fit.censored_draws == fit.n_boot == 10


def test_bootstrap_draws_with_a_censored_threshold_open_the_interval():
  # At n = 16 the wide cell's median is 0.05 unless a resample of its three
  # seeds draws 0.5 at least twice (probability 7/27): then m*(16) > 128 is
  # right-censored. n = 16 is the smaller n, so a larger m*(16) lowers b:
  # such a draw knows only b <= b(m*(16) = 128) = log2(m*(32) / 128) < 0.
  errors = {(16, 64): [0.5] * 3, (16, 128): [0.05, 0.05, 0.5],
            (32, 64): [0.5] * 3, (32, 128): [0.05] * 3}
  fit = wt.exponent_fit(grid_of(errors), LEVEL, n_boot=2000, seed=1)
  assert fit.b == pytest.approx(0.0, abs=1e-12)
  p = 7 / 27
  assert abs(fit.censored_draws / 2000 - p) < 4 * math.sqrt(p * (1 - p) /
                                                            2000)
  # Over 2.5% of the draws reach -inf; the exact draws (b = 0) fill the top.
  assert fit.ci_low == -math.inf
  assert fit.ci_high == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_censored_at_the_larger_n_bounds_b_from_below():
  # The mirror: now n = 32, the larger n, is right-censored in 7/27 of the
  # draws, which raises b without limit: only the upper bound opens.
  errors = {(16, 64): [0.5] * 3, (16, 128): [0.05] * 3,
            (32, 64): [0.5] * 3, (32, 128): [0.05, 0.05, 0.5]}
  fit = wt.exponent_fit(grid_of(errors), LEVEL, n_boot=2000, seed=1)
  assert (fit.ci_low, fit.ci_high) == (pytest.approx(0.0, abs=1e-12),
                                       math.inf)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
  # Widths 32..4096 keep every m* (77..1738 without noise) well inside.
  rng = np.random.default_rng(0)
  noise = rng.normal(0, 0.15, size=len(SEEDS))
  pairs = [pair(n, m, s, power_law(n, m) * math.exp(
      noise[s] + rng.normal(0, 0.1)))
           for n in NS for m in (32,) + WIDTHS + (4096,) for s in SEEDS]
  first = wt.exponent_fit(pairs, LEVEL, n_boot=300, seed=5)
  assert first == wt.exponent_fit(pairs, LEVEL, n_boot=300, seed=5)
  assert first != wt.exponent_fit(pairs, LEVEL, n_boot=300, seed=6)
  assert first.censored_draws == 0
  assert first.ci_low < first.b < first.ci_high
  assert abs(first.b - 1.5) < 0.5


# The surface fit.


def test_surface_fit_recovers_beta_gamma_exactly():
  fit = wt.surface_fit(power_grid())
  assert (fit.beta, fit.gamma) == (pytest.approx(BETA, rel=1e-10),
                                   pytest.approx(GAMMA, rel=1e-10))
  assert fit.a == pytest.approx(math.log(C), rel=1e-10)
  assert fit.b == pytest.approx(-GAMMA / BETA, rel=1e-10)
  assert fit.ci_high - fit.ci_low == pytest.approx(0, abs=1e-8)
  assert fit.cells == len(NS) * len(WIDTHS)
  assert fit.floored == fit.excluded == ()


def test_surface_fit_interval_is_the_delta_method_on_the_ols_covariance():
  rng = np.random.default_rng(2)
  cells = {(n, m): [power_law(n, m) * math.exp(rng.normal(0, 0.2))]
           for n in NS for m in WIDTHS}
  cells[(16, 64)] = [0.0]  # floored
  cells[(128, 2048)] = [math.inf]  # excluded
  fit = wt.surface_fit(grid_of(cells), floor=1e-3)
  used = [k for k in cells if k != (128, 2048)]
  y = np.log([max(cells[k][0], 1e-3) for k in used])
  design = np.array([[1, math.log(m), math.log(n)] for n, m in used])
  theta, *_ = np.linalg.lstsq(design, y, rcond=None)
  np.testing.assert_allclose([fit.a, fit.beta, fit.gamma], theta, rtol=1e-9)
  residual = y - design @ theta
  cov = residual @ residual / (len(y) - 3) * np.linalg.inv(design.T @ design)
  _, beta, gamma = theta
  h = 1e-6  # g = d b / d(a, beta, gamma) by central differences
  g = np.array([0.0, (gamma / (beta - h) - gamma / (beta + h)) / (2 * h),
                ((gamma - h) / beta - (gamma + h) / beta) / (2 * h)])
  half = stats.t.ppf(0.975, len(y) - 3) * math.sqrt(g @ cov @ g)
  assert fit.b == pytest.approx(-gamma / beta, rel=1e-9)
  assert (fit.ci_low, fit.ci_high) == (pytest.approx(fit.b - half, rel=1e-6),
                                       pytest.approx(fit.b + half, rel=1e-6))
  assert fit.floored == ((16, 64),) and fit.excluded == ((128, 2048),)


def test_agree_is_the_overlap_of_the_two_intervals():
  fit = wt.exponent_fit(power_grid(), LEVEL, n_boot=20)  # [1.5, 1.5]
  surface = wt.surface_fit(power_grid())
  assert wt.agree(fit, surface)
  shifted = dataclasses.replace(surface, ci_low=1.6, ci_high=2.0)
  assert not wt.agree(fit, shifted)
  assert wt.agree(fit, dataclasses.replace(shifted, ci_low=1.5))
  assert not wt.agree(dataclasses.replace(fit, ci_low=math.nan), surface)


# The error falls with m, or does not.


def test_falls_with_m_passes_on_the_power_law():
  noise = (0.0, 0.1, -0.1, 0.05)
  for fall in wt.falls_with_m(power_grid(noise)):
    assert fall.fit.exponent == pytest.approx(BETA, rel=1e-10)
    assert fall.verdict == 'PASS' and fall.excluded == ()


def test_falls_with_m_fails_when_the_error_grows_with_m():
  rng = np.random.default_rng(4)
  runs = [pair(32, m, s, 0.01 * m ** 0.3 * math.exp(rng.normal(0, 0.05)))
          for m in WIDTHS for s in SEEDS]
  runs.append(pair(32, 64, 9, status='plateau', trial='flat'))
  runs.append(pair(32, 64, 10, err=0.2, trial='lonely'))
  (fall,) = wt.falls_with_m(runs)
  for s in SEEDS:  # each seed's slope, independently by np.polyfit
    pts = [(math.log(p.m), math.log(p.err)) for p in runs if p.seed == s]
    assert fall.fit.per_seed[s] == pytest.approx(
        np.polyfit(*zip(*pts), 1)[0], rel=1e-10)
  assert fall.fit.ci_low > 0 and fall.verdict == 'FAIL'
  assert {e.trial: e.reason for e in fall.excluded} == {
      'E1/g/flat': 'plateau: no finite value',
      'E1/g/lonely': 'its seed has < 2 widths'}


def test_falls_with_m_with_no_usable_seed_is_inconclusive():
  (fall,) = wt.falls_with_m([pair(seed=0, predicted=None),
                             pair(seed=1, err=0.1)])
  assert fall.fit is None and fall.verdict == 'INCONCLUSIVE'
  assert [e.reason for e in fall.excluded] == [
      'no prediction', 'its seed has < 2 widths']


# Figures.


def png(path):
  data = path.read_bytes()
  return data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000


def test_plot_calibration_writes_and_names_what_it_cannot_draw(tmp_path):
  reached, others = calibration_pairs()
  path = tmp_path / 'calibration.png'
  caption = calibration_figures.plot_calibration(
      reached + others + [pair(study='E3', m=64, err=0.2)], path)
  assert png(path)
  assert 'one point per run (23 runs)' in caption
  assert 'hollow: censored, drawn at its projected round (2 runs)' in caption
  assert 'within 15% either way (T_pred/1.15 <= T <= 1.15 T_pred)' in caption
  assert ('Not drawn (no T or no T_pred): plateau: E1/g/flat, '
          'E1/g/narrowflat; diverged: E1/g/boom; no prediction: '
          'E1/g/nopred.') in caption


def test_plot_calibration_without_runs(tmp_path):
  caption = calibration_figures.plot_calibration(
      [pair(status='plateau', trial='flat')], tmp_path / 'c.png')
  assert png(tmp_path / 'c.png') and '(0 runs)' in caption
  assert 'plateau: E1/g/flat' in caption


def test_plot_error_heatmap_marks_censored_thresholds(tmp_path):
  errors = {(n, m): [power_law(n, m)] for n in NS for m in WIDTHS}
  errors.update({(16, m): [0.01] for m in WIDTHS})
  errors.update({(128, m): [1.0] for m in WIDTHS})
  runs = grid_of(errors) + [pair(64, 64, 1, status='plateau'),
                            pair(64, 64, 2, status='plateau')]
  grid = wt.error_grid(runs)
  assert grid.row(64)[0].e == math.inf
  caption = calibration_figures.plot_error_heatmap(
      grid, wt.threshold(grid, LEVEL), tmp_path / 'heat.png')
  assert png(tmp_path / 'heat.png')
  assert 'the median over seeds of |log(T/T_pred)|' in caption
  assert 'the smallest width with e <= 0.1, interpolated in log m' in caption
  assert '> at the right edge: m* beyond the widest width (n = 128)' in caption
  assert '< at the left edge: m* at or below the narrowest (n = 16)' in caption


# The theory's widths.


def test_theory_widths_cite_where_each_number_comes_from():
  exponents = {w.source.split(' 20')[0].split(',')[0]: w.exponent
               for w in theory_widths.THEORY_WIDTHS}
  assert exponents == {'Du': 6, 'Song and Yang': 2,
                       'Oymak and Soltanolkotabi': 2, 'Allen-Zhu': 24,
                       'Zou and Gu': 8, 'Huang': None}
  for w in theory_widths.THEORY_WIDTHS:
    assert w.provenance.startswith(('abstract', 'lineage', 'title'))
    assert w.quantity and w.conditions and w.bound


def test_comparison_table_puts_the_measured_b_beside_them():
  fit = wt.exponent_fit(power_grid(), LEVEL, n_boot=20)
  surface = wt.surface_fit(power_grid())
  table = theory_widths.comparison_table(fit, surface, 'E1 setting')
  rows = [line for line in table.splitlines() if line.startswith('| ')]
  assert len(rows) == 2 + len(theory_widths.THEORY_WIDTHS) + 2
  assert ('| This kit, measured | m*(n) = C n^b over n = 16, 32, 64, 128 | '
          '1.50, 95% CI [1.50, 1.50] (0 of 20 bootstrap draws censored) |'
          ) in table
  assert '| This kit, surface fit |' in table and '| 1.50, 95% CI' in table
  assert table.endswith(theory_widths.NOTE)
  assert 'a different quantity' in theory_widths.NOTE


def test_the_calibration_modules_import_no_tensorflow():
  # A report rebuilt on a machine without TensorFlow draws these too.
  code = ('import sys\n'
          'from tff_localsgd.analysis import calibration, '
          'calibration_figures, theory_widths, width_threshold\n'
          'sys.exit(3 if "tensorflow" in sys.modules else 0)\n')
  done = subprocess.run([sys.executable, '-c', code], check=False,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert done.returncode == 0
