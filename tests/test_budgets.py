"""budgets.py: each trial's rounds from its own prediction, the plan-time
checks of every preset's trials, and the footprint."""

import dataclasses
import math

import pytest

from tff_localsgd import budgets
from tff_localsgd import config as config_lib
from tff_localsgd import suite
from tff_localsgd.sweep import grid
from tff_localsgd import training


def _trial(**flags):
  base = dict(suite._theory_base(suite._sizes('smoke')), width=64, seed=0)
  base.update(flags)
  return grid.expand_grid({}, [base.pop('seed')],
                          {k: str(v) for k, v in base.items()})[0]


def test_the_budget_is_twice_the_runs_own_predicted_crossing():
  trial = _trial()
  b = budgets.budget(trial, 2.0, 'E/g')
  config = config_lib.ExperimentConfig.from_dict(grid.trial_config(trial))
  prediction, _ = training.Setup.prepare(config).predict()
  assert b.from_prediction and b.t_pred == prediction.rounds_to_eps
  assert b.rounds == math.ceil(2 * prediction.rounds_to_eps)
  assert b.rounds != config.rounds  # the study's fixed rounds are replaced
  # The crossing does not depend on the rounds the trial was planned with.
  again = budgets.budget(_trial(rounds=3), 2.0, 'E/g')
  assert again.t_pred == b.t_pred and again.rounds == b.rounds


def test_a_trial_without_a_converging_prediction_keeps_its_rounds():
  fixed = budgets.budget(_trial(rounds=7), 0.0, 'E/g')
  assert (fixed.rounds, fixed.t_pred) == (7, None) and 'fixed' in fixed.why
  # A step far beyond the edge of stability: rho(M) > 1.
  wild = budgets.budget(_trial(rounds=7, client_lr=200.0), 2.0, 'E/g')
  assert wild.rounds == 7 and 'never reaches eps' in wild.why


def test_assign_rewrites_every_trials_rounds_flag():
  steps = suite.plan('smoke', {'E1_width'})
  planned, found = budgets.assign(steps)
  for (spec, label, trials), (_, _, before) in zip(planned, steps):
    for trial, old in zip(trials, before):
      rounds = grid.trial_config(trial)['rounds']
      assert rounds == found[f'{spec.name}/{label}/{trial.name}'][1].rounds
      assert [f for f in trial.flags if not f.startswith('--rounds=')] == \
          [f for f in old.flags if not f.startswith('--rounds=')]


def test_a_cached_budget_is_reused_only_for_the_same_trial():
  steps = suite.plan('smoke', {'E1_width'})[:1]
  _, found = budgets.assign(steps)
  key = next(iter(found))
  sig, b = found[key]
  fake = dataclasses.replace(b, rounds=b.rounds + 1000)
  known = {k: (s, v.to_dict()) for k, (s, v) in found.items()}
  known[key] = (sig, fake.to_dict())
  planned, again = budgets.assign(steps, known)
  # Reused, not recomputed; its footprint computed anew for its rounds.
  config = config_lib.ExperimentConfig.from_dict(
      grid.trial_config(steps[0][2][0]))
  assert again[key][1] == fake.measured(config) != fake
  assert again[key][1].footprint.flops > b.footprint.flops
  assert grid.trial_config(planned[0][2][0])['rounds'] == b.rounds + 1000
  known[key] = ('another signature', fake.to_dict())
  assert budgets.assign(steps, known)[1][key][1] == b
  # An entry cached before the model's sizes were kept is recomputed.
  old = {k: v for k, v in fake.to_dict().items()
         if k not in ('num_parameters', 'trainable')}
  assert budgets.assign(steps, {key: (sig, old)})[1][key][1] == b


def test_a_plan_stopped_midway_keeps_the_budgets_it_computed(monkeypatch):
  steps = suite.plan('smoke', {'E1_width'})[:1]
  _, found = budgets.assign(steps)
  keys = list(found)
  known = {keys[0]: (found[keys[0]][0], found[keys[0]][1].to_dict())}
  saved, computed = [], []
  real = budgets.budget

  def budget_then_stop(trial, factor, where):
    if computed:  # the second new budget: the plan is killed
      raise KeyboardInterrupt
    computed.append(trial.name)
    return real(trial, factor, where)
  monkeypatch.setattr(budgets, 'budget', budget_then_stop)
  with pytest.raises(KeyboardInterrupt):
    budgets.assign(steps, known, save=lambda f: saved.append(dict(f)))
  # One save, after the one new budget: the known one and it, as computed.
  assert [list(f) for f in saved] == [keys[:2]]
  assert saved[0][keys[1]] == found[keys[1]]
  assert saved[0][keys[0]][1] == found[keys[0]][1]


def test_a_client_with_one_example_is_refused_naming_the_trial():
  # 3 examples over 2 clients, shards of 1: one client gets one example.
  trial = _trial(num_examples=3, partition='shards', shards_per_client=1,
                 probe_size=3)
  with pytest.raises(config_lib.ConfigError) as e:
    budgets.check_data(trial, 'E4/shards')
  assert e.value.field == 'partition'
  assert f'E4/shards/{trial.name}: client' in str(e.value)
  assert 'fewer than 2' in str(e.value)


@pytest.mark.parametrize('preset', suite.PRESETS)
def test_every_trial_of_every_preset_has_valid_data(preset):
  """The data and partition of every trial (the paper's MNIST and
  CIFAR-10 need a download, so their trials are checked by the plan on
  the machine that has them)."""
  names = {s.name for s in suite.suite(preset)} - {'E7_real_data'}
  for spec, label, trials in suite.plan(preset, names):
    for trial in trials:
      data = budgets.check_data(trial, f'{spec.name}/{label}')
      assert min(data.client_sizes) >= budgets.MIN_CLIENT_EXAMPLES


def test_every_smoke_trial_builds_up_to_its_prediction():
  planned, found = budgets.assign(suite.plan('smoke'))
  theory = [b for key, (_, b) in found.items()
            if not key.startswith('E7_real_data') and b.from_prediction]
  assert len(theory) > 0.8 * len(found)
  assert all(b.rounds >= 2 * b.t_pred for b in theory)


def test_the_footprint_counts_the_lockstep_copies_and_the_flops():
  config = config_lib.ExperimentConfig(
      num_clients=4, local_steps=5, algorithm='local_gd', diag_every=10,
      lockstep_drift=True, width=64)
  size = budgets.footprint(config, num_parameters=1000, trainable=600, n=64,
                           rounds=10)
  lockstep = 4 * 600 * 4 * (28 + 4 * 5)
  assert size.peak_bytes == budgets.PROCESS_BYTES + lockstep  # > theory's
  # A round: 6 P_trainable per example gradient (K n of them) + 2 P n.
  assert size.flops == 10 * (6 * 600 * 5 * 64 + 2 * 1000 * 64)
  assert size.gpu_seconds() == size.flops / budgets.GPU_FLOPS
  off = budgets.footprint(
      config_lib.ExperimentConfig(num_clients=4, width=64), 1000, 600, 64, 10)
  assert off.peak_bytes == budgets.PROCESS_BYTES + 44 * 1000 + \
      2 * 8 * 64 * 64 + 8 * 64 * int(math.sqrt(1000))
