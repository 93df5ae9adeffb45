"""TFF's `worker_binary` as a child process: where it is and how to start it.

Imports no TensorFlow: `benchmarks.worker` starts workers on hosts that need
only the binary, and the native engine starts its own the same way.
"""

import ctypes
import importlib.util
import os
import signal

_PR_SET_PDEATHSIG = 1


def path() -> str:
  """tensorflow_federated/data/worker_binary of the installed wheel, found
  without importing TFF."""
  spec = importlib.util.find_spec('tensorflow_federated')
  return os.path.join(os.path.dirname(spec.origin), 'data', 'worker_binary')


def command(port: int) -> list[str]:
  """The worker's argv: serve on `port` (every interface; TFF 0.87 has no
  address flag), with no limit on concurrent computation calls."""
  return [path(), f'--port={port}', '--max_concurrent_computation_calls=-1']


def die_with_parent():
  """Runs in the child before exec: the kernel SIGKILLs it when the parent
  dies, however the parent dies (PR_SET_PDEATHSIG)."""
  libc = ctypes.CDLL('libc.so.6', use_errno=True)
  libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
