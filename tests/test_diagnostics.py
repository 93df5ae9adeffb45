"""Tests for tff_localsgd.diagnostics against NumPy and explicit autodiff."""

import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from numpy_reference import assert_close_rel
from tff_localsgd import diagnostics
from tff_localsgd import models

# float32 unit roundoff.
U32 = np.finfo(np.float32).eps / 2


def perturb(weights, indices, scale, seed):
  """weights with N(0, (scale * rms(W_l))^2) noise added to the layers given."""
  rng = np.random.default_rng(seed)
  out = [np.array(w) for w in weights]
  for i in indices:
    rms = np.sqrt(np.mean(np.square(out[i])))
    out[i] = (out[i] + scale * rms * rng.standard_normal(out[i].shape)).astype(
        np.float32)
  return out


def numpy_conv2d_same(x, w, stride):
  """TF's conv2d with padding='SAME' (pad_before = total // 2), in float64."""
  n, height, width, _ = x.shape
  kh, kw, _, cout = w.shape
  oh, ow = -(-height // stride), -(-width // stride)
  ph = max((oh - 1) * stride + kh - height, 0)
  pw = max((ow - 1) * stride + kw - width, 0)
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                  (0, 0)))
  out = np.zeros((n, oh, ow, cout))
  for a in range(kh):
    for b in range(kw):
      patch = xp[:, a:a + stride * (oh - 1) + 1:stride,
                 b:b + stride * (ow - 1) + 1:stride, :]
      out += np.einsum('nhwc,co->nhwo', patch, w[a, b])
  return out


def numpy_cnn_preactivations(weights, x):
  """[z_conv1, z_conv2, z_out] of models.build_cnn, in float64."""
  w1, w2, w3 = [np.asarray(w, np.float64) for w in weights]
  z1 = numpy_conv2d_same(np.asarray(x, np.float64), w1, 1)
  z2 = numpy_conv2d_same(np.maximum(z1, 0), w2, 2)
  z3 = np.maximum(z2, 0).reshape(len(x), -1) @ w3
  return [z1, z2, z3]


def mlp_problem(seed=0, n=12, d=5, c=3, loss='mse'):
  return ref.problem(loss, seed, n, d, c)


def images(n, seed=0):
  return np.random.default_rng(seed).standard_normal((n, 8, 8, 1)).astype(
      np.float32)


def to_numpy(d):
  return {k: (v.numpy() if hasattr(v, 'numpy') else v) for k, v in d.items()}


# Spectral norm and weight change.


@pytest.mark.parametrize('shape', [(64, 64), (256, 256), (50, 80), (90, 30)])
def test_spectral_norm_matches_numpy(shape):
  for seed in range(3):
    m = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    want = np.linalg.norm(m.astype(np.float64), ord=2)
    got = float(diagnostics.spectral_norm(m))
    assert got == pytest.approx(want, rel=1e-4)
    # A lower bound, up to float32 rounding of ||M v||.
    assert got <= want * (1 + 10 * U32)


def test_spectral_norm_low_rank_and_zero():
  rng = np.random.default_rng(1)
  u, v = rng.standard_normal((40, 2)), rng.standard_normal((2, 40))
  m = (u @ v).astype(np.float32)
  assert float(diagnostics.spectral_norm(m)) == pytest.approx(
      np.linalg.norm(m.astype(np.float64), ord=2), rel=1e-5)
  assert float(diagnostics.spectral_norm(np.zeros((8, 8), np.float32))) == 0.0


