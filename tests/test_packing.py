"""Tests for tff_localsgd.packing: a packed round is the unpacked round.

The reference for a packed computation is the same computation unpacked
(tests/test_process.py checks that one against NumPy): packing must change
where the work runs, not what it computes. TFF calls run on one native engine
shared by the module.
"""

import collections
import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import test_process
from test_process import C, D
from tff_localsgd import config as config_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import local_update
from tff_localsgd import models
from tff_localsgd import packing
from tff_localsgd import process
from tff_localsgd import recorders
from tff_localsgd import recording
from tff_localsgd import training
from tff_localsgd.engines import inprocess
from tff_localsgd.engines import native

TOL = 1e-6
JIT_TOL = 1e-5
SIZES = (9, 4, 23, 6, 14, 5, 31)  # unequal n_i; B = 4 = the smallest
DATA_SEED = 7


@pytest.fixture(scope='module', autouse=True)
def engine():
  with native.native_engine() as worker:
    yield worker


make_config = functools.partial(test_process.make_config, sizes=SIZES)
make_clients = functools.partial(test_process.make_clients, sizes=SIZES)


def cohort_data(clients, cohort, round_num):
  return [process.client_data(*clients[i], DATA_SEED, round_num, i,
                              len(clients)) for i in cohort]


def max_gap(a, b):
  return max(float(np.max(np.abs(np.asarray(u, np.float64) - v)))
             for u, v in zip(a, b))


# The minibatch streams.


def test_uniform_keys_of_a_longer_range_start_with_the_shorter():
  """The fact packed sampling rests on: the stream is counter-based."""
  for s in range(20):
    seed = tf.constant([DATA_SEED, s], tf.int64)
    for step in range(3):
      longest = local_update.step_keys(seed, step, 64).numpy()
      for n in (1, 2, 5, 17, 63):
        np.testing.assert_array_equal(
            local_update.step_keys(seed, step, n).numpy(), longest[:n])


@pytest.mark.parametrize('batch_size', [1, 4])
def test_sample_batches_are_each_clients_own_sample(batch_size):
  sizes = np.array([9, 4, 23, 4, 31], np.int32)
  seeds = np.array([[DATA_SEED, 100 + i] for i in range(len(sizes))], np.int64)
  sample = tf.function(packing.sample_batches)
  for step in range(6):
    got = sample(tf.constant(seeds), tf.constant(step), tf.constant(sizes),
                 tf.constant(int(sizes.max())), batch_size).numpy()
    assert got.shape == (len(sizes), batch_size)
    for i, n in enumerate(sizes):
      want = local_update.sample_batch(tf.constant(seeds[i]), step, int(n),
                                       batch_size).numpy()
      np.testing.assert_array_equal(got[i], want)
  if batch_size == 4:  # n_i = B: all its examples, none of the padding
    assert sorted(got[1].tolist()) == [0, 1, 2, 3]


def test_pack_clients_stacks_pads_and_keeps_order():
  clients = make_clients()
  values = cohort_data(clients, range(len(SIZES)), 2)
  packs = packing.pack_clients(values, 3)
  assert [len(p['num_examples']) for p in packs] == [3, 3, 1]  # remainder
  i = 0
  for pack in packs:
    n_max = max(SIZES[i:i + 3])
    assert pack['x'].shape == (len(pack['num_examples']), n_max, D)
    assert pack['y'].shape == (len(pack['num_examples']), n_max, C)
    assert pack['x'].dtype == np.float32 and pack['seed'].dtype == np.int64
    for j, n in enumerate(pack['num_examples']):
      assert n == SIZES[i]
      np.testing.assert_array_equal(pack['x'][j, :n], values[i]['x'])
      np.testing.assert_array_equal(pack['y'][j, :n], values[i]['y'])
      assert not pack['x'][j, n:].any() and not pack['y'][j, n:].any()
      np.testing.assert_array_equal(pack['seed'][j], values[i]['seed'])
      i += 1
  assert i == len(SIZES)


# The local steps, in TensorFlow.


def _unpacked_local(spec, config, clients, seeds, jit=False):
  """Each client's w_i^{t,K} (trainable) and last loss, one at a time."""
  @tf.function
  def one(weights, x, y, seed):
    return local_update.local_steps_update(
        spec, config.loss, weights, x, y, seed, lr=config.lr,
        local_steps=config.local_steps, batch_size=config.batch_size,
        full_batch=config.algorithm == 'local_gd', jit=jit)

  weights = tuple(tf.constant(w) for w in spec.initial_weights)
  out = [one(weights, x, y, tf.constant(s)) for (x, y), s in zip(clients,
                                                                 seeds)]
  local = [[(w + d).numpy() for w, d in zip(spec.trainable(weights), delta)]
           for delta, _ in out]
  return local, [float(loss) for _, loss in out]


