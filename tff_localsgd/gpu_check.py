"""The GPU self-check: is the GPU used, and does it compute what the CPU does?

No GPU exists where this project is built, so the GPU path tests itself on
the user's machine (`python -m benchmarks.gpu_check`, or the image's
`gpu-check`). On a fixed small round (CHECK_ROUND: synthetic data, 4 clients
of 16 examples, m = 1024, K = 5 steps of Local GD) it reports:

  1. the devices TensorFlow sees and its build's CUDA and cuDNN versions;
  2. where the round's heavy ops (matmuls) ran: the kit's round runs once on
     the in-process engine on the target device (`/GPU:0`) with TensorFlow's
     run metadata on, whose partition graphs hold every op's assigned device
     once the placer has run (not the requested device: an op without a GPU
     kernel falls back to the CPU under soft placement). The placer runs
     when a function is first called, so this must be the round's first call
     on that device in the process;
  3. the same round on the reference device (`/CPU:0`), and the agreement of
     w^1 and of the round's loss (train/local_loss), within TOLERANCE;
  4. seconds per round of the kit's round and of plain TensorFlow (no TFF:
     the clients' weights stacked, the K steps in one tf.function) on the
     target device;
  5. a verdict and its exit code (EXIT_CODES).

The tolerance. Both runs are float32 with TF32 off: TensorFlow turns TF32 on
by default on Ampere and newer GPUs, rounding matmul inputs to a 10-bit
mantissa (u = 2^-11), which moves F(w^0) at CHECK_ROUND by 5e-4 relative
(simulated in the test), so the check turns it off for its process. Each
float32 device then computes w^1 and the loss with errors of a few
u = 2^-24 ~ 6e-8 against the exact (float64) round: at CHECK_ROUND the CPU's
are 1.1e-7 for the weights and 8e-8 for the loss (the test checks
<= TOLERANCE / 10 against a NumPy float64 reference). Two devices that sum in
different orders, each within e of the exact round, differ by <= 2e:
TOLERANCE = 1e-5 leaves a margin of 50x over that, and is 50x under TF32's
effect on the loss. Weights are compared layer by layer relative to the
layer's largest entry (an entry near 0 has no relative error to speak of).

`--cpu_pair` (the check's own test on a machine without a GPU) splits the CPU
into two logical devices and checks /CPU:1 against /CPU:0.
"""

import collections
import dataclasses
import re
import statistics
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as eager_context

from tff_localsgd import config as config_lib
from tff_localsgd import engines
from tff_localsgd import local_update
from tff_localsgd import process as process_lib
from tff_localsgd import training

EXIT_CODES = {'ok': 0, 'failed': 1, 'no GPU': 2}
TOLERANCE = 1e-5  # relative, weights and loss (module doc)
# The ops that carry a round's FLOPs: MatMul, BatchMatMulV2, and their CPU
# (oneDNN: _MklMatMul) and fused forms.
HEAVY_OP = re.compile(r'MatMul|Conv2D')
CHECK_ROUND = dict(dataset='synthetic', num_examples=64, num_clients=4,
                   local_steps=5, algorithm='local_gd', rounds=1,
                   engine='inprocess')
NO_GPU_HINT = """\
hint: check, in order:
  1. the NVIDIA driver: `nvidia-smi` on the host lists the GPU;
  2. in Docker: `docker run --gpus all ...`, with the NVIDIA Container
     Toolkit installed on the host;
  3. the CUDA build of TensorFlow 2.14 and its libraries, CUDA 11.8 and
     cuDNN 8.6: the image has them (its base is
     tensorflow/tensorflow:2.14.0-gpu); in a checkout,
     `pip install 'tensorflow[and-cuda]==2.14.*'` (Python <= 3.10; on 3.11
     install CUDA 11.8 and cuDNN 8.6 on the system).
TensorFlow's own reason ("Could not find cuda drivers on your machine",
"Cannot dlopen some GPU libraries", ...) shows with TF_CPP_MIN_LOG_LEVEL=0
(in Docker: `docker run -e TF_CPP_MIN_LOG_LEVEL=0 ...`)."""


def split_cpu():
  """Makes the CPU two logical devices, /CPU:0 and /CPU:1 (before TensorFlow
  initializes its devices)."""
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def describe_tensorflow() -> list[str]:
  """Lines: TensorFlow's version and CUDA build, and the devices it sees."""
  build = tf.sysconfig.get_build_info()
  lines = [f'TensorFlow {tf.__version__}: CUDA build '
           f'{"yes" if build.get("is_cuda_build") else "no"}, CUDA '
           f'{build.get("cuda_version", "-")}, cuDNN '
           f'{build.get("cudnn_version", "-")}']
  for device in tf.config.list_physical_devices():
    details = (tf.config.experimental.get_device_details(device)
               if device.device_type == 'GPU' else {})
    extra = ''.join(f', {k} {v}' for k, v in sorted(details.items()))
    lines.append(f'device: {device.name}{extra}')
  logical = [d.name for d in tf.config.list_logical_devices()]
  lines.append(f'logical devices: {", ".join(logical)}')
  return lines


