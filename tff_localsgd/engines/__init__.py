"""Engines: where a run's TFF computations execute.

`engine(config, log_path)` is a context manager; inside it, calling a TFF
computation runs it on the engine the config names:

  native     TFF's C++ runtime in a worker_binary the run starts (native.py)
  inprocess  the round compiled to a MapReduceForm and run by TensorFlow in
             this process, on the GPU if there is one (inprocess.py)
  remote     TFF workers already running elsewhere, --workers (remote.py)
  auto       inprocess when TensorFlow sees a GPU, else native
"""

import contextlib

import tensorflow as tf

from tff_localsgd.engines import inprocess
from tff_localsgd.engines import native
from tff_localsgd.engines import remote


def resolve(config) -> str:
  """The engine `auto` stands for on this machine, or config.engine."""
  if config.engine != 'auto':
    return config.engine
  return 'inprocess' if tf.config.list_physical_devices('GPU') else 'native'


@contextlib.contextmanager
def engine(config, log_path: str | None = None):
  """Runs the TFF computations called inside the block on config's engine."""
  name = resolve(config)
  if name == 'native':
    with native.native_engine(log_path=log_path) as worker:
      yield worker
  elif name == 'remote':
    with remote.remote_engine(config.workers.split(',')) as workers:
      yield workers
  else:
    with inprocess.inprocess_engine(config.device, log_path=log_path) as ctx:
      yield ctx


def prepare(running, computations):
  """Compiles the computations that `running` (what engine() yielded) will
  run in-process, so that a round's time is not their compilation; the
  other engines compile at the first call."""
  if isinstance(running, inprocess.InProcessContext):
    running.prepare(computations)
