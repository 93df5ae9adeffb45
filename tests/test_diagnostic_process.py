"""The diagnostic TFF computations against the ordinary round and NumPy."""

import types

import numpy as np
import pytest

import numpy_reference as ref
from test_process import (C, D, SIZES, build, make_clients, make_config,
                          round_batches, round_data)
from tff_localsgd import diagnostic_process
from tff_localsgd import diagnostics
from tff_localsgd.engines import native


@pytest.fixture(scope='module', autouse=True)
def engine():
  with native.native_engine() as worker:
    yield worker


def build_all(config):
  """(spec, proc, the diagnostic computations under one name)."""
  spec, proc = build(config)
  lockstep = diagnostic_process.Lockstep(proc, config)
  model = diagnostic_process.ModelMeasures(proc, config, (D,))
  return spec, proc, types.SimpleNamespace(
      lockstep_next=lockstep.next, spectral_norms=model.spectral_norms,
      measure_model=model.measure, ntk_gram=model.ntk_gram)


def norm(arrays):
  return float(np.sqrt(sum(np.sum(np.square(a)) for a in arrays)))


@pytest.mark.parametrize('overrides', [
    dict(algorithm='local_sgd', local_steps=3),
    dict(algorithm='local_gd', local_steps=4, server_lr=0.5),
    dict(algorithm='local_sgd', local_steps=2, train_layers='hidden'),
])
def test_lockstep_round_advances_the_model_like_the_ordinary_round(overrides):
  config = make_config(**overrides)
  spec, proc, diag = build_all(config)
  clients = make_clients()
  plain = lockstep = proc.initialize()
  for t in range(3):
    plain, _ = proc.next(plain, round_data(clients, t))
    lockstep, _, _ = diag.lockstep_next(lockstep, round_data(clients, t))
  moved = max(float(np.max(np.abs(a - b)))
              for a, b in zip(plain, spec.initial_weights))
  assert moved > 1e-3
  for a, b in zip(plain, lockstep):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize('steps_per_call', [1, 2])
def test_lockstep_round_in_chunks_equals_one_call(steps_per_call):
  # Chunks bound the memory; they must not change a single bit.
  config = make_config(algorithm='local_sgd', local_steps=3)
  _, proc, diag = build_all(config)
  data = round_data(make_clients(), 1)
  weights = proc.initialize()
  whole = diag.lockstep_next(weights, data)
  chunked = diag.lockstep_next(weights, data, steps_per_call=steps_per_call)
  for a, b in zip(whole[0], chunked[0]):
    np.testing.assert_array_equal(a, b)
  assert len(chunked[1]['steps']) == 3
  for name in ('steps', 'model_divergence', 'grad_diff_vs_start'):
    assert repr(whole[1][name]) == repr(chunked[1][name])
  for name, values in whole[2].items():
    np.testing.assert_array_equal(values, chunked[2][name])


def numpy_drift(weights, clients, batches, lr, steps):
  """Per-step drift of one Local SGD round, from the definitions, in float64."""
  counts = np.array([len(x) for x, _ in clients], np.float64)
  p = counts / counts.sum()
  local = [ref._as64(weights) for _ in clients]
  grad = lambda w, i: ref.gradient(w, *clients[i])[1]
  out = []
  for k in range(steps):
    avg = ref.weighted_average(local, counts)
    g_local = [grad(local[i], i) for i in range(len(clients))]
    g_avg = [grad(avg, i) for i in range(len(clients))]
    diff = [norm([a - b for a, b in zip(g_local[i], g_avg[i])])
            for i in range(len(clients))]
    dist = [norm([a - b for a, b in zip(local[i], avg)])
            for i in range(len(clients))]
    # Hessian-vector products by central differences of the gradient.
    residual = []
    for i in range(len(clients)):
      v = [a - b for a, b in zip(local[i], avg)]
      eps = 1e-4 / max(norm(v), 1e-30)
      plus = grad([a + eps * b for a, b in zip(avg, v)], i)
      minus = grad([a - eps * b for a, b in zip(avg, v)], i)
      hv = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
      residual.append(norm([gl - ga - h for gl, ga, h in
                            zip(g_local[i], g_avg[i], hv)]))
    grad_norm = norm([sum(p[i] * g_avg[i][l] for i in range(len(clients)))
                      for l in range(len(weights))])
    grad_diff = float(p @ diff)
    out.append(dict(
        grad_diff=grad_diff,
        grad_diff_rel=grad_diff / grad_norm,
        smooth_eff=lr * grad_diff / float(p @ dist) if k else 0.0,
        nonsmooth_frac=float(p @ residual) / grad_diff if k else 0.0))
    local = [ref.gd_steps(local[i], *clients[i], lr=lr, steps=1,
                          batches=[batches[i][k]])[0]
             for i in range(len(clients))]
  avg = ref.weighted_average(local, counts)
  divergence = float(p @ [norm([a - b for a, b in zip(w, avg)])
                          for w in local])
  start = ref._as64(weights)
  vs_start = float(p @ [norm([a - b for a, b in zip(grad(local[i], i),
                                                      grad(start, i))])
                        for i in range(len(clients))])
  return out, divergence, vs_start


