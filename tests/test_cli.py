"""What users touch: each binary's bad inputs, --help, and their output.

Every bad input is a subprocess that must exit 2 before any work, with
exactly one line on stderr naming the flag or the file, and write nothing.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import flags as flag_defs
from tff_localsgd import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_REPORT = os.path.join(ROOT, 'reports', 'quick-cpu')
with open(os.path.join(QUICK_REPORT, 'results.json')) as _f:
  QUICK_TRIALS = len(json.load(_f)['trials'])  # the committed report's


def run(binary, *args):
  """The binary with its own TensorFlow log level (importing benchmarks here
  set this process's)."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run([sys.executable, '-m', f'benchmarks.{binary}', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def snapshot(directory):
  """{relative path: SHA-256} of every file under directory."""
  found = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, directory)] = hashlib.sha256(
            f.read()).hexdigest()
  return found


def random_bytes_npz(tmp):
  os.makedirs(tmp / 'data')
  (tmp / 'data' / 'mnist.npz').write_bytes(
      np.random.default_rng(0).bytes(4096))


def truncated_npz(tmp):
  os.makedirs(tmp / 'data')
  path = tmp / 'data' / 'mnist.npz'
  np.savez(path, x_train=np.zeros((64, 28, 28), np.uint8))
  path.write_bytes(path.read_bytes()[:2000])


def regular_file(tmp):
  (tmp / 'file').write_text('not a directory\n')


def read_only_dir(tmp):
  """tmp/ro, where nothing may be written: mode 0555, or, for root (who
  ignores permission bits), a read-only tmpfs mounted there; returns how to
  undo it."""
  os.makedirs(tmp / 'ro')
  if os.geteuid() != 0:
    os.chmod(tmp / 'ro', 0o555)
    return lambda: None
  subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs',
                  str(tmp / 'ro')], check=True)
  return lambda: subprocess.run(['umount', str(tmp / 'ro')], check=True)


def quick_report_without_trials(tmp):
  """A fresh clone's reports/quick-cpu: the committed files only (git
  ignores the trial directories, which a local `make reproduce` leaves)."""
  os.makedirs(tmp / 'quick')
  for entry in os.scandir(QUICK_REPORT):
    if entry.is_file() and not entry.name.startswith(('.', 'events.')):
      shutil.copy2(entry.path, tmp / 'quick')


def quick_report_with_one_trial(tmp):
  quick_report_without_trials(tmp)
  trial = tmp / 'quick' / 'E1_width' / 'all' / 'width-64_seed-0'
  os.makedirs(trial)
  (trial / 'trial.json').write_text('{}\n')


def nothing(tmp):
  del tmp


# (id, setup(tmp), binary, args with {tmp}, what the line must name).
BAD_INPUTS = [
    ('cache-random-bytes', random_bytes_npz, 'train',
     ['--dataset=mnist', '--data_dir={tmp}/data', '--root_dir={tmp}/runs'],
     ['{tmp}/data/mnist.npz', 'Delete it']),
    ('cache-truncated', truncated_npz, 'train',
     ['--dataset=mnist', '--data_dir={tmp}/data', '--root_dir={tmp}/runs'],
     ['{tmp}/data/mnist.npz', 'BadZipFile']),
    ('train-root-under-file', regular_file, 'train',
     ['--root_dir={tmp}/file/runs'], ['--root_dir', '{tmp}/file ']),
    ('sweep-root-under-file', regular_file, 'sweep',
     ['--grid=width=8,16', '--root_dir={tmp}/file/runs'],
     ['--root_dir', '{tmp}/file ']),
    ('reproduce-out-under-file', regular_file, 'reproduce',
     ['--preset=smoke', '--out={tmp}/file/suite'], ['--out', '{tmp}/file ']),
    ('train-root-read-only', read_only_dir, 'train',
     ['--root_dir={tmp}/ro/runs'], ['--root_dir', 'cannot write']),
    ('sweep-root-read-only', read_only_dir, 'sweep',
     ['--grid=width=8,16', '--root_dir={tmp}/ro'],
     ['--root_dir', 'cannot write']),
    ('reproduce-out-read-only', read_only_dir, 'reproduce',
     ['--preset=smoke', '--out={tmp}/ro'], ['--out', 'cannot write']),
    # /proc passes every permission check and refuses a new directory.
    ('train-root-in-proc', nothing, 'train', ['--root_dir=/proc/tff_runs'],
     ['--root_dir', '/proc/tff_runs']),
    ('sweep-root-in-proc', nothing, 'sweep',
     ['--grid=width=8,16', '--root_dir=/proc/tff_runs'],
     ['--root_dir', '/proc/tff_runs']),
    ('reproduce-out-in-proc', nothing, 'reproduce',
     ['--preset=smoke', '--out=/proc/tff_suite'],
     ['--out', '/proc/tff_suite']),
    ('sweep-stack-0', nothing, 'sweep', ['--stack=0', '--root_dir={tmp}/runs'],
     ['--stack', '>= 1']),
    ('reproduce-stack-0', nothing, 'reproduce',
     ['--preset=smoke', '--stack=0', '--out={tmp}/runs'], ['--stack', '>= 1']),
    ('sweep-trial-threads-0', nothing, 'sweep',
     ['--trial_threads=0', '--root_dir={tmp}/runs'],
     ['--trial_threads', 'shared']),
    ('reproduce-trial-threads-half', nothing, 'reproduce',
     ['--preset=smoke', '--trial_threads=half', '--out={tmp}/runs'],
     ['--trial_threads', 'shared']),
    ('missing-flagfile', nothing, 'train',
     ['--flagfile={tmp}/missing.cfg', '--root_dir={tmp}/runs'],
     ['--flagfile', '{tmp}/missing.cfg']),
    ('grid-typo', nothing, 'sweep',
     ['--grid=widht=8,16', '--root_dir={tmp}/runs'],
     ['--grid', "did you mean 'width'?"]),
    ('bad-width', nothing, 'train', ['--width=-1', '--root_dir={tmp}/runs'],
     ['--width']),
    ('report-fresh-clone', quick_report_without_trials, 'report',
     ['--runs={tmp}/quick'], ['--runs', 'no trial']),
    ('report-fewer-trials', quick_report_with_one_trial, 'report',
     ['--runs={tmp}/quick'],
     ['--runs', '--overwrite', f'reports {QUICK_TRIALS} trials']),
]


