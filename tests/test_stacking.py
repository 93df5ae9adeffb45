"""Tests for tff_localsgd.stacking: S stacked seeds are S separate runs.

The reference for a seed of a stacked run is process.LocalSGDProcess with
that seed (tests/test_process.py checks it against NumPy), on the same
engine (in-process), with the same data, cohorts and minibatch seeds.
"""

import dataclasses

import numpy as np
import pytest

import numpy_reference as ref
from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd import models
from tff_localsgd import process
from tff_localsgd import stacking
from tff_localsgd import training
from tff_localsgd.engines import inprocess

SEEDS = (0, 1, 2)
ROUNDS = 3


@pytest.fixture(scope='module')
def context():
  with inprocess.inprocess_engine('/CPU:0') as running:
    yield running


def make_config(**overrides):
  values = dict(dataset='synthetic', num_examples=60, input_dim=6,
                output_dim=2, num_clients=4, width=32, depth=1,
                local_steps=3, batch_size=3, client_lr=0.3, lr_scale='none',
                partition='dirichlet', dirichlet_alpha=0.5, eval_every=1)
  values.update(overrides)
  return config_lib.ExperimentConfig(**values).validate()


@dataclasses.dataclass(frozen=True)
class Seeds:
  """Each seed's config, data and model, and their stacked process."""
  configs: tuple
  data: tuple
  specs: tuple
  stacked: stacking.StackedProcess

  @classmethod
  def build(cls, config, seeds=SEEDS, batched=True):
    configs = tuple(dataclasses.replace(config, seed=s) for s in seeds)
    data = tuple(data_lib.load_federated_data(c) for c in configs)
    specs = tuple(models.build_model(c, d.input_shape, d.output_dim)
                  for c, d in zip(configs, data))
    return cls(configs, data, specs, stacking.StackedProcess(
        specs, config, data[0].input_shape, data[0].output_dim, batched))

  def cohort(self, s, t):
    """Seed s's client values of round t, as training._Round.train."""
    config, data = self.configs[s], self.data[s]
    cohort = training.sample_cohort(config.seed, t, config.num_clients,
                                    config.cohort_size)
    return [process.client_data(data.client_x[i], data.client_y[i],
                                config.seed, t, i, config.num_clients)
            for i in cohort]

  def all_clients(self, s):
    return self.cohort_of(s, range(self.configs[s].num_clients))

  def cohort_of(self, s, indices):
    config, data = self.configs[s], self.data[s]
    return [process.client_data(data.client_x[i], data.client_y[i],
                                config.seed, 0, i, config.num_clients)
            for i in indices]


def separate_runs(seeds: Seeds, rounds=ROUNDS):
  """Each seed's weights and round metrics after every round, alone."""
  out = []
  for s, (config, data, spec) in enumerate(zip(seeds.configs, seeds.data,
                                               seeds.specs)):
    proc = process.LocalSGDProcess(spec, config, data.input_shape,
                                   data.output_dim)
    weights, history = proc.initialize(), []
    for t in range(1, rounds + 1):
      weights, metrics = proc.next(weights, seeds.cohort(s, t))
      history.append((weights, metrics))
    out.append(history)
  return out


def stacked_run(seeds: Seeds, weights=None, rounds=ROUNDS):
  """The stacked run's weights and metrics after every round."""
  proc = seeds.stacked
  weights = proc.initialize() if weights is None else weights
  history = []
  for t in range(1, rounds + 1):
    values = stacking.stack_clients(
        [seeds.cohort(s, t) for s in range(len(seeds.configs))])
    weights, metrics = proc.next(weights, values)
    history.append((weights, metrics))
  return history


def gaps(got, want) -> tuple:
  """(max abs, max rel) difference of two weight tuples."""
  absolute = max(float(np.max(np.abs(np.float64(g) - w)))
                 for g, w in zip(got, want))
  scale = max(float(np.max(np.abs(w))) for w in want)
  return absolute, absolute / scale


