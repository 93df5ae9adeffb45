"""The in-process engine against the native TFF runtime: the same computations
must give the same results."""

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.mapreduce import form_utils

from test_process import (D, SIZES, build, make_clients, make_config,
                          round_data)
from tff_localsgd import config as config_lib
from tff_localsgd import diagnostic_process
from tff_localsgd import engines
from tff_localsgd import recorders
from tff_localsgd import recording
from tff_localsgd import rundir
from tff_localsgd import training
from tff_localsgd.engines import inprocess
from tff_localsgd.engines import native
from tff_localsgd.engines import tf_graph

ROUNDS = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_rounds(proc, clients, cohort=None):
  """R rounds of next, then the measured round and evaluate: all Python
  values."""
  weights = proc.initialize()
  for t in range(ROUNDS):
    weights, metrics = proc.next(weights, round_data(clients, t)[:cohort])
  _, measured = diagnostic_process.measured_round(proc)(
      weights, round_data(clients, ROUNDS))
  return weights, metrics, measured, proc.evaluate(weights,
                                                   round_data(clients, 0))


@pytest.mark.parametrize('overrides', [
    dict(algorithm='local_sgd'),
    dict(algorithm='local_gd', server_lr=0.5),
    dict(algorithm='minibatch_sgd', local_steps=1),
    dict(algorithm='local_sgd', train_layers='hidden', depth=2),
    dict(algorithm='local_sgd', dataset='digits', loss='xent'),
])
def test_inprocess_engine_equals_native(overrides):
  config = make_config(**overrides)
  spec, proc = build(config)
  clients = make_clients(loss=config.loss)
  with native.native_engine():
    want = run_rounds(proc, clients)
  with inprocess.inprocess_engine('/CPU:0'):
    got = run_rounds(proc, clients)
  moved = max(float(np.max(np.abs(w - w0)))
              for w, w0 in zip(want[0], spec.initial_weights))
  assert moved > 1e-3
  for g, w in zip(got[0], want[0]):
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
  for got_metrics, want_metrics in zip(got[1:], want[1:]):
    assert list(got_metrics) == list(want_metrics)  # same names, same order
    for name in want_metrics:
      np.testing.assert_allclose(flat(got_metrics[name]),
                                 flat(want_metrics[name]), rtol=1e-6,
                                 err_msg=name)


def flat(value) -> list:
  """A metric's numbers: a scalar, or a struct's (the round's `start`)."""
  if isinstance(value, dict):
    return [float(v) for v in value.values()]
  return [float(value)]


@pytest.mark.parametrize('engine', ['native', 'inprocess'])
@pytest.mark.parametrize('loss', ['mse', 'xent'])
def test_the_round_evaluates_its_start_as_evaluate_does(engine, loss):
  # train/loss of w^t comes from round t+1 (training.rounds): it must be the
  # bits `evaluate` gives, with every client, unpacked and in order.
  config = make_config(loss=loss, dataset='digits' if loss == 'xent' else
                       'synthetic', algorithm='local_gd')
  spec, proc = build(config)
  clients = round_data(make_clients(loss, seed=3), 0)
  rng = np.random.default_rng(4)
  weights = tuple((w + 0.3 * rng.standard_normal(w.shape) * np.std(w)).astype(
      np.float32) for w in spec.initial_weights)
  run = (native.native_engine() if engine == 'native' else
         inprocess.inprocess_engine('/CPU:0'))
  with run:
    _, metrics = proc.next(weights, clients)
    want = proc.evaluate(weights, clients)
  assert list(metrics['start']) == list(want)
  for name in want:
    assert np.float32(metrics['start'][name]).tobytes() == np.float32(
        want[name]).tobytes(), name
  assert float(want['loss_sum']) > 0
  # Not when the round's clients are packs or a sampled cohort, nor when
  # not every round is evaluated.
  for other in (dict(clients_per_pack=2), dict(clients_per_round=3),
                dict(eval_every=2)):
    _, proc = build(dataclasses.replace(config, **other))
    assert not proc.evaluates_start


def _worker_binaries() -> list:
  return [p for p in psutil.Process().children(recursive=True)
          if 'worker_binary' in ' '.join(p.cmdline())]