@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
def test_weight_change_matches_numpy(train_layers):
  spec = models.build_mlp(5, 3, width=32, depth=2, train_layers=train_layers,
                          seed=3)
  w0 = spec.initial_weights
  idx = spec.trainable_indices
  # Every layer moves (frozen ones too: they must not count), by different
  # amounts per layer.
  w = [np.array(x) for x in w0]
  for i, scale in enumerate([0.3, 0.05, 0.2, 0.7]):
    w = perturb(w, [i], scale, seed=10 + i)
  got = to_numpy(diagnostics.weight_change(spec.layers, w, w0, idx))

  want = {}
  w64 = [np.asarray(a, np.float64) for a in w]
  w064 = [np.asarray(a, np.float64) for a in w0]
  for i in idx:
    name = spec.layers[i].name
    delta = w64[i] - w064[i]
    want[f'weight_change_rel/{name}'] = (
        np.linalg.norm(delta, 'fro') / np.linalg.norm(w064[i], 'fro'))
    if name.startswith('hidden_'):
      want[f'weight_change_spectral_rel/{name}'] = (
          np.linalg.norm(delta, 2) / np.linalg.norm(w064[i], 2))
  flat = np.concatenate([(w64[i] - w064[i]).ravel() for i in idx])
  flat0 = np.concatenate([w064[i].ravel() for i in idx])
  want['weight_change_rel'] = np.linalg.norm(flat) / np.linalg.norm(flat0)

  assert set(got) == set(want)
  assert len([k for k in got if 'spectral' in k]) == 2  # hidden_1, hidden_2
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-4), k
  # The cached norms of w^0 give the same result as recomputing them.
  norms0 = diagnostics.hidden_spectral_norms(spec.layers, w0, idx)
  assert {k: float(v) for k, v in norms0.items()} == pytest.approx(
      {n: np.linalg.norm(w064[i], 2) for i in idx
       for n in [spec.layers[i].name] if n.startswith('hidden_')}, rel=1e-4)
  cached = to_numpy(diagnostics.weight_change(spec.layers, w, w0, idx,
                                              initial_spectral=norms0))
  assert cached == got


def test_weight_change_zero_is_exactly_zero():
  spec = models.build_mlp(5, 3, width=16, depth=2, seed=0)
  got = diagnostics.weight_change(spec.layers, spec.initial_weights,
                                  spec.initial_weights, spec.trainable_indices)
  assert len(got) == 4 + 2 + 1
  for k, v in got.items():
    assert float(v) == 0.0, k


# Activation flips.


def numpy_flips(pre_a, pre_b):
  flips = [np.sum((a > 0) != (b > 0)) for a, b in zip(pre_a, pre_b)]
  sizes = [a.size for a in pre_a]
  return [f / s for f, s in zip(flips, sizes)], sum(flips) / sum(sizes)


def test_activation_flips_mlp_match_numpy():
  spec = models.build_mlp(6, 3, width=32, depth=2, seed=1)
  w0 = spec.initial_weights
  w = perturb(w0, range(4), 0.5, seed=2)
  x = ref.unit_rows(np.random.default_rng(3), 40, 6)
  got = to_numpy(diagnostics.activation_flip_fraction(spec.layers, w, w0, x))
  _, _, pre = ref.forward(w, x, return_cache=True)
  _, _, pre0 = ref.forward(w0, x, return_cache=True)
  per_layer, total = numpy_flips(pre[:-1], pre0[:-1])  # the output has no ReLU
  names = ['input', 'hidden_1', 'hidden_2']
  assert list(got) == [f'activation_flip_frac/{n}' for n in names] + [
      'activation_flip_frac']
  for n, want in zip(names, per_layer):
    assert got[f'activation_flip_frac/{n}'] == pytest.approx(want, abs=1e-7)
  assert got['activation_flip_frac'] == pytest.approx(total, abs=1e-7)
  # The perturbation is large enough that the test is not comparing zeros.
  assert all(0.02 < f < 0.5 for f in per_layer), per_layer


def test_activation_flips_cnn_match_numpy():
  spec = models.build_cnn((8, 8, 1), 4, width=4, seed=2)
  w0 = spec.initial_weights
  w = perturb(w0, range(3), 0.4, seed=5)
  x = images(6)
  # The hand-written NumPy cnn is the network models.forward computes.
  assert_close_rel(numpy_cnn_preactivations(w, x)[-1],
                   models.forward(spec.layers, w, x).numpy(), 1e-5)
  got = to_numpy(diagnostics.activation_flip_fraction(spec.layers, w, w0, x))
  pre = numpy_cnn_preactivations(w, x)[:2]
  pre0 = numpy_cnn_preactivations(w0, x)[:2]
  assert pre[0].shape == (6, 8, 8, 4) and pre[1].shape == (6, 4, 4, 8)
  per_layer, total = numpy_flips(pre, pre0)
  assert list(got) == ['activation_flip_frac/conv_1',
                       'activation_flip_frac/conv_2', 'activation_flip_frac']
  assert got['activation_flip_frac/conv_1'] == pytest.approx(per_layer[0],
                                                             abs=1e-7)
  assert got['activation_flip_frac/conv_2'] == pytest.approx(per_layer[1],
                                                             abs=1e-7)
  assert got['activation_flip_frac'] == pytest.approx(total, abs=1e-7)
  assert all(0.02 < f < 0.5 for f in per_layer), per_layer


