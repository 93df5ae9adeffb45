"""Tests for tff_localsgd.analysis.fits: OLS, per-seed slopes, verdicts."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from tff_localsgd.analysis import fits

TRUE_EXPONENT = -0.5
TRUE_PREFACTOR = 3.0


# linear_fit.


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_linear_fit_matches_numpy_and_scipy(seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-3, 10, size=50)
  y = 1.7 * x - 4 + rng.standard_normal(50) * 2
  fit = fits.linear_fit(x, y)
  slope, intercept = np.polyfit(x, y, 1)
  reference = stats.linregress(x, y)
  np.testing.assert_allclose([fit.slope, fit.intercept], [slope, intercept],
                             rtol=1e-10)
  np.testing.assert_allclose(
      [fit.slope, fit.intercept, fit.r2],
      [reference.slope, reference.intercept, reference.rvalue ** 2],
      rtol=1e-10)
  assert fit.n == 50


def test_linear_fit_exact_line_has_r2_one():
  x = np.arange(10.0)
  fit = fits.linear_fit(x, 2.5 * x + 1)
  assert fit.r2 == 1.0
  assert fit.slope == pytest.approx(2.5, abs=1e-14)
  assert fit.intercept == pytest.approx(1.0, abs=1e-14)


def test_linear_fit_constant_y_is_exact():
  fit = fits.linear_fit([1, 2, 3], [4, 4, 4])
  assert (fit.slope, fit.intercept, fit.r2) == (0.0, 4.0, 1.0)


def test_linear_fit_large_offset_keeps_digits():
  # Centering: the naive normal equations lose most digits at x ~ 1e8.
  x = 1e8 + np.arange(5.0)
  assert fits.linear_fit(x, 3 * (x - 1e8)).slope == pytest.approx(3, rel=1e-9)


@pytest.mark.parametrize('x', [[1, 1, 1], [2], []])
def test_linear_fit_needs_two_distinct_x(x):
  with pytest.raises(ValueError, match='2 distinct x'):
    fits.linear_fit(x, np.arange(len(x), dtype=float))


def test_linear_fit_rejects_bad_shapes_and_nan():
  with pytest.raises(ValueError, match='differ in length'):
    fits.linear_fit([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match='finite'):
    fits.linear_fit([1, 2, 3], [1, np.nan, 2])


# seed_slope_fit.


def per_seed_data(rng, noise, num_seeds=4, num_x=4):
  """Per seed: y = 3 x^(-0.5 + u_g) exp(noise z) on x in [1, 64], with a
  seed's own slope offset u_g ~ N(0, noise): seeds differ, as in a suite."""
  x = np.tile(np.geomspace(1, 64, num_x), num_seeds)
  seeds = np.repeat(np.arange(num_seeds), num_x)
  offsets = rng.normal(0, noise, num_seeds)[seeds]
  y = (TRUE_PREFACTOR * x ** (TRUE_EXPONENT + offsets)
       * np.exp(noise * rng.standard_normal(x.size)))
  return x, y, seeds


def test_seed_slope_fit_is_the_mean_of_per_seed_slopes_with_a_t_interval():
  x, y, seeds = per_seed_data(np.random.default_rng(0), 0.1)
  fit = fits.seed_slope_fit(x, y, seeds)
  slopes = [stats.linregress(np.log(x[seeds == g]), np.log(y[seeds == g])).slope
            for g in range(4)]
  np.testing.assert_allclose(fit.per_seed, slopes, rtol=1e-10)
  assert fit.exponent == pytest.approx(np.mean(slopes), rel=1e-12)
  low, high = stats.t.interval(0.95, 3, loc=np.mean(slopes),
                               scale=stats.sem(slopes))
  assert (fit.ci_low, fit.ci_high) == (pytest.approx(low), pytest.approx(high))
  assert fit.num_groups == 4


def test_seed_slope_fit_t_interval_covers_at_four_seeds():
  """95% nominal, exact here (the per-seed slopes are normal): of 1000
  datasets of 4 seeds, 925-975 intervals contain the true exponent
  (Binomial(1000, 0.95), sd 6.9: P(outside) ~ 3e-4)."""
  rng = np.random.default_rng(2022)
  hits = 0
  for _ in range(1000):
    fit = fits.seed_slope_fit(*per_seed_data(rng, 0.1))
    hits += fit.ci_low <= TRUE_EXPONENT <= fit.ci_high
  assert 925 <= hits <= 975


