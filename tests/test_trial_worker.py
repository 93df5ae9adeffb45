"""The trial worker's kept TFF worker: started for the native engine (not
remote ones, whose workers run elsewhere, nor the in-process one, which
starts a worker only for what it cannot run itself), and
replaced once it grows past KEPT_WORKER_MAX_BYTES. (The worker's protocol,
failures and signals are tested through sweeps, in test_sweep.py.)"""

import dataclasses

import psutil

from tff_localsgd import config as config_lib
from tff_localsgd import trial_worker


def request(**values):
  config = config_lib.ExperimentConfig(**values)
  return dict(name='t', config=dataclasses.asdict(config), log='/dev/null')


def test_kept_worker_starts_for_the_native_engine_and_is_replaced_when_large(
    monkeypatch):
  kept = trial_worker.KeptWorker()
  try:
    kept.ensure(request(engine='remote', workers='localhost:1'))
    assert kept.worker is None
    kept.ensure(request(engine='inprocess'))
    assert kept.worker is None
    kept.ensure(request(engine='native'))
    first = kept.worker.process.pid
    kept.ensure(request(engine='inprocess'))
    kept.check()
    assert kept.worker.process.pid == first  # kept: small
    monkeypatch.setattr(trial_worker, 'KEPT_WORKER_MAX_BYTES', 0)
    kept.check()
    assert kept.worker is None
    assert not psutil.pid_exists(first) or psutil.Process(
        first).status() == psutil.STATUS_ZOMBIE
    kept.ensure(request(engine='native'))
    assert kept.worker.process.pid != first
  finally:
    kept.close()
  assert kept.worker is None