def test_activation_flips_zero_for_identical_weights():
  mlp = models.build_mlp(6, 3, width=16, depth=2, seed=0)
  cnn = models.build_cnn((8, 8, 1), 3, width=4, seed=0)
  x = ref.unit_rows(np.random.default_rng(0), 10, 6)
  for spec, probe in ((mlp, x), (cnn, images(4))):
    got = diagnostics.activation_flip_fraction(
        spec.layers, spec.initial_weights, spec.initial_weights, probe)
    assert len(got) == sum(l.activation == 'relu' for l in spec.layers) + 1
    for k, v in got.items():
      assert float(v) == 0.0, k


def test_negating_first_layer_flips_all_its_units():
  spec = models.build_mlp(6, 3, width=32, depth=1, seed=4)
  w0 = spec.initial_weights
  w = [-w0[0]] + list(w0[1:])
  x = ref.unit_rows(np.random.default_rng(1), 20, 6)
  z0 = x.astype(np.float64) @ w0[0].astype(np.float64)
  assert np.all(z0 != 0)  # so every sign flips
  got = diagnostics.activation_flip_fraction(spec.layers, w, w0, x)
  assert float(got['activation_flip_frac/input']) == 1.0
  # The next layer's pattern changes too, but not entirely.
  assert 0.0 < float(got['activation_flip_frac/hidden_1']) < 1.0


# Empirical NTK.


def jacobian_gram(layers, weights, trainable_indices, x):
  """J J^T from explicit per-example Jacobians of sum(f(x_j)), in float64."""
  w = [tf.constant(np.asarray(a, np.float64)) for a in weights]
  x = tf.constant(np.asarray(x, np.float64))
  train = [w[i] for i in trainable_indices]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(train)
    f = tf.reduce_sum(models.forward(layers, w, x), axis=1)
  jac = tape.jacobian(f, train, experimental_use_pfor=False)
  j = tf.concat([tf.reshape(a, [len(x), -1]) for a in jac], axis=1).numpy()
  return j @ j.T


def check_gram(gram, want):
  assert gram.shape == want.shape and gram.dtype == np.float32
  assert_close_rel(gram, want, 1e-5)
  np.testing.assert_array_equal(gram, gram.T)
  eig = np.linalg.eigvalsh(gram.astype(np.float64))
  assert eig[0] >= -1e-5 * eig[-1]


@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
def test_ntk_gram_mlp_matches_explicit_jacobians(train_layers):
  spec = models.build_mlp(5, 3, width=8, depth=2, train_layers=train_layers,
                          seed=2)
  w = perturb(spec.initial_weights, range(4), 0.2, seed=0)  # away from w^0
  x = ref.unit_rows(np.random.default_rng(4), 7, 5)
  idx = spec.trainable_indices
  gram = diagnostics.ntk_gram(spec.layers, w, idx, x).numpy()
  want = jacobian_gram(spec.layers, w, idx, x)
  check_gram(gram, want)

  # Independently, by NumPy backprop: with one example, the mse loss and
  # y = f(x) - 1, d loss / dw = sum_c d f_c(x) / dw.
  rows = []
  for xj in x:
    xj = xj[None]
    _, grads = ref.gradient(w, xj, ref.forward(w, xj) - 1.0, 'mse')
    rows.append(np.concatenate([grads[i].ravel() for i in idx]))
  g = np.stack(rows)
  assert_close_rel(want, g @ g.T, 1e-12)


def test_ntk_gram_cnn_matches_explicit_jacobians():
  spec = models.build_cnn((8, 8, 1), 3, width=3, seed=1)
  x = images(5, seed=2)
  idx = spec.trainable_indices
  gram = diagnostics.ntk_gram(spec.layers, spec.initial_weights, idx,
                              x).numpy()
  check_gram(gram, jacobian_gram(spec.layers, spec.initial_weights, idx, x))


