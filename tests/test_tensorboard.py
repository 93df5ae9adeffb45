"""What TensorBoard 2.14 shows of sweeps and of the report.

TensorBoard runs as a subprocess on a logdir holding two tiny sweeps and the
report's summaries (loopback only, always killed), and is asked through the
HParams plugin's HTTP API as its frontend asks (POST, the request proto as
JSON): every trial of both sweeps, with every config field that changes its
result, integers as integers, its real start and end. The experiment merge
and the report summaries are also tested without a server.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import metadata as hp_metadata
import tensorflow as tf

from tff_localsgd import board
from tff_localsgd import config as config_lib
from tff_localsgd import rundir
from tff_localsgd.sweep import grid as grid_lib
from tff_localsgd.sweep import hparams
from tff_localsgd.sweep import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--num_examples=16', '--input_dim=4', '--num_clients=2',
        '--batch_size=2', '--rounds=2', '--seeds=1']
# Two sweeps in a reproduction suite's directory: one where the suite puts
# its sweeps (<out>/<E>/<group>), one directly under it. Both hold a trial
# named width-8_seed-0, with other local_steps.
SWEEPS = {'E1/a': ['--grid=width=8,16', '--local_steps=2'],
          'b': ['--grid=width=8', '--local_steps=3']}
TRIALS = ['E1/a/width-16_seed-0', 'E1/a/width-8_seed-0', 'b/width-8_seed-0']
SERVER_WAIT_S = 60
ALL_STATUSES = ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE',
                'STATUS_RUNNING']


def tiny_trials(grid, **base):
  values = dict(num_examples=16, input_dim=4, num_clients=2, batch_size=2,
                rounds=2, **base)
  return grid_lib.expand_grid(grid, [0], dataclasses.asdict(
      config_lib.ExperimentConfig(**values)))


def write_png(path):
  pixels = tf.cast(tf.reshape(tf.range(4 * 6 * 3) * 10, (4, 6, 3)), tf.uint8)
  tf.io.write_file(str(path), tf.io.encode_png(pixels))
  return str(path)


# Without a server.


def test_trial_hparams_are_every_result_field_with_integers_as_text():
  trial = tiny_trials({'width': ['8']})[0]
  values = hparams.trial_hparams(trial)
  assert set(values) == set(config_lib.FIELDS) - set(hparams.NOT_HPARAMS)
  for name in ('engine', 'workers', 'root_dir', 'experiment', 'data_dir',
               'checkpoint_every'):
    assert name not in values
  assert values['width'] == '8' and values['seed'] == '0'
  assert values['local_steps'] == '10'  # not swept: the default
  assert values['client_lr'] == 1.0 and values['lockstep_drift'] is True
  assert values['algorithm'] == 'local_sgd'


def test_hparams_root_is_the_suite_or_the_sweeps_parent(tmp_path):
  assert hparams.hparams_root(tmp_path / 'runs' / 's') == str(tmp_path / 'runs')
  (tmp_path / 'provenance.json').write_text('{}')
  assert hparams.hparams_root(tmp_path / 'E1' / 'g') == str(tmp_path)
  assert hparams.hparams_root(tmp_path / 'runs' / 's') == str(tmp_path)


def experiment_files(directory):
  return [os.path.join(d, f) for d, _, files in os.walk(directory)
          for f in files if '.hparams' in f and 'config.json' not in files]


def test_sweeps_merge_into_one_experiment_at_the_root(tmp_path):
  # A pre-union sweep's own experiment, which the merge absorbs.
  old = tmp_path / 'old'
  writer = tf.summary.create_file_writer(str(old), filename_suffix='.hparams')
  with writer.as_default():
    hp.hparams_config(hparams=[hp.HParam('width', hp.Discrete([1024]))],
                      metrics=[hp.Metric('final/train/loss')])
  writer.close()
  hparams.write_hparams_config(tiny_trials({'width': ['8', '64']}),
                               str(tmp_path / 'x'))
  hparams.write_hparams_config(
      tiny_trials({'local_steps': ['1', '5']}, width=16), str(tmp_path / 'y'))
  files = experiment_files(tmp_path)
  assert len(files) == 1 and os.path.dirname(files[0]) == str(tmp_path)
  infos = {i.name: i for i in hparams._read_experiment(files[0]).hparam_infos}

  def domain(name):
    return [hparams._value(name, v) for v in infos[name].domain_discrete.values]

  assert domain('width') == ['8', '16', '64', '1024']  # by value, as text
  assert domain('local_steps') == ['1', '5', '10']
  assert domain('dataset') == ['synthetic']
  assert infos['width'].differs and not infos['dataset'].differs
  assert list(infos)[:3] == ['width', 'local_steps', 'num_examples']


def test_a_suite_absorbs_the_experiment_of_its_runs_dir(tmp_path):
  # Docker's /out: a sweep under runs/ before the suite, then the suite.
  hparams.write_hparams_config(tiny_trials({'width': ['8']}),
                               str(tmp_path / 'runs' / 's'))
  assert [os.path.dirname(f) for f in experiment_files(tmp_path)] == [
      str(tmp_path / 'runs')]
  (tmp_path / 'provenance.json').write_text('{}')
  hparams.write_hparams_config(tiny_trials({'width': ['32']}),
                               str(tmp_path / 'E1' / 'g'))
  files = experiment_files(tmp_path)
  assert [os.path.dirname(f) for f in files] == [str(tmp_path)]
  infos = {i.name: i for i in hparams._read_experiment(files[0]).hparam_infos}
  assert [v.string_value for v in infos['width'].domain_discrete.values] == [
      '8', '32']


def session_start(trial_dir):
  acc = event_accumulator.EventAccumulator(str(trial_dir),
                                           size_guidance={'tensors': 0})
  acc.Reload()
  content = acc.SummaryMetadata(
      '_hparams_/session_start_info').plugin_data.content
  return hp_metadata.parse_session_start_info_plugin_data(content)


def test_a_trial_session_replaces_an_older_one(tmp_path):
  trial = tiny_trials({'width': ['8']})[0]
  trial_dir = tmp_path / 's' / trial.name
  trial_dir.mkdir(parents=True)
  writer = tf.summary.create_file_writer(str(trial_dir),
                                         filename_suffix='.hparams')
  with writer.as_default():  # as sweeps wrote sessions before
    hp.hparams({'width': 8}, trial_id=trial.name)
  writer.close()
  (trial_dir / 'summary.json').write_text(json.dumps(dict(
      status='completed', rounds_completed=2, wall_time_s=30.0,
      final={'train/loss': 0.5})))
  hparams.write_trial_hparams(trial, str(trial_dir), json.loads(
      (trial_dir / 'summary.json').read_text()))
  files = os.listdir(trial_dir)
  assert [f.endswith('.hparams-session') for f in files
          if f.startswith('events')] == [True]
  start = session_start(trial_dir)
  assert start.group_name == f's/{trial.name}'
  assert start.hparams['width'].string_value == '8'
  end = os.path.getmtime(trial_dir / 'summary.json')
  assert start.start_time_secs == pytest.approx(end - 30.0)


def report_events(directory):
  acc = event_accumulator.EventAccumulator(str(directory),
                                           size_guidance={'tensors': 0})
  acc.Reload()
  return acc.Tags()['tensors']


def test_report_summaries_replace_the_older_ones(tmp_path):
  png = write_png(tmp_path / 'E1_loss.png')
  board.write_report_summaries(str(tmp_path), 'old', [png])
  board.write_report_summaries(str(tmp_path), '| C1 | **PASS** |', [png],
                               {'E1_loss.png': 'the loss'})
  files = [f for f in os.listdir(tmp_path) if f.endswith(board.REPORT_SUFFIX)]
  assert len(files) == 1
  assert set(report_events(tmp_path)) == {'Report/claims', 'E1/loss'}


# TensorBoard on two sweeps.


@pytest.fixture(scope='module')
def logdir(tmp_path_factory):
  """Two sweeps run at once in a suite directory (so they merge in turn),
  and the report's summaries at its root; {'root', sweep: stdout}."""
  root = tmp_path_factory.mktemp('board')
  (root / 'provenance.json').write_text('{}')  # what makes it a suite's
  procs = {name: subprocess.Popen(
      [sys.executable, '-m', 'benchmarks.sweep',
       f'--root_dir={os.path.dirname(root / name)}',
       f'--sweep={os.path.basename(name)}', *TINY, *flags], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
           for name, flags in SWEEPS.items()}
  out = {name: p.communicate(timeout=300)[0] for name, p in procs.items()}
  assert all(p.returncode == 0 for p in procs.values()), out
  board.write_report_summaries(str(root), '| C1 | **PASS** |',
                               [write_png(root / 'E1_loss.png')])
  return {'root': str(root), **out}


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def post(url, body):
  request = urllib.request.Request(url, json.dumps(body).encode(),
                                   {'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.load(response)


def get(url):
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.load(response)


def session_groups(url):
  return post(f'{url}/data/plugin/hparams/session_groups', {
      'startIndex': 0, 'sliceSize': 100, 'allowedStatuses': ALL_STATUSES,
      'aggregationType': 'AGGREGATION_AVG'})['sessionGroups']


@pytest.fixture(scope='module', params=['auto', 'false'])
def server(request, logdir):
  """TensorBoard on the logdir on 127.0.0.1, once it lists every trial;
  --load_fast=auto is the Rust data server, false the Python reader."""
  url = f'http://127.0.0.1:{free_port()}'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', f'--logdir={logdir["root"]}',
       '--host=127.0.0.1', f'--port={url.rsplit(":", 1)[1]}',
       f'--load_fast={request.param}'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + SERVER_WAIT_S
    while True:
      assert proc.poll() is None, 'TensorBoard exited'
      try:
        if len(session_groups(url)) == len(TRIALS):
          break
      except OSError:
        pass  # not listening yet
      assert time.monotonic() < deadline, 'TensorBoard never listed the trials'
      time.sleep(0.5)
    yield url
  finally:
    proc.kill()
    proc.wait()


def test_sweep_prints_its_trials_and_the_tensorboard_command(logdir):
  lines = logdir['E1/a'].splitlines()
  assert lines[0].split() == ['trial', 'status', 'final', 'loss', 'rounds',
                              'to', 'eps']
  assert [line.split()[:2] for line in lines[1:3]] == [
      ['width-8_seed-0', 'completed'], ['width-16_seed-0', 'completed']]
  assert lines[-1] == f'tensorboard --logdir {logdir["root"]}'


def test_experiment_has_the_hparams_of_both_sweeps(server):
  experiment = post(f'{server}/data/plugin/hparams/experiment',
                    {'experimentName': ''})
  infos = {i['name']: i for i in experiment['hparamInfos']}
  assert set(infos) == set(config_lib.FIELDS) - set(hparams.NOT_HPARAMS)
  assert infos['width']['domainDiscrete'] == ['8', '16']
  assert infos['local_steps']['domainDiscrete'] == ['2', '3']
  assert infos['width']['differs'] and infos['local_steps']['differs']
  assert not infos['algorithm']['differs']
  assert [m['name']['tag'] for m in experiment['metricInfos']] == list(
      records.FINAL_METRICS)


def test_every_trial_shows_with_its_hparams_and_real_times(server, logdir):
  groups = {g['name']: g for g in session_groups(server)}
  assert sorted(groups) == TRIALS  # two width-8_seed-0, not merged
  for name, group in groups.items():
    values = group['hparams']
    assert set(values) == set(config_lib.FIELDS) - set(hparams.NOT_HPARAMS)
    assert values['local_steps'] == ('3' if name.startswith('b/') else '2')
    assert values['width'] == name.split('/')[-1].split('_')[0][6:]
    assert values['seed'] == '0' and values['num_examples'] == '16'
    trial_dir = os.path.join(logdir['root'], name)
    summary = rundir.RunDir(path=trial_dir).read_summary()
    session, = group['sessions']
    assert session['status'] == 'STATUS_SUCCESS'
    # Training's real span (summary.json is written last), not the moment
    # the sweep wrote the session.
    # config.json is written as training starts: inside the real span, and
    # before the moment the sweep wrote the session (a trial takes < 1 s in
    # a long-lived trial process, so a tolerance of 1 s could not tell).
    # The start is summary.json's mtime less wall_time_s, so it is late by
    # the time summary.json takes to write (microseconds; 0.05 s allowed).
    end = os.path.getmtime(os.path.join(trial_dir, 'summary.json'))
    start = end - summary['wall_time_s']
    begun = os.path.getmtime(os.path.join(trial_dir, 'config.json'))
    assert float(session['startTimeSecs']) <= begun + 0.05
    assert abs(float(session['startTimeSecs']) - start) <= 0.05
    assert abs(float(session['endTimeSecs']) - end) <= 0.05
    loss = {m['name']['tag']: m['value'] for m in group['metricValues']}
    assert loss['final/train/loss'] == pytest.approx(
        summary['final']['train/loss'])
    # The prediction's rounds beside the measured ones, for every trial.
    assert loss['theory/rounds_to_eps'] == pytest.approx(
        summary['theory']['rounds_to_eps'])


def test_report_shows_at_the_root(server):
  assert get(f'{server}/data/plugin/text/tags')['.'] == ['Report/claims']
  assert list(get(f'{server}/data/plugin/images/tags')['.']) == ['E1/loss']
