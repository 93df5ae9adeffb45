"""The GPU self-check: its comparison logic on constructed values, its whole
pipeline on two logical CPU devices, its tolerance against a float64
reference, and its no-GPU exit."""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

import numpy_reference as ref
from tff_localsgd import engines
from tff_localsgd import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = gpu_check.TOLERANCE
GPU = '/job:localhost/replica:0/task:0/device:GPU:0'
CPU = '/job:localhost/replica:0/task:0/device:CPU:0'
HAS_GPU = bool(tf.config.list_physical_devices('GPU'))


def run_binary(*args):
  """benchmarks.gpu_check in a fresh process (its own TensorFlow devices)."""
  return subprocess.run([sys.executable, '-m', 'benchmarks.gpu_check', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def layers(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((6, 8)).astype(np.float32),
          rng.standard_normal((8, 1)).astype(np.float32)]


def perturbed(weights, layer, relative):
  """weights with one entry of `layer` moved by relative * max|w_layer|."""
  out = [w.copy() for w in weights]
  out[layer][2, 0] += relative * np.max(np.abs(out[layer]))
  return out


def test_compare_measures_the_relative_difference():
  w = layers()
  same = gpu_check.compare(w, [x.copy() for x in w], 0.5, 0.5)
  assert (same.weights, same.loss, same.agrees) == (0.0, 0.0, True)
  for relative, agrees in [(TOL / 2, True), (2 * TOL, False)]:
    got = gpu_check.compare(perturbed(w, 1, relative), w, 0.5, 0.5)
    assert got.weights == pytest.approx(relative, rel=1e-3)
    assert got.agrees is agrees
  loss = gpu_check.compare(w, w, 0.5 * (1 + 2 * TOL), 0.5)
  assert loss.loss == pytest.approx(2 * TOL) and not loss.agrees
  w_nan = perturbed(w, 0, np.nan)
  assert not gpu_check.compare(w_nan, w, 0.5, 0.5).agrees
  assert not gpu_check.compare(w, w, np.nan, 0.5).agrees
  with pytest.raises(ValueError, match='layers'):
    gpu_check.compare(w[:1], w, 0.5, 0.5)


def test_placement_reads_the_assigned_devices_of_the_heavy_ops():
  metadata = config_pb2.RunMetadata()
  graph = metadata.function_graphs.add().partition_graphs.add()
  for op, device in [('MatMul', GPU), ('BatchMatMulV2', GPU), ('Relu', GPU),
                     ('_MklMatMul', CPU), ('_Arg', CPU)]:
    graph.node.add(name=op.lower(), op=op, device=device)
  placement = gpu_check.placement_from(metadata, '/GPU:0')
  assert placement.counts == {('MatMul', GPU): 1, ('BatchMatMulV2', GPU): 1,
                              ('_MklMatMul', CPU): 1}
  assert placement.on_target == 2 and not placement.used
  assert placement.describe() == (
      '2 of 3 matmuls on /GPU:0 (1 on /CPU:0, 2 on /GPU:0)')
  assert gpu_check.placement_from(metadata, '/CPU:0').on_target == 1
  assert gpu_check.same_device(GPU, '/GPU:0')
  assert not gpu_check.same_device(GPU, '/GPU:1')
  assert not gpu_check.same_device(CPU, '/GPU:0')


@pytest.mark.parametrize('counts, agreement, code, names', [
    ({('MatMul', GPU): 11}, gpu_check.Agreement(1e-7, 0.0), 0,
     ['OK: /GPU:0 is used and agrees with /CPU:0']),
    ({('_MklMatMul', CPU): 11}, gpu_check.Agreement(0.0, 0.0), 1,
     ['/GPU:0 not used', '0 of 11 matmuls on /GPU:0 (11 on /CPU:0)']),
    ({}, gpu_check.Agreement(0.0, 0.0), 1,
     ['/GPU:0 not used', 'native worker']),
    ({('MatMul', GPU): 11}, gpu_check.Agreement(3e-5, 1e-8), 1,
     ['/GPU:0 disagrees with /CPU:0', 'weights 3.00e-05']),
    ({('MatMul', CPU): 1}, gpu_check.Agreement(0.0, np.nan), 1,
     ['not used', 'disagrees', 'loss nan']),
])
def test_verdict_names_what_failed(counts, agreement, code, names):
  placement = gpu_check.Placement('/GPU:0', counts)
  got = gpu_check.verdict('/GPU:0', '/CPU:0', placement, agreement)
  assert got.exit_code == code
  assert got.line.startswith('OK' if code == 0 else 'FAIL')
  for name in names:
    assert name in got.line


def test_tolerance_is_ten_times_float32_rounding_at_the_check_round():
  # The module doc's argument: each float32 device is within TOL / 10 of
  # the exact (float64) round, so two of them differ by at most TOL / 5.
  setup = gpu_check.check_setup(1024)
  config, data = setup.config, setup.data
  assert (config.num_clients, data.client_sizes, config.local_steps,
          config.algorithm) == (4, (16,) * 4, 5, 'local_gd')
  exact, exact_loss = ref.local_sgd_round(
      setup.spec.initial_weights, list(zip(data.client_x, data.client_y)),
      lr=config.lr, steps=config.local_steps)
  with engines.engine(dataclasses.replace(config, device='/CPU:0')):
    weights, loss, _ = gpu_check.KitRound(setup).traced()
  kit = gpu_check.compare(weights, exact, loss, exact_loss)
  assert 0 < kit.weights <= TOL / 10 and kit.loss <= TOL / 10
  moved = max(np.max(np.abs(w - w0)) / np.max(np.abs(w0))
              for w, w0 in zip(exact, setup.spec.initial_weights))
  assert moved > 1e-3  # the round changed the weights
  plain = gpu_check.compare(gpu_check.PlainRound(setup, '/CPU:0')(), exact,
                            exact_loss, exact_loss)
  assert 0 < plain.weights <= TOL / 10


def tf32(a):
  """a with float32's 23-bit mantissa rounded to TF32's 10 (to nearest)."""
  bits = np.asarray(a, np.float32).view(np.uint32) + np.uint32(1 << 12)
  return (bits & np.uint32(~((1 << 13) - 1) & 0xFFFFFFFF)).view(np.float32)


def test_tf32_would_fail_the_check():
  # Why the check turns TF32 off: matmuls whose inputs are rounded to TF32
  # move F(w^0) at the check round by 50x the tolerance.
  assert tf32(np.float32(1 + 2**-11 + 2**-13)) == np.float32(1 + 2**-10)
  setup = gpu_check.check_setup(1024)
  weights = setup.spec.initial_weights
  clients = list(zip(setup.data.client_x, setup.data.client_y))

  def loss(rounding):
    total = 0.0
    for x, y in clients:
      h = x
      for i, w in enumerate(weights):
        z = rounding(h).astype(np.float64) @ rounding(w).astype(np.float64)
        h = z if i == len(weights) - 1 else np.maximum(z, 0)
      total += np.mean(0.5 * np.sum((h - y)**2, -1)) / len(clients)
    return total

  exact = loss(np.asarray)
  assert exact == pytest.approx(
      np.mean([ref.objective(weights, x, y) for x, y in clients]), rel=1e-12)
  assert abs(loss(tf32) - exact) / exact > 10 * TOL


def test_the_round_on_tffs_native_worker_is_not_the_device():
  # The placement read-out sees no matmul when the round runs in TFF's
  # worker_binary (which has no GPU): the check fails, naming it.
  setup = gpu_check.check_setup(16)
  native = dataclasses.replace(setup, config=dataclasses.replace(
      setup.config, engine='native'))
  result = gpu_check.run_check(native, '/CPU:0', '/CPU:0', rounds=1)
  assert result.placement.counts == {}
  assert (result.agreement.weights, result.agreement.loss) == (0.0, 0.0)
  assert result.verdict.exit_code == 1
  assert '/CPU:0 not used' in result.verdict.line


def test_cpu_pair_runs_the_whole_check():
  result = run_binary('--cpu_pair', '--width=16', '--rounds=2')
  assert result.returncode == 0, result.stdout + result.stderr[-2000:]
  out = result.stdout
  assert 'logical devices: /device:CPU:0, /device:CPU:1' in out
  placed = re.search(r'placement on /CPU:1: (\d+) of (\d+) matmuls on /CPU:1 '
                     r'\((\d+) on /CPU:1\)', out)
  assert placed and len(set(placed.groups())) == 1 and int(placed[1]) > 0
  # Two logical devices of one CPU run the same kernels: the same bits.
  assert ('agreement /CPU:1 vs /CPU:0: weights 0.00e+00, loss 0.00e+00 '
          '(relative; tolerance 1e-05)') in out
  speed = re.search(r'kit round ([\d.e-]+) s/round, plain TF ([\d.e-]+) '
                    r's/round, ratio ([\d.]+)x \(median of 2', out)
  kit_s, plain_s, ratio = map(float, speed.groups())
  assert kit_s > 0 and plain_s > 0
  # The ratio is printed to 2 decimals and the times to 4 significant
  # digits: they agree to the ratio's last digit (0.005) and the times'
  # rounding (5e-4 relative each).
  assert abs(ratio - kit_s / plain_s) <= 0.005 + 1e-3 * ratio
  assert out.splitlines()[-1] == (
      'OK: /CPU:1 is used and agrees with /CPU:0 within 1e-05')


def entrypoint(*args):
  """The image's entrypoint on this checkout, with this Python first on PATH."""
  env = dict(os.environ, TFF_LOCALSGD_APP=ROOT, PATH=os.pathsep.join(
      [os.path.dirname(sys.executable), os.environ['PATH']]))
  return subprocess.run(['bash', os.path.join(ROOT, 'docker', 'entrypoint.sh'),
                         *args], env=env, capture_output=True, text=True,
                        timeout=300)


def test_the_entrypoint_lists_gpu_check():
  result = entrypoint('help')
  assert result.returncode == 0
  assert re.search(r'^  gpu-check   run this first on a GPU machine',
                   result.stdout, re.M)
  assert '              python -m benchmarks.gpu_check ...' in result.stdout


@pytest.mark.skipif(HAS_GPU, reason='TensorFlow sees a GPU here')
def test_no_gpu_exits_2_with_the_hint():
  # The image's `gpu-check`, which runs `python -m benchmarks.gpu_check`.
  result = entrypoint('gpu-check')
  assert result.returncode == 2, result.stdout + result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith(f'TensorFlow {tf.__version__}: CUDA build')
  assert 'device: /physical_device:CPU:0' in lines
  assert 'NO GPU: TensorFlow sees no GPU\n' + gpu_check.NO_GPU_HINT in (
      result.stdout)
  for needed in ('nvidia-smi', 'docker run --gpus all',
                 'NVIDIA Container', 'tensorflow[and-cuda]==2.14.*',
                 'tensorflow/tensorflow:2.14.0-gpu'):
    assert needed in gpu_check.NO_GPU_HINT


@pytest.mark.skipif(not HAS_GPU, reason='needs a GPU: TensorFlow sees none')
def test_the_gpu_is_used_and_agrees_with_the_cpu():
  result = run_binary('--rounds=2')
  assert result.returncode == 0, result.stdout + result.stderr[-2000:]
  assert result.stdout.splitlines()[-1].startswith('OK: /GPU:0 is used')


def test_a_bad_flag_exits_2_with_one_line():
  result = run_binary('--rounds=-1')
  assert result.returncode == 2
  assert result.stderr.splitlines() == ['error: --rounds: must be > 0, got -1']