def test_ntk_summary():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((6, 9))
  h0 = (a @ a.T).astype(np.float32)
  b = a + 0.3 * rng.standard_normal((6, 9))
  h = (b @ b.T).astype(np.float32)
  same = to_numpy(diagnostics.ntk_summary(h0, h0))
  assert list(same) == ['ntk/lambda_min', 'ntk/lambda_max', 'ntk/rel_change']
  assert same['ntk/rel_change'] == 0.0
  got = to_numpy(diagnostics.ntk_summary(h, h0))
  eig = np.linalg.eigvalsh(h.astype(np.float64))
  assert got['ntk/lambda_min'] == pytest.approx(eig[0], abs=1e-5 * eig[-1])
  assert got['ntk/lambda_max'] == pytest.approx(eig[-1], rel=1e-5)
  h64, h064 = h.astype(np.float64), h0.astype(np.float64)
  assert got['ntk/rel_change'] == pytest.approx(
      np.linalg.norm(h64 - h064) / np.linalg.norm(h064), rel=1e-5)


# Client drift.


def flat(tensors):
  return np.concatenate([np.asarray(t, np.float64).ravel() for t in tensors])


@pytest.mark.parametrize('loss', ['mse', 'xent'])
def test_client_drift_matches_numpy(loss):
  spec = models.build_mlp(5, 3, width=16, depth=2, train_layers='all', seed=5)
  avg = perturb(spec.initial_weights, range(4), 0.1, seed=1)
  local = perturb(avg, range(4), 0.3, seed=2)
  x, y = mlp_problem(seed=3, loss=loss)
  idx = spec.trainable_indices
  got = diagnostics.client_drift(spec.layers, loss, local, avg, idx, x, y)
  assert list(got) == ['grad_diff', 'weight_dist', 'nonsmooth', 'grad_avg']

  _, g_local = ref.gradient(local, x, y, loss)
  _, g_avg = ref.gradient(avg, x, y, loss)
  assert len(got['grad_avg']) == len(idx)
  for i, g in zip(idx, got['grad_avg']):
    assert_close_rel(g.numpy(), g_avg[i], 1e-5)
  g_l, g_a = flat([g_local[i] for i in idx]), flat([g_avg[i] for i in idx])
  want = np.linalg.norm(g_l - g_a)
  # Each float32 gradient is accurate to ~1e-6 of its norm; the difference
  # is of the same order as the gradients here (checked below).
  assert want > 0.2 * max(np.linalg.norm(g_l), np.linalg.norm(g_a))
  assert float(got['grad_diff']) == pytest.approx(want, rel=1e-5)
  assert float(diagnostics.gradient_difference(
      spec.layers, loss, local, avg, idx, x, y)) == pytest.approx(want, rel=1e-5)
  assert float(got['weight_dist']) == pytest.approx(
      np.linalg.norm(flat([local[i] for i in idx])
                     - flat([avg[i] for i in idx])), rel=1e-6)
  # The reference itself agrees with central differences of F.
  fd = ref.numerical_gradient(lambda w: ref.objective(w, x, y, loss), local,
                              [(1, 2, 3), (3, 0, 1)])
  np.testing.assert_allclose(fd, [g_local[1][2, 3], g_local[3][0, 1]],
                             rtol=1e-6)


def test_client_drift_zero_when_local_equals_average():
  spec = models.build_mlp(5, 3, width=16, depth=2, seed=0)
  x, y = mlp_problem()
  got = diagnostics.client_drift(spec.layers, 'mse', spec.initial_weights,
                                 spec.initial_weights, spec.trainable_indices,
                                 x, y)
  for k in ('grad_diff', 'weight_dist', 'nonsmooth'):
    assert float(got[k]) == 0.0, k
  assert float(diagnostics.gradient_difference(
      spec.layers, 'mse', spec.initial_weights, spec.initial_weights,
      spec.trainable_indices, x, y)) == 0.0
  assert np.linalg.norm(flat(got['grad_avg'])) > 0


def numpy_fd_hvp(weights, v_full, x, y, loss, eps):
  """(grad F(w + eps v) - grad F(w - eps v)) / 2 eps, in float64 NumPy."""
  w = [np.asarray(a, np.float64) for a in weights]
  plus = [a + eps * b for a, b in zip(w, v_full)]
  minus = [a - eps * b for a, b in zip(w, v_full)]
  _, gp = ref.gradient(plus, x, y, loss)
  _, gm = ref.gradient(minus, x, y, loss)
  return [(a - b) / (2 * eps) for a, b in zip(gp, gm)]


