"""Each trial's rounds from its own prediction, before anything trains.

A study of the suite with `budget_factor` c > 0 gives every trial the
budget

    rounds = ceil(c T_pred),

T_pred the interpolated round at which the trial's own linearized curve
(theory.predict from its H_0, data, partition and schedule) crosses
eps F_0. The curve runs to its own crossing (theory.curve_to_crossing), so
T_pred does not depend on the budget it sets. With c = 2 a run that
follows the theory reaches eps with room to spare; one that does not is a
plateau or a censored run, decided by the data and not by the plan.
Where the prediction does not apply or never reaches eps (cross-entropy,
a step beyond the edge of stability with rho(M) >= 1), the trial keeps the
study's fixed rounds, and the plan says why.

Building a trial up to its prediction (data, partition, model, H_0) is
also the plan-time check that every trial of a preset can start: a bad
partition raises ConfigError naming the trial here, not in a worker.
"""

import contextlib
import dataclasses
import math

from tff_localsgd import config as config_lib
from tff_localsgd import data as data_lib
from tff_localsgd.sweep import grid
from tff_localsgd import training

# Every client needs this many examples: one example makes a client's
# local steps interpolate a single point, which no partition of the
# theory's setting intends (a Dirichlet draw can leave one behind).
MIN_CLIENT_EXAMPLES = 2
# The GPU the plan's estimate is stated for: NVIDIA A100 80 GB, 19.5 TFLOP/s
# float32 without tensor cores (TF32 off, as the kit's results assume).
GPU_NAME = 'NVIDIA A100 80GB'
GPU_BYTES = 80 * 2**30
GPU_FLOPS = 19.5e12
# A trial process's own footprint (TF, TFF and the worker) before any model:
# ~1.5 GB resident, measured as the quick suite's trial processes' RSS.
PROCESS_BYTES = int(1.5 * 2**30)
# The prediction's peak above an imported TensorFlow, per model parameter:
# the model, its float64 copies and the Gram's temporaries. Measured with
# ru_maxrss on the paper's E3 trials (n = 512, d = 16, depth 1): 47 bytes at
# m = 4096 (0.74 GB) and 43 bytes at m = 16384 (10.8 GB).
PREDICTION_BYTES_PER_PARAMETER = 44


@dataclasses.dataclass(frozen=True)
class Footprint:
  """What a trial needs: peak_bytes, its estimated peak memory; flops, the
  floating-point operations of its rounds and evaluations (module doc of
  footprint())."""
  peak_bytes: int
  flops: float

  def gpu_seconds(self) -> float:
    """flops at the GPU's peak: a lower bound of its time there."""
    return self.flops / GPU_FLOPS

  def where(self, machine_bytes: int) -> str:
    """'here', 'gpu' (only the stated GPU holds it) or 'nowhere'."""
    if self.peak_bytes <= machine_bytes:
      return 'here'
    return 'gpu' if self.peak_bytes <= GPU_BYTES else 'nowhere'


