"""Every flagfile in benchmarks/configs/ (the README runs them) is a config
that validates against its data: a run of it would start."""

import glob
import os

import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_flagfile(path) -> dict:
  values = {}
  for line in open(path):
    line = line.strip()
    if line and not line.startswith('#'):
      key, _, value = line[2:].partition('=')
      values[key] = config_lib.parse_value(key, value)
  return values


@pytest.mark.parametrize('path', sorted(glob.glob(
    os.path.join(ROOT, 'benchmarks', 'configs', '*.cfg'))),
                         ids=os.path.basename)
def test_flagfile_validates_against_its_data(path, tmp_path):
  config = config_lib.ExperimentConfig(**read_flagfile(path),
                                       root_dir=str(tmp_path))
  setup = training.Setup.prepare(config)
  assert setup.data.num_examples > 0
