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

import dataclasses
import math

from tff_localsgd import config as config_lib
from tff_localsgd import sweep
from tff_localsgd import training

# Every client needs this many examples: one example makes a client's
# local steps interpolate a single point, which no partition of the
# theory's setting intends (a Dirichlet draw can leave one behind).
MIN_CLIENT_EXAMPLES = 2


@dataclasses.dataclass(frozen=True)
class Budget:
  """A trial's planned rounds: ceil(factor T_pred), or the study's fixed
  rounds with the reason (`why`) when no T_pred sets them."""
  rounds: int
  t_pred: float | None
  why: str
  client_sizes: tuple

  @property
  def from_prediction(self) -> bool:
    return not self.why


def _with_rounds(trial: sweep.Trial, rounds: int) -> sweep.Trial:
  flags = tuple(f'--rounds={rounds}' if f.startswith('--rounds=') else f
                for f in trial.flags)
  return dataclasses.replace(trial, flags=flags)


def _setup(trial: sweep.Trial, where: str) -> training.Setup:
  """The trial built up to its prediction; ConfigError names the trial."""
  config = config_lib.ExperimentConfig.from_dict(sweep.trial_config(trial))
  try:
    setup = training.Setup.prepare(config)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(e.field, f'{where}/{trial.name}: {e}') from e
  small = [i for i, size in enumerate(setup.data.client_sizes)
           if size < MIN_CLIENT_EXAMPLES]
  if small:
    raise config_lib.ConfigError(
        config.partition, f'{where}/{trial.name}: client {small[0]} holds '
        f'{setup.data.client_sizes[small[0]]} example(s), fewer than '
        f'{MIN_CLIENT_EXAMPLES}; change the partition or num_examples')
  return setup


def budget(trial: sweep.Trial, factor: float, where: str) -> Budget:
  """The trial's Budget (module doc). factor <= 0 keeps its rounds."""
  setup = _setup(trial, where)
  fixed = setup.config.rounds
  sizes = tuple(setup.data.client_sizes)
  if factor <= 0:
    return Budget(fixed, None, 'fixed rounds (the study sets no factor)',
                  sizes)
  prediction, why_not = setup.predict()
  if prediction is None:
    return Budget(fixed, None, why_not or 'no prediction', sizes)
  t_pred = prediction.rounds_to_eps
  if t_pred is None:
    return Budget(fixed, None, f'the prediction never reaches eps (rho(M)^2 '
                  f'= {prediction.rate_per_round:.3g})', sizes)
  return Budget(max(1, math.ceil(factor * t_pred)), t_pred, '', sizes)


def assign(steps) -> tuple:
  """(steps with each trial's rounds set, {(study, group, trial): Budget}).

  steps: suite.plan's [(spec, group label, trials)]; a spec's
  budget_factor sets its trials' rounds (module doc).
  """
  planned, budgets = [], {}
  for spec, label, trials in steps:
    where = f'{spec.name}/{label}'
    out = []
    for trial in trials:
      b = budget(trial, spec.budget_factor, where)
      budgets[(spec.name, label, trial.name)] = b
      out.append(_with_rounds(trial, b.rounds))
    planned.append((spec, label, out))
  return planned, budgets