def footprint(config, num_parameters: int, trainable: int, n: int,
              rounds: int) -> Footprint:
  """The trial's peak memory and FLOPs, from its sizes.

  Memory: the process's own (PROCESS_BYTES), plus the largest of
    training: 8 float32 copies of the model (broadcast, local, gradient,
      average and their TFF values),
    the lockstep diagnostics (when on): clients x trainable parameters x
      (28 + 4 steps) x 4 bytes (diagnostic_process, measured),
    the prediction: PREDICTION_BYTES_PER_PARAMETER x P (measured), H and
      M, 2 n^2 float64, and the n x m float64 activations of the Gram,
      about n P / m ~ n sqrt(P) doubles.
  FLOPs: a step of local GD on one example costs ~6 P_trainable (forward
  2 P, backward 4 P), so a round costs 6 P x (example gradients of the
  round), and its evaluation 2 P n; times the rounds.
  """
  training_bytes = 8 * 4 * num_parameters
  lockstep = 0
  if config.diag_every and config.lockstep_drift:
    lockstep = (config.cohort_size * trainable * 4 *
                (28 + 4 * config.local_steps))
  theory = (PREDICTION_BYTES_PER_PARAMETER * num_parameters +
            2 * 8 * n * n + 8 * n * int(math.sqrt(num_parameters)))
  sizes = [max(1, n // config.num_clients)] * config.cohort_size
  per_round = (6 * trainable * config.examples_per_round(sizes) +
               2 * num_parameters * n)
  return Footprint(PROCESS_BYTES + max(training_bytes, lockstep, theory),
                   float(per_round * rounds))


@dataclasses.dataclass(frozen=True)
class Budget:
  """A trial's planned rounds: ceil(factor T_pred), or the study's fixed
  rounds with the reason (`why`) when no T_pred sets them; the model's
  sizes (0 where the data is not on this machine) and the footprint at
  those rounds."""
  rounds: int
  t_pred: float | None
  why: str
  client_sizes: tuple
  num_parameters: int
  trainable: int
  footprint: Footprint

  @property
  def from_prediction(self) -> bool:
    return not self.why

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> 'Budget':
    values = dict(values)
    values['client_sizes'] = tuple(values['client_sizes'])
    values['footprint'] = Footprint(**values['footprint'])
    return cls(**values)

  def measured(self, config) -> 'Budget':
    """The budget with its footprint from this code's footprint()."""
    return dataclasses.replace(self, footprint=footprint(
        config, self.num_parameters, self.trainable, sum(self.client_sizes),
        self.rounds))


def _with_rounds(trial: grid.Trial, rounds: int) -> grid.Trial:
  flags = tuple(f'--rounds={rounds}' if f.startswith('--rounds=') else f
                for f in trial.flags)
  if flags == trial.flags and f'--rounds={rounds}' not in flags:
    raise ValueError(f'{trial.name}: no --rounds flag to set')
  return dataclasses.replace(trial, flags=flags)


def _config(trial: grid.Trial) -> config_lib.ExperimentConfig:
  return config_lib.ExperimentConfig.from_dict(grid.trial_config(trial))


def check_data(trial: grid.Trial, where: str):
  """The trial's data and partition, without its model: ConfigError names
  the trial if a client would be empty or hold < MIN_CLIENT_EXAMPLES."""
  config = _config(trial)
  with _naming(trial, where):
    data = data_lib.load_federated_data(config)
  _check_sizes(data.client_sizes, trial, where)
  return data


def _check_sizes(client_sizes, trial, where):
  small = [i for i, size in enumerate(client_sizes)
           if size < MIN_CLIENT_EXAMPLES]
  if small:
    raise config_lib.ConfigError(
        'partition', f'{where}/{trial.name}: client {small[0]} holds '
        f'{client_sizes[small[0]]} example(s), fewer than '
        f'{MIN_CLIENT_EXAMPLES}; change the partition or num_examples')


@contextlib.contextmanager
def _naming(trial, where):
  """Re-raises a ConfigError with the trial's place in the suite."""
  try:
    yield
  except config_lib.ConfigError as e:
    message = str(e)[len(f'--{e.field}: '):]
    raise config_lib.ConfigError(
        e.field, f'{where}/{trial.name}: {message}') from None


def _setup(trial: grid.Trial, where: str) -> training.Setup:
  """The trial built up to its prediction; ConfigError names the trial.
  The lockstep memory check is left to the trial: the plan reports the
  footprint instead, for this machine and for the stated GPU."""
  config = _config(trial)
  with _naming(trial, where):
    setup = training.Setup.prepare(config, check_memory=False)
  _check_sizes(setup.data.client_sizes, trial, where)
  return setup


def _rounds(setup, factor):
  """(rounds, T_pred or None, why not from the prediction)."""
  fixed = setup.config.rounds
  if factor <= 0:
    return fixed, None, 'fixed rounds (the study sets no factor)'
  prediction, why_not = setup.predict()
  if prediction is None:
    return fixed, None, why_not or 'no prediction'
  # A minibatch run's expected loss lies above the mean residual's.
  t_pred = prediction.expected_rounds_to_eps or prediction.rounds_to_eps
  if t_pred is None:
    return fixed, None, (f'the prediction never reaches eps (rho(M)^2 = '
                         f'{prediction.rate_per_round:.3g})')
  return max(1, math.ceil(factor * t_pred)), t_pred, ''


def budget(trial: grid.Trial, factor: float, where: str) -> Budget:
  """The trial's Budget (module doc). factor <= 0 keeps its rounds; data
  this machine does not have (MNIST, CIFAR-10 offline) keeps them too."""
  try:
    setup = _setup(trial, where)
  except data_lib.DataUnavailableError as e:
    config = _config(trial)
    return Budget(config.rounds, None, f'data not on this machine ({e})'
                  .split('\n')[0], (), 0, 0, None).measured(config)
  rounds, t_pred, why = _rounds(setup, factor)
  spec = setup.spec
  return Budget(rounds, t_pred, why, tuple(setup.data.client_sizes),
                spec.num_parameters(), spec.num_parameters(trainable_only=True),
                None).measured(setup.config)


def signature(trial: grid.Trial, factor: float) -> str:
  """What a trial's budget depends on: its flags but the rounds, and the
  study's factor (a cached budget is reused only if both are the same)."""
  flags = sorted(f for f in trial.flags if not f.startswith('--rounds='))
  return f'{factor:g} ' + ' '.join(flags)


def _reusable(steps, known: dict) -> dict:
  """{key: (signature, Budget)} of the known budgets the steps can reuse:
  the same signature, and the model's sizes kept (entries cached before
  they were are recomputed). The footprint is computed anew: it depends
  on this code, not on H_0."""
  found = {}
  for spec, label, trials in steps:
    for trial in trials:
      key = f'{spec.name}/{label}/{trial.name}'
      cached = known.get(key)
      if (cached and cached[0] == signature(trial, spec.budget_factor) and
          'num_parameters' in cached[1]):
        found[key] = (cached[0],
                      Budget.from_dict(cached[1]).measured(_config(trial)))
  return found


def assign(steps, known=None, save=None) -> tuple:
  """(steps with each trial's rounds set, {'study/group/trial': (signature,
  Budget)}).

  steps: suite.plan's [(spec, group label, trials)]; a spec's
  budget_factor sets its trials' rounds (module doc). known: an earlier
  result of assign (budgets.json), whose entries are reused where the
  signature matches (_reusable), so a resumed suite does not recompute
  H_0. save: called with the budgets found so far, the known ones first,
  after each new one (a plan stopped midway keeps what it computed).
  """
  planned, found = [], _reusable(steps, known or {})
  for spec, label, trials in steps:
    where = f'{spec.name}/{label}'
    out = []
    for trial in trials:
      key, sig = f'{where}/{trial.name}', signature(trial, spec.budget_factor)
      if key not in found:
        found[key] = (sig, budget(trial, spec.budget_factor, where))
        if save is not None:
          save(found)
      out.append(_with_rounds(trial, found[key][1].rounds))
    planned.append((spec, label, out))
  return planned, found