def test_the_round_and_initialize_run_in_process_with_no_worker():
  # initialize has no clients' input and so no MapReduceForm: it runs as
  # one graph (federated_graph.py) and gives w^0's very bits. Nothing
  # needs the native worker, so none is started.
  config = make_config()
  spec, proc = build(config)
  before = _worker_binaries()
  with inprocess.inprocess_engine('/CPU:0') as context:
    weights = proc.initialize()
    proc.next(weights, round_data(make_clients(), 0))
    assert context.runs_here(proc.iterative_process.next)
    assert context.runs_here(proc.iterative_process.initialize)
    assert _worker_binaries() == before
  assert len(weights) == len(spec.initial_weights)
  for got, want in zip(weights, spec.initial_weights):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_what_runs_neither_way_goes_to_a_worker_started_for_it():
  # Two aggregations in series (no MapReduceForm) and a value evaluated at
  # the clients (outside federated_graph.SUPPORTED): the native worker's.
  @tff.tensorflow.computation
  def one():
    return np.float32(1)

  @tff.tensorflow.computation(np.float32, np.float32)
  def add(a, b):
    return a + b

  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def comp(x):
    total = tff.federated_broadcast(tff.federated_sum(x))
    ones = tff.federated_eval(one, tff.CLIENTS)
    return tff.federated_sum(tff.federated_map(add, (total, ones)))

  before = _worker_binaries()
  with inprocess.inprocess_engine('/CPU:0') as context:
    assert _worker_binaries() == before
    assert float(comp([1.0, 2.0, 4.0])) == 3 * (7.0 + 1.0)
    assert not context.runs_here(comp)
    assert len(_worker_binaries()) == len(before) + 1
  deadline = time.monotonic() + 10
  while len(_worker_binaries()) > len(before):
    assert time.monotonic() < deadline, 'the worker outlived the engine'
    time.sleep(0.1)


def test_measure_model_runs_in_process_and_equals_native():
  # One broadcast, one federated_sum (per-client losses as F_i e_i), so it
  # has a MapReduceForm: the in-process engine must not send it to the worker.
  config = make_config()
  spec, proc = build(config)
  diag = diagnostic_process.ModelMeasures(proc, config, (D,))
  clients = round_data(make_clients(), 0)
  probe = np.concatenate([c['x'] for c in clients])[:6]

  def measure(weights):
    return diag.measure(weights, spec.initial_weights,
                        diag.spectral_norms(spec.initial_weights),
                        probe, clients)

  with native.native_engine():
    weights, _ = proc.next(proc.initialize(), clients)
    want = measure(weights)
  with inprocess.inprocess_engine('/CPU:0') as context:
    got = measure(weights)
    assert context.runs_here(diag.measure_model)
  assert list(got) == list(want)
  assert float(want['weight_change_rel']) > 0 and float(want['grad_norm']) > 0
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6,
                               err_msg=name)


@pytest.mark.parametrize('steps_per_call', [None, 2])
def test_the_lockstep_round_runs_in_process_as_one_graph_and_equals_native(
    steps_per_call):
  # K + 1 aggregations and results at the clients: no MapReduceForm. The
  # engine runs its lowered form as one graph per call (federated_graph.py);
  # in chunks (steps_per_call=2 of K=3) local models cross between calls.
  config = make_config(algorithm='local_sgd', local_steps=3, depth=2)
  _, proc = build(config)
  lockstep = diagnostic_process.Lockstep(proc, config)
  data = round_data(make_clients(), 1)

  def run(weights):
    return lockstep.next(weights, data, steps_per_call=steps_per_call)

  with native.native_engine():
    start, _ = proc.next(proc.initialize(), round_data(make_clients(), 0))
    want = run(start)
  with inprocess.inprocess_engine('/CPU:0') as context:
    got = run(start)
    assert context.runs_here(lockstep.chunk(0, steps_per_call or 3))
  moved = max(float(np.max(np.abs(w - s))) for w, s in zip(want[0], start))
  assert moved > 1e-3
  for g, w in zip(got[0], want[0]):
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
  assert len(got[1]['steps']) == len(want[1]['steps']) == 3
  for g, w in zip(got[1]['steps'], want[1]['steps']):
    assert list(g) == list(w)
    np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=1e-5)
  for name in ('model_divergence', 'grad_diff_vs_start'):
    np.testing.assert_allclose(got[1][name], want[1][name], rtol=1e-5)
  assert list(got[2]) == list(want[2])
  for name, values in want[2].items():
    assert len(got[2][name]) == len(values) == len(SIZES)
    np.testing.assert_allclose(got[2][name], values, rtol=1e-5, atol=1e-7,
                               err_msg=name)


