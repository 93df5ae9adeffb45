"""The atomic writer: files get the mode open() gives them (0o666 - umask)."""

import os
import stat

import numpy as np
import pytest

from tff_localsgd import data
from tff_localsgd import files
from tff_localsgd import recorders


def write_each_kind(directory, monkeypatch):
  """A JSON, a CSV, a checkpoint npz and a data cache npz; their paths."""
  recorders.write_json(directory / 'summary.json', {'a': 1})
  recorders.MetricsCSV(str(directory / 'metrics.csv')).append({'round': 0})
  recorders.write_checkpoint(str(directory / 'checkpoints'), 3, [np.zeros(2)])
  arrays = dict(x_train=np.zeros((2, 28, 28), np.uint8),
                y_train=np.zeros(2, np.uint8),
                x_test=np.zeros((1, 28, 28), np.uint8),
                y_test=np.zeros(1, np.uint8))
  monkeypatch.setattr(data, '_download_keras', lambda name: arrays)
  data.load_cached_arrays('mnist', str(directory / 'cache'))
  return [directory / 'summary.json', directory / 'metrics.csv',
          directory / 'checkpoints' / 'checkpoint-00000003.npz',
          directory / 'cache' / 'mnist.npz']


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600),
                                        (0o002, 0o664)])
def test_files_respect_the_umask(tmp_path, monkeypatch, umask, mode):
  previous = os.umask(umask)
  try:
    paths = write_each_kind(tmp_path, monkeypatch)
  finally:
    os.umask(previous)
  for path in paths:
    assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_no_temporary_file_is_left(tmp_path):
  files.atomic_write(str(tmp_path / 'a.txt'), 'old')
  with pytest.raises(ZeroDivisionError):
    files.atomic_write(str(tmp_path / 'a.txt'), lambda f: 1 / 0)
  assert os.listdir(tmp_path) == ['a.txt']
  assert (tmp_path / 'a.txt').read_text() == 'old'


def test_a_csv_row_under_the_same_header_is_appended_whole(tmp_path,
                                                           monkeypatch):
  # The file after every append is the whole table, as the csv module
  # writes it; only a row with a new column (and a resumed file's first
  # row) rewrites it, the others are one appended line.
  path = tmp_path / 'metrics.csv'
  rewrites = []
  monkeypatch.setattr(recorders, 'atomic_write', lambda p, text: (
      rewrites.append(p), files.atomic_write(p, text)))
  rows = [{'round': 0, 'a': 1.5}, {'round': 1, 'a': 2.0},
          {'round': 2, 'a': 0.25, 'b': 'x'}, {'round': 3, 'b': 'y'},
          {'round': 4, 'a': 7.0}]

  def table(rows, columns):
    lines = [','.join(columns)]
    lines += [','.join(str(r.get(c, '')) for c in columns) for r in rows]
    return '\n'.join(lines) + '\n'

  table_csv = recorders.MetricsCSV(str(path), ['round'])
  for i, row in enumerate(rows):
    table_csv.append(row)
    columns = ['round', 'a'] + (['b'] if i >= 2 else [])
    assert path.read_text() == table(rows[:i + 1], columns)
  assert len(rewrites) == 2  # rows 0 and 2: a new header
  resumed = recorders.MetricsCSV(str(path), ['round'], up_to_round=1)
  resumed.append({'round': 2, 'a': 3.0})
  assert path.read_text() == table(
      [{'round': 0, 'a': 1.5}, {'round': 1, 'a': 2.0},
       {'round': 2, 'a': 3.0}], ['round', 'a', 'b'])
  assert len(rewrites) == 3
  resumed.append({'round': 3, 'a': 4.0})
  assert len(rewrites) == 3
  assert path.read_text().endswith('\n3,4.0,\n')