@pytest.mark.parametrize('loss', ['mse', 'xent'])
@pytest.mark.parametrize('train_layers', ['all', 'hidden'])
def test_hessian_vector_product_matches_finite_differences(loss,
                                                           train_layers):
  spec = models.build_mlp(5, 3, width=16, depth=2, train_layers=train_layers,
                          seed=6)
  w = spec.initial_weights
  idx = spec.trainable_indices
  x, y = mlp_problem(seed=1, loss=loss)
  rng = np.random.default_rng(7)
  v_full = [rng.standard_normal(a.shape) if i in idx else np.zeros(a.shape)
            for i, a in enumerate(w)]
  v_full = [a / np.linalg.norm(flat(v_full)) for a in v_full]
  # eps 1e-6 moves no pre-activation across 0 on these probes (the ReLU
  # net is smooth there), so the central difference is exact to O(eps^2).
  eps = 1e-6
  _, _, pre = ref.forward(w, x, return_cache=True)
  assert min(np.min(np.abs(z)) for z in pre[:-1]) > 1e3 * eps
  want = numpy_fd_hvp(w, v_full, x, y, loss, eps)

  # float64 through TF: the autodiff is exact up to rounding.
  w64 = [tf.constant(np.asarray(a, np.float64)) for a in w]
  _, _, hvp64 = diagnostics.hessian_vector_product(
      spec.layers, loss, w64, idx, tf.constant(x, tf.float64),
      tf.constant(y, tf.float64), [tf.constant(v_full[i]) for i in idx])
  assert_close_rel(flat(hvp64), flat([want[i] for i in idx]), 1e-7)

  # float32, as the diagnostics run.
  _, grads, hvp = diagnostics.hessian_vector_product(
      spec.layers, loss, w, idx, x, y,
      [tf.constant(v_full[i], tf.float32) for i in idx])
  assert len(hvp) == len(grads) == len(idx)
  assert_close_rel(flat(hvp), flat([want[i] for i in idx]), 1e-5)


def test_nonsmooth_is_zero_for_an_affine_gradient():
  """Linear net, only W_1 trains, squared loss: F is quadratic in W_1."""
  spec = models.build_mlp(6, 3, width=16, depth=1, activation='identity',
                          train_layers='hidden', seed=2)
  assert spec.trainable_indices == (1,)
  x, y = mlp_problem(seed=4, d=6)
  avg = spec.initial_weights
  for scale in (0.1, 1.0, 5.0):  # up to w_i - w-bar much larger than w-bar
    local = perturb(avg, [1], scale, seed=3)
    got = diagnostics.client_drift(spec.layers, 'mse', local, avg, (1,), x, y)
    grad_diff = float(got['grad_diff'])
    assert grad_diff > 0
    # 0 in exact arithmetic. In float32 grad F(w_i), grad F(w-bar) and the
    # HVP each carry a rounding error of a few U32 (sums of <= 16 terms) of
    # their norms, which are at most ~||grad diff|| here (checked), so the
    # residual is < 1e-5 ~ 170 U32 of ||grad diff||.
    g_avg = np.linalg.norm(flat(got['grad_avg']))
    assert g_avg < 20 * grad_diff
    assert float(got['nonsmooth']) < 1e-5 * grad_diff, scale


def test_nonsmooth_is_second_order_without_flips():
  """ReLU net, all layers train: without flips, nonsmooth = O(||v||^2).

  With fixed patterns F is a polynomial in w, so grad F(w-bar + t v) -
  grad F(w-bar) - t H v = t^2 r + O(t^3). float64, so that rounding cannot
  mask the t^2 law.
  """
  spec = models.build_mlp(6, 3, width=32, depth=2, train_layers='all', seed=8)
  idx = spec.trainable_indices
  x, y = [a.astype(np.float64) for a in mlp_problem(seed=5, n=20, d=6)]
  avg = [a.astype(np.float64) for a in
         perturb(spec.initial_weights, idx, 0.05, seed=0)]
  rng = np.random.default_rng(1)
  v = [rng.standard_normal(a.shape) * np.sqrt(np.mean(np.square(a)))
       for a in avg]  # a relative change of t in every layer
  residuals = []
  for t in (5e-4, 2.5e-4):
    local = [a + t * b for a, b in zip(avg, v)]
    flips = diagnostics.activation_flip_fraction(spec.layers, local, avg, x)
    assert float(flips['activation_flip_frac']) == 0.0
    got = diagnostics.client_drift(spec.layers, 'mse', local, avg, idx, x, y)
    assert got['nonsmooth'].dtype == tf.float64
    assert float(got['nonsmooth']) < 1e-3 * float(got['grad_diff'])
    residuals.append(float(got['nonsmooth']))
  # Halving t quarters the residual (it would halve if the HVP were wrong).
  assert residuals[1] / residuals[0] == pytest.approx(0.25, abs=0.01)