@pytest.mark.parametrize('partition', ['iid', 'dirichlet', 'shards'])
def test_training_on_either_engine_gives_the_same_run(tmp_path, partition):
  # End to end, with a sampled cohort and the diagnostics (whose lockstep
  # round runs natively beside the in-process engine).
  base = config_lib.ExperimentConfig(
      num_examples=96, input_dim=8, num_clients=6, clients_per_round=4,
      width=32, batch_size=4, local_steps=3, rounds=3, partition=partition,
      diag_every=2, probe_size=8, root_dir=str(tmp_path))
  rows = {}
  for engine in ('native', 'inprocess'):
    config = dataclasses.replace(base, engine=engine, experiment=engine)
    summary = recording.run(training.Setup.prepare(config))
    assert summary['status'] == 'completed'
    rows[engine] = recorders.read_metrics(
        rundir.RunDir(config).file(rundir.METRICS_CSV))
  assert len(rows['native']) == len(rows['inprocess']) == base.rounds + 1
  for want, got in zip(rows['native'], rows['inprocess']):
    for column, value in want.items():
      if column.startswith('system_') or value == '':
        continue
      np.testing.assert_allclose(float(got[column]), float(value), rtol=2e-5,
                                 atol=1e-7, err_msg=column)


@pytest.mark.parametrize('engine', ['native', 'inprocess'])
def test_runs_differing_only_in_seed_share_computations_bit_for_bit(
    tmp_path, monkeypatch, engine):
  # A trial worker's next trial of the same config with another seed reuses
  # the computations (traced, and compiled in-process, once); its run must
  # be the one it has alone, with a budget of its own (a suite's seeds have
  # theirs). Diagnostics (lockstep and measured rounds) on.
  base = config_lib.ExperimentConfig(
      num_examples=48, input_dim=6, num_clients=3, width=32, batch_size=4,
      local_steps=2, rounds=4, diag_every=2, probe_size=8, engine=engine,
      root_dir=str(tmp_path))
  configs = [dataclasses.replace(base, seed=seed, rounds=4 + seed,
                                 experiment=f'seed-{seed}')
             for seed in (0, 1)]
  configs.append(dataclasses.replace(configs[1], experiment='alone'))
  monkeypatch.setattr(training, '_shared', type(training._shared)())
  runs = []
  for config in configs:
    if config.experiment == 'alone':
      training._shared.clear()
    summary = recording.run(training.Setup.prepare(config))
    rows = recorders.read_metrics(
        rundir.RunDir(config).file(rundir.METRICS_CSV))
    runs.append((summary, [{k: v for k, v in row.items()
                            if not k.startswith('system_')} for row in rows]))
    assert len(training._shared) == 1
  (first, first_rows), (shared, shared_rows), (alone, alone_rows) = runs
  assert shared['final_weights_sha256'] == alone['final_weights_sha256']
  assert shared_rows == alone_rows
  assert first['final_weights_sha256'] != shared['final_weights_sha256']
  # Sharing skipped the tracing (and the in-process compilation).
  assert shared['phases_s']['trace_s'] < alone['phases_s']['trace_s'] / 2


def _pieces_one_at_a_time(computation, state, clients):
  """The round as the MapReduceForm's pieces, one call each, clients in
  order (the in-process engine before the pieces were fused into one
  graph): the reference the fused round must equal bit for bit."""
  form = form_utils.get_map_reduce_form_for_computation(computation)
  piece = {name: tf_graph.TFGraph(getattr(form, name), '/CPU:0')
           for name in ('prepare', 'work', 'zero', 'accumulate', 'report',
                        'update')}
  state_type, clients_type = computation.type_signature.parameter
  flat_state = tf_graph.flatten(state, state_type)
  broadcast = piece['prepare'](*flat_state)
  accumulator = piece['zero']()
  num_updates = len(tf_graph.leaves(form.work.type_signature.result[0]))
  for client in clients:
    data = tf_graph.flatten(client, clients_type.member)
    update = piece['work'](*data, *broadcast)[:num_updates]
    accumulator = piece['accumulate'](*accumulator, *update)
  result = piece['update'](*flat_state, *piece['report'](*accumulator))
  return [t.numpy() for t in result]


