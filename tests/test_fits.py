"""Tests for tff_localsgd.analysis.fits: OLS, power laws, linear rates."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from tff_localsgd.analysis import fits

TRUE_EXPONENT = -0.5
TRUE_PREFACTOR = 3.0


def power_law_data(rng, noise, num_seeds=5, num_x=7):
  """y = 3 x^-0.5 exp(noise z) on x in [1, 64] (a 64x range), per seed."""
  x = np.tile(np.geomspace(1, 64, num_x), num_seeds)
  seeds = np.repeat(np.arange(num_seeds), num_x)
  z = rng.standard_normal(x.size)
  y = TRUE_PREFACTOR * x ** TRUE_EXPONENT * np.exp(noise * z)
  return x, y, seeds


def coverage(make_data, use_groups, trials=1000):
  """Fraction of `trials` datasets whose 95% CI contains TRUE_EXPONENT."""
  rng = np.random.default_rng(2022)
  hits = 0
  for trial in range(trials):
    x, y, seeds = make_data(rng)
    fit = fits.power_law_fit(x, y, seeds if use_groups else None,
                             num_bootstrap=300, seed=trial)
    hits += fit.ci_low <= TRUE_EXPONENT <= fit.ci_high
  return hits / trials


# Coverage bounds for 1000 trials. If the true coverage is 0.95, the count
# X ~ Binomial(1000, 0.95) has P(X < 880) = 1e-18 and P(X > 990) = 5e-13;
# the percentile bootstrap's known small-sample undercoverage (true coverage
# ~0.92-0.94 here, B = 300) still gives P(X < 880) = 5e-6 at 0.92. A 90%
# interval passed off as 95%, or one ignoring the noise, lands outside.
COVERAGE_LOW, COVERAGE_HIGH = 0.88, 0.99


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


# power_law_fit.


def test_power_law_recovers_exponent_with_groups():
  noise = 0.05
  x, y, seeds = power_law_data(np.random.default_rng(0), noise)
  fit = fits.power_law_fit(x, y, seeds)
  # A fixed draw: with 5 seeds the percentile interval covers only ~83% of
  # draws (module docstring), so containment here is a regression check;
  # the coverage tests below test the interval itself.
  # OLS slope error ~ N(0, se^2), se = sigma / sqrt(S_xx) (~0.006 here);
  # 5 se is exceeded with probability 6e-7.
  log_x = np.log(x)
  se = noise / np.sqrt(np.sum((log_x - log_x.mean()) ** 2))
  assert abs(fit.exponent - TRUE_EXPONENT) < 5 * se
  assert fit.ci_low <= TRUE_EXPONENT <= fit.ci_high
  assert fit.ci_low < fit.exponent < fit.ci_high
  assert fit.prefactor == pytest.approx(TRUE_PREFACTOR, rel=10 * noise)
  assert fit.r2 > 0.99
  assert (fit.n, fit.num_groups) == (35, 5)


def test_power_law_ci_width_scales_with_noise():
  # Same z, same bootstrap draws: every resample's slope is
  # -0.5 + noise * (slope of z), so the CI width is linear in the noise.
  widths = []
  for noise in (0.05, 0.005):
    x, y, seeds = power_law_data(np.random.default_rng(7), noise)
    fit = fits.power_law_fit(x, y, seeds, seed=3)
    widths.append(fit.ci_high - fit.ci_low)
  assert widths[0] > 0
  assert widths[1] < widths[0]
  assert widths[1] / widths[0] == pytest.approx(0.1, rel=1e-9)


def test_power_law_without_noise_is_exact():
  x, y, seeds = power_law_data(np.random.default_rng(7), 0.0)
  fit = fits.power_law_fit(x, y, seeds)
  assert abs(fit.exponent - TRUE_EXPONENT) < 1e-12
  assert abs(fit.prefactor - TRUE_PREFACTOR) < 1e-12
  assert abs(fit.ci_low - TRUE_EXPONENT) < 1e-12
  assert abs(fit.ci_high - TRUE_EXPONENT) < 1e-12
  assert fit.r2 == pytest.approx(1.0, abs=1e-12)


def test_power_law_is_deterministic_in_seed():
  x, y, seeds = power_law_data(np.random.default_rng(7), 0.05)
  a = fits.power_law_fit(x, y, seeds, seed=11)
  assert a == fits.power_law_fit(x, y, seeds, seed=11)
  b = fits.power_law_fit(x, y, seeds, seed=12)
  assert (a.ci_low, a.ci_high) != (b.ci_low, b.ci_high)


def test_power_law_ci_coverage_resampling_points():
  """Independent points: the point bootstrap's 95% CI covers ~95%."""
  make = lambda rng: power_law_data(rng, 0.05)
  assert COVERAGE_LOW <= coverage(make, use_groups=False) <= COVERAGE_HIGH


