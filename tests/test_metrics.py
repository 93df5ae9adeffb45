"""The table of metric names: tag <-> column, descriptions, the table in
docs/metrics.md, and that a real run writes no metric the table lacks."""

import csv
import glob
import os
import re

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from test_train import ROOT, train
from tff_localsgd import board as board_lib
from tff_localsgd import docs_blocks
from tff_localsgd import metrics

LAYERS = ('input', 'hidden_1', 'hidden_12', 'output', 'conv_2')


def instances(template):
  """The template itself, or its instances for LAYERS if it has LAYER."""
  if metrics.LAYER not in template:
    return [template]
  return [template.replace(metrics.LAYER, layer) for layer in LAYERS]


def concrete(field):
  """Every concrete tag or column of the table (LAYER rows instantiated)."""
  return [name for row in metrics.METRICS if getattr(row, field) is not None
          for name in instances(getattr(row, field))]


def matches(template, name):
  """Whether name is template or one of its instances, for any layer name."""
  pattern = re.escape(template).replace(re.escape(metrics.LAYER), r'\w+')
  return re.fullmatch(pattern, name) is not None


def test_column_and_tag_are_inverses():
  columns = [row for row in metrics.METRICS if row.column is not None]
  assert columns
  for row in columns:
    for tag, column in zip(instances(row.tag), instances(row.column)):
      assert metrics.column(tag) == column
      assert metrics.tag(column) == tag


def test_layer_names_and_tags_with_underscores():
  assert (metrics.column('lazy/weight_change_rel/hidden_1')
          == 'lazy_weight_change_rel_hidden_1')
  assert (metrics.tag('lazy_weight_change_rel_hidden_1')
          == 'lazy/weight_change_rel/hidden_1')
  assert (metrics.tag('lazy_weight_change_spectral_rel_hidden_1')
          == 'lazy/weight_change_spectral_rel/hidden_1')
  assert metrics.tag('lazy_weight_change_rel') == 'lazy/weight_change_rel'
  assert metrics.tag('drift_grad_diff_vs_start') == 'drift/grad_diff_vs_start'
  assert metrics.tag('drift_grad_diff_rel_max') == 'drift/grad_diff_rel_max'


def test_metrics_csv_columns_are_todays():
  """metrics.csv keeps its header: the column is the tag with '/' -> '_'."""
  rows = [row for row in metrics.METRICS if row.file == metrics.METRICS_CSV]
  assert 'train/loss' in [row.tag for row in rows]
  for row in rows:
    for tag in instances(row.tag):
      assert metrics.column(tag) == tag.replace('/', '_')
  assert metrics.column('drift_per_step/grad_diff') == 'grad_diff'


def test_no_two_tags_share_a_column():
  for field in ('tag', 'column'):
    names = concrete(field)
    assert len(names) == len(set(names)), field
    for name in names:
      owners = [row.tag for row in metrics.METRICS
                if getattr(row, field) is not None
                and matches(getattr(row, field), name)]
      assert len(owners) == 1, (name, owners)


@pytest.mark.parametrize('call, name', [
    (metrics.column, 'train/nonsense'),
    (metrics.column, 'per_client/train_loss'),  # a histogram: no CSV column
    (metrics.column, 'lazy/weight_change_rel/hidden_1/extra'),
    (metrics.tag, 'train_nonsense'),
    (metrics.tag, 'lazy_weight_change_rel_'),
    (metrics.tag, 'round'),
    (metrics.description, 'train/nonsense'),
])
def test_unknown_names_raise_key_error_naming_them(call, name):
  with pytest.raises(KeyError, match=re.escape(repr(name))):
    call(name)


def test_description_is_formula_and_meaning():
  row = metrics.find('lazy/weight_change_rel/hidden_1')
  assert row.tag == f'lazy/weight_change_rel/{metrics.LAYER}'
  text = metrics.description('lazy/weight_change_rel/hidden_1')
  assert text == f'{row.formula}\n\n{row.meaning}'
  assert '‖W_l^t − W_l⁰‖_F' in text
  assert metrics.find('train/nonsense') is None