def _packed_local(spec, config, clients, seeds, jit=False):
  values = [collections.OrderedDict(x=x, y=y, seed=s)
            for (x, y), s in zip(clients, seeds)]
  pack, = packing.pack_clients(values, len(values))

  @tf.function
  def run(weights, data):
    return packing.pack_local_steps(
        spec, config.loss, weights, data, lr=config.lr,
        local_steps=config.local_steps, batch_size=config.batch_size,
        full_batch=config.algorithm == 'local_gd', jit=jit)

  local, losses = run(tuple(tf.constant(w) for w in spec.initial_weights),
                      {k: tf.constant(v) for k, v in pack.items()})
  return [w.numpy() for w in local], losses.numpy()


LOCAL_CASES = {
    'local_sgd': dict(algorithm='local_sgd'),
    'local_gd': dict(algorithm='local_gd'),
    'hidden_xent': dict(algorithm='local_sgd', train_layers='hidden', depth=2,
                        dataset='digits', loss='xent'),
}


def local_case(case, seed):
  """(config, spec, clients, per-client minibatch seeds) of a LOCAL_CASES case."""
  config = make_config(**LOCAL_CASES[case])
  seeds = [np.array([DATA_SEED, 10 * seed + i], np.int64)
           for i in range(len(SIZES))]
  return (config, models.build_model(config, (D,), C),
          make_clients(config.loss, seed=seed), seeds)


@pytest.mark.parametrize('case', sorted(LOCAL_CASES))
def test_packed_local_models_are_the_unpacked_ones(case):
  config, spec, clients, seeds = local_case(case, seed=1)
  want, want_loss = _unpacked_local(spec, config, clients, seeds)
  got, got_loss = _packed_local(spec, config, clients, seeds)
  for i in range(len(SIZES)):
    assert max_gap(spec.trainable(spec.initial_weights), want[i]) > 100 * TOL
    for g, w in zip(got, want[i]):
      np.testing.assert_allclose(g[i], w, rtol=0, atol=TOL, err_msg=f'{i}')
  np.testing.assert_allclose(got_loss, want_loss, rtol=TOL)


@pytest.mark.parametrize('case', sorted(LOCAL_CASES))
def test_jit_is_within_1e5_of_no_jit(case):
  """XLA (in this process's TensorFlow) keeps the local models to 1e-5."""
  config, spec, clients, seeds = local_case(case, seed=2)
  want, want_loss = _unpacked_local(spec, config, clients, seeds)
  got, got_loss = _unpacked_local(spec, config, clients, seeds, jit=True)
  packed, packed_loss = _packed_local(spec, config, clients, seeds, jit=True)
  for i in range(len(SIZES)):
    for g, p, w in zip(got[i], packed, want[i]):
      np.testing.assert_allclose(g, w, rtol=0, atol=JIT_TOL)
      np.testing.assert_allclose(p[i], w, rtol=0, atol=JIT_TOL)
  np.testing.assert_allclose(got_loss, want_loss, rtol=JIT_TOL)
  np.testing.assert_allclose(packed_loss, want_loss, rtol=JIT_TOL)


# Whole rounds, as TFF computations on the native engine.

ROUND_CASES = {
    # name: (config overrides, clients_per_pack)
    'local_sgd': (dict(algorithm='local_sgd'), 2),
    'local_sgd_one_pack': (dict(algorithm='local_sgd'), 5),
    'local_gd': (dict(algorithm='local_gd'), 2),
    'minibatch_sgd': (dict(algorithm='minibatch_sgd', local_steps=1), 3),
    'hidden_xent': (dict(train_layers='hidden', depth=2, dataset='digits',
                         loss='xent', client_lr=1.0), 2),
}


