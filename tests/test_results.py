"""The result types: immutable as built, and the one status/exit-code table."""

import dataclasses
import math
import os
import re

import numpy as np
import pytest

from tff_localsgd import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_round_result_cannot_change_after_it_is_made():
  metrics = {'train/loss': 1.0}
  rows = [{'local_step': 0, 'grad_diff': 0.0}]
  result = results.RoundResult(1, [np.zeros(2)], metrics,
                               {'per_client/train_loss': np.ones(3)}, rows)
  metrics['train/loss'] = 2.0  # the caller's dict is copied
  rows[0]['grad_diff'] = 5.0
  assert result.metrics['train/loss'] == 1.0
  assert result.step_rows[0]['grad_diff'] == 0.0
  assert isinstance(result.weights, tuple)
  with pytest.raises(TypeError):
    result.metrics['train/loss'] = 3.0
  with pytest.raises(TypeError):
    result.histograms['x'] = np.ones(1)
  with pytest.raises(TypeError):
    result.step_rows[0]['grad_diff'] = 1.0
  with pytest.raises(dataclasses.FrozenInstanceError):
    result.round = 2


def test_measured_adds_after_and_keeps_the_place_of_a_known_tag():
  trained = results.RoundResult(
      3, (), {'train/local_loss': 0.5, 'system/round_time_s': 0.1})
  result = trained.measured({'train/loss': 0.4, 'system/round_time_s': 0.2},
                            {'h': np.ones(2)})
  assert list(result.metrics) == ['train/local_loss', 'system/round_time_s',
                                  'train/loss']
  assert result.metrics['system/round_time_s'] == 0.2
  assert list(trained.metrics) == ['train/local_loss', 'system/round_time_s']
  assert list(result.histograms) == ['h'] and not trained.histograms
  assert result.timings == {'system/round_time_s': 0.2}


@pytest.mark.parametrize('metrics, diverged', [
    ({'train/loss': 1.0, 'train/local_loss': 2.0}, False),
    ({}, False),
    ({'train/loss': math.nan}, True),
    ({'train/local_loss': math.inf}, True)])
def test_diverged_is_a_loss_that_is_not_finite(metrics, diverged):
  assert results.RoundResult(1, (), metrics).diverged is diverged


def test_a_trained_round_is_frozen_too():
  trained = results.TrainedRound([np.ones(1)], {'train/local_loss': 1.0},
                                 start={'loss_sum': 1.0})
  with pytest.raises(TypeError):
    trained.metrics['x'] = 1.0
  assert trained.step_rows == () and not trained.histograms


def test_exit_codes_and_statuses_are_one_table():
  assert results.exit_code(results.COMPLETED) == 0
  assert results.exit_code(results.DIVERGED) == 3
  assert results.exit_code(results.INTERRUPTED) == results.EXIT_STOPPED == 130
  assert results.exit_code(results.RUNNING) == results.EXIT_STOPPED
  for status in results.DONE:
    assert results.done_status(results.exit_code(status)) == status
  for code in (results.EXIT_ERROR, results.EXIT_BAD_INPUT,
               results.EXIT_STOPPED, None):
    assert results.done_status(code) is None
  with pytest.raises(TypeError):
    results.EXIT_CODES['failed'] = 1


def test_no_other_module_writes_the_exit_code_table():
  """The mapping of statuses to exit codes is written in results.py only."""
  pattern = re.compile(r"""['"](completed|diverged)['"]\s*:\s*\d|"""
                       r"""\d\s*:\s*['"](completed|diverged)['"]|"""
                       r"""EXIT_\w+\s*=\s*\d""")
  found = []
  for top in ('tff_localsgd', 'benchmarks'):
    for directory, _, files in os.walk(os.path.join(ROOT, top)):
      for name in files:
        path = os.path.join(directory, name)
        if name.endswith('.py') and not path.endswith('results.py'):
          found += [f'{path}: {line.strip()}' for line in open(path)
                    if pattern.search(line)]
  assert not found


def test_the_phases_name_the_training_phases():
  assert set(results.TRAINING_PHASES) <= set(results.PHASES)
  assert all(p.endswith('_s') for p in results.PHASES)