def test_every_row_is_complete_and_fits_a_markdown_table():
  for row in metrics.METRICS:
    assert row.formula and row.meaning, row.tag
    assert (row.column is None) == (row.file is None), row.tag
    for text in (row.tag, row.formula, row.meaning):
      assert not set('|*\n') & set(text), row.tag  # Markdown-safe
  lines = metrics.markdown_table().splitlines()
  assert len(lines) == 2 + len(metrics.METRICS)
  assert all(line.count('|') == 5 for line in lines)


def test_docs_block_is_the_table():
  with open(os.path.join(ROOT, 'docs', 'metrics.md')) as f:
    found = docs_blocks.blocks(f.read())
  bodies = [block.body for block in found if block.name == 'metrics']
  assert bodies == [metrics.markdown_table()], (
      'docs/metrics.md needs one block `<!-- generated: metrics -->` holding '
      'metrics.markdown_table(): run python -m benchmarks.docs')


def read_events(logdir):
  acc = event_accumulator.EventAccumulator(logdir,
                                           size_guidance={'tensors': 0})
  acc.Reload()
  return acc


def test_a_scalar_carries_its_description_once(tmp_path):
  board = board_lib.TensorBoardRecorder(str(tmp_path))
  for step in range(3):
    board.scalars(step, {'train/loss': 0.5, 'not/in_the_table': 1.0,
                         'lazy/weight_change_rel/hidden_1': 0.1})
  board.close()
  acc = read_events(str(tmp_path))
  for tag in ('train/loss', 'lazy/weight_change_rel/hidden_1'):
    assert (acc.SummaryMetadata(tag).summary_description
            == metrics.description(tag))
    assert len(acc.Tensors(tag)) == 3
  assert acc.SummaryMetadata('not/in_the_table').summary_description == ''
  # TF2 writes the metadata into every event: the description only goes
  # into a tag's first, which TensorBoard reads.
  [path] = glob.glob(os.path.join(tmp_path, 'events.out.tfevents.*'))
  described = [value.tag for record in tf.data.TFRecordDataset(path)
               for value in tf.compat.v1.Event.FromString(
                   record.numpy()).summary.value
               if value.metadata.summary_description]
  assert sorted(described) == ['lazy/weight_change_rel/hidden_1',
                               'train/loss']


def read_header(path):
  with open(path, newline='') as f:
    return next(csv.reader(f))


def test_a_run_writes_only_metrics_of_the_table(tmp_path):
  """Diagnostics on (lockstep, per step, NTK), round 1 ordinary, round 2 a
  lockstep round: every tag and column it writes must be in the table."""
  result = train(tmp_path, '--width=16', '--num_examples=16',
                 '--num_clients=2', '--batch_size=2', '--local_steps=2',
                 '--rounds=2', '--diag_every=2', '--ntk_every=1',
                 '--probe_size=8', '--diag_per_step')
  assert result.returncode == 0, result.stderr[-3000:]
  run = os.path.join(tmp_path, 'run')
  acc = read_events(run)
  tags = set(acc.Tags()['tensors']) - {'config'}  # the config, as text
  assert {'train/loss', 'train/local_loss', 'drift/grad_diff_max',
          'drift_per_step/grad_diff', 'lazy/weight_change_rel/hidden_1',
          'per_client/train_loss', 'theory/loss', 'theory/lambda_min'} <= tags
  for tag in tags:
    row = metrics.find(tag)
    assert row is not None, f'{tag} is written but not in metrics.METRICS'
    metadata = acc.SummaryMetadata(tag)
    assert row.histogram == (metadata.plugin_data.plugin_name == 'histograms')
    if not row.histogram:
      assert metadata.summary_description == row.description, tag
  for name, skip in ((metrics.METRICS_CSV, {'round'}),
                     (metrics.STEPS_CSV, {'round', 'local_step'})):
    columns = [c for c in read_header(os.path.join(run, name)) if c not in skip]
    assert columns
    for column in columns:
      tag = metrics.tag(column)
      assert metrics.find(tag).file == name, column
      assert tag in tags
