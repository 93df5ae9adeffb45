"""tff_localsgd.outcomes: every curve is reached, censored, plateau or
diverged, by the definitions in its module doc."""

import math

import pytest

from tff_localsgd import outcomes


def geometric(rate, rounds, start=1.0):
  return list(range(rounds + 1)), [start * rate ** t for t in range(rounds + 1)]


def test_reached_is_the_interpolated_crossing():
  rounds, losses = geometric(0.5, 20)
  # log-linear between rounds is exact for a geometric curve:
  # 0.5^t = 1e-2 at t = log(1e-2) / log(0.5) = 6.644, not the integer 7.
  outcome = outcomes.classify(rounds, losses, 1e-2)
  assert outcome.status == 'reached'
  assert outcome.round == pytest.approx(math.log(1e-2) / math.log(0.5),
                                        rel=1e-12)
  assert outcome.describe() == '6.6 rounds'
  assert outcome.tail_rate == pytest.approx(0.5)


def test_rounds_to_eps_interpolates_in_log_between_recorded_rounds():
  # Rounds 2 and 6 recorded around the crossing: log L falls from log 1 to
  # log 1e-4 over 4 rounds, so L = 1e-2 sits halfway, at round 4.
  assert outcomes.rounds_to_eps([0, 2, 6], [10.0, 1.0, 1e-4], 1e-2) == \
      pytest.approx(4.0, rel=1e-12)
  # Exactly at the target: the round itself; already below at t_0: t_0.
  assert outcomes.rounds_to_eps([0, 1, 2], [1.0, 0.5, 0.25], 0.25) == 2.0
  assert outcomes.rounds_to_eps([3, 4], [0.1, 0.01], 0.5) == 3.0


def test_rounds_to_eps_skips_missing_and_nan():
  # The point before the crossing is the last valid one (round 0).
  assert outcomes.rounds_to_eps([0, 1, 2, 3], [1.0, None, math.nan, 0.1],
                                0.5) == pytest.approx(
                                    3 * math.log(2) / math.log(10))
  assert outcomes.rounds_to_eps([0, 1], [1.0, 0.9], 0.5) is None
  assert outcomes.rounds_to_eps([0, 1], [1.0, 0.0], 0.5) == 1.0


def test_censored_projects_the_tail_rate():
  rounds, losses = geometric(0.9, 30)
  outcome = outcomes.classify(rounds, losses, 1e-3)
  # 0.9^t = 1e-3 at t = log(1e-3)/log(0.9) = 65.56.
  assert outcome.status == 'censored' and not outcome.decided
  assert outcome.round == pytest.approx(math.log(1e-3) / math.log(0.9))
  assert 'projected 66' in outcome.describe()


def test_slow_tail_is_a_plateau_not_censored():
  # A fast start, then a tail that would need > 10x the budget.
  rounds = list(range(31))
  losses = [max(0.5 ** t, 0.1 * 0.999 ** t) for t in rounds]
  outcome = outcomes.classify(rounds, losses, 1e-3)
  assert outcome.status == 'plateau' and outcome.round is None
  assert outcome.decided
  flat = outcomes.classify(rounds, [1.0] * 31, 1e-3)
  assert flat.status == 'plateau'


def test_diverged_by_status_or_non_finite_loss():
  rounds, losses = geometric(0.5, 10)
  assert outcomes.classify(rounds, losses, 1e-9,
                           diverged=True).status == 'diverged'
  losses[5] = math.inf
  outcome = outcomes.classify(rounds, losses, 1e-9)
  assert outcome.status == 'diverged' and outcome.round is None
  assert outcome.describe() == 'diverged by round 10'


def test_no_description_prints_inf():
  cases = [geometric(0.5, 20), geometric(0.9, 30), ([0, 1, 2, 3], [1.0] * 4),
           ([0, 1, 2], [1.0, math.inf, math.nan])]
  for rounds, losses in cases:
    text = outcomes.classify(rounds, losses, 1e-3).describe()
    assert 'inf' not in text and 'nan' not in text, text


def test_too_short_for_a_tail_is_a_plateau():
  outcome = outcomes.classify([0, 1], [1.0, 0.5], 1e-3)
  assert outcome.status == 'plateau' and outcome.tail_rate is None


@pytest.mark.parametrize('rounds, losses, target', [
    ([], [], 1.0), ([0, 1], [1.0], 1.0), ([1, 0], [1.0, 0.5], 1.0),
    ([0, 1], [1.0, 0.5], 0.0), ([0, 1], [1.0, 0.5], math.nan)])
def test_rejects_bad_arguments(rounds, losses, target):
  with pytest.raises(ValueError):
    outcomes.classify(rounds, losses, target)
