"""The native engine: TFF's C++ runtime in a `worker_binary` we own.

TFF's default context starts `tensorflow_federated/data/worker_binary` itself,
lets it inherit stdout, and leaves it running after Python exits, so
`python x.py | tail` hangs. Here we start the same binary ourselves:

  * its stdout/stderr go to a log file (or /dev/null), never to ours;
  * it runs in its own session, so a Ctrl-C in the terminal reaches only us
    and we can stop at a round boundary;
  * the kernel sends it SIGKILL when our process dies, however it dies
    (PR_SET_PDEATHSIG), and atexit stops it on a normal exit.

The execution context talks to it over gRPC with TFF's RemoteExecutor, the
same path a remote worker uses.
"""

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation

from tff_localsgd import worker_binary

WORKER_BINARY = worker_binary.path()
_GRPC_OPTIONS = [('grpc.max_message_length', 2_000_000_000),
                 ('grpc.max_receive_message_length', 2_000_000_000),
                 ('grpc.max_send_message_length', 2_000_000_000)]


class WorkerDiedError(RuntimeError):
  """The worker serving the run's computations exited during the run."""


class Worker:
  """A local worker_binary process serving TFF computations on a port."""

  def __init__(self, port: int | None = None, log_path: str | None = None,
               host: str = 'localhost'):
    self.port = port or portpicker.pick_unused_port()
    self.host = host
    self.log_path = log_path
    self._log = open(log_path, 'ab') if log_path else subprocess.DEVNULL
    self.process = subprocess.Popen(
        worker_binary.command(self.port),
        stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        start_new_session=True, preexec_fn=worker_binary.die_with_parent)
    self._stopping = False
    self.died = False
    atexit.register(self.stop)

  def watch(self):
    """Raises WorkerDiedError in the main thread if the worker exits early.

    TFF retries a call to an unreachable worker forever; without this a run
    whose worker was killed (or ran out of memory) would hang. The watcher
    thread sends this process SIGUSR1, a real signal, which also wakes a main
    thread blocked on a lock.
    """
    def raise_died(signum, frame):
      if self.died:
        raise WorkerDiedError(
            f'the TFF worker at {self.address} (pid {self.process.pid}) '
            f'exited with status {self.process.returncode} during the run'
            + (f'; see {self.log_path}' if self.log_path else ''))

    def wait():
      self.process.wait()
      if not self._stopping:
        self.died = True
        os.kill(os.getpid(), signal.SIGUSR1)

    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGUSR1, raise_died)
    threading.Thread(target=wait, daemon=True, name='worker-watch').start()

  @property
  def address(self) -> str:
    return f'{self.host}:{self.port}'

  def stop(self):
    self._stopping = True
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)
      try:
        self.process.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if hasattr(self._log, 'close'):
      self._log.close()
    atexit.unregister(self.stop)


def connect(address: str, timeout_s: float = 60.0, worker: Worker | None = None):
  """A ready TFF gRPC stub for the worker at `address`, or ConnectionError."""
  channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  deadline = time.monotonic() + timeout_s
  while not stub.is_ready:
    if worker is not None and worker.process.poll() is not None:
      raise ConnectionError(f'TFF worker at {address} exited with status '
                            f'{worker.process.returncode}')
    if time.monotonic() > deadline:
      raise ConnectionError(f'TFF worker at {address} did not answer within '
                            f'{timeout_s:.0f} s')
    time.sleep(0.05)
  return stub


def execution_context(stub):
  """A synchronous TFF execution context that runs everything on `stub`."""
  def stack_fn(cardinalities):
    # Computations with no client argument (initialize) still need a number.
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.SyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
      compiler_fn=compiler.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result)


_kept = None  # the Worker of kept_worker(), while its block runs


@contextlib.contextmanager
def kept_worker():
  """Inside the block, native_engine() shares one worker, started here with
  its output on this process's stderr, instead of starting and stopping one
  per run (~0.9 s each): for a process that runs many experiments, the
  sweep's trial worker. A run's worker.log is then left empty."""
  global _kept
  worker = Worker(log_path='/dev/stderr')
  try:
    connect(worker.address, worker=worker)
    worker.watch()
    _kept = worker
    yield worker
  finally:
    _kept = None
    worker.stop()


@contextlib.contextmanager
def started(log_path: str | None = None):
  """(worker, its execution context) while the block runs: a worker we
  start and stop, or kept_worker's. The context is not installed."""
  worker = _kept or Worker(log_path=log_path)
  try:
    context = execution_context(connect(worker.address, worker=worker))
    if worker is _kept:
      if log_path:
        open(log_path, 'ab').close()  # the run's files are the same
    else:
      worker.watch()
    yield worker, context
  finally:
    if worker is not _kept:
      worker.stop()


@contextlib.contextmanager
def native_engine(log_path: str | None = None):
  """Runs TFF computations inside the block on a worker we start and stop
  (or kept_worker's)."""
  with started(log_path) as (worker, context):
    with tff.framework.get_context_stack().install(context):
      yield worker