def test_lockstep_drift_matches_numpy():
  config = make_config(local_steps=3, batch_size=4, client_lr=0.5)
  spec, proc, diag = build_all(config)
  clients = make_clients()
  weights = proc.initialize()
  _, summary, per_client = diag.lockstep_next(weights, round_data(clients, 0))
  batches = round_batches(clients, 0, 3, 4)
  want, divergence, vs_start = numpy_drift(weights, clients, batches, 0.5, 3)
  assert want[1]['grad_diff'] > 1e-3  # the clients really drift apart
  for k, (got, expected) in enumerate(zip(summary['steps'], want)):
    for name in diagnostic_process.DRIFT_STEP_METRICS:
      assert float(got[name]) == pytest.approx(expected[name], rel=1e-4,
                                               abs=1e-7), (k, name)
  assert float(summary['model_divergence']) == pytest.approx(divergence,
                                                              rel=1e-4)
  assert float(summary['grad_diff_vs_start']) == pytest.approx(vs_start,
                                                                rel=1e-4)
  assert len(per_client['grad_diff']) == len(SIZES)


def test_drift_is_exactly_zero_for_one_step_or_one_client():
  config = make_config(local_steps=1)
  _, proc, diag = build_all(config)
  _, summary, _ = diag.lockstep_next(proc.initialize(),
                                     round_data(make_clients(), 0))
  assert [float(s['grad_diff']) for s in summary['steps']] == [0.0]
  assert float(summary['model_divergence']) > 0  # the clients did move apart

  one = make_config(local_steps=3, num_clients=1, num_examples=SIZES[0])
  _, proc, diag = build_all(one)
  clients = make_clients()[:1]
  _, summary, _ = diag.lockstep_next(proc.initialize(), round_data(clients, 0))
  for step in summary['steps']:
    assert {k: float(v) for k, v in step.items()} == dict.fromkeys(
        diagnostic_process.DRIFT_STEP_METRICS, 0.0)
  assert float(summary['model_divergence']) == 0.0


def test_measured_round_is_the_ordinary_round_plus_grad_diff_vs_start():
  config = make_config(local_steps=3, batch_size=4, client_lr=0.5)
  _, proc, _ = build_all(config)
  clients = make_clients()
  weights = proc.initialize()
  plain, _ = proc.next(weights, round_data(clients, 0))
  measured, metrics = diagnostic_process.measured_round(proc)(
      weights, round_data(clients, 0))
  for a, b in zip(plain, measured):
    np.testing.assert_array_equal(a, b)
  _, _, vs_start = numpy_drift(weights, clients,
                               round_batches(clients, 0, 3, 4), 0.5, 3)
  assert float(metrics['grad_diff_vs_start']) == pytest.approx(vs_start,
                                                               rel=1e-4)


def test_model_diagnostics_match_direct_computation():
  config = make_config(train_layers='hidden', depth=2)
  spec, proc, diag = build_all(config)
  clients = make_clients()
  weights = proc.initialize()
  for t in range(2):
    weights, _ = proc.next(weights, round_data(clients, t))
  probe = np.concatenate([x for x, _ in clients])[:10]
  idx = spec.trainable_indices
  norms0 = diag.spectral_norms(spec.initial_weights)
  got = diag.measure_model(weights, spec.initial_weights, norms0, probe,
                           round_data(clients, 0))
  grad_norm, losses = got.pop('grad_norm'), got.pop('client_losses')
  want = diagnostics.weight_change(spec.layers, weights, spec.initial_weights,
                                   idx)
  want.update(diagnostics.activation_flip_fraction(
      spec.layers, weights, spec.initial_weights, probe))
  assert set(got) == set(want)
  for k in want:
    assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-5), k
  np.testing.assert_allclose(
      diag.ntk_gram(weights, probe),
      diagnostics.ntk_gram(spec.layers, weights, idx, probe), rtol=1e-5)
  # ||grad F(w)|| over all clients and each F_i(w), from NumPy.
  counts = np.array(SIZES, np.float64)
  grads = [ref.gradient(weights, x, y)[1] for x, y in clients]
  mean = [sum(c * g[l] for c, g in zip(counts / counts.sum(), grads))
          for l in idx]
  assert float(grad_norm) == pytest.approx(norm(mean), rel=1e-5)
  np.testing.assert_allclose(
      losses, [ref.objective(weights, x, y) for x, y in clients], rtol=1e-5)