# Batched seeds, measured (3 seeds, 3 rounds, in-process engine): the
# weights within 1.2e-7 of the separate runs' (1 ulp of weights of size
# ~1.5; the batched matmuls and the padded, masked sums round differently),
# the losses within 4e-7 relative. The tolerances are packing's
# (tests/test_packing.py), about 10x the measured gap: 3 rounds move the
# weights 100x further. Looped seeds (batched=False) must match bit for bit.
TOL = 1e-6
# Float32 TensorFlow against float64 NumPy: test_process's tolerance.
NUMPY_TOL = 1e-5

CASES = {
    'local_gd': dict(algorithm='local_gd'),
    'local_sgd': dict(algorithm='local_sgd'),
    # Each seed its own cohort S_t^s; the round does not evaluate w^t.
    'local_sgd_cohort': dict(algorithm='local_sgd', clients_per_round=3,
                             server_lr=0.7),
}


def assert_agree(got, want, batched: bool, rel=TOL):
  """Looped seeds: the same bits; batched: within rel (TOL's note)."""
  if batched:
    np.testing.assert_allclose(got, want, rtol=rel, atol=0)
  else:
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('batched', [True, False])
@pytest.mark.parametrize('case', sorted(CASES))
def test_each_seed_of_a_stacked_run_is_its_separate_run(context, case,
                                                        batched):
  seeds = Seeds.build(make_config(**CASES[case]), batched=batched)
  sizes = [d.client_sizes for d in seeds.data]
  assert len({tuple(s) for s in sizes}) == len(SEEDS)  # partitions differ
  assert any(len(set(column)) > 1 for column in zip(*sizes))  # padding
  want, got = separate_runs(seeds), stacked_run(seeds)
  assert context.runs_here(seeds.stacked.iterative_process.next)
  for t, (weights, metrics) in enumerate(got):
    for s, spec in enumerate(seeds.specs):
      want_weights, want_metrics = want[s][t]
      got_weights = stacking.seed_weights(weights, s)
      assert gaps(got_weights, want_weights)[0] < TOL, (t, s)
      if not batched:
        for g, w in zip(got_weights, want_weights):
          np.testing.assert_array_equal(g, w)
      assert gaps(want_weights, spec.initial_weights)[0] > 100 * TOL
      assert_agree(metrics['local_loss'][s], want_metrics['local_loss'],
                   batched)
      assert ('start' in metrics) == ('start' in want_metrics)
      for name, value in want_metrics.get('start', {}).items():
        assert_agree(metrics['start'][name][s], value, batched)


@pytest.mark.parametrize('batched', [True, False])
def test_evaluate_gives_each_seeds_evaluation(context, batched):
  seeds = Seeds.build(make_config(), batched=batched)
  weights = stacked_run(seeds, rounds=1)[-1][0]
  values = [seeds.all_clients(s) for s in range(len(SEEDS))]
  got = seeds.stacked.evaluate(weights, stacking.stack_clients(values))
  assert context.runs_here(seeds.stacked.evaluate)
  for s, (spec, data) in enumerate(zip(seeds.specs, seeds.data)):
    proc = process.LocalSGDProcess(spec, seeds.configs[s], data.input_shape,
                                   data.output_dim)
    want = proc.evaluate(stacking.seed_weights(weights, s), values[s])
    assert float(got['num_examples'][s]) == sum(data.client_sizes)
    for name in ('loss_sum', 'correct', 'num_examples'):
      assert_agree(got[name][s], want[name], batched)


@pytest.mark.parametrize('batched', [True, False])
def test_a_diverged_seed_leaves_the_others_bit_identical(context, batched):
  seeds = Seeds.build(make_config(algorithm='local_sgd'), batched=batched)
  clean = stacked_run(seeds)
  poisoned = [w.copy() for w in seeds.stacked.spec.initial_weights]
  poisoned[1][1, 0, 0] = np.nan  # seed 1's W_1: one entry
  diverged = stacked_run(seeds, weights=tuple(poisoned))
  for (got, got_metrics), (want, want_metrics) in zip(diverged, clean):
    for s in (0, 2):
      for g, w in zip(stacking.seed_weights(got, s),
                      stacking.seed_weights(want, s)):
        np.testing.assert_array_equal(g, w)
      assert got_metrics['local_loss'][s] == want_metrics['local_loss'][s]
      for name, value in want_metrics['start'].items():
        assert got_metrics['start'][name][s] == value[s]
    assert not np.isfinite(stacking.seed_weights(got, 1)[1]).any()
    assert np.isnan(got_metrics['local_loss'][1])


