"""recording.py writes a run's rounds into its RunDir: the summary's status
for a completed, diverged, stopped and failed run, the checkpoint of a
stopped one, the phases, and the weights' digest. The rounds come from a
fake setup (no TFF): recording computes nothing."""

import contextlib
import hashlib
import threading

import numpy as np
import pytest

from tff_localsgd import config as config_lib
from tff_localsgd import recorders
from tff_localsgd import recording
from tff_localsgd import results
from tff_localsgd import rundir


class _Rounds:

  def __init__(self, rounds, diverge_at, fail_at):
    self.startup = results.Startup(trace_s=0.25, engine_s=0.5)
    self.rounds, self.diverge_at, self.fail_at = rounds, diverge_at, fail_at

  def others_s(self):
    return 0.0  # a run of its own: no stack's rounds to give back

  def iterate(self, start=None):
    t0 = start[0] + 1 if start else 0
    for t in range(t0, self.rounds + 1):
      if t == self.fail_at:
        raise RuntimeError('engine lost')
      loss = np.nan if t == self.diverge_at else 2.0 ** -t
      metrics = {'train/loss': loss}
      if t:
        metrics['system/round_time_s'] = 0.125
      yield results.RoundResult(t, (np.full((2, 2), t, np.float32),),
                                metrics)


class _FakeSetup:
  """training.Setup's face to recording: config, data, spec, predict,
  facts, started."""

  def __init__(self, tmp_path, rounds=4, diverge_at=None, fail_at=None):
    self.config = config_lib.ExperimentConfig(
        rounds=rounds, root_dir=str(tmp_path), experiment='fake',
        checkpoint_every=0)
    self.data = type('Data', (), dict(num_examples=8,
                                      min_pairwise_distance=1.0))
    self.spec = type('Spec', (), dict(
        initial_weights=(np.zeros((2, 2), np.float32),)))
    self._rounds = _Rounds(rounds, diverge_at, fail_at)

  def predict(self):
    return None, 'a fake has no theory'

  def facts(self):
    return {'zero_predictor_loss': 1.0, 'lr': 0.5}

  @contextlib.contextmanager
  def started(self, prediction, log_path):
    del prediction, log_path
    yield self._rounds


def _digest(weights):
  return hashlib.sha256(b''.join(np.asarray(w, np.float32).tobytes()
                                 for w in weights)).hexdigest()


def test_a_completed_run(tmp_path):
  setup = _FakeSetup(tmp_path)
  summary = recording.run(setup, phases={'startup_s': 1.0})
  assert summary['status'] == results.COMPLETED
  assert summary['rounds_completed'] == 4
  assert summary['final']['train/loss'] == 2.0 ** -4
  assert summary['initial'] == {'train/loss': 1.0}
  assert summary['final_weights_sha256'] == _digest(
      [np.full((2, 2), 4, np.float32)])
  assert summary['theory_not_applicable'] == 'a fake has no theory'
  assert summary['zero_predictor_loss'] == 1.0
  phases = summary['phases_s']
  assert list(phases) == list(results.PHASES)
  assert phases['startup_s'] == 1.0 and phases['trace_s'] == 0.25
  assert phases['rounds_s'] == 4 * 0.125
  assert phases['engine_s'] >= 0.5
  run = rundir.RunDir(setup.config)
  assert run.read_summary() == recorders.read_json(run.file(
      rundir.SUMMARY_JSON))
  assert [r['train_loss'] for r in run.read_rows()] == [
      2.0 ** -t for t in range(5)]


def test_a_diverged_run_stops_at_the_round(tmp_path):
  summary = recording.run(_FakeSetup(tmp_path, diverge_at=2))
  assert summary['status'] == results.DIVERGED
  assert summary['rounds_completed'] == 2


def test_a_stopped_run_checkpoints_its_round(tmp_path):
  setup = _FakeSetup(tmp_path)
  stop = threading.Event()
  recorded = recording.RecordedRun(setup, stop=stop)
  for result in recorded:
    if result.round == 1:
      stop.set()
  assert recorded.summary['status'] == results.INTERRUPTED
  assert recorded.summary['rounds_completed'] == 1
  run = rundir.RunDir(setup.config)
  t, weights = recorders.latest_checkpoint(run.file(rundir.CHECKPOINTS),
                                           [(2, 2)])
  assert t == 1 and (weights[0] == 1).all()
  assert run.read_summary()['status'] == results.INTERRUPTED


def test_a_failed_run_records_why_and_raises(tmp_path):
  setup = _FakeSetup(tmp_path, fail_at=3)
  with pytest.raises(RuntimeError, match='engine lost'):
    recording.run(setup)
  summary = rundir.RunDir(setup.config).read_summary()
  assert summary['status'] == results.FAILED
  assert 'engine lost' in summary['error']
  assert summary['rounds_completed'] == 2


def test_a_run_left_early_is_interrupted(tmp_path):
  setup = _FakeSetup(tmp_path)
  rounds = iter(recording.RecordedRun(setup))
  assert next(rounds).round == 0
  rounds.close()  # GeneratorExit inside the run: written as interrupted
  summary = rundir.RunDir(setup.config).read_summary()
  assert summary['status'] == results.INTERRUPTED
  assert summary['rounds_completed'] == 0


def test_weights_digest_is_the_sha256_of_the_float32_bytes():
  weights = [np.arange(6, dtype=np.float64).reshape(2, 3), np.ones(2)]
  assert recording.weights_digest(weights) == _digest(weights)
  other = [weights[0], np.ones(2) + 1e-7]
  assert recording.weights_digest(other) != _digest(weights)