@pytest.mark.parametrize('setup, binary, args, names',
                         [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_writing_nothing(
    tmp_path, setup, binary, args, names):
  undo = setup(tmp_path)
  before = snapshot(tmp_path)
  try:
    result = run(binary, *(a.format(tmp=tmp_path) for a in args))
  finally:
    if undo:
      undo()
  assert result.returncode == 2, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1, result.stderr
  for name in names:
    assert name.format(tmp=tmp_path) in lines[0]
  assert 'ERROR' not in lines[0] and 'Traceback' not in lines[0]
  assert snapshot(tmp_path) == before
  assert not os.path.exists(tmp_path / 'runs')


def test_check_writable_dir_read_only_file_system(tmp_path, monkeypatch,
                                                  capsys):
  class ReadOnly:
    f_flag = os.ST_RDONLY

  monkeypatch.setattr(os, 'statvfs', lambda path: ReadOnly)
  with pytest.raises(SystemExit) as info:
    flag_defs.check_writable_dir(str(tmp_path / 'a' / 'b'), 'root_dir')
  assert info.value.code == 2
  assert capsys.readouterr().err == (
      f'error: --root_dir: cannot write {tmp_path}/a/b: {tmp_path} is on a '
      'read-only file system\n')
  assert os.listdir(tmp_path) == []


def test_check_writable_dir_accepts_a_new_path(tmp_path):
  flag_defs.check_writable_dir(str(tmp_path / 'a' / 'b'), 'out')
  assert os.listdir(tmp_path) == []


def test_report_keeps_the_committed_files_byte_identical(tmp_path):
  quick_report_without_trials(tmp_path)
  before = snapshot(tmp_path / 'quick')
  assert 'REPORT.md' in os.listdir(tmp_path / 'quick')
  assert run('report', f'--runs={tmp_path}/quick').returncode == 2
  assert snapshot(tmp_path / 'quick') == before


def test_config_sections_cover_every_field_once():
  sections = flag_defs.config_sections()
  assert [title for title, _ in sections] == [
      'data', 'model', 'optimization', 'diagnostics', 'execution', 'output']
  names = [name for _, members in sections for name in members]
  assert names == [f.name for f in
                   dataclasses.fields(config_lib.ExperimentConfig)]
  assert dict(sections)['execution'] == list(config_lib.EXECUTION_FIELDS)


@pytest.mark.parametrize('binary, own', [('train', ['--[no]overwrite']),
                                         ('sweep', ['--grid', '--seeds'])])
def test_help_lists_the_experiment_flags_by_section(binary, own):
  result = run(binary, '--help')
  assert result.returncode == 0, result.stderr
  out = result.stdout
  headers = ['data:', 'model:', 'optimization:', 'diagnostics:',
             'execution:', 'output:', f'benchmarks.{binary}:']
  positions = [out.index(f'\n{h}\n') for h in headers]
  assert positions == sorted(positions)
  model = out[positions[1]:positions[2]]
  assert '--width: m: hidden width' in model and '--rounds' not in model
  assert "(default: 'local_sgd')" in out and '--[no]jit' in out
  for flag in own:
    assert f'\n  {flag}: ' in out[positions[-1]:]
  assert '--helpfull' in out and result.stderr == ''


def test_helpfull_still_lists_absl_flags():
  result = run('train', '--helpfull')
  assert '--width' in result.stdout and '--flagfile' in result.stdout
  assert 'absl.logging' in result.stdout
