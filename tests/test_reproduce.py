"""The smoke preset of the suite, end to end: every experiment, the report,
the determinism check, a rerun that resumes instead of recomputing, the
same bits from a process per trial, and the plan mode, which estimates the
suite without running it."""

import json
import os
import subprocess
import sys

import pytest

from tff_localsgd import reproduction
from tff_localsgd import suite as suite_lib
from tff_localsgd.sweep import pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reproduce(out, *extra):
  return subprocess.run(
      [sys.executable, '-m', 'benchmarks.reproduce', '--preset=smoke',
       f'--out={out}', '--parallel=2', *extra], cwd=ROOT, capture_output=True,
      text=True, timeout=1800)


def test_smoke_suite_writes_a_complete_report(tmp_path):
  first = reproduce(tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  suite = json.loads((tmp_path / 'suite.json').read_text())
  assert len(results['trials']) == suite['planned_trials']
  assert {e['study'] for e in results['trials']} == {
      spec.name for spec in suite_lib.suite('smoke')}
  ids = {c['id'].split('.')[0] for c in results['claims']}
  assert ids == {f'C{i}' for i in range(1, 17)}
  # Every trial ran the rounds its budget gave it (budgets.json).
  budgets = json.loads((tmp_path / 'budgets.json').read_text())
  for trial in results['trials']:
    key = f'{trial["study"]}/{trial["group"]}/{trial["name"]}'
    assert trial['config']['rounds'] == budgets[key][1]['rounds'], key
  # One set of --parallel trial processes ran every experiment's trials.
  assert suite['core_s'] == 2 * suite['wall_time_s'] > 0
  assert suite['trial_s']['E1_width'] > 0
  assert sum(p['processes'] for p in suite['phases_s'].values()) == 2
  assert all(c['verdict'] in ('PASS', 'FAIL', 'INCONCLUSIVE')
             for c in results['claims'])
  assert results['determinism']['identical'] is True
  report = (tmp_path / 'REPORT.md').read_text()
  for section in ('## Claims', '## Determinism', '## Provenance',
                  '## Not run, diverged or failed', '## Trials and their flags'):
    assert section in report
  for claim in results['claims']:
    if claim['figure'] in report and claim['verdict'] != 'INCONCLUSIVE':
      assert (tmp_path / claim['figure']).exists(), claim['figure']

  # The same command again resumes: nothing is retrained.
  mtimes = {p: p.stat().st_mtime for p in tmp_path.glob('E*/*/*/summary.json')}
  second = reproduce(tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert {p: p.stat().st_mtime for p in mtimes} == mtimes
  assert_same_bits_in_fresh_processes(tmp_path)


def assert_same_bits_in_fresh_processes(out):
  """The first trial of every group, rerun as the one-process-per-trial
  path (sweep's fresh_process), has the suite's final weights."""
  steps, _ = reproduction.plan_budgets(str(out), suite_lib.plan('smoke'))
  sweeps = [(trials[:1], out / 'fresh' / spec.name / label)
            for spec, label, trials in steps]
  every = pool.run_sweeps(sweeps, parallel=2, fresh_process=True)
  assert len(every) == len(steps)
  for (_, fresh_dir), [result] in zip(sweeps, every):
    suite_dir = out / fresh_dir.relative_to(out / 'fresh') / result.name
    suite = json.loads((suite_dir / 'summary.json').read_text())
    assert result.status == suite['status'], result.log_tail
    assert result.summary['final_weights_sha256'] == suite[
        'final_weights_sha256'], suite_dir


def test_plan_estimates_without_running(tmp_path):
  result = reproduce(tmp_path, '--plan')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'E1_width/lazy: 6 trials' in result.stdout
  assert 'E1_width/lazy/width-32_seed-0: T_pred ' in result.stdout
  assert 'fits here' in result.stdout and 'on the GPU' in result.stdout
  assert 'measured at m=128' in result.stdout
  assert 'min of wall time at --parallel=2' in result.stdout
  assert 'NVIDIA A100 80GB' in result.stdout
  assert not list(tmp_path.glob('E*'))  # no trial of the suite ran
  assert not (tmp_path / 'REPORT.md').exists()


def test_a_failing_measuring_run_names_itself_in_one_line(tmp_path):
  base = dict(suite_lib.suite('smoke')[0].groups()[0][1], probe_size=999)
  with pytest.raises(reproduction.PlanError) as e:
    reproduction.measure_width(str(tmp_path), base, 32)
  assert str(e.value).startswith('the measuring run at m=32 (E1\'s setting) '
                                 'exited 2: ')
  assert '\n' not in str(e.value) and 'probe_size' in str(e.value)
