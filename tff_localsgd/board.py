"""TensorBoard at the edge: the one module that writes event files.

- TensorBoardRecorder: a run's scalars, histograms and text (RunDir.write);
  and its truncate_events: a resumed run drops what the killed run wrote
  after its last checkpoint;
- write_report_summaries: the report inside TensorBoard, the claims table as
  a text summary and the report's figures as image summaries, in the suite
  directory's own run (the logdir root), so `tensorboard --logdir <out>`
  shows the verdicts and figures beside the trials:

    board.write_report_summaries(out, claims_markdown,
                                 ['out/E1_loss.png', ...], captions)

An image's tag is its file name with the first '_' as '/' (E1_loss.png ->
E1/loss): one Time Series group per experiment. The Time Series dashboard
sorts tags by code point (upper case first) and opens the first two groups,
so a suite's TensorBoard opens on the E1 and E2 figures, not on the runs'
lower-case tags.

Everything else that reads or writes a run (recorders, rundir, analysis)
imports no TensorFlow; a report is written without this module when
TensorFlow is not installed.
"""

import glob
import math
import os

import numpy as np
import tensorflow as tf

from tff_localsgd import metrics

REPORT_SUFFIX = '.report'  # the event files written here
CLAIMS_TAG = 'Report/claims'


def image_tag(path: str) -> str:
  """E1_loss.png -> E1/loss."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return stem.replace('_', '/', 1)


def write_report_summaries(out_dir: str, claims_markdown: str, figure_paths,
                           captions=None):
  """Replaces the report's summaries in out_dir's run (step 0).

  claims_markdown: the claims table (Markdown; the text dashboard renders
  tables). figure_paths: PNG files. captions: {file name: caption}, each
  image's description.
  """
  captions = captions or {}
  older = glob.glob(os.path.join(out_dir,
                                 'events.out.tfevents.*' + REPORT_SUFFIX))
  writer = tf.summary.create_file_writer(out_dir,
                                         filename_suffix=REPORT_SUFFIX)
  with writer.as_default():
    tf.summary.text(CLAIMS_TAG, claims_markdown, step=0)
    for path in figure_paths:
      image = tf.io.decode_png(tf.io.read_file(path))
      tf.summary.image(image_tag(path), image[tf.newaxis], step=0,
                       description=captions.get(os.path.basename(path), ''))
  writer.close()
  for path in older:  # once the new ones are written
    os.remove(path)


FLOAT32_MAX = float(np.finfo(np.float32).max)


class TensorBoardRecorder:
  """Scalars and text summaries in <run dir>/ as TF2 event files."""

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)
    self._described = set()

  @staticmethod
  def truncate_events(logdir: str, keep):
    """Rewrites the event files in logdir keeping only the events for which
    keep(event) is true: a resumed run drops what the killed run wrote after
    its last checkpoint, so TensorBoard shows one continuous curve."""
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
      tmp = path + '.truncating'
      with tf.io.TFRecordWriter(tmp) as writer:
        for record in tf.data.TFRecordDataset(path):
          event = tf.compat.v1.Event.FromString(record.numpy())
          if keep(event):
            writer.write(record.numpy())
      os.replace(tmp, path)

  def _description(self, tag: str):
    """A tag of metrics' table carries its description in its first event of
    this writer only: TensorBoard reads a tag's metadata from its first
    event, and TF2 writes the metadata into every event."""
    row = None if tag in self._described else metrics.find(tag)
    self._described.add(tag)
    return row.description if row else None

  def scalars(self, step: int, values: dict):
    """Scalars at step; one beyond float32's range is written as +-inf
    (tf.summary.scalar is float32 and raises on it: a predicted curve of a
    step past the edge of stability grows that large)."""
    with self._writer.as_default(step=step):
      for tag, value in values.items():
        if abs(value) > FLOAT32_MAX:
          value = math.copysign(math.inf, value)
        tf.summary.scalar(tag, value, description=self._description(tag))
    self._writer.flush()

  def histograms(self, step: int, values: dict):
    with self._writer.as_default(step=step):
      for tag, value in values.items():
        tf.summary.histogram(tag, value, description=self._description(tag))
    self._writer.flush()

  def text(self, tag: str, markdown: str):
    with self._writer.as_default(step=0):
      tf.summary.text(tag, markdown)
    self._writer.flush()

  def close(self):
    self._writer.close()