def same_device(name: str, device: str) -> bool:
  """Whether the full name (/job:.../device:GPU:0) is `device` (/GPU:0)."""
  a, b = tf.DeviceSpec.from_string(name), tf.DeviceSpec.from_string(device)
  return (a.device_type, a.device_index) == (b.device_type, b.device_index)


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where the heavy ops of a round ran: {(op, assigned device): count}."""
  target: str
  counts: dict

  @property
  def on_target(self) -> int:
    return sum(n for (_, device), n in self.counts.items()
               if same_device(device, self.target))

  @property
  def used(self) -> bool:
    """At least one heavy op ran, and every one ran on the target."""
    total = sum(self.counts.values())
    return total > 0 and self.on_target == total

  def describe(self) -> str:
    if not self.counts:
      return ('no matmul of the round ran in this process (TFF\'s native '
              'worker, which has no GPU, ran it)')
    by_device = collections.Counter()
    for (_, device), n in self.counts.items():
      spec = tf.DeviceSpec.from_string(device)
      by_device[f'/{spec.device_type}:{spec.device_index}'] += n
    where = ', '.join(f'{n} on {d}' for d, n in sorted(by_device.items()))
    return (f'{self.on_target} of {sum(self.counts.values())} matmuls on '
            f'{self.target} ({where})')


def placement_from(run_metadata, target: str) -> Placement:
  """The heavy ops' assigned devices in run_metadata's partition graphs."""
  counts = collections.Counter(
      (node.op, node.device)
      for function in run_metadata.function_graphs
      for graph in function.partition_graphs
      for node in graph.node if HEAVY_OP.search(node.op))
  return Placement(target, dict(counts))


@dataclasses.dataclass(frozen=True)
class Agreement:
  """w^1 and the loss on two devices, as relative differences:

    weights = max_l ||w_l^a - w_l^b||_inf / ||w_l^b||_inf,
    loss = |L^a - L^b| / |L^b|.
  """
  weights: float
  loss: float
  tolerance: float = TOLERANCE

  @property
  def agrees(self) -> bool:
    return self.weights <= self.tolerance and self.loss <= self.tolerance


def compare(weights_a, weights_b, loss_a: float, loss_b: float,
            tolerance: float = TOLERANCE) -> Agreement:
  """The Agreement of (weights_a, loss_a) with the reference b; NaN never
  agrees."""
  if len(weights_a) != len(weights_b):
    raise ValueError(f'{len(weights_a)} layers against {len(weights_b)}')
  layers = []
  for a, b in zip(weights_a, weights_b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
      raise ValueError(f'shapes {a.shape} and {b.shape}')
    layers.append(np.max(np.abs(a - b)) / np.max(np.abs(b)))
  loss = abs(float(loss_a) - float(loss_b)) / abs(float(loss_b))
  return Agreement(float(np.max(layers)), loss, tolerance)  # max keeps NaN


@dataclasses.dataclass(frozen=True)
class Verdict:
  exit_code: int
  line: str


def verdict(target: str, reference: str, placement: Placement,
            agreement: Agreement) -> Verdict:
  """0 when the target is used and agrees with the reference; else 1,
  naming which of the two failed."""
  problems = []
  if not placement.used:
    problems.append(f'{target} not used: {placement.describe()}')
  if not agreement.agrees:
    problems.append(
        f'{target} disagrees with {reference}: weights {agreement.weights:.2e}'
        f', loss {agreement.loss:.2e} (tolerance {agreement.tolerance:g})')
  if problems:
    return Verdict(EXIT_CODES['failed'], 'FAIL: ' + '; '.join(problems))
  return Verdict(EXIT_CODES['ok'], f'OK: {target} is used and agrees with '
                 f'{reference} within {agreement.tolerance:g}')


def no_gpu_verdict() -> Verdict:
  return Verdict(EXIT_CODES['no GPU'],
                 'NO GPU: TensorFlow sees no GPU\n' + NO_GPU_HINT)


def check_setup(width: int) -> training.Setup:
  """CHECK_ROUND at width m, validated and built as a run builds it."""
  return training.Setup.prepare(config_lib.ExperimentConfig(
      width=width, **CHECK_ROUND))


def median_seconds(round_fn, rounds: int) -> float:
  """Median wall time of `rounds` calls of round_fn, after one warm-up."""
  round_fn()
  times = []
  for _ in range(rounds):
    tick = time.perf_counter()
    round_fn()
    times.append(time.perf_counter() - tick)
  return statistics.median(times)


class PlainRound:
  """The round in plain TensorFlow, no TFF: the hardware's pace.

  The N clients' trainable weights stacked [N, ...] from w^t, K full-batch
  steps w_i <- w_i - eta grad F_i(w_i) as one batched computation in one
  tf.function, then w^{t+1} = w^t + server_lr sum_i p_i (w_i^K - w^t),
  p_i = n_i / n. Needs equal client sizes (they are stacked).
  """

  def __init__(self, setup: training.Setup, device: str):
    self.spec, self.config, self.device = setup.spec, setup.config, device
    data = setup.data
    if len(set(data.client_sizes)) != 1:
      raise ValueError(f'plain TF stacks the clients: their sizes differ '
                       f'({sorted(set(data.client_sizes))})')
    sizes = np.asarray(data.client_sizes, np.float64)
    with tf.device(device):
      self.x = tf.constant(np.stack(data.client_x))
      self.y = tf.constant(np.stack(data.client_y))
      self.p = tf.constant(sizes / sizes.sum(), tf.float32)
      self.weights = [tf.constant(w) for w in self.spec.initial_weights]
    self._round = tf.function(self._round_fn)

  def _round_fn(self, weights):
    spec, config = self.spec, self.config
    start = spec.trainable(weights)
    local = [tf.tile(w[None], [len(self.p)] + [1] * len(w.shape))
             for w in start]
    for _ in range(config.local_steps):
      local, _ = local_update.descend(spec, config.loss, weights, local,
                                      self.x, self.y, lr=config.lr)
    trained = [w0 + config.server_lr * tf.tensordot(self.p, w - w0[None], 1)
               for w, w0 in zip(local, start)]
    return spec.with_trainable(weights, trained)

  def __call__(self) -> list:
    """w^1 from w^0, as NumPy arrays."""
    with tf.device(self.device):
      return [w.numpy() for w in self._round(self.weights)]


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """What the check found; `lines()` is its printout."""
  target: str
  reference: str
  config: config_lib.ExperimentConfig
  placement: Placement
  agreement: Agreement
  kit_s: float  # the kit's round on the target, s/round
  plain_s: float  # PlainRound on the target, s/round
  rounds: int

  @property
  def verdict(self) -> Verdict:
    return verdict(self.target, self.reference, self.placement,
                   self.agreement)

  def lines(self) -> list[str]:
    c, a = self.config, self.agreement
    return [
        f'round: {c.dataset}, {c.num_clients} clients x '
        f'{c.num_examples // c.num_clients} examples, m = {c.width}, K = '
        f'{c.local_steps}, {c.algorithm}, {c.engine} engine; TF32 off',
        f'placement on {self.target}: {self.placement.describe()}',
        f'agreement {self.target} vs {self.reference}: weights '
        f'{a.weights:.2e}, loss {a.loss:.2e} (relative; tolerance '
        f'{a.tolerance:g})',
        f'throughput on {self.target}: kit round {self.kit_s:.4g} s/round, '
        f'plain TF {self.plain_s:.4g} s/round, ratio '
        f'{self.kit_s / self.plain_s:.2f}x (median of {self.rounds} after a '
        'warm-up)',
        self.verdict.line]


class KitRound:
  """The kit's round: LocalSGDProcess.next from w^0 on round 1's clients, on
  whichever engine is current (training.py's round, without the records)."""

  def __init__(self, setup: training.Setup):
    config, data, spec = setup.config, setup.data, setup.spec
    self.proc = process_lib.LocalSGDProcess(spec, config, data.input_shape,
                                            data.output_dim)
    self.values = self.proc.pack([
        process_lib.client_data(x, y, config.seed, 1, i, config.num_clients)
        for i, (x, y) in enumerate(zip(data.client_x, data.client_y))])
    self.weights = tuple(spec.initial_weights)

  def __call__(self):
    """(w^1, the round's metrics)."""
    return self.proc.next(self.weights, self.values)

  def traced(self):
    """(w^1, train/local_loss, run metadata): the round with TensorFlow's run
    metadata on, whose partition graphs are those of the functions first
    called here."""
    eager_context.enable_run_metadata()
    try:
      # Functions first called since the last export, while it was off, left
      # their graphs behind; the next function call collects them: discard.
      tf.function(tf.identity)(tf.constant(0.0))
      eager_context.export_run_metadata()
      weights, metrics = self()
    finally:
      metadata = eager_context.export_run_metadata()
      eager_context.disable_run_metadata()
    return weights, float(metrics['local_loss']), metadata


def run_check(setup: training.Setup, target: str, reference: str,
              rounds: int) -> CheckResult:
  """The round on `target` (placement, time) and on `reference`, compared.

  Must be the round's first run on `target` in this process (module doc).
  Turns TF32 off for the process.
  """
  tf.config.experimental.enable_tensor_float_32_execution(False)
  kit = KitRound(setup)
  on_target = dataclasses.replace(setup.config, device=target)
  with engines.engine(on_target):
    target_weights, target_loss, metadata = kit.traced()
    kit_s = median_seconds(kit, rounds)
  plain_s = median_seconds(PlainRound(setup, target), rounds)
  with engines.engine(dataclasses.replace(setup.config, device=reference)):
    reference_weights, reference_loss, _ = kit.traced()
  return CheckResult(
      target, reference, on_target, placement_from(metadata, target),
      compare(target_weights, reference_weights, target_loss,
              reference_loss), kit_s, plain_s, rounds)
