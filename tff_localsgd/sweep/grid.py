"""A sweep's grid: the trials of a cartesian product of config values and
seeds, each validated before anything runs, and the units they run in (a
trial, or a stack of seed siblings). Pure: no files, no TensorFlow.

  trials = grid.expand_grid({'width': ['64', '256']}, seeds=[0, 1],
                            base_flags={})
  units = grid.stack_units([(t, 'runs/demo') for t in trials], stack=4)
"""

import dataclasses
import difflib
import itertools
import re

from tff_localsgd import config as config_lib

# Sweep-level keys: a trial's output place and its seed are set by the sweep.
NOT_SWEPT = ('root_dir', 'experiment', 'seed')
ConfigError = config_lib.ConfigError
# The widest trial a sweep stacks: reports/perf/STACK.md measured the looped
# stack at 1.27x / 1.39x the throughput per trial at m = 64 / 256, and 0.83x
# at m = 1024, on the 2-core CPU.
STACK_MAX_WIDTH = 256


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of the sweep: `swept` holds the grid's values and the seed;
  `flags` is the full flag list it is trained with: every base and swept
  value (the binary's base holds every config field)."""
  name: str
  swept: dict
  flags: tuple


def flag_value(value) -> str:
  """How `benchmarks.train` reads `value` back exactly."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, float):
    return repr(value)
  return str(value)


def parse_grid(specs) -> dict:
  """--grid values ['width=64,256', 'local_steps=1,5'] -> {key: [strings]}.

  Raises ConfigError naming 'grid' for malformed or repeated entries; keys
  and values are checked by expand_grid.
  """
  grid = {}
  for spec in specs:
    key, sep, values = spec.partition('=')
    key = key.strip()
    items = [v.strip() for v in values.split(',')]
    if not sep or not key or not all(items):
      raise ConfigError('grid', f'expected key=value1,value2,... got {spec!r}')
    if key in grid:
      raise ConfigError('grid', f'{key} is given twice')
    grid[key] = items
  return grid


def _name_part(text: str) -> str:
  # Filesystem-safe and readable: anything else becomes '_'.
  return re.sub(r'[^A-Za-z0-9.+-]', '_', text)


def _check_grid(grid: dict, seeds) -> dict:
  """The grid with typed values; ConfigError on a bad key or value."""
  fields = config_lib.FIELDS
  typed = {}
  for key, values in grid.items():
    if key not in fields:
      close = difflib.get_close_matches(key, fields, n=1)
      raise ConfigError('grid', f'{key!r} is not a config field' +
                        (f'; did you mean {close[0]!r}?' if close else ''))
    if key in NOT_SWEPT:
      raise ConfigError('grid', f'{key} is set by the sweep (--root_dir, '
                        '--sweep, --seed and --seeds), not by --grid')
    if not values:
      raise ConfigError('grid', f'{key} has no values')
    typed[key] = [config_lib.parse_value(key, v, ' (in --grid)') for v in values]
    if len(set(typed[key])) != len(typed[key]):
      raise ConfigError('grid', f'{key} lists a value twice: {values}')
  if not seeds:
    raise ConfigError('seeds', 'a sweep needs at least one seed')
  if len(set(seeds)) != len(seeds):
    raise ConfigError('seeds', f'a seed is listed twice: {list(seeds)}')
  return typed


def expand_grid(grid: dict, seeds, base_flags: dict) -> list:
  """The trials of the cartesian product grid x seeds, in a fixed order.

  grid: {config field: [values as flag strings]}; the first key varies
  slowest and the seed fastest. base_flags: {config field: value (typed or a
  flag string)} for everything not swept; root_dir and experiment are
  ignored (the sweep sets them). Every trial's config is validated before
  this returns; raises ConfigError naming the field (and the trial), or
  'grid' for a key that is not a config field.
  """
  fields = config_lib.FIELDS
  for key in base_flags:
    if key not in fields:
      raise ConfigError(key, 'unknown config field')
  typed = _check_grid(grid, seeds)
  base = {k: config_lib.parse_value(k, v) for k, v in base_flags.items()
          if k not in ('root_dir', 'experiment')}
  trials, names = [], set()
  keys = list(grid)
  for combo in itertools.product(*(range(len(grid[k])) for k in keys),
                                 seeds):
    *picks, seed = combo
    swept = {k: typed[k][i] for k, i in zip(keys, picks)}
    swept['seed'] = int(seed)
    name = '_'.join([f'{k}-{_name_part(grid[k][i])}'
                     for k, i in zip(keys, picks)] + [f'seed-{int(seed)}'])
    if name in names:
      raise ConfigError('grid', f'two trials would be named {name}')
    names.add(name)
    values = {**base, **swept, 'experiment': name}
    try:
      config_lib.ExperimentConfig(**values).validate()
    except ConfigError as e:
      message = str(e)[len(f'--{e.field}: '):]
      raise ConfigError(e.field, f'{message} (trial {name})') from None
    flags = tuple(f'--{k}={flag_value(v)}' for k, v in values.items()
                  if k not in ('root_dir', 'experiment'))
    trials.append(Trial(name, swept, flags))
  return trials


def trial_config(trial: Trial) -> dict:
  """The config values a trial's flags set (typed), by field name."""
  out = {}
  for flag in trial.flags:
    key, _, value = flag[2:].partition('=')
    out[key] = config_lib.parse_value(key, value)
  return out


def seedless_key(trial: Trial) -> config_lib.ExperimentConfig:
  """Equal for trials that differ only in their seed: a trial process that
  ran one has built and compiled the other's computations (training's
  cache, keyed alike)."""
  return config_lib.ExperimentConfig.from_dict(trial_config(trial)).seedless()


def stackable(trial: Trial) -> bool:
  """Whether the trial may train in a stack of seeds: its config passes
  check_stackable and its width is at most STACK_MAX_WIDTH."""
  config = config_lib.ExperimentConfig.from_dict(trial_config(trial))
  try:
    config.check_stackable()
  except ConfigError:
    return False
  return config.width <= STACK_MAX_WIDTH


@dataclasses.dataclass(frozen=True)
class Unit:
  """Trials of one sweep that one trial worker runs as one request: a
  single trial, or a stack of seed siblings (equal seedless_key) trained as
  one computation (driver.train_stack)."""
  sweep_dir: str
  trials: tuple

  def key(self) -> config_lib.ExperimentConfig:
    return seedless_key(self.trials[0])  # the same for every member


def stack_units(pending, stack: int) -> list:
  """pending [(trial, sweep_dir)] -> Units, in the order of their first
  trials: the stackable trials of one sweep_dir with equal seedless_key
  grouped, at most `stack` per unit (in the order given); every other trial
  a unit of its own. stack=1: one unit per trial."""
  groups, open_groups = [], {}
  for trial, sweep_dir in pending:
    if stack > 1 and stackable(trial):
      key = (sweep_dir, seedless_key(trial))
      group = open_groups.get(key)
      if group is not None and len(group[1]) < stack:
        group[1].append(trial)
        continue
      open_groups[key] = group = (sweep_dir, [trial])
    else:
      group = (sweep_dir, [trial])
    groups.append(group)
  return [Unit(sweep_dir, tuple(trials)) for sweep_dir, trials in groups]
