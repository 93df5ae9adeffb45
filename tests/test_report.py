"""The claims and the report from constructed suite directories with known
answers: fabricated runs whose curves, predictions and diagnostics follow
(or break) the theory by construction."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd import reporting
from tff_localsgd import suite as suite_lib
from tff_localsgd.analysis import claims as claims_lib
from tff_localsgd.analysis import report
from tff_localsgd.analysis import runs as runs_lib

WIDTHS = (256, 512, 1024, 2048)
SEEDS = range(4)
LAZY_SEEDS = range(8)  # quick's E1: 8 lazy seeds, 4 catapult
RATE = 0.8  # predicted per-round loss ratio
F0 = 1.0  # the zero predictor's loss
EPS = 1e-2
ROUNDS = 40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_trial(out, experiment, group, name, config, rows, *,
                status='completed', theory=None, steps=()):
  path = out / experiment / group / name
  path.mkdir(parents=True)
  full = dataclasses.asdict(config_lib.ExperimentConfig(**config))
  (path / 'trial.json').write_text(json.dumps({'name': name}))
  (path / 'config.json').write_text(json.dumps(full))
  (path / 'summary.json').write_text(json.dumps(
      {'status': status, 'zero_predictor_loss': F0, 'theory': theory,
       'client_sizes': [full['num_examples'] // full['num_clients']] *
       full['num_clients']}))
  csv = recorders.MetricsCSV(str(path / 'metrics.csv'))
  for row in rows:
    csv.append(row)
  if steps:
    step_csv = recorders.MetricsCSV(str(path / 'drift_steps.csv'))
    for row in steps:
      step_csv.append(row)


def prediction(rounds=ROUNDS, rate=RATE, width=1024):
  """A theory summary: P_t = 2 rate^t, lambda_max = 7 m."""
  curve = [2.0 * rate ** t for t in range(rounds + 1)]
  reached = next(t for t, v in enumerate(curve) if v <= EPS * F0)
  return {'lambda_min': 0.1 * width, 'lambda_max': 7.0 * width,
          'rate_per_round': rate, 'zero_predictor_loss': F0, 'eps': EPS,
          'rounds_to_eps': reached, 'curve': curve, 'gram_points': 64,
          'gram_set': 'train', 'zeta2': 0.5, 'smooth_bound': 3.5}


def width_rows(width, seed, group='lazy', rounds=ROUNDS):
  """L_t = P_t exp(gap_m t / T_pred) with gap_m = 4/sqrt(m) (exact as m
  grows); lazy: weight change ~ m^-1, flips ~ m^-1/2; catapult: m^-1/2
  and flat."""
  noise = np.random.default_rng([width, seed]).normal(0, 0.03, 4)
  gap = 4 / math.sqrt(width) * math.exp(noise[3])
  lazy = group == 'lazy'
  rows = []
  for t in range(rounds + 1):
    row = {'round': t,
           'train_loss': 2.0 * RATE ** t * math.exp(gap * min(t, 21) / 21)}
    if t % 5 == 0 and t:
      row.update({
          'lazy_weight_change_rel_hidden_1': (5.0 / width if lazy else
                                              2.0 / math.sqrt(width))
          * math.exp(noise[0]) * t / rounds,
          'lazy_activation_flip_frac': (0.8 / math.sqrt(width) if lazy
                                        else 0.3) * math.exp(noise[1])})
    rows.append(row)
  return rows


def step_rows(width, seed, rounds=ROUNDS, smooth=0.3):
  noise = np.random.default_rng([width, seed, 1]).normal(0, 0.03)
  return [{'round': t, 'local_step': k, 'grad_diff': 0.0 if k == 0 else 0.1,
           'smooth_eff': 0.0 if k == 0 else smooth * math.exp(noise)}
          for t in range(5, rounds + 1, 5) for k in range(5)]


def e1_config(width, seed, group):
  return dict(width=width, seed=seed, train_layers='hidden', depth=1,
              num_examples=64, num_clients=4, algorithm='local_gd',
              local_steps=5, eps=EPS,
              client_lr=8.0 if group == 'lazy' else 20.0)


def make_suite(tmp_path, skip=(), control_like_lazy=False):
  for group, seeds in (('lazy', LAZY_SEEDS), ('catapult', SEEDS)):
    for m in WIDTHS:
      for seed in seeds:
        name = f'width-{m}_seed-{seed}'
        if (group, name) in skip:
          continue
        rows = width_rows(m, seed, 'lazy' if control_like_lazy else group)
        write_trial(tmp_path, 'E1_width', group, name,
                    e1_config(m, seed, group), rows,
                    theory=prediction(width=m) if group == 'lazy' else None,
                    steps=step_rows(m, seed))
  (tmp_path / 'suite.json').write_text(json.dumps(
      {'preset': 'quick', 'epsilon': EPS, 'planned_trials': 48,
       'parallel': 2, 'wall_time_s': 100.0, 'core_s': 200.0, 'cpu_s': 190.0,
       'binary_wall_s': 150.0,
       'trial_s': {'E1_width': 180.0},
       'phases_s': {'E1_width': {'rounds_s': 120.0, 'diagnostics_s': 24.0,
                                 'startup_s': 6.0, 'trials': 48}}}))
  return tmp_path


def by_id(results):
  return {c['id']: c for c in results['claims']}


def test_claims_recover_a_run_that_follows_the_theory(tmp_path):
  results = report.generate(str(make_suite(tmp_path)))
  claims = by_id(results)
  for cid in ('C1', 'C3.hidden_1', 'C4', 'C5', 'C9'):
    assert claims[cid]['verdict'] == 'PASS', (cid, claims[cid]['statistic'])
  weight = claims['C3.hidden_1']['data']['fit']
  assert weight['ci_low'] <= -1.0 <= weight['ci_high']
  assert claims['C3.hidden_1']['data']['control_fit']['exponent'] == \
      pytest.approx(-0.5, abs=0.05)
  numbers = [int(c['id'][1:].split('.')[0]) for c in results['claims']]
  assert numbers == sorted(numbers)
  text = (tmp_path / 'REPORT.md').read_text()
  assert 'inf' not in text.replace('info', '')
  # rounds + diagnostics: 144 s of 200 core-seconds, 80% of 180 trial-s;
  # of the whole binary's 150 s x 2: 48%.
  assert ('100 s of wall time with 2 trials at a time: 200 core-seconds '
          '(wall x parallel), 190 CPU seconds. Training (rounds and '
          'diagnostics') in text
  assert 'took 144 s, 72% of those core-seconds, and 48% of the whole ' \
      'binary\'s 150 s x 2' in text
  assert ('180 trial-seconds; seconds by phase: rounds 120, diagnostics 24, '
          'startup 6; rounds and diagnostics 80% of them') in text
  assert 'zero predictor' in text
  for figure in ('E1_loss.png', 'E1_lazy.png', 'E1_drift.png',
                 'calibration.png'):
    assert (tmp_path / figure).stat().st_size > 1000
    assert f'![{figure}]({figure})' in text
  assert '*E1 (Local GD, lazy group)' in text  # a caption under the figure


def test_the_report_opens_with_the_calibration_and_names_where_each_fails(
    tmp_path):
  results = report.generate(str(make_suite(tmp_path)))
  text = (tmp_path / 'REPORT.md').read_text()
  first = text.split('## Claims')[0]
  # The E1 lazy runs at m >= 1024 are the headline's: 2 widths x 8 seeds.
  assert ('The linearized prediction from H0 gives the rounds to eps within '
          in first) and 'over 16 runs with m >= 1024' in first
  assert '| m | runs reached | median abs log(T/T_pred)' in first
  assert ('| id | claim | measured | criterion | verdict | seen to FAIL on '
          '| criterion committed | figure |') in text
  for claim in results['claims']:
    assert 'tests/test_claims.py::test_' in claim['fails_on'], claim['id']
  c1 = by_id(results)['C1']
  assert 'control E1 lazy m=256: FAIL here' in c1['fails_on']
  # In this checkout, C1's class was committed: '<hash> <date>'.
  commit, date = c1['criterion_commit'].split()
  assert len(commit) >= 7 and date.count('-') == 2
  # The design changes made after a report was seen are listed.
  assert suite_lib.DESIGN_CHANGES
  for commit, what in suite_lib.DESIGN_CHANGES:
    assert f'- at {commit}: {what}.' in text.split('## Studies')[1]


def test_planned_trials_missing_from_disk_make_their_claims_inconclusive(
    tmp_path):
  make_suite(tmp_path, skip={('lazy', 'width-2048_seed-3')})
  claims = by_id(report.generate(str(tmp_path)))
  for cid in ('C1', 'C9'):
    assert claims[cid]['verdict'] == 'INCONCLUSIVE'
    assert 'E1_width/lazy/width-2048_seed-3: status missing' in \
        claims[cid]['statistic']


def test_layer_tag_names_the_claim_and_its_column(tmp_path):
  """lazy_weight_change_rel_hidden_1 is the tag lazy/weight_change_rel/
  hidden_1: the claim is C3.hidden_1, about layer hidden_1."""
  claims = by_id(report.generate(str(make_suite(tmp_path))))
  assert 'layer hidden_1 ' in claims['C3.hidden_1']['claim']
  assert not any(c.startswith('C3.') and c != 'C3.hidden_1' for c in claims)


def test_a_control_that_passes_leaves_lazy_training_inconclusive(tmp_path):
  claims = by_id(report.generate(str(make_suite(tmp_path,
                                                control_like_lazy=True))))
  assert claims['C3.hidden_1']['verdict'] == 'INCONCLUSIVE'
  assert claims['C4']['verdict'] == 'INCONCLUSIVE'


def test_a_diverged_control_is_void(tmp_path):
  make_suite(tmp_path, skip={('catapult', 'width-2048_seed-0')})
  write_trial(tmp_path, 'E1_width', 'catapult', 'width-2048_seed-0',
              e1_config(2048, 0, 'catapult'),
              [{'round': 0, 'train_loss': 1.0},
               {'round': 1, 'train_loss': math.nan}], status='diverged')
  claims = by_id(report.generate(str(tmp_path)))
  assert claims['C3.hidden_1']['verdict'] == 'INCONCLUSIVE'
  assert 'diverged' in claims['C3.hidden_1']['statistic']


def cut_widest(tmp_path, rows):
  make_suite(tmp_path, skip={('lazy', 'width-2048_seed-0')})
  write_trial(tmp_path, 'E1_width', 'lazy', 'width-2048_seed-0',
              e1_config(2048, 0, 'lazy'), rows,
              theory=prediction(width=2048), steps=step_rows(2048, 0))
  return by_id(report.generate(str(tmp_path)))


def test_a_budget_cut_is_censored_not_failed(tmp_path):
  claims = cut_widest(tmp_path, width_rows(2048, 0, rounds=12))
  assert claims['C9']['verdict'] == 'INCONCLUSIVE'
  assert 'censored at round 12' in claims['C9']['statistic']
  assert 'projected' in claims['C9']['statistic']
  assert claims['C1']['verdict'] == 'INCONCLUSIVE'
  assert 'inf' not in (tmp_path / 'REPORT.md').read_text().replace('info', '')


def test_a_plateau_fails(tmp_path):
  rows = [{'round': t, 'train_loss': max(2.0 * RATE ** t, 0.1)}
          for t in range(ROUNDS + 1)]
  claims = cut_widest(tmp_path, rows)
  assert claims['C9']['verdict'] == 'FAIL'
  assert 'plateau' in claims['C9']['statistic']
  assert claims['C1']['verdict'] == 'FAIL'


def test_a_curve_slower_than_predicted_fails_c1(tmp_path):
  # Reaches eps, but at rate 0.85 against the predicted 0.8: it crosses
  # twice the predicted curve (and its late rate ratio is 0.73).
  rows = [{'round': t, 'train_loss': 2.0 * 0.85 ** t}
          for t in range(ROUNDS + 1)]
  claims = cut_widest(tmp_path, rows)
  assert claims['C9']['verdict'] == 'PASS'
  assert claims['C1']['verdict'] == 'FAIL'


def test_smoothness_above_its_bound_fails(tmp_path):
  make_suite(tmp_path, skip={('lazy', 'width-256_seed-0')})
  # The recorded per-client bound is 3.5.
  write_trial(tmp_path, 'E1_width', 'lazy', 'width-256_seed-0',
              e1_config(256, 0, 'lazy'), width_rows(256, 0),
              theory=prediction(width=256),
              steps=step_rows(256, 0, smooth=5.0))
  claims = by_id(report.generate(str(tmp_path)))
  assert claims['C5']['verdict'] == 'FAIL'
  assert 'width-256_seed-0' in claims['C5']['statistic']


def test_missing_seeds_leave_the_slopes_inconclusive(tmp_path):
  make_suite(tmp_path, skip={(g, f'width-{m}_seed-3') for g in
                             ('lazy', 'catapult') for m in WIDTHS})
  claims = by_id(report.generate(str(tmp_path)))
  for cid in ('C3.hidden_1', 'C4'):
    assert claims[cid]['verdict'] == 'INCONCLUSIVE'
    assert 'status missing' in claims[cid]['statistic']


def test_report_of_empty_suite_is_inconclusive(tmp_path):
  (tmp_path / 'suite.json').write_text(json.dumps({'preset': 'smoke'}))
  results = report.generate(str(tmp_path))
  assert {c['verdict'] for c in results['claims']} == {'INCONCLUSIVE'}


def test_a_run_without_f0_is_not_judged(tmp_path):
  write_trial(tmp_path, 'E6_depth', 'L1', 'seed-0', dict(eps=EPS),
              [{'round': t, 'train_loss': 0.5 ** t} for t in range(10)])
  summary = tmp_path / 'E6_depth' / 'L1' / 'seed-0' / 'summary.json'
  summary.write_text(json.dumps({'status': 'completed'}))
  run = runs_lib.load_runs(str(tmp_path))[0]
  assert run.outcome() is None
  claim = by_id({'claims': [c.__dict__ for c in
                            claims_lib.evaluate_claims([run])]})['C10']
  assert claim['verdict'] == 'INCONCLUSIVE'
  assert 'not judged (no F_0' in claim['statistic']


def test_provenance_names_the_image_and_gpus(tmp_path, monkeypatch):
  """In the image (no git, TFF_LOCALSGD_* set at build time) the report's
  provenance names the image, its base and commit, and the GPUs."""
  from tff_localsgd import provenance
  commit = 'ab' * 20
  monkeypatch.setenv('TFF_LOCALSGD_IMAGE', 'tff-localsgd:test')
  monkeypatch.setenv('TFF_LOCALSGD_BASE_IMAGE', 'localhost/localdebian')
  monkeypatch.setenv('TFF_LOCALSGD_COMMIT', commit + '-dirty')
  smi = 'NVIDIA A100-SXM4-40GB, 40960 MiB, 535.104.05\n'
  monkeypatch.setattr(provenance, '_run', lambda cmd, cwd=None:
                      smi if cmd[0] == 'nvidia-smi' else '')
  prov = provenance.collect(str(tmp_path))
  assert prov['git_commit'] == commit and prov['git_dirty'] is True
  assert prov['gpus'] == ['NVIDIA A100-SXM4-40GB, 40960 MiB, driver 535.104.05']
  make_suite(tmp_path)
  recorders.write_json(str(tmp_path / 'provenance.json'), prov)
  report.generate(str(tmp_path))
  text = (tmp_path / 'REPORT.md').read_text()
  assert '- container_image: `tff-localsgd:test`' in text
  assert '- container_base_image: `localhost/localdebian`' in text
  assert f'- git_commit: `{commit}`' in text
  assert '- gpus: `NVIDIA A100-SXM4-40GB, 40960 MiB, driver 535.104.05`' in text
  # Without nvidia-smi, the GPUs TensorFlow sees (none here), never empty.
  monkeypatch.setattr(provenance, '_run', lambda cmd, cwd=None: '')
  monkeypatch.delenv('TFF_LOCALSGD_COMMIT')
  prov = provenance.collect(str(tmp_path))
  assert prov['git_dirty'] == 'unknown' and prov['gpus']
  import tensorflow as tf
  if not tf.config.list_physical_devices('GPU'):
    assert prov['gpus'] == ['none']


def test_results_hold_paths_relative_to_the_suite(tmp_path):
  """A committed results.json names no machine's paths: a sweep's absolute
  root_dir is stored relative to the suite directory."""
  make_suite(tmp_path)
  config = tmp_path / 'E1_width' / 'lazy' / 'width-256_seed-0' / 'config.json'
  values = json.loads(config.read_text())
  values['root_dir'] = str(tmp_path / 'E1_width' / 'lazy')
  config.write_text(json.dumps(values))
  report.generate(str(tmp_path))
  text = (tmp_path / 'results.json').read_text()
  assert str(tmp_path) not in text
  roots = {t['name']: t['config']['root_dir']
           for t in json.loads(text)['trials'] if t['group'] == 'lazy'}
  assert roots['width-256_seed-0'] == os.path.join('E1_width', 'lazy')
  assert roots['width-512_seed-0'] == 'runs'  # relative as recorded


_WITHOUT_TF = '''import runpy, sys
sys.modules['tensorflow'] = None
sys.modules['tensorflow_federated'] = None
sys.argv = ['benchmarks.report', '--runs=' + sys.argv[1]]
runpy.run_module('benchmarks.report', run_name='__main__')
'''


def test_the_report_is_rebuilt_without_tensorflow(tmp_path):
  """benchmarks.report on a copy of the run directories, in a process where
  `import tensorflow` fails: the same results and figures, and one line
  saying the TensorBoard summaries were skipped."""
  with_tf, without = tmp_path / 'with', tmp_path / 'without'
  make_suite(with_tf)
  shutil.copytree(with_tf, without)
  expected = report.generate(str(with_tf))
  done = subprocess.run([sys.executable, '-c', _WITHOUT_TF, str(without)],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert reporting.BOARD_SKIPPED in done.stderr.splitlines()
  assert 'C1 PASS' in done.stdout
  got = json.loads((without / 'results.json').read_text())
  assert got['claims'] == json.loads(json.dumps(expected['claims']))
  assert got['figures'] == expected['figures'] and got['figures']
  for name in got['figures']:
    assert (without / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert (without / 'REPORT.md').read_text() == (
      with_tf / 'REPORT.md').read_text()
  assert not list(without.glob('events.out.tfevents.*'))


@pytest.mark.parametrize('info,want', [
    ({}, ''), ({'stack': 1, 'trial_threads': 'all'}, ''),
    ({'stack': 4, 'trial_threads': 1},
     ' (up to 4 seeds stacked; 1 TensorFlow thread(s) per trial process '
     '(--trial_threads; bits to a tolerance))')])
def test_the_cost_line_says_how_the_trials_ran(info, want):
  assert report._execution(info) == want