@pytest.mark.parametrize('batched', [True, False])
def test_one_round_is_each_seeds_weighted_average_in_numpy(context, batched):
  """w_s^1 = w_s^0 + server_lr sum_i p_{s,i} Delta_{s,i}, p_{s,i} = n_{s,i}
  / sum_{j in S_1^s} n_{s,j}, in float64 NumPy (numpy_reference), per seed."""
  config = make_config(algorithm='local_gd', server_lr=0.7, client_lr=0.2,
                       clients_per_round=3)
  seeds = Seeds.build(config, batched=batched)
  (weights, _), = stacked_run(seeds, rounds=1)
  totals = set()
  for s, spec in enumerate(seeds.specs):
    clients = [(c['x'], c['y']) for c in seeds.cohort(s, 1)]
    totals.add(sum(len(x) for x, _ in clients))
    want, _ = ref.local_sgd_round(
        spec.initial_weights, clients, lr=config.lr,
        steps=config.local_steps, trainable=spec.trainable_indices,
        server_lr=config.server_lr, loss=config.loss)
    assert gaps(stacking.seed_weights(weights, s), want)[0] < NUMPY_TOL
    assert gaps(want, spec.initial_weights)[0] > 100 * NUMPY_TOL
  # Each seed's own sum of n: a shared divisor would fail the check above.
  assert len(totals) == len(SEEDS)


@pytest.mark.parametrize('field,value', [
    ('diag_every', 2), ('ntk_every', 2), ('clients_per_pack', 2)])
def test_what_stacking_cannot_run_is_refused_naming_its_flag(field, value):
  config = dataclasses.replace(make_config(), **{field: value})
  with pytest.raises(config_lib.ConfigError) as info:
    config.check_stackable()
  assert info.value.field == field


def test_the_cnn_is_refused():
  config = config_lib.ExperimentConfig(dataset='digits', model='cnn',
                                       loss='xent').validate()
  with pytest.raises(config_lib.ConfigError) as info:
    config.check_stackable()
  assert info.value.field == 'model'


def test_stack_clients_puts_seed_s_in_row_s():
  seeds = Seeds.build(make_config())
  per_seed = [seeds.cohort(s, 2) for s in range(len(SEEDS))]
  stacked = stacking.stack_clients(per_seed)
  assert len(stacked) == len(per_seed[0])
  for j, value in enumerate(stacked):
    for s in range(len(SEEDS)):
      n = len(per_seed[s][j]['x'])
      assert value['num_examples'][s] == n
      np.testing.assert_array_equal(value['x'][s, :n], per_seed[s][j]['x'])
      np.testing.assert_array_equal(value['seed'][s], per_seed[s][j]['seed'])
      assert value['seed'][s][0] == SEEDS[s]
  with pytest.raises(ValueError, match='same size'):
    stacking.stack_clients([per_seed[0], per_seed[1][:2]])


def test_stacked_clients_are_stack_clients_padded_once():
  seeds = Seeds.build(make_config(clients_per_round=3))
  held = stacking.StackedClients(SEEDS, seeds.data, 4)
  for t in (1, 2, 1):
    cohorts = [training.sample_cohort(s, t, 4, 3) for s in SEEDS]
    got = held.cohort(cohorts, t)
    want = stacking.stack_clients([seeds.cohort(s, t) for s in SEEDS])
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
      assert list(g) == list(w)
      for name in w:
        np.testing.assert_array_equal(g[name], w[name])
      assert not g['x'].flags.writeable and not g['y'].flags.writeable
  # The same members again: the same padded arrays, not new ones.
  cohorts = [training.sample_cohort(s, 1, 4, 3) for s in SEEDS]
  assert held.cohort(cohorts, 1)[0]['x'] is held.cohort(cohorts, 2)[0]['x']
