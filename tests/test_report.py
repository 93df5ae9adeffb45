"""The report from constructed suite directories with known answers."""

import dataclasses
import json
import math

import numpy as np
import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd.analysis import claims as claims_lib
from tff_localsgd.analysis import report
from tff_localsgd.analysis import runs as runs_lib

WIDTHS = (64, 256, 1024)


def write_trial(out, experiment, group, name, config, rows, status='completed'):
  path = out / experiment / group / name
  path.mkdir(parents=True)
  full = dataclasses.asdict(config_lib.ExperimentConfig(**config))
  (path / 'trial.json').write_text(json.dumps({'name': name}))
  (path / 'config.json').write_text(json.dumps(full))
  (path / 'summary.json').write_text(json.dumps(
      {'status': status, 'client_sizes': [full['num_examples'] //
                                          full['num_clients']] *
       full['num_clients']}))
  csv = recorders.MetricsCSV(str(path / 'metrics.csv'))
  for row in rows:
    csv.append(row)


def width_rows(width, seed, rounds=12, rate=0.6):
  """Geometric loss; weight change ~ m^-1, flips ~ m^-0.5 (with noise)."""
  noise = np.random.default_rng([width, seed]).normal(0, 0.03, 3)
  rows = []
  for t in range(rounds + 1):
    row = {'round': t, 'train_loss': 2.0 * rate ** t}
    if t % 4 == 0 and t:
      row.update({
          'lazy_weight_change_rel_hidden_1': 5.0 / width * math.exp(noise[0])
          * t / rounds,
          'lazy_activation_flip_frac': 0.8 / math.sqrt(width)
          * math.exp(noise[1]),
          'drift_grad_diff_rel': 0.3 * math.exp(noise[2]),
          'drift_smooth_eff': 0.1, 'drift_nonsmooth_frac': 0.2})
    rows.append(row)
  return rows


def make_suite(tmp_path, skip=()):
  for m in WIDTHS:
    for seed in range(3):
      name = f'width-{m}_seed-{seed}'
      if name not in skip:
        write_trial(tmp_path, 'E1_width', 'all', name,
                    dict(width=m, seed=seed, train_layers='hidden', depth=1),
                    width_rows(m, seed))
  (tmp_path / 'suite.json').write_text(json.dumps(
      {'preset': 'smoke', 'epsilon': 1e-2, 'planned_trials': 9}))
  return tmp_path


def by_id(results):
  return {c['id']: c for c in results['claims']}


def test_claims_recover_known_scaling(tmp_path):
  results = report.generate(str(make_suite(tmp_path)))
  claims = by_id(results)
  assert claims['C1']['verdict'] == 'PASS'
  rate = claims['C1']['data']['fits'][0]['rate']
  assert rate == pytest.approx(0.6, rel=1e-9)
  weight = claims['C3.hidden_1']['data']['fit']
  assert weight['ci_low'] <= -1.0 <= weight['ci_high']
  assert claims['C3.hidden_1']['verdict'] == 'PASS'
  flips = claims['C4']['data']['fit']
  assert flips['ci_low'] <= -0.5 <= flips['ci_high']
  assert claims['C5']['verdict'] == 'PASS'
  assert claims['C9']['verdict'] == 'PASS'  # 2 * 0.6^12 < 1e-2 * 2
  text = (tmp_path / 'REPORT.md').read_text()
  assert '| C1 |' in text and 'E1_loss.png' in text
  assert (tmp_path / 'E1_loss.png').stat().st_size > 1000
  assert (tmp_path / 'E1_lazy.png').exists()


def test_growing_drift_fails(tmp_path):
  make_suite(tmp_path)
  path = tmp_path / 'E1_width' / 'all' / 'width-64_seed-0' / 'metrics.csv'
  rows = recorders.read_metrics(path)
  for r in rows:
    if r['drift_grad_diff_rel']:
      r['drift_grad_diff_rel'] = str(0.01 * 10 ** int(r['round']))
  csv = recorders.MetricsCSV(str(path))
  for r in rows:
    csv.append(r)
  claims = by_id(report.generate(str(tmp_path)))
  assert claims['C5']['verdict'] == 'FAIL'
  assert claims['C5']['data']['bounded']['width-64_seed-0'] is False


def test_partial_suite_is_reported_not_dropped(tmp_path):
  make_suite(tmp_path, skip={'width-1024_seed-2'})
  write_trial(tmp_path, 'E1_width', 'all', 'width-1024_seed-2',
              dict(width=1024, seed=2), [{'round': 0, 'train_loss': 1.0},
                                         {'round': 1, 'train_loss': math.nan}],
              status='diverged')
  results = report.generate(str(tmp_path))
  text = (tmp_path / 'REPORT.md').read_text()
  assert '`E1_width/all/width-1024_seed-2`: diverged' in text
  # Only completed runs enter the fits: the widest width has 2 seeds left.
  runs = runs_lib.load_runs(str(tmp_path))
  assert sum(r.status == 'completed' for r in runs) == 8
  assert by_id(results)['C1']['verdict'] == 'PASS'
  assert results['trials'][-1]['status'] in ('completed', 'diverged')


def test_report_of_empty_suite_is_inconclusive(tmp_path):
  (tmp_path / 'suite.json').write_text(json.dumps({'preset': 'smoke'}))
  results = report.generate(str(tmp_path))
  assert {c['verdict'] for c in results['claims']} == {'INCONCLUSIVE'}


def test_rounds_to_eps_from_a_run(tmp_path):
  make_suite(tmp_path)
  run = runs_lib.load_runs(str(tmp_path))[0]
  # 2 * 0.6^t <= 1e-2 * 2  <=>  t >= log(0.01)/log(0.6) = 9.01 -> round 10
  assert runs_lib.rounds_to_eps(run, 1e-2) == 10
  assert runs_lib.rounds_to_eps(run, 1e-9) == math.inf


def test_provenance_names_the_image_and_gpus(tmp_path, monkeypatch):
  """In the image (no git, TFF_LOCALSGD_* set at build time) the report's
  provenance names the image, its base and commit, and the GPUs."""
  from tff_localsgd.analysis import provenance
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
