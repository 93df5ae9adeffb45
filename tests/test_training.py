"""training.py computes a run's rounds and writes nothing: the order in
which rounds are yielded (a fake round, no TFF), and a real tiny Local GD
run checked against NumPy (tests/numpy_reference.py): F(w^t) of every
round, w^1, the prediction's scalars, and a resume that repeats the
uninterrupted run bit for bit."""

import os

import numpy as np
import numpy_reference as ref
import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import results
from tff_localsgd import training


@pytest.mark.parametrize('seed, t', [(0, 1), (3, 7)])
def test_a_cohort_is_a_function_of_seed_and_round(seed, t):
  rng = np.random.default_rng(np.random.SeedSequence(
      [seed, data_lib.COHORT_STREAM, t]))
  want = np.sort(rng.choice(10, 4, replace=False))
  got = training.sample_cohort(seed, t, 10, 4)
  np.testing.assert_array_equal(got, want)
  assert len(set(got)) == 4
  rounds = {tuple(training.sample_cohort(seed, r, 10, 4)) for r in range(20)}
  assert len(rounds) > 10  # each round draws anew
  np.testing.assert_array_equal(training.sample_cohort(seed, t, 10, 10),
                                np.arange(10))


class _FakeRound:
  """A run's rounds without TFF: round t's w^t is [t]; its loss nan from
  `diverge_at`. Records the calls."""

  def __init__(self, rounds, diverge_at=None):
    self.config = config_lib.ExperimentConfig(rounds=rounds)
    self.diverge_at = diverge_at
    self.calls = []

  def initial(self):
    return results.RoundResult(0, (0,), {})

  def train(self, t, weights):
    self.calls.append(('train', t, weights))
    loss = np.nan if t == self.diverge_at else 1.0 / t
    return results.TrainedRound((t,), {'train/local_loss': loss},
                                start=f'F(w^{t - 1})')

  def finish(self, held, sums):
    self.calls.append(('finish', held.round, sums))
    return held.measured({'train/loss': float(held.round)}, {})


def test_round_t_is_yielded_with_the_evaluation_of_round_t_plus_one():
  one = _FakeRound(rounds=3)
  got = list(training.Rounds(one, results.Startup(0.0, 0.0)).iterate())
  assert [r.round for r in got] == [0, 1, 2, 3]
  assert [r.weights for r in got] == [(0,), (1,), (2,), (3,)]
  finishes = [c[1:] for c in one.calls if c[0] == 'finish']
  assert finishes == [(0, 'F(w^0)'), (1, 'F(w^1)'), (2, 'F(w^2)'), (3, None)]
  trains = [c[1:] for c in one.calls if c[0] == 'train']
  assert trains == [(1, (0,)), (2, (1,)), (3, (2,))]


def test_a_resumed_run_trains_from_its_weights_and_yields_the_rest():
  one = _FakeRound(rounds=4)
  got = list(training.Rounds(one, results.Startup(0.0, 0.0)).iterate(
      start=(2, ('w2',))))
  assert [r.round for r in got] == [3, 4]
  assert one.calls[0] == ('train', 3, ('w2',))


def test_a_diverged_round_is_the_last_one_yielded():
  one = _FakeRound(rounds=5, diverge_at=2)
  got = list(training.Rounds(one, results.Startup(0.0, 0.0)).iterate())
  assert [r.round for r in got] == [0, 1, 2] and got[-1].diverged
  assert max(c[1] for c in one.calls if c[0] == 'train') == 3


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A tiny Local GD run, its prediction, all of its rounds."""
  config = config_lib.ExperimentConfig(
      num_examples=12, input_dim=4, num_clients=3, width=16,
      algorithm='local_gd', local_steps=2, client_lr=2.0, rounds=3,
      root_dir=str(tmp_path_factory.mktemp('runs')), experiment='tiny')
  setup = training.Setup.prepare(config)
  prediction, why_not = setup.predict()
  assert why_not is None
  with setup.started(prediction) as rounds:
    got = list(rounds.iterate())
    startup = rounds.startup
  return setup, prediction, got, startup


def test_every_round_is_yielded_and_nothing_is_written(tiny):
  setup, _, got, startup = tiny
  assert [r.round for r in got] == [0, 1, 2, 3]
  assert not os.listdir(setup.config.root_dir)
  assert startup.trace_s > 0 and startup.engine_s > 0
  assert all(r.metrics['system/round_time_s'] > 0 for r in got[1:])


def test_the_loss_of_each_round_is_that_of_its_weights(tiny):
  """F(w^t) of round t (from round t+1's call, or the last evaluation)
  against a NumPy forward pass of w^t over every training example."""
  setup, _, got, _ = tiny
  data = setup.data
  for result in got:
    want = ref.objective(result.weights, data.train_x, data.train_y)
    assert result.metrics['train/loss'] == pytest.approx(want, rel=1e-5)


def test_round_one_is_a_local_gd_round(tiny):
  setup, _, got, _ = tiny
  data, config = setup.data, setup.config
  want, _ = ref.local_sgd_round(
      got[0].weights, list(zip(data.client_x, data.client_y)), lr=config.lr,
      steps=config.local_steps)
  for w, v in zip(got[1].weights, want):
    np.testing.assert_allclose(w, v, rtol=1e-4, atol=1e-6)


def test_the_prediction_is_recorded_with_the_rounds(tiny):
  _, prediction, got, _ = tiny
  for t, result in enumerate(got):
    assert result.metrics['theory/loss'] == prediction.curve[t]
  assert got[0].metrics['theory/rate_per_round'] == prediction.rate_per_round
  assert 'theory/rate_per_round' not in got[1].metrics


def test_a_resume_repeats_the_uninterrupted_run_bit_for_bit(tiny):
  setup, prediction, got, _ = tiny
  with setup.started(prediction) as rounds:
    resumed = list(rounds.iterate(start=(1, got[1].weights)))
  assert [r.round for r in resumed] == [2, 3]
  for a, b in zip(resumed, got[2:]):
    for w, v in zip(a.weights, b.weights):
      assert np.asarray(w).tobytes() == np.asarray(v).tobytes()
    assert a.metrics['train/loss'] == b.metrics['train/loss']


def test_the_facts_of_a_setup(tiny):
  setup = tiny[0]
  facts = setup.facts()
  assert facts['client_sizes'] == [4, 4, 4]
  assert facts['num_parameters'] == sum(
      int(np.prod(w.shape)) for w in setup.spec.initial_weights)
  assert facts['lr'] == setup.config.lr == 2.0 / 16
  y = setup.data.train_y
  assert facts['zero_predictor_loss'] == pytest.approx(
      0.5 * np.mean(np.sum(y.astype(np.float64) ** 2, axis=1)), rel=1e-6)