def test_seed_slope_fit_to_dict_is_plain_json():
  fit = fits.seed_slope_fit(*per_seed_data(np.random.default_rng(1), 0.1))
  values = json.loads(json.dumps(fit.to_dict()))
  assert values['num_groups'] == 4 and len(values['per_seed']) == 4


def test_seed_slope_fit_one_seed_has_no_interval():
  fit = fits.seed_slope_fit([1, 2, 4], [1, 0.5, 0.25], [0, 0, 0])
  assert fit.exponent == pytest.approx(-1.0)
  assert math.isnan(fit.ci_low) and math.isnan(fit.ci_high)
  assert fits.slope_verdict(fit, below=0.0) == 'INCONCLUSIVE'


@pytest.mark.parametrize('x, y, groups', [
    ([1, 2], [1, 0], [0, 0]), ([1, 2], [1, math.nan], [0, 0]),
    ([1, 2], [1, 2], [0]), ([1, 1, 2, 2], [1, 2, 3, 4], [0, 0, 1, 1])])
def test_seed_slope_fit_rejects_bad_points(x, y, groups):
  with pytest.raises(ValueError):
    fits.seed_slope_fit(x, y, groups)


@pytest.mark.parametrize('low, high, verdict', [
    (-1.1, -0.9, 'PASS'), (-1.3, -0.9, 'INCONCLUSIVE'),
    (-0.7, -0.5, 'FAIL'), (math.nan, math.nan, 'INCONCLUSIVE')])
def test_interval_verdict(low, high, verdict):
  assert fits.interval_verdict(with_ci(low, high), -1.25, -0.75) == verdict


# slope_verdict.


def with_ci(low, high):
  return fits.SlopeFit(exponent=(low + high) / 2, prefactor=1.0,
                       ci_low=low, ci_high=high, per_seed=(), num_groups=5)


@pytest.mark.parametrize('low, high, threshold, below, above', [
    (-0.6, -0.4, -0.3, 'PASS', 'FAIL'),
    (-0.6, -0.4, -0.7, 'FAIL', 'PASS'),
    (-0.6, -0.4, -0.5, 'INCONCLUSIVE', 'INCONCLUSIVE'),
    # A CI touching the threshold is on neither side.
    (-0.6, -0.4, -0.4, 'INCONCLUSIVE', 'INCONCLUSIVE'),
    (-0.6, -0.4, -0.6, 'INCONCLUSIVE', 'INCONCLUSIVE'),
    (math.nan, math.nan, 0.0, 'INCONCLUSIVE', 'INCONCLUSIVE'),
])
def test_slope_verdict(low, high, threshold, below, above):
  fit = with_ci(low, high)
  assert fits.slope_verdict(fit, below=threshold) == below
  assert fits.slope_verdict(fit, above=threshold) == above


def test_slope_verdict_needs_one_threshold():
  fit = with_ci(-0.6, -0.4)
  with pytest.raises(ValueError, match='exactly one'):
    fits.slope_verdict(fit)
  with pytest.raises(ValueError, match='exactly one'):
    fits.slope_verdict(fit, below=0.0, above=-1.0)
  with pytest.raises(ValueError, match='finite'):
    fits.slope_verdict(fit, below=math.nan)


def test_mean_fit_is_the_student_t_interval():
  values = [0.1, -0.3, 0.25, 0.05]
  fit = fits.mean_fit(values)
  half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
  assert fit.mean == pytest.approx(np.mean(values), rel=1e-12)
  assert (fit.ci_low, fit.ci_high) == pytest.approx(
      (np.mean(values) - half, np.mean(values) + half), rel=1e-12)
  # It decides through the same verdicts as a slope.
  assert fits.interval_verdict(fit, -1.0, 1.0) == 'PASS'
  assert fits.interval_verdict(fits.mean_fit([2.0, 2.1, 2.2]), -1, 1) == 'FAIL'
  assert math.isnan(fits.mean_fit([1.0]).ci_low)
  with pytest.raises(ValueError):
    fits.mean_fit([1.0, math.nan])


