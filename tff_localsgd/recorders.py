"""Writers at the edge: TensorBoard, metrics.csv, JSON. All files atomically.

A reader (TensorBoard, the report, a user's script) never sees a half-written
CSV or JSON file: each is written to a temporary file in the same directory
and renamed over the old one.
"""

import csv
import io
import json
import math
import os
import tempfile

import tensorflow as tf


def atomic_write(path: str, text: str):
  """Writes `text` to `path` so that readers see the old or the new file."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


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
  in a row is left empty. Columns appear in the order metrics first appear;
  the whole file is rewritten atomically on every append."""

  def __init__(self, path: str, columns=()):
    self.path = path
    self.columns = list(columns)
    self.rows = []

  def append(self, row: dict):
    self.columns += [k for k in row if k not in self.columns]
    self.rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, self.columns, lineterminator='\n')
    writer.writeheader()
    writer.writerows(self.rows)
    atomic_write(self.path, out.getvalue())


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


class TensorBoardRecorder:
  """Scalars and text summaries in <run dir>/ as TF2 event files."""

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)

  def scalars(self, step: int, values: dict):
    with self._writer.as_default(step=step):
      for tag, value in values.items():
        tf.summary.scalar(tag, value)
    self._writer.flush()

  def histograms(self, step: int, values: dict):
    with self._writer.as_default(step=step):
      for tag, value in values.items():
        tf.summary.histogram(tag, value)
    self._writer.flush()

  def text(self, tag: str, markdown: str):
    with self._writer.as_default(step=0):
      tf.summary.text(tag, markdown)
    self._writer.flush()

  def close(self):
    self._writer.close()
