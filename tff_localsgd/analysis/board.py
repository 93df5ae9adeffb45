"""The report inside TensorBoard: the claims table as a text summary and the
report's figures as image summaries, in the suite directory's own run (the
logdir root), so `tensorboard --logdir <out>` shows the verdicts and figures
beside the trials.

    board.write_report_summaries(out, claims_markdown,
                                 ['out/E1_loss.png', ...], captions)

An image's tag is its file name with the first '_' as '/' (E1_loss.png ->
E1/loss): one Time Series group per experiment. The Time Series dashboard
sorts tags by code point (upper case first) and opens the first two groups,
so a suite's TensorBoard opens on the E1 and E2 figures, not on the runs'
lower-case tags.
"""

import glob
import os

import tensorflow as tf

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
