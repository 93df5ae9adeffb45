"""ExperimentConfig: one experiment as data.

Every field has the name of the flag that sets it (`benchmarks/flags.py`) and
of the metric or column that reports it. `validate()` checks each field on its
own and the fields against each other; `validate_against_data()` checks what
can only be known once the clients' data exist (client sizes). Both raise
`ConfigError` naming the field, before any computation runs.
"""

import dataclasses
import json
import math

DATASETS = ('synthetic', 'digits', 'digits_binary', 'mnist', 'fashion_mnist',
            'cifar10')
TARGETS = ('teacher', 'noise')
PARTITIONS = ('iid', 'dirichlet', 'shards')
MODELS = ('mlp', 'cnn')
TRAIN_LAYERS = ('all', 'hidden')
LOSSES = ('mse', 'xent')
ALGORITHMS = ('local_sgd', 'local_gd', 'minibatch_sgd')
LR_SCALES = ('none', 'width')
ENGINES = ('auto', 'native', 'inprocess', 'remote')
# How a run is executed, not what it computes (the engines agree, tested): a
# run may resume with other values of these.
EXECUTION_FIELDS = ('engine', 'workers', 'device', 'clients_per_pack', 'jit')


class ConfigError(ValueError):
  """A config value that cannot run; `field` names the flag."""

  def __init__(self, field: str, message: str):
    super().__init__(f'--{field}: {message}')
    self.field = field


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """All that determines a run. Same config, same seed: same bits."""

  # Data.
  dataset: str = 'synthetic'
  num_examples: int = 256  # synthetic: n; real data: training subsample, 0 = all
  input_dim: int = 32  # synthetic only: d
  output_dim: int = 1  # synthetic only: c
  target: str = 'teacher'  # synthetic only
  data_dir: str = '~/.cache/tff_localsgd'
  num_clients: int = 8
  partition: str = 'iid'
  dirichlet_alpha: float = 0.5
  shards_per_client: int = 2
  # Model.
  model: str = 'mlp'
  depth: int = 1  # L: number of m x m hidden weight matrices
  width: int = 512  # m
  train_layers: str = 'all'
  loss: str = 'mse'
  # Optimization.
  algorithm: str = 'local_sgd'
  local_steps: int = 10  # K
  batch_size: int = 16
  client_lr: float = 1.0  # with lr_scale=width this is c in eta = c / m
  lr_scale: str = 'width'
  server_lr: float = 1.0
  clients_per_round: int = 0  # 0 = every client, every round
  rounds: int = 50
  eval_every: int = 1
  seed: int = 0
  # The target: a run reaches epsilon where its train/loss crosses
  # eps * F_0 (interpolated: outcomes.rounds_to_eps), where F_0 = F(f = 0)
  # is the zero predictor's loss
  # (data only: the same for every seed of the initialization).
  eps: float = 1e-3
  # Diagnostics (see tff_localsgd/diagnostic_process.py).
  diag_every: int = 0  # 0 = off
  lockstep_drift: bool = True
  diag_per_step: bool = False
  probe_size: int = 64
  ntk_every: int = 0  # 0 = off
  # Execution (see tff_localsgd/engines/).
  engine: str = 'auto'
  workers: str = ''  # remote engine: host:port,host:port
  device: str = ''  # inprocess engine: '' = GPU if TensorFlow sees one, else CPU
  clients_per_pack: int = 1  # P: virtual clients one TFF client trains at once
  jit: bool = False  # compile the client computation with XLA
  # Output.
  checkpoint_every: int = 10  # 0 = no periodic checkpoints
  root_dir: str = 'runs'
  experiment: str = 'default'

  @property
  def lr(self) -> float:
    """The client step size eta: client_lr, or client_lr / m with lr_scale=width."""
    if self.lr_scale == 'width':
      return self.client_lr / self.width
    return self.client_lr

  @property
  def cohort_size(self) -> int:
    return self.clients_per_round or self.num_clients

  def examples_per_round(self, cohort_sizes) -> int:
    """Example gradients one round computes: K * B per client (K * n_i for
    local_gd), summed over the cohort's sizes n_i."""
    if self.algorithm == 'local_gd':
      return self.local_steps * int(sum(cohort_sizes))
    return self.local_steps * self.batch_size * len(cohort_sizes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict) -> 'ExperimentConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(unknown[0], 'unknown config field')
    return cls(**values)

  def seedless(self) -> 'ExperimentConfig':
    """This config with its seed, budget and output place cleared: equal
    for runs that differ only in those, which share their TFF computations
    (no computation depends on the rounds; a suite's seeds get budgets of
    their own, budgets.py)."""
    return dataclasses.replace(self, seed=0, rounds=0, root_dir='',
                               experiment='')

  def check_stackable(self) -> 'ExperimentConfig':
    """Returns self, or raises ConfigError naming the first field that keeps
    this run out of a stack (stacking.py: S seeds as one computation)."""
    for name in ('diag_every', 'ntk_every'):
      if getattr(self, name):
        raise ConfigError(
            name, 'the diagnostics measure one model; stacked seeds train '
            f'without them (--{name}=0)')
    if self.clients_per_pack != 1:
      raise ConfigError(
          'clients_per_pack', 'stacked seeds take the leading axis a pack '
          'would; --clients_per_pack=1')
    if self.model != 'mlp':
      raise ConfigError(
          'model', 'conv layers do not batch over a stack of seeds: '
          '--model=mlp')
    return self

  def validate(self) -> 'ExperimentConfig':
    """Returns self, or raises ConfigError naming the first bad field."""
    self._validate_values()
    self._validate_data_and_model()
    self._validate_execution()
    return self

  def _validate_values(self):
    """Each field on its own: a choice, or a number in its range."""
    choices = dict(dataset=DATASETS, target=TARGETS, partition=PARTITIONS,
                   model=MODELS, train_layers=TRAIN_LAYERS, loss=LOSSES,
                   algorithm=ALGORITHMS, lr_scale=LR_SCALES, engine=ENGINES)
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ConfigError(name, f'{getattr(self, name)!r} is not one of '
                          f'{", ".join(allowed)}')
    positive = ('input_dim', 'output_dim', 'num_clients', 'shards_per_client',
                'width', 'local_steps', 'batch_size', 'rounds', 'eval_every',
                'clients_per_pack')
    for name in positive:
      if getattr(self, name) <= 0:
        raise ConfigError(name, f'must be > 0, got {getattr(self, name)}')
    for name in ('client_lr', 'server_lr', 'dirichlet_alpha'):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, f'must be a finite number > 0, got {value}')
    if not 0 < self.eps < 1:
      raise ConfigError('eps', f'must be in (0, 1), got {self.eps}')
    for name in ('num_examples', 'depth', 'clients_per_round', 'seed',
                 'diag_every', 'ntk_every', 'probe_size', 'checkpoint_every'):
      if getattr(self, name) < 0:
        raise ConfigError(name, f'must be >= 0, got {getattr(self, name)}')

  def _validate_data_and_model(self):
    """The data, model and algorithm fields against each other."""
    if self.dataset == 'synthetic' and self.num_examples == 0:
      raise ConfigError('num_examples', 'synthetic data needs num_examples > 0')
    if self.num_examples and self.num_clients > self.num_examples:
      raise ConfigError('num_clients', f'{self.num_clients} clients need at '
                        f'least as many examples, got {self.num_examples}')
    if self.clients_per_round > self.num_clients:
      raise ConfigError('clients_per_round', f'{self.clients_per_round} > '
                        f'num_clients={self.num_clients}')
    if self.train_layers == 'hidden' and self.depth == 0:
      raise ConfigError('train_layers', 'hidden trains the m x m layers; '
                        'depth=0 has none')
    if self.train_layers == 'hidden' and self.model != 'mlp':
      raise ConfigError('train_layers', 'hidden is defined for the mlp only')
    if self.algorithm == 'minibatch_sgd' and self.local_steps != 1:
      raise ConfigError('local_steps', 'minibatch_sgd is the K=1 baseline; '
                        f'got local_steps={self.local_steps}')
    if self.dataset == 'synthetic' and self.model == 'cnn':
      raise ConfigError('model', 'cnn needs image data, not synthetic')
    if self.loss == 'xent' and self.dataset == 'synthetic':
      raise ConfigError('loss', 'xent needs class labels; synthetic targets '
                        'are real-valued')
    if self.dataset == 'digits_binary' and self.model != 'mlp':
      raise ConfigError('model', 'digits_binary is for the mlp: its inputs '
                        'are flattened to R^64 with unit norm (the theory\'s '
                        'setting)')
    if self.loss == 'xent' and self.dataset == 'digits_binary':
      raise ConfigError('loss', 'xent needs class labels; digits_binary is a '
                        'regression task (targets +-1, squared loss: use mse)')
    if self.ntk_every and not self.probe_size:
      raise ConfigError('probe_size', 'the NTK is measured on the probe set; '
                        'it needs probe_size > 0')

  def _validate_execution(self):
    """How the run is executed, and where it is written."""
    if self.clients_per_pack > self.cohort_size:
      raise ConfigError('clients_per_pack', f'{self.clients_per_pack} > the '
                        f'{self.cohort_size} clients of a round')
    if self.clients_per_pack > 1 and self.model != 'mlp':
      raise ConfigError('clients_per_pack', 'packing stacks dense layers '
                        '(batched matmuls); it is for the mlp only')
    # Checked on TFF 0.87: the worker_binary ignores jit_compile (it runs a
    # function that XLA cannot compile), so --jit would silently do nothing.
    if self.jit and self.engine != 'inprocess':
      raise ConfigError('jit', 'XLA works with --engine=inprocess only: TFF\'s '
                        'worker_binary (the native and remote engines) has no '
                        'XLA compiler and runs the client computation '
                        'uncompiled')
    if (self.engine == 'remote') != bool(self.workers):
      raise ConfigError('workers', 'give --workers=host:port,... exactly when '
                        '--engine=remote')
    for address in filter(None, self.workers.split(',')):
      host, _, port = address.rpartition(':')
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError('workers', f'{address!r} is not host:port')
    if not self.experiment or '/' in self.experiment:
      raise ConfigError('experiment', 'must be a non-empty name without "/"')

  def validate_against_data(self, client_sizes) -> 'ExperimentConfig':
    """Checks what depends on the partition: client sizes n_i."""
    if self.diag_every and self.probe_size > sum(client_sizes):
      raise ConfigError('probe_size', f'{self.probe_size} > the '
                        f'{sum(client_sizes)} training examples')
    smallest = min(client_sizes)
    if smallest < 1:
      raise ConfigError('num_clients', 'a client received no examples')
    if self.algorithm != 'local_gd' and self.batch_size > smallest:
      raise ConfigError('batch_size', f'{self.batch_size} is larger than the '
                        f'smallest client ({smallest} examples); minibatches '
                        'are sampled without replacement')
    return self


FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}


def field_type(name: str) -> type:
  """The Python type of config field `name`: int, float, str or bool."""
  kind = FIELDS[name].type
  # Without `from __future__ import annotations` types are classes; be safe.
  return {'int': int, 'float': float, 'str': str, 'bool': bool}.get(kind,
                                                                    kind)


def parse_value(name: str, value, where: str = ''):
  """`value` (a flag string, or already typed) as config field `name`'s type,
  read as absl reads the flag. Raises ConfigError naming the field."""
  kind = field_type(name)
  if not isinstance(value, str):
    if kind is float and isinstance(value, int) and not isinstance(value,
                                                                  bool):
      return float(value)
    if type(value) is not kind:
      raise ConfigError(name, f'{value!r} is not a {kind.__name__}{where}')
    return value
  text = value.strip()
  if kind is bool:
    lowered = text.lower()
    if lowered not in ('true', 'false', '1', '0'):
      raise ConfigError(name, f'{value!r} is not a bool (true, false, 1, 0)'
                        f'{where}')
    return lowered in ('true', '1')
  if kind is str:
    return text
  try:
    return kind(text)
  except ValueError:
    raise ConfigError(name, f'{value!r} is not a {kind.__name__}{where}') \
        from None


def check_stack(configs) -> None:
  """Raises ConfigError unless the configs can train as one stack: each
  check_stackable, and all differing only in seed, budget and run directory
  (seedless equal)."""
  for config in configs:
    config.check_stackable()
  if len({config.seedless() for config in configs}) != 1:
    raise ConfigError('seed', 'stacked runs differ only in seed, rounds and '
                      'run directory')