# plane_fit.


def test_plane_fit_matches_lstsq_and_the_classical_covariance():
  rng = np.random.default_rng(7)
  x1, x2 = rng.uniform(3, 9, 40), rng.uniform(2, 6, 40)
  y = 0.5 - 0.4 * x1 + 0.8 * x2 + rng.normal(0, 0.3, 40)
  fit = fits.plane_fit(x1, x2, y)
  # Independently: the raw (uncentred) design and its normal equations.
  design = np.column_stack([np.ones(40), x1, x2])
  theta, *_ = np.linalg.lstsq(design, y, rcond=None)
  residual = y - design @ theta
  cov = residual @ residual / 37 * np.linalg.inv(design.T @ design)
  np.testing.assert_allclose([fit.intercept, fit.slope1, fit.slope2], theta,
                             rtol=1e-10)
  np.testing.assert_allclose(np.array(fit.cov), cov, rtol=1e-8)
  ss_tot = np.sum((y - y.mean()) ** 2)
  assert fit.r2 == pytest.approx(1 - residual @ residual / ss_tot, rel=1e-10)
  assert fit.n == 40


def test_plane_fit_slope_variance_matches_monte_carlo():
  # The covariance predicts the spread of the slopes over noise draws.
  rng = np.random.default_rng(8)
  x1 = np.repeat(np.log([64, 128, 256, 512]), 3)
  x2 = np.tile(np.log([16, 32, 64]), 4)
  slopes, variances = [], []
  for _ in range(2000):
    fit = fits.plane_fit(x1, x2, 1 - 0.5 * x1 + 0.7 * x2 +
                         rng.normal(0, 0.2, 12))
    slopes.append(fit.slope2)
    variances.append(fit.cov[2][2])
  # Var of 2000 normal draws has relative s.e. sqrt(2/1999) ~ 3.2%.
  assert np.var(slopes, ddof=1) == pytest.approx(np.mean(variances), rel=0.13)
  assert np.mean(slopes) == pytest.approx(0.7, abs=0.01)


def test_plane_fit_exact_plane_and_degenerate_designs():
  x1, x2 = np.array([0.0, 1, 0, 1]), np.array([0.0, 0, 1, 1])
  fit = fits.plane_fit(x1, x2, 2 + 3 * x1 - x2)
  assert (fit.intercept, fit.slope1, fit.slope2) == (
      pytest.approx(2), pytest.approx(3), pytest.approx(-1))
  assert fit.r2 == 1.0 and np.allclose(fit.cov, 0)
  three = fits.plane_fit(x1[:3], x2[:3], [1.0, 2, 3])
  assert math.isnan(three.cov[1][1])  # no residual degree of freedom
  with pytest.raises(ValueError, match='not on one line'):
    fits.plane_fit([1, 2, 3], [2, 4, 6], [1, 2, 3])  # x2 = 2 x1
  with pytest.raises(ValueError, match='finite'):
    fits.plane_fit([1, 2, 3, math.nan], [0, 1, 0, 1], [1, 2, 3, 4])


# percentile_interval.


def test_percentile_interval_is_the_order_statistic_by_hand():
  draws = np.arange(1.0, 101.0)
  # ceil(0.025 * 100) = 3rd and ceil(0.975 * 100) = 98th smallest.
  assert fits.percentile_interval(draws) == (3.0, 98.0)
  assert fits.percentile_interval(draws, confidence=0.5) == (25.0, 75.0)


def test_percentile_interval_keeps_censored_ends():
  exact = np.arange(1.0, 101.0)
  lows = np.concatenate([exact, [-np.inf] * 2])
  highs = np.concatenate([exact, [np.inf] * 2])
  # 102 draws: the 3rd smallest low (ceil 2.55) is 1, the 100th high 100.
  assert fits.percentile_interval(lows, highs) == (1.0, 100.0)
  lows[:3] = -np.inf  # four open lows: the 3rd smallest is -inf
  assert fits.percentile_interval(lows, highs)[0] == -np.inf
  with pytest.raises(ValueError, match='lows <= highs'):
    fits.percentile_interval([2.0], [1.0])
  assert all(math.isnan(v) for v in fits.percentile_interval([]))