def test_power_law_ci_coverage_resampling_seeds():
  """Each seed has its own exponent (random effect, sd 0.1, larger than the
  point noise 0.02): the cluster bootstrap over 50 seeds still covers."""

  def make(rng):
    x, _, seeds = power_law_data(rng, 0.0, num_seeds=50, num_x=5)
    exponent = TRUE_EXPONENT + 0.1 * rng.standard_normal(50)[seeds]
    noise = 0.02 * rng.standard_normal(x.size)
    return x, TRUE_PREFACTOR * x ** exponent * np.exp(noise), seeds

  assert COVERAGE_LOW <= coverage(make, use_groups=True) <= COVERAGE_HIGH


def test_power_law_resamples_whole_groups():
  # Two seeds, each an exact power law with its own exponent, on the same x:
  # the pooled slope of a resample is the mean of its drawn seeds' slopes,
  # one of {a0, (a0 + a1) / 2, a1} with probabilities 1/4, 1/2, 1/4, so the
  # 95% interval is exactly (a0, a1). Resampling points mixes the seeds
  # point by point, with slopes anywhere, not just these three.
  a0, a1 = -0.7, -0.3
  x = np.tile(np.geomspace(1, 64, 7), 2)
  seeds = np.repeat(['seed0', 'seed1'], 7)
  y = 2 * x ** np.where(seeds == 'seed0', a0, a1)
  fit = fits.power_law_fit(x, y, seeds)
  assert fit.exponent == pytest.approx((a0 + a1) / 2, abs=1e-12)
  assert fit.ci_low == pytest.approx(a0, abs=1e-12)
  assert fit.ci_high == pytest.approx(a1, abs=1e-12)
  points = fits.power_law_fit(x, y)
  assert abs(points.ci_low - a0) > 1e-3 and abs(points.ci_high - a1) > 1e-3


def test_power_law_redraws_resamples_without_two_x():
  # Each seed sits at one x: half of all resamples draw one seed twice and
  # have no slope. Redrawn, every resample holds both seeds once, so every
  # bootstrap slope is the full-data slope.
  x = np.array([1.0, 1.0, 8.0, 8.0])
  y = np.array([2.0, 3.0, 1.0, 0.5])
  fit = fits.power_law_fit(x, y, groups=[0, 0, 1, 1], num_bootstrap=500)
  assert np.isfinite([fit.ci_low, fit.ci_high]).all()
  assert fit.ci_low == pytest.approx(fit.exponent, abs=1e-12)
  assert fit.ci_high == pytest.approx(fit.exponent, abs=1e-12)


def test_power_law_chunking_does_not_change_the_interval(monkeypatch):
  x, y, seeds = power_law_data(np.random.default_rng(7), 0.05)
  whole = fits.power_law_fit(x, y, seeds, num_bootstrap=1000)
  monkeypatch.setattr(fits, '_CHUNK_COUNTS', 7 * 5)  # 143 chunks
  assert fits.power_law_fit(x, y, seeds, num_bootstrap=1000) == whole


def test_resample_counts_draw_units_with_replacement():
  counts = fits._resample_counts(np.random.default_rng(0), 4, 20000)
  assert counts.shape == (20000, 4)
  np.testing.assert_array_equal(counts.sum(axis=1), 4)
  # Each count ~ Binomial(4, 1/4): mean 1, variance 3/4; over 20000 rows
  # the means' standard error is 0.006, the variances' 0.007.
  np.testing.assert_allclose(counts.mean(axis=0), 1, atol=0.03)
  np.testing.assert_allclose(counts.var(axis=0), 0.75, atol=0.05)


