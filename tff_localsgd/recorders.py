"""The files of a run, without TensorFlow: metrics.csv, JSON, checkpoints,
and reading them back. All files are written atomically. (TensorBoard's
event files: tff_localsgd/board.py.)

A reader (TensorBoard, the report, a user's script) never sees a half-written
CSV or JSON file: each is written to a temporary file in the same directory
and renamed over the old one, or (a CSV row under an unchanged header)
appended whole with one write.
"""

import csv
import glob
import io
import json
import math
import os

import numpy as np

from tff_localsgd.files import append_line
from tff_localsgd.files import atomic_write  # also recorders.atomic_write


def _plain(value):
  """JSON has no NaN/Inf: they become strings, so a diverged run still parses."""
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def write_json(path: str, obj):
  atomic_write(path, json.dumps(_plain(obj), indent=2, sort_keys=True) + '\n')


class MetricsCSV:
  """A CSV of rows (one per round, or per local step); a value not measured
  in a row is left empty. Columns appear in the order metrics first appear.
  A row with a new column rewrites the whole file atomically (its header
  changes); any other row is appended whole (files.append_line), so a round
  costs one line, not the file. up_to_round keeps the existing file's rows
  of rounds <= up_to_round (resuming a run); the first append rewrites it."""

  def __init__(self, path: str, columns=(), up_to_round=None):
    self.path = path
    self.columns = list(columns)
    self.rows = []
    self._header = None  # the columns of the file as written, if it is ours
    if up_to_round is not None and os.path.exists(path):
      with open(path, newline='') as f:
        reader = csv.DictReader(f)
        self.columns += [c for c in reader.fieldnames or ()
                         if c not in self.columns]
        self.rows = [r for r in reader if int(r['round']) <= up_to_round]

  def _text(self, rows, header: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, self.columns, lineterminator='\n')
    if header:
      writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()

  def append(self, row: dict):
    self.columns += [k for k in row if k not in self.columns]
    self.rows.append(row)
    if self._header == self.columns:
      append_line(self.path, self._text([row], header=False))
      return
    atomic_write(self.path, self._text(self.rows, header=True))
    self._header = list(self.columns)


def read_json(path):
  """The JSON object at path, or None if it is missing, unreadable or not an
  object (a half-finished run has no summary.json)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def to_number(value):
  """A metric as a float (JSON stores NaN and Inf as strings; CSV leaves
  unmeasured cells empty): None where there is no number."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def read_metrics(path) -> list:
  """The rows of a metrics.csv, as dicts of strings ('' where not measured)."""
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be read; the message names the file."""


CHECKPOINT_PREFIX = 'checkpoint-'


def write_checkpoint(directory: str, round_num: int, weights, keep: int = 2):
  """<directory>/checkpoint-<round>.npz: the weights after round_num.

  Written to a temporary file and renamed, so a kill during the write leaves
  the previous checkpoint intact; older checkpoints beyond `keep` are removed.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{CHECKPOINT_PREFIX}{round_num:08d}.npz')
  atomic_write(path, lambda f: np.savez(
      f, round=np.int64(round_num),
      **{f'w{i}': np.asarray(w) for i, w in enumerate(weights)}))
  for old in sorted(glob.glob(os.path.join(
      directory, f'{CHECKPOINT_PREFIX}*.npz')))[:-keep]:
    os.remove(old)


def latest_checkpoint(directory: str, shapes):
  """(round, weights) of the newest checkpoint, or None if there is none.

  Raises CheckpointError if it is unreadable or its weights do not have the
  model's shapes (a checkpoint of another configuration).
  """
  paths = sorted(glob.glob(os.path.join(directory, f'{CHECKPOINT_PREFIX}*.npz')))
  if not paths:
    return None
  path = paths[-1]
  try:
    with np.load(path) as f:
      round_num = int(f['round'])
      weights = tuple(f[f'w{i}'] for i in range(len(shapes)))
  except Exception as e:  # zip, pickle, key and value errors alike
    raise CheckpointError(f'checkpoint {path} is unreadable ({e}); remove it '
                          'to resume from the one before, or pass --overwrite '
                          'to start over') from e
  found = [w.shape for w in weights]
  if found != [tuple(s) for s in shapes]:
    raise CheckpointError(f'checkpoint {path} holds weights of shapes {found}, '
                          f'not this model\'s {[tuple(s) for s in shapes]}')
  return round_num, weights