@pytest.mark.parametrize('case', sorted(ROUND_CASES))
def test_packed_round_is_the_unpacked_round(case):
  """w^{t+1} and the round metrics, with 5 of 7 clients per round."""
  overrides, pack = ROUND_CASES[case]
  overrides = dict(overrides, clients_per_round=5, server_lr=0.7)
  config = make_config(**overrides)
  spec = models.build_model(config, (D,), C)
  unpacked = process.LocalSGDProcess(spec, config, (D,), C)
  packed = process.LocalSGDProcess(
      spec, make_config(**overrides, clients_per_pack=pack), (D,), C)
  clients = make_clients(config.loss, seed=3)
  want = got = unpacked.initialize()
  for t in (1, 2):
    cohort = training.sample_cohort(0, t, len(SIZES), config.cohort_size)
    data = cohort_data(clients, cohort, t)
    assert len(packed.pack(data)) == -(-len(cohort) // pack)
    # The measured round first: it moves the weights as next does.
    _, want_measured = diagnostic_process.measured_round(unpacked)(
        want, data)
    _, got_measured = diagnostic_process.measured_round(packed)(
        got, packed.pack(data))
    previous = want
    want, want_metrics = unpacked.next(want, data)
    got, got_metrics = packed.next(got, packed.pack(data))
    assert max_gap(previous, want) > 100 * TOL
    for i, (g, w) in enumerate(zip(got, want)):
      np.testing.assert_allclose(g, w, rtol=0, atol=TOL, err_msg=f'layer {i}')
    for name in ('local_loss', 'grad_diff_vs_start'):
      assert float(got_measured[name]) == pytest.approx(
          float(want_measured[name]), rel=TOL)
      assert float(want_measured[name]) > 0
    assert float(got_metrics['local_loss']) == pytest.approx(
        float(want_metrics['local_loss']), rel=TOL)


@pytest.mark.parametrize('pack', [1, 3])
def test_jit_rounds_on_the_inprocess_engine_are_within_1e5(pack):
  """--jit where XLA runs: the in-process engine, against native, no XLA."""
  overrides = dict(algorithm='local_sgd', clients_per_round=5)
  config = make_config(**overrides)
  spec = models.build_model(config, (D,), C)
  plain = process.LocalSGDProcess(spec, config, (D,), C)
  jitted = process.LocalSGDProcess(
      spec, make_config(**overrides, clients_per_pack=pack, jit=True,
                        engine='inprocess'), (D,), C)
  clients = make_clients(seed=4)
  rounds = [cohort_data(clients, training.sample_cohort(
      0, t, len(SIZES), config.cohort_size), t) for t in (1, 2)]
  want = plain.initialize()
  for data in rounds:
    want, want_metrics = plain.next(want, data)
  with inprocess.inprocess_engine(''):
    got = jitted.initialize()
    for data in rounds:
      got, got_metrics = jitted.next(got, jitted.pack(data))
  assert max_gap(spec.initial_weights, want) > 100 * JIT_TOL
  assert max_gap(got, want) < JIT_TOL
  assert float(got_metrics['local_loss']) == pytest.approx(
      float(want_metrics['local_loss']), rel=JIT_TOL)


def test_training_run_with_packs_equals_unpacked(tmp_path):
  """The run loop packs for the round only (evaluation takes clients)."""
  base = dict(dataset='synthetic', num_examples=120, input_dim=D,
              output_dim=C, num_clients=8, partition='dirichlet',
              dirichlet_alpha=0.5, clients_per_round=5, width=32, depth=1,
              local_steps=3, batch_size=2, client_lr=0.3, lr_scale='none',
              rounds=2, eval_every=1, checkpoint_every=1,
              root_dir=str(tmp_path))
  results = {}
  for pack in (1, 3):
    experiment = training.Setup.prepare(config_lib.ExperimentConfig(
        **base, clients_per_pack=pack, experiment=f'p{pack}'))
    sizes = experiment.data.client_sizes
    summary = recording.run(experiment)
    assert summary['status'] == 'completed'
    _, weights = recorders.latest_checkpoint(
        str(tmp_path / f'p{pack}' / 'checkpoints'),
        [w.shape for w in experiment.spec.initial_weights])
    results[pack] = summary['final'], weights
  assert len(set(sizes)) > 2  # the partition is unequal
  (want, want_w), (got, got_w) = results[1], results[3]
  assert max_gap(got_w, want_w) < TOL
  for name in ('train/loss', 'train/local_loss'):
    assert got[name] == pytest.approx(want[name], rel=TOL)


# Refused configurations.


def test_cnn_with_packs_is_refused():
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.ExperimentConfig(dataset='digits', model='cnn', loss='xent',
                                clients_per_pack=2).validate()
  assert info.value.field == 'clients_per_pack'


def test_xla_compiles_in_process_and_is_ignored_by_the_worker_binary():
  """Why --jit needs --engine=inprocess: a function XLA cannot compile."""
  not_compilable = local_update.xla(
      lambda v: tf.strings.to_number(tf.strings.as_string(v)), True)

  @tff.tensorflow.computation(tff.TensorType(np.float32, [2]))
  def comp(v):
    return not_compilable(v)

  value = np.array([1.5, 2.0], np.float32)
  np.testing.assert_array_equal(comp(value), value)  # the native engine
  with inprocess.inprocess_engine(''):
    with pytest.raises(tf.errors.InvalidArgumentError, match='XLA'):
      comp(value)


@pytest.mark.parametrize('engine', ['native', 'auto'])
def test_jit_outside_the_inprocess_engine_is_refused(engine):
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.ExperimentConfig(jit=True, engine=engine).validate()
  assert info.value.field == 'jit'
  config_lib.ExperimentConfig(jit=True, engine='inprocess').validate()