def test_weighted_slopes_equal_fits_of_repeated_points():
  rng = np.random.default_rng(5)
  x, y = rng.standard_normal(9), rng.standard_normal(9)
  units = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4])  # 5 units of 1-3 points
  counts = rng.integers(0, 4, size=(6, 5))
  counts[:, :2] = 1  # two distinct x in every row
  sums = fits._unit_sums(x - x.mean(), y - y.mean(), units, 5)
  slopes = fits._weighted_slopes(counts.astype(float), sums)
  for row, slope in zip(counts, slopes):
    repeats = row[units]
    expected = fits.linear_fit(np.repeat(x, repeats),
                               np.repeat(y, repeats)).slope
    assert slope == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize('x, y, bad', [
    ([0, 1, 2, 4], [1, 1, 2, 3], 1),
    ([1, 2, 3, 4], [1, -1, 2, -3], 2),
    ([1, 2, 3, 4], [1, np.nan, 2, 3], 1),
    ([1, np.inf, 3, -4], [1, 1, 2, 3], 2),
])
def test_power_law_rejects_non_positive_and_non_finite(x, y, bad):
  with pytest.raises(ValueError, match=f'{bad} of 4 points'):
    fits.power_law_fit(x, y)


def test_power_law_rejects_bad_arguments():
  x, y = [1, 2, 4], [1, 2, 3]
  with pytest.raises(ValueError, match='groups'):
    fits.power_law_fit(x, y, groups=[0, 1])
  with pytest.raises(ValueError, match='confidence'):
    fits.power_law_fit(x, y, confidence=1.0)
  with pytest.raises(ValueError, match='num_bootstrap'):
    fits.power_law_fit(x, y, num_bootstrap=0)
  with pytest.raises(ValueError, match='2 distinct x'):
    fits.power_law_fit([2, 2, 2], y)


def test_power_law_single_group_has_nan_interval():
  x, y, _ = power_law_data(np.random.default_rng(7), 0.05, num_seeds=1)
  fit = fits.power_law_fit(x, y, groups=np.zeros(x.size))
  assert fit.num_groups == 1
  assert math.isnan(fit.ci_low) and math.isnan(fit.ci_high)
  assert fit.exponent == pytest.approx(fits.linear_fit(
      np.log(x), np.log(y)).slope, rel=1e-12)
  assert fits.slope_verdict(fit, below=0.0) == 'INCONCLUSIVE'


def test_to_dict_is_plain_json():
  x, y, seeds = power_law_data(np.random.default_rng(7), 0.05)
  fit = fits.power_law_fit(x, y, seeds, num_bootstrap=100)
  values = fit.to_dict()
  assert json.loads(json.dumps(values)) == values
  assert list(values) == ['exponent', 'prefactor', 'r2', 'ci_low', 'ci_high',
                          'n', 'num_groups']
  assert all(type(v) in (float, int) for v in values.values())
  decay = fits.geometric_decay_fit(range(5), 0.5 ** np.arange(5)).to_dict()
  assert json.loads(json.dumps(decay)) == decay


# geometric_decay_fit.


def test_geometric_decay_recovers_rate_exactly():
  rounds = np.arange(31)
  fit = fits.geometric_decay_fit(rounds, 5 * 0.8 ** rounds)
  assert abs(fit.rate - 0.8) < 1e-12
  assert abs(fit.slope - math.log(0.8)) < 1e-12
  assert abs(fit.r2 - 1) < 1e-12
  assert (fit.num_points, fit.first_round, fit.last_round) == (31, 0, 30)


def test_geometric_decay_rate_is_per_round_not_per_point():
  rounds = np.arange(0, 100, 5)  # evaluated every 5 rounds
  fit = fits.geometric_decay_fit(rounds, 5 * 0.8 ** rounds, floor=0.0)
  assert abs(fit.rate - 0.8) < 1e-12
  assert fit.last_round == 95


@pytest.mark.parametrize('scale', [5.0, 1e-4])
def test_geometric_decay_stops_at_default_floor(scale):
  # scale * 0.8^t stays above the floor 1e-6 * scale until t = 62; then a
  # plateau at 1e-6 * scale / 1000. The floor is relative: at scale 1e-4 an
  # absolute 1e-6 would stop the fit at t = 21.
  rounds = np.arange(60)
  losses = np.concatenate([scale * 0.8 ** rounds[:50],
                           np.full(10, 1e-9 * scale)])
  fit = fits.geometric_decay_fit(rounds, losses)
  assert (fit.num_points, fit.last_round) == (50, 49)
  assert abs(fit.rate - 0.8) < 1e-12


def test_geometric_decay_stops_at_absolute_floor():
  rounds = np.arange(60)
  losses = 5 * 0.8 ** rounds
  fit = fits.geometric_decay_fit(rounds, losses, floor=1e-3)
  # First round at or below the floor: 5 * 0.8^t <= 1e-3.
  first_below = math.ceil(math.log(1e-3 / 5) / math.log(0.8))
  assert fit.num_points == first_below
  assert fit.last_round == first_below - 1
  assert losses[first_below - 1] > 1e-3 >= losses[first_below]


