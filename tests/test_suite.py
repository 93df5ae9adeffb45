"""suite.py: the presets as data. Groups, their grids, the study names, the
budgets' factors and the design choices the claims rely on."""

import math
import os
import subprocess

import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import suite
from tff_localsgd import theory
from tff_localsgd.sweep import grid


def test_a_group_crosses_its_own_grid_or_the_studys():
  spec = suite.StudySpec(
      'S', 'title', dict(width=8, num_examples=4),
      grid=dict(width=[8, 16]),
      paired=(dict(label='a'), dict(label='b', num_examples=8,
                                    grid=dict(width=[32]))))
  assert spec.groups() == [('a', dict(width=8, num_examples=4)),
                           ('b', dict(width=8, num_examples=8))]
  assert spec.grid_for('a') == dict(width=[8, 16])
  assert spec.grid_for('b') == dict(width=[32])
  with pytest.raises(KeyError):
    spec.grid_for('c')
  assert suite.StudySpec('T', 't', {}).groups() == [('all', {})]


def test_a_group_runs_its_own_seeds_or_the_studys():
  spec = suite.StudySpec('S', 'title', dict(width=8), seeds=2,
                         paired=(dict(label='a'), dict(label='b', seeds=5)))
  assert spec.groups() == [('a', dict(width=8)), ('b', dict(width=8))]
  assert (spec.seeds_for('a'), spec.seeds_for('b')) == (2, 5)
  assert spec.seeds_text() == '2 (b 5)'
  assert suite.StudySpec('T', 't', {}, seeds=3).seeds_text() == '3'
  steps = {label: trials for spec_, label, trials in [
      (spec, label, grid.expand_grid({}, list(range(spec.seeds_for(label))),
                                     {}))
      for label, _ in spec.groups()]}
  assert [len(steps['a']), len(steps['b'])] == [2, 5]


@pytest.mark.parametrize('preset', suite.PRESETS)
def test_every_preset_names_its_studies_once_from_the_constants(preset):
  names = [spec.name for spec in suite.suite(preset)]
  assert names == [suite.WIDTH, suite.LOCAL_STEPS, suite.GRID,
                   suite.HETEROGENEITY, suite.ALGORITHMS, suite.DEPTH,
                   suite.REAL_DATA, suite.DIGITS_THEORY]
  steps = suite.plan(preset)
  assert sum(len(t) for _, _, t in steps) == sum(
      spec.seeds_for(label) *
      math.prod(len(v) for v in spec.grid_for(label).values())
      for spec in suite.suite(preset) for label, _ in spec.groups())


@pytest.mark.parametrize('preset', suite.PRESETS)
def test_the_theory_studies_take_their_budgets_from_the_prediction(preset):
  factors = {spec.name: spec.budget_factor for spec in suite.suite(preset)}
  assert factors.pop(suite.REAL_DATA) == 0.0  # cross-entropy: no prediction
  assert set(factors.values()) == {suite.BUDGET_FACTOR} == {2.0}


def test_the_quick_designs_the_claims_rely_on():
  steps = {(spec.name, label): trials
           for spec, label, trials in suite.plan('quick')}
  config = lambda study, group: grid.trial_config(steps[(study, group)][0])
  # C2: n from 16 to 256 at m = 1024, 4 seeds each.
  wide = [grid.trial_config(t) for (s, _), trials in steps.items()
          if s == suite.GRID for t in trials]
  ns = {c['num_examples'] for c in wide if c['width'] == 1024}
  assert ns == {16, 32, 64, 128, 256}
  # C14's grid: 4 n x 7 widths from 32 x 4 seeds.
  assert len(steps[(suite.GRID, 'grid')]) == 4 * 7 * 4
  assert min(c['width'] for c in wide) == 32
  # C8: Local SGD at B = 2, 24 seeds; C16: half the client step.
  assert config(suite.ALGORITHMS, 'local_sgd')['batch_size'] == 2
  assert len(steps[(suite.ALGORITHMS, 'local_sgd')]) == 24
  # C5, C13: 8 lazy seeds per width; the control keeps 4.
  assert len(steps[(suite.WIDTH, 'lazy')]) == 4 * 8
  assert len(steps[(suite.WIDTH, 'catapult')]) == 4 * 4
  assert config(suite.HETEROGENEITY, 'shards_1_half')['client_lr'] == \
      config(suite.HETEROGENEITY, 'shards_1')['client_lr'] / 2
  # C1's control: the catapult step and the narrowest width.
  assert config(suite.WIDTH, 'catapult')['client_lr'] == \
      suite.CATAPULT_CLIENT_LR
  # C15: centred digits in the theory's setting.
  digits = config_lib.ExperimentConfig.from_dict(
      config(suite.DIGITS_THEORY, 'all'))
  assert (digits.dataset, digits.loss, digits.train_layers,
          digits.algorithm) == ('digits_binary', 'mse', 'hidden', 'local_gd')


def test_an_unknown_preset_is_refused():
  with pytest.raises(ValueError, match='unknown preset'):
    suite.suite('huge')


def test_every_design_change_names_a_commit_that_changed_the_suite():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for commit, _ in suite.DESIGN_CHANGES:
    changed = subprocess.run(
        ['git', 'show', '--name-only', '--format=', commit], cwd=root,
        capture_output=True, text=True)
    assert changed.returncode == 0, changed.stderr
    assert 'tff_localsgd/suite.py' in changed.stdout.split()


@pytest.mark.parametrize('preset', suite.PRESETS)
def test_every_minibatch_trial_gets_its_exact_expected_loss(preset):
  # C8 and a minibatch trial's budget need the expected-loss curve, which
  # theory.predict computes up to EXPECTED_MAX_POINTS examples.
  minibatch = [grid.trial_config(t) for _, _, trials in suite.plan(preset)
               for t in trials]
  minibatch = [c for c in minibatch if c['dataset'] == 'synthetic' and
               c['algorithm'] != 'local_gd']
  assert minibatch
  assert max(c['num_examples'] for c in minibatch) <= \
      theory.EXPECTED_MAX_POINTS