def test_nonsmooth_float32_tiny_without_flips_large_with_flips():
  """Only W_1 trains: with fixed patterns f is linear in W_1, grad F affine."""
  spec = models.build_mlp(6, 3, width=32, depth=1, train_layers='hidden',
                          seed=8)
  idx = spec.trainable_indices
  x, y = mlp_problem(seed=5, n=20, d=6)
  avg = perturb(spec.initial_weights, idx, 0.05, seed=0)
  # A tiny V that flips nothing by construction: rescaling unit r's column
  # by 1 + c_r (|c_r| <= 1%) rescales z_1[:, r], keeping its sign, plus a
  # random part whose effect on z_1, at most max_j ||h_0(x_j)|| ||.||_F,
  # stays below half the smallest |z_1|.
  rng = np.random.default_rng(2)
  _, inputs, pre = ref.forward(avg, x, return_cache=True)
  margin = np.min(np.abs(pre[1])) / np.max(np.linalg.norm(inputs[1], axis=1))
  assert margin > 0
  direction = rng.standard_normal(avg[1].shape)
  scale = rng.uniform(-0.01, 0.01, avg[1].shape[1])
  tiny = list(avg)
  tiny[1] = (avg[1] * (1 + scale) + 0.5 * margin * direction
             / np.linalg.norm(direction)).astype(np.float32)
  flips = diagnostics.activation_flip_fraction(spec.layers, tiny, avg, x)
  assert float(flips['activation_flip_frac']) == 0.0
  got = diagnostics.client_drift(spec.layers, 'mse', tiny, avg, idx, x, y)
  assert float(got['grad_diff']) > 0
  # 0 in exact arithmetic; what remains is float32 rounding of the three
  # terms, a few U32 of ||grad F|| (~2e-5 of grad_diff here).
  assert float(got['nonsmooth']) < 1e-3 * float(got['grad_diff'])

  large = perturb(avg, idx, 0.5, seed=1)
  flips = diagnostics.activation_flip_fraction(spec.layers, large, avg, x)
  assert float(flips['activation_flip_frac/hidden_1']) > 0.1
  got = diagnostics.client_drift(spec.layers, 'mse', large, avg, idx, x, y)
  assert float(got['nonsmooth']) > 0.1 * float(got['grad_diff'])


# Graph mode.


def test_diagnostics_run_inside_tf_function():
  spec = models.build_mlp(5, 3, width=16, depth=2, seed=9)
  cnn = models.build_cnn((8, 8, 1), 3, width=3, seed=9)
  idx = spec.trainable_indices
  w0 = spec.initial_weights
  w = perturb(w0, idx, 0.3, seed=0)
  x, y = mlp_problem(seed=6)

  def run(w, w0, x, y, cw, cx):
    out = {}
    out.update(diagnostics.weight_change(spec.layers, w, w0, idx))
    out.update(diagnostics.activation_flip_fraction(spec.layers, w, w0, x))
    gram = diagnostics.ntk_gram(spec.layers, w, idx, x)
    out['gram'] = gram
    out.update(diagnostics.ntk_summary(
        gram, diagnostics.ntk_gram(spec.layers, w0, idx, x)))
    out['cnn_gram'] = diagnostics.ntk_gram(cnn.layers, cw, (0, 1, 2), cx)
    drift = diagnostics.client_drift(spec.layers, 'xent', w, w0, idx, x,
                                     tf.nn.softmax(y))
    out.update({k: v for k, v in drift.items() if k != 'grad_avg'})
    out['grad_avg'] = tf.concat([tf.reshape(g, [-1]) for g in
                                 drift['grad_avg']], 0)
    return out

  args = (tuple(tf.constant(a) for a in w), tuple(tf.constant(a) for a in w0),
          tf.constant(x), tf.constant(y),
          tuple(tf.constant(a) for a in cnn.initial_weights),
          tf.constant(images(4)))
  eager = to_numpy(run(*args))
  graph = to_numpy(tf.function(run)(*args))
  assert set(eager) == set(graph)
  for k in eager:
    assert_close_rel(graph[k], eager[k], 1e-5) if np.any(eager[k]) else (
        np.testing.assert_array_equal(graph[k], eager[k]))