@pytest.mark.parametrize('overrides,clients_per_call', [
    (dict(algorithm='local_gd'), 16),
    (dict(algorithm='local_sgd', train_layers='hidden', depth=2), 16),
    (dict(algorithm='local_sgd', local_steps=12), 16),  # K > unrolled: a loop
    (dict(algorithm='local_gd', clients_per_pack=2), 16),
    (dict(algorithm='local_sgd'), 3),  # 4 clients in chunks of 3 and 1
    (dict(algorithm='local_sgd'), 1),
])
def test_the_fused_round_has_the_bits_of_its_pieces(monkeypatch, overrides,
                                                    clients_per_call):
  monkeypatch.setattr(inprocess, 'CLIENTS_PER_CALL', clients_per_call)
  config = make_config(**overrides)
  spec, proc = build(config)
  clients = proc.pack(round_data(make_clients(), 1))
  computation = proc.iterative_process.next
  want = _pieces_one_at_a_time(computation, spec.initial_weights, clients)
  with inprocess.inprocess_engine('/CPU:0') as context:
    weights, metrics = proc.next(spec.initial_weights, clients)
    assert context.runs_here(computation)
  got = tf_graph.flatten((weights, metrics),
                           computation.type_signature.result)
  assert len(got) == len(want) > len(weights)
  assert np.max(np.abs(weights[1] - spec.initial_weights[1])) > 1e-3
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)


def test_read_only_arrays_come_back_as_their_tensors():
  # The next round's state is the arrays the last round returned, read-only;
  # a client's data is read-only (data.py) and the same every round. The
  # engine converts such arrays once; the bits are those of fresh copies,
  # and a changed state or client is converted anew.
  config = make_config(algorithm='local_gd')
  spec, proc = build(config)
  clients = make_clients()
  frozen = [(np.array(x), np.array(y)) for x, y in clients]
  for x, y in frozen:
    x.setflags(write=False)
    y.setflags(write=False)
  with inprocess.inprocess_engine('/CPU:0'):
    first, _ = proc.next(spec.initial_weights, round_data(frozen, 1))
    assert all(not w.flags.writeable for w in first)
    again, _ = proc.next(first, round_data(frozen, 2))  # held tensors
    copied, _ = proc.next(tuple(np.array(w) for w in first),
                          round_data(clients, 2))
    moved = tuple(np.array(w) + np.float32(0.5) for w in first)
    elsewhere, _ = proc.next(moved, round_data(frozen, 2))
    other_data, _ = proc.next(first, round_data(make_clients(seed=5), 2))
  for a, c in zip(again, copied):
    np.testing.assert_array_equal(a, c)
  assert not np.array_equal(elsewhere[1], again[1])
  assert not np.array_equal(other_data[1], again[1])


def test_auto_picks_inprocess_only_with_a_gpu():
  config = config_lib.ExperimentConfig(engine='auto')
  has_gpu = bool(tf.config.list_physical_devices('GPU'))
  assert engines.resolve(config) == ('inprocess' if has_gpu else 'native')
  assert engines.resolve(dataclasses.replace(config, engine='native')) == (
      'native')


@pytest.mark.skipif(not tf.config.list_physical_devices('GPU'),
                    reason='needs a GPU: TensorFlow sees none')
def test_inprocess_engine_places_the_matmuls_on_the_gpu(capfd):
  config = make_config(width=64)
  _, proc = build(config)
  tf.debugging.set_log_device_placement(True)
  try:
    with inprocess.inprocess_engine() as context:
      assert context.device == '/GPU:0'
      proc.next(proc.initialize(), round_data(make_clients(), 0))
  finally:
    tf.debugging.set_log_device_placement(False)
  placed = [line for line in capfd.readouterr().err.splitlines()
            if 'MatMul' in line]
  assert placed and all('GPU:0' in line for line in placed), placed[:5]


# A plain TF computation (a server-side diagnostic) run by the in-process
# engine on /CPU:1 of a CPU split in two: its matmul's assigned device. In
# a fresh process, as the split must come before TensorFlow starts.
_PLACED_ON = '''
import numpy as np, tensorflow as tf, tensorflow_federated as tff
from tensorflow.python.eager import context
from tff_localsgd import gpu_check
from tff_localsgd.engines import inprocess
gpu_check.split_cpu()

@tff.tensorflow.computation(tff.TensorType(np.float32, [8, 8]))
def square(a):
  return tf.matmul(a, a)

with inprocess.inprocess_engine('/CPU:1') as engine:
  engine.prepare([square])
  context.enable_run_metadata()
  square(np.eye(8, dtype=np.float32))
  placed = gpu_check.placement_from(context.export_run_metadata(), '/CPU:1')
  print(engine.runs_here(square), placed.describe())
'''


def test_a_plain_tf_computation_runs_on_the_engines_device():
  done = subprocess.run([sys.executable, '-c', _PLACED_ON], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.splitlines()[-1] == (
      'True 1 of 1 matmuls on /CPU:1 (1 on /CPU:1)')
