"""The suite's cost model (reproduction.estimate_s, trial_cost) against
hand computation, its plan text, and the determinism check's choice of
trial. (The suite end to end: test_reproduce.py.)"""

import dataclasses

import pytest

from tff_localsgd import budgets
from tff_localsgd import reproduction
from tff_localsgd import suite as suite_lib
from tff_localsgd.sweep import grid

BASE = dict(num_examples=64, num_clients=4, local_steps=5, batch_size=16,
            algorithm='local_gd', depth=1, rounds=10, diag_every=5,
            width=256)


def cost(width, round_s, work):
  return reproduction.RoundCost(width, startup_s=4.0, fixed_s=2.0,
                                round_s=round_s, diag_s=0.5, work=work)


def test_work_is_example_gradients_times_depth():
  # Local GD: K n_i per client, 4 clients of 16: 5 * 64; depth 2.
  assert reproduction._work(dict(BASE, depth=2)) == 5 * 64 * 2
  # SGD: K B per client: 5 * 16 * 4.
  assert reproduction._work(dict(BASE, algorithm='local_sgd')) == 5 * 16 * 4


def test_estimate_scales_the_work_from_the_nearest_width():
  work = reproduction._work(BASE)
  costs = {256: cost(256, 0.1, work), 1024: cost(1024, 0.9, work)}
  config = dict(BASE, width=512, local_steps=10)  # nearest: 256
  scale = 2 * (512 / 256) ** 2  # twice the work, (m / m0)^2
  overhead = 0.1  # the smallest measured round
  round_s = overhead + scale * (0.1 - overhead)
  want = 2.0 + 10 * round_s + 2 * scale * 0.5  # 10 rounds, 2 diagnostic
  assert reproduction.estimate_s(config, costs) == pytest.approx(want)
  config = dict(BASE, width=1024)  # itself: no scaling
  assert reproduction.estimate_s(config, costs) == pytest.approx(
      2.0 + 10 * 0.9 + 2 * 0.5)


def test_the_steady_round_leaves_out_the_first_call_and_diagnostic_rounds():
  # Round 1 pays the computation's first call; round 3 is a diagnostic
  # round (timed apart): the plain rounds after round 1 are 2 and 4.
  rows = [dict(round=0),
          dict(round=1, system_round_time_s=0.58),
          dict(round=2, system_round_time_s=0.002),
          dict(round=3, system_round_time_s=2.7, system_diag_time_s=0.3),
          dict(round=4, system_round_time_s=0.004)]
  assert reproduction.steady_round_s(rows) == pytest.approx(0.003)
  with pytest.raises(reproduction.PlanError, match='no plain round'):
    reproduction.steady_round_s(rows[:2])


def test_trial_cost_orders_by_rounds_and_work():
  trials = grid.expand_grid({'width': ['256', '1024']}, [0],
                            {k: str(v) for k, v in BASE.items()})
  small, large = (reproduction.trial_cost(t) for t in trials)
  work = reproduction._work(BASE)
  assert small == 10 * (reproduction.ROUND_OVERHEAD_WORK + work * 256 ** 2)
  assert large == 10 * (reproduction.ROUND_OVERHEAD_WORK + work * 1024 ** 2)


def test_plan_lines_list_every_trial_and_total_here_and_on_the_gpu():
  steps = suite_lib.plan('smoke')[:2]
  widths = {grid.trial_config(t)['width'] for _, _, ts in steps for t in ts}
  costs = {m: cost(m, 0.1, 1e4) for m in widths}
  trials = [(f'{s.name}/{label}/{t.name}', t) for s, label, ts in steps
            for t in ts]
  # The first trial needs 30 GB (the GPU), the others 1 GB; each 1e12 FLOPs.
  found = {key: budgets.Budget(
      7, 3.2, '', (8, 8), 100, 50, budgets.Footprint(
          (30 if i == 0 else 1) * 2**30, 1e12))
           for i, (key, _) in enumerate(trials)}
  lines = reproduction.plan_lines(steps, costs, 2, found, 18 * 2**30)
  assert len(lines) == len(steps) + len(trials) + len(costs) + 2
  first = lines[1]
  assert first.startswith(f'  {trials[0][0]}: T_pred 3.2, rounds 7; peak '
                          '30.0 GB (needs the NVIDIA A100 80GB); not run here')
  here = 4.0 * 2 + sum(reproduction.estimate_s(grid.trial_config(t), costs)
                       for _, t in trials[1:])
  assert lines[-2].startswith(f'here: ~{here:.0f} trial-seconds')
  assert '1 trials do not fit this machine' in lines[-2]
  gpu = len(trials) * 1e12 / budgets.GPU_FLOPS / 60
  assert lines[-1].startswith(f'on one NVIDIA A100 80GB: >= {gpu:.1f} min')
  # A trial that fits nowhere is an error of the preset, said last.
  found[trials[0][0]] = dataclasses.replace(
      found[trials[0][0]], footprint=budgets.Footprint(200 * 2**30, 1.0))
  lines = reproduction.plan_lines(steps, costs, 2, found, 18 * 2**30)
  assert 'FITS NOWHERE' in lines[1] and lines[-1].startswith('ERROR')


def test_the_determinism_check_needs_the_first_experiments_trial(tmp_path):
  steps = suite_lib.plan('smoke')
  assert reproduction.check_widest(str(tmp_path), 'smoke', steps) is None
  others = [s for s in steps if s[0].name != steps[0][0].name]
  assert reproduction.check_widest(str(tmp_path), 'smoke', others) is None