def test_geometric_decay_stops_at_first_non_finite():
  rounds = np.arange(40)
  losses = 5 * 0.8 ** rounds
  for bad in (np.nan, np.inf):
    broken = losses.copy()
    broken[20] = bad  # later rounds are finite again but excluded
    fit = fits.geometric_decay_fit(rounds, broken)
    assert (fit.num_points, fit.last_round) == (20, 19)


def test_geometric_decay_noisy_fit_is_not_exact():
  rng = np.random.default_rng(0)
  rounds = np.arange(30)
  losses = 5 * 0.8 ** rounds * np.exp(0.1 * rng.standard_normal(30))
  fit = fits.geometric_decay_fit(rounds, losses)
  assert 0.5 < fit.r2 < 1
  assert fit.rate == pytest.approx(0.8, abs=0.02)


def test_geometric_decay_needs_three_points():
  with pytest.raises(ValueError, match='>= 3'):
    fits.geometric_decay_fit([0, 1, 2, 3], [1.0, 0.5, np.nan, 0.1])
  with pytest.raises(ValueError, match='>= 3'):
    fits.geometric_decay_fit([0, 1, 2], [1.0, 0.5, 1e-7])
  with pytest.raises(ValueError, match='>= 3'):
    fits.geometric_decay_fit([0, 1, 2, 3], [np.nan, 1, 1, 1])
  with pytest.raises(ValueError, match='>= 3'):
    fits.geometric_decay_fit([0, 1, 2, 3], [0.0, 1, 1, 1])
  with pytest.raises(ValueError, match='increasing'):
    fits.geometric_decay_fit([0, 2, 1, 3], [1.0, 0.5, 0.2, 0.1])
  with pytest.raises(ValueError, match='floor'):
    fits.geometric_decay_fit([0, 1, 2, 3], [1.0, 0.5, 0.2, 0.1], floor=-1)


# rounds_to_eps.


def test_rounds_to_eps_first_crossing():
  rounds = np.arange(21)
  losses = 0.5 ** rounds
  eps = 1e-3
  assert fits.rounds_to_eps(rounds, losses, eps) == math.ceil(
      math.log2(1 / eps))
  # Equality counts: 0.5^4 is exact in binary.
  assert fits.rounds_to_eps(rounds, losses, 0.5 ** 4) == 4
  assert fits.rounds_to_eps(rounds, losses, 1.0) == 0


def test_rounds_to_eps_returns_the_round_not_the_index():
  rounds = np.arange(1, 101, 10)  # 1, 11, 21, ...
  losses = 0.9 ** rounds
  # First of 1, 11, 21, ... with 0.9^t <= 0.9^25 (t >= 25): round 31.
  assert fits.rounds_to_eps(rounds, losses, 0.9 ** 25, relative=False) == 31


def test_rounds_to_eps_relative_and_absolute():
  rounds = np.arange(10)
  losses = 8 * 0.5 ** rounds
  assert fits.rounds_to_eps(rounds, losses, 0.25) == 2  # 8 * 0.25 = 2
  assert fits.rounds_to_eps(rounds, losses, 0.25, relative=False) == 5


def test_rounds_to_eps_never_reached_is_inf():
  rounds = np.arange(10)
  assert fits.rounds_to_eps(rounds, 0.9 ** rounds, 1e-3) == math.inf
  diverged = np.array([1.0, 0.5, np.nan, np.nan])
  assert fits.rounds_to_eps(range(4), diverged, 1e-2) == math.inf


def test_rounds_to_eps_rejects_bad_arguments():
  with pytest.raises(ValueError, match='eps'):
    fits.rounds_to_eps([0, 1], [1.0, 0.1], 0.0)
  with pytest.raises(ValueError, match='first loss'):
    fits.rounds_to_eps([0, 1], [np.nan, 0.1], 0.5)
  with pytest.raises(ValueError, match='differ in length'):
    fits.rounds_to_eps([0, 1, 2], [1.0, 0.1], 0.5)


# slope_verdict.


def with_ci(low, high):
  return fits.PowerLawFit(exponent=(low + high) / 2, prefactor=1.0, r2=1.0,
                          ci_low=low, ci_high=high, n=10, num_groups=5)


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
