"""Tests for driver.train_stack and stacked_training: S seeds trained as one
stack write the run directories S runs alone write.

The reference for each stacked run is the same config trained alone
(driver.train) on the same engine: its final weights, and every column of
metrics.csv but the system/* timings, must be the same bits.
"""

import dataclasses
import os
import threading

import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import driver
from tff_localsgd import recorders
from tff_localsgd import results
from tff_localsgd import rundir


def make_configs(root, seeds=(0, 1, 2), rounds=(4, 6, 5), **overrides):
  values = dict(dataset='synthetic', num_examples=48, input_dim=6,
                num_clients=4, width=32, local_steps=3, batch_size=4,
                client_lr=0.5, lr_scale='none', engine='inprocess',
                root_dir=str(root))
  values.update(overrides)
  return [config_lib.ExperimentConfig(seed=seed, rounds=r,
                                      experiment=f'seed-{seed}', **values)
          for seed, r in zip(seeds, rounds)]


def read_run(config):
  """(summary.json, metrics.csv rows less system_*) of a run."""
  run = rundir.RunDir(config)
  rows = recorders.read_metrics(run.file(rundir.METRICS_CSV))
  return run.read_summary(), [
      {k: v for k, v in row.items() if not k.startswith('system_')}
      for row in rows]


def alone(configs, root):
  """Each config trained alone into root: its (summary, rows)."""
  out = []
  for config in configs:
    config = dataclasses.replace(config, root_dir=str(root))
    assert driver.train(config).exit_code == 0
    out.append(read_run(config))
  return out


@pytest.mark.parametrize('overrides', [
    # Local GD, every client, F(w^t) from the round's own `start`.
    dict(algorithm='local_gd'),
    # Local SGD over a cohort of 2 of 4, evaluated every other round (the
    # evaluation call, each seed's cohorts and minibatches its own).
    dict(algorithm='local_sgd', clients_per_round=2, eval_every=2)])
def test_a_stack_writes_the_runs_each_seed_writes_alone(tmp_path, overrides):
  configs = make_configs(tmp_path / 'stacked', **overrides)
  outcomes = driver.train_stack(configs)
  assert [o.exit_code for o in outcomes] == [0, 0, 0]
  stacked = [read_run(config) for config in configs]
  for (summary, rows), (want, want_rows), config in zip(
      stacked, alone(configs, tmp_path / 'alone'), configs):
    assert summary['final_weights_sha256'] == want['final_weights_sha256']
    assert rows == want_rows
    assert summary['rounds_completed'] == config.rounds
    assert summary['theory'] == want['theory']
    assert summary['stack'] == dict(index=configs.index(config),
                                    seeds=[0, 1, 2],
                                    experiments=['seed-0', 'seed-1',
                                                 'seed-2'])
    assert 'stack' not in want
  # The seeds differ: a stack that trained one seed thrice would not.
  assert len({s['final_weights_sha256'] for s, _ in stacked}) == 3


def test_round_times_are_shares_that_add_up(tmp_path):
  # Every round's time is split among the seeds that record it, and each
  # run's compute time is its own share, not the whole stack's.
  # K = 20: rounds that cost well above the evaluations.
  configs = make_configs(tmp_path, algorithm='local_gd', local_steps=20)
  driver.train_stack(configs)
  times = {}
  for config in configs:
    run = rundir.RunDir(config)
    for row in recorders.read_metrics(run.file(rundir.METRICS_CSV)):
      if row.get('system_round_time_s'):
        times.setdefault(int(row['round']), []).append(
            float(row['system_round_time_s']))
  # Rounds 1-4: all three seeds; 5: seeds 1 and 2; 6: seed 1 only.
  assert [len(times[t]) for t in range(1, 7)] == [3, 3, 3, 3, 2, 1]
  for t in range(1, 7):
    assert len(set(times[t])) == 1  # one share each
  phases = [rundir.RunDir(c).read_summary()['phases_s'] for c in configs]
  # Seed 0 ran rounds 1-4 for all three: charged its share. Charged them
  # whole, its evaluation_s (the compute time its rounds leave) would hold
  # at least the other two seeds' shares of rounds 1-4.
  assert phases[0]['rounds_s'] == pytest.approx(
      sum(times[t][0] for t in range(1, 5)))
  others = sum(times[t][s] for t in range(1, 5) for s in (1, 2))
  assert phases[0]['evaluation_s'] < others


def test_a_diverged_seed_ends_its_run_and_leaves_the_others(tmp_path):
  # At client_lr = 2, seed 0 diverges and seeds 1 and 2 complete, each
  # trained alone (the reference, asserted below). Seed 0 is the member
  # that runs the shared rounds: the others go on without it.
  configs = make_configs(tmp_path / 'stacked', rounds=(6, 6, 6),
                         algorithm='local_gd', client_lr=2.0)
  want = [driver.train(dataclasses.replace(c, root_dir=str(tmp_path / 'a')))
          for c in configs]
  assert [o.exit_code for o in want] == [3, 0, 0]
  outcomes = driver.train_stack(configs)
  assert [o.exit_code for o in outcomes] == [3, 0, 0]
  for outcome, reference in zip(outcomes, want):
    assert outcome.summary['rounds_completed'] == (
        reference.summary['rounds_completed'])
    assert outcome.summary['final_weights_sha256'] == (
        reference.summary['final_weights_sha256'])


def test_only_fresh_runs_stack_a_completed_one_is_left(tmp_path):
  configs = make_configs(tmp_path, algorithm='local_gd')
  driver.train(configs[0])
  before = rundir.RunDir(configs[0]).read_summary()
  outcomes = driver.train_stack(configs)
  assert [o.exit_code for o in outcomes] == [0, 0, 0]
  assert rundir.RunDir(configs[0]).read_summary() == before
  assert 'stack' not in before
  for config in configs[1:]:
    assert rundir.RunDir(config).read_summary()['stack']['seeds'] == [1, 2]


def test_a_stopped_stack_checkpoints_every_run_and_resumes_alone(tmp_path):
  configs = make_configs(tmp_path / 'stacked', algorithm='local_gd',
                         checkpoint_every=1)
  stop = threading.Event()
  stop.set()  # every run stops after its first round
  outcomes = driver.train_stack(configs, stop=stop)
  assert [o.exit_code for o in outcomes] == [results.EXIT_STOPPED] * 3
  outcomes = driver.train_stack(configs)  # resumes each alone
  assert [o.exit_code for o in outcomes] == [0, 0, 0]
  for (summary, rows), (want, want_rows) in zip(
      [read_run(c) for c in configs], alone(configs, tmp_path / 'alone')):
    assert summary['final_weights_sha256'] == want['final_weights_sha256']
    assert rows == want_rows


@pytest.mark.parametrize('field,value,flag', [
    ('width', 64, 'seed'), ('diag_every', 2, 'diag_every')])
def test_configs_that_cannot_stack_are_bad_input_before_any_write(
    tmp_path, field, value, flag):
  configs = make_configs(tmp_path)
  configs[1] = dataclasses.replace(configs[1], **{field: value})
  with pytest.raises(driver.BadInput) as info:
    driver.train_stack(configs)
  assert str(info.value).startswith(f'--{flag}')
  assert not os.listdir(tmp_path)  # nothing written
