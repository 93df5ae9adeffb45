"""driver.train, the call benchmarks.train and the trial workers make: bad
input raises BadInput before anything is written, a completed run is left
as it is, and the exit code comes from results.EXIT_CODES. (The binary's
signals, resume and output: test_train.py, test_resume.py.)"""

import os

import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import driver
from tff_localsgd import results
from tff_localsgd import rundir


def tiny(tmp_path, **overrides):
  return config_lib.ExperimentConfig(**{
      **dict(num_examples=16, num_clients=2, width=8, rounds=2,
             local_steps=1, batch_size=4, root_dir=str(tmp_path / 'runs'),
             experiment='tiny'), **overrides})


@pytest.mark.parametrize('root', ['/proc/tff_runs', '/proc/self/x/y'])
def test_an_impossible_root_is_bad_input(root, tmp_path):
  with pytest.raises(driver.BadInput, match='--root_dir'):
    driver.train(tiny(tmp_path, root_dir=root))


def test_bad_flags_are_bad_input_and_write_nothing(tmp_path):
  with pytest.raises(driver.BadInput, match='--batch_size'):
    driver.train(tiny(tmp_path, batch_size=64))
  assert not os.path.exists(tmp_path / 'runs')


def test_a_run_then_its_completed_directory_left_as_it_is(tmp_path):
  config = tiny(tmp_path)
  first = driver.train(config)
  assert first.exit_code == results.EXIT_CODES[results.COMPLETED] == 0
  assert first.summary['status'] == results.COMPLETED
  run = rundir.RunDir(config)
  mtime = os.path.getmtime(run.file(rundir.SUMMARY_JSON))
  again = driver.train(config)
  assert again.exit_code == 0 and again.summary == run.read_summary()
  assert os.path.getmtime(run.file(rundir.SUMMARY_JSON)) == mtime
  # Another flag in the same directory is refused, not mixed.
  with pytest.raises(driver.BadInput, match='--experiment'):
    driver.train(tiny(tmp_path, width=16))
