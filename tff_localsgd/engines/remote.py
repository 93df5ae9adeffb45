"""The remote engine: TFF workers already running elsewhere (--workers).

Each address is a TFF `worker_binary` (start one with `python -m
benchmarks.worker --port=P`). The driver talks to each through TFF's own
remote stack, the same one the native engine uses for its single worker:
`RemoteExecutorGrpcStub` -> `RemoteExecutor` -> `ResourceManagingExecutorFactory`
-> `SyncExecutionContext` (native.execution_context).

Which computation runs where:

  * A federated computation whose argument holds per-client data and that
    TFF's `compile_to_mergeable_comp_form` accepts (one aggregation, or
    several independent ones): the round (`next`, `next_measured`),
    `evaluate`, the diagnostics' `measure_model`. Its clients are split into
    contiguous blocks, one per worker in --workers order (TFF's subround
    split); `up_to_merge` runs on all workers at once, the partial aggregates
    are merged on the first worker in worker order, and `after_merge` runs
    on the first worker (or on every worker for per-client results).
  * Everything else runs whole on the first worker: computations with no
    argument (`initialize`), without client data (plain
    `tff.tensorflow.computation`s such as the server diagnostics), and those
    that are not mergeable, such as the lockstep diagnostic round, whose
    K + 1 aggregations depend on each other.

Why not TFF's `MergeableCompExecutionContext` itself (it is what
`tff.backends.native.set_mergeable_comp_execution_context` installs), although
we use its compiler and its subround split: measured on TFF 0.87, its
asynchronous path runs the workers one after another (RemoteExecutor makes
blocking gRPC calls inside coroutines, so one event loop waits for each
worker in turn), and it merges the partial aggregates in the order they
arrive, so with three or more workers the float32 sums, and the weights,
would depend on timing. Here each worker has a thread, and merging in
worker order makes the result a function of the data and the number of
workers only, which checkpoint/resume relies on.

The result is bit-identical to the native engine when each block but the
first holds one client (one worker, or two workers and at most three
clients); otherwise the weighted means are summed in another order,
(c0 + c1) + (c2 + c3) instead of ((c0 + c1) + c2) + c3, and the weights
differ from the native engine's in the last bits (a few 1e-9 after a round).

Failures: every worker must answer within `connect_timeout_s` at start, or
`WorkerUnreachableError` names each one that did not. During the run a
watcher thread checks each channel; a worker that stays unreachable for
`dead_after_s` (killed, out of memory, network gone) raises
`native.WorkerDiedError` naming it in the main thread, where TFF would retry
forever. The run then stops; its checkpoints let the same command resume
once the worker is back.

The workers have no authentication and no TLS: they must only be reachable
on a private network (see benchmarks/worker.py and docs/several-machines.md).
"""

import contextlib
import os
import signal
import threading
import time

from absl import logging
import grpc
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_localsgd.engines import native

CONNECT_TIMEOUT_S = 10.0
DEAD_AFTER_S = 10.0


class WorkerUnreachableError(ConnectionError):
  """Some --workers did not answer when the run started."""


def _open_channel(address: str):
  return grpc.insecure_channel(address, native._GRPC_OPTIONS)  # pylint: disable=protected-access


def check_workers(addresses, timeout_s: float = CONNECT_TIMEOUT_S):
  """Open channels to every address, or WorkerUnreachableError naming each
  one that did not answer within timeout_s (all are tried at once)."""
  channels = [_open_channel(a) for a in addresses]
  futures = [grpc.channel_ready_future(c) for c in channels]
  deadline = time.monotonic() + timeout_s
  unreachable = []
  for address, future in zip(addresses, futures):
    try:
      future.result(timeout=max(0.0, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
      future.cancel()
      unreachable.append(address)
  if unreachable:
    for c in channels:
      c.close()
    raise WorkerUnreachableError(
        f'TFF worker{"s" if len(unreachable) > 1 else ""} '
        f'{", ".join(unreachable)} (--workers) did not answer within '
        f'{timeout_s:.0f} s; is `python -m benchmarks.worker --port=P` running '
        'there, and is the port reachable from here?')
  return channels


def _has_client_data(type_signature) -> bool:
  return type_signature is not None and type_analysis.contains(
      type_signature, lambda t: isinstance(t, computation_types.FederatedType)
      and t.placement is tff.CLIENTS and not t.all_equal)


def _in_parallel(calls):
  """Runs the no-argument callables at once, one daemon thread each.

  Daemon threads: a call stuck on a dead worker must not keep the process
  alive after the run has stopped.
  """
  results, errors = [None] * len(calls), [None] * len(calls)

  def run(i):
    try:
      results[i] = calls[i]()
    except BaseException as e:  # pylint: disable=broad-except
      errors[i] = e

  threads = [threading.Thread(target=run, args=(i,), daemon=True,
                              name=f'remote-call-{i}')
             for i in range(len(calls))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for e in errors:
    if e is not None:
      raise e
  return results


class RemoteContext(context_base.SyncContext):
  """Runs mergeable computations spread over the workers, the rest on the
  first worker (see the module docstring)."""

  def __init__(self, contexts, addresses):
    self._contexts = contexts  # one native.execution_context per worker
    self._addresses = addresses
    self._forms = {}  # id(computation) -> (computation, form or None)

  def _form(self, comp):
    """comp's MergeableCompForm, or None: run it on the first worker."""
    if id(comp) not in self._forms:
      form = None
      if len(self._contexts) > 1 and isinstance(
          comp.type_signature, computation_types.FunctionType) and (
              _has_client_data(comp.type_signature.parameter)):
        try:
          form = tff.backends.native.compile_to_mergeable_comp_form(comp)
        except (ValueError, TypeError) as e:
          logging.info('not mergeable, runs on the first worker (%s): %s',
                       self._addresses[0], str(e).splitlines()[0][:200])
      self._forms[id(comp)] = (comp, form)  # comp kept: its id stays unique
    return self._forms[id(comp)][1]

  def invoke(self, comp, arg):
    form = self._form(comp)
    if form is None:
      return self._contexts[0].invoke(comp, arg)
    parts = (mergeable._split_value_into_subrounds(  # pylint: disable=protected-access
        arg, form.up_to_merge.type_signature.parameter, len(self._contexts))
             if arg is not None else [None] * len(self._contexts))
    workers = self._contexts[:len(parts)]
    partial = _in_parallel([
        lambda c=c, a=a: c.invoke(form.up_to_merge, a)
        for c, a in zip(workers, parts)])
    merged = partial[0]
    for p in partial[1:]:  # in worker order: the same sums every time
      merged = workers[0].invoke(form.merge, structure.Struct.unnamed(merged, p))

    def after_merge(context, part):
      return context.invoke(
          form.after_merge, merged if part is None
          else structure.Struct.unnamed(part, merged))

    result_type = form.after_merge.type_signature.result
    if type_analysis.contains_only(
        result_type, lambda t: not isinstance(t, computation_types.FederatedType)
        or t.all_equal):
      result = after_merge(workers[0], parts[0])
    else:  # per-client results: each worker computes its own clients'
      result = mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
          _in_parallel([lambda c=c, a=a: after_merge(c, a)
                        for c, a in zip(workers, parts)]), result_type)
    return type_conversions.type_to_py_container(result,
                                                 comp.type_signature.result)


class _Watcher:
  """Turns a worker that stays unreachable into WorkerDiedError in the main
  thread (TFF's RemoteExecutor would retry its calls forever).

  Like native.Worker.watch, it sends this process SIGUSR1, a real signal,
  which also wakes a main thread blocked waiting for a result.
  """

  def __init__(self, addresses, channels, dead_after_s: float):
    self._addresses = addresses
    self._channels = channels
    self._dead_after_s = dead_after_s
    self._stop = threading.Event()
    self.dead = None
    self._previous = None
    self._threads = []

  def _raise_died(self, signum, frame):
    if self.dead is not None and not self._stop.is_set():
      raise native.WorkerDiedError(
          f'the TFF worker at {self.dead} (--workers) stopped answering for '
          f'{self._dead_after_s:.0f} s during the run; the run stopped. Once '
          'it is back, rerun the same command to resume from the last '
          'checkpoint')

  def _watch(self, address, channel):
    while not self._stop.wait(1.0):
      future = grpc.channel_ready_future(channel)
      try:
        future.result(timeout=self._dead_after_s)
      except grpc.FutureTimeoutError:
        future.cancel()
        if not self._stop.is_set() and self.dead is None:
          self.dead = address
          # To the process, so the kernel wakes the main thread with it.
          os.kill(os.getpid(), signal.SIGUSR1)
        return

  def start(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGUSR1, self._raise_died)
    else:
      logging.warning('remote engine outside the main thread: a dead worker '
                      'will not stop the run')
    self._threads = [
        threading.Thread(target=self._watch, args=(address, channel),
                         daemon=True, name=f'watch-{address}')
        for address, channel in zip(self._addresses, self._channels)]
    for t in self._threads:
      t.start()

  def stop(self):
    self._stop.set()
    for t in self._threads:
      t.join(timeout=2.0)
    if self._previous is not None:
      signal.signal(signal.SIGUSR1, self._previous)


@contextlib.contextmanager
def remote_engine(addresses, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                  dead_after_s: float = DEAD_AFTER_S):
  """Runs the TFF computations called inside the block on the workers at
  `addresses` ('host:port'), spreading the clients over them.

  Raises WorkerUnreachableError at start (naming every worker that did not
  answer) and native.WorkerDiedError from inside the block when a worker
  stays unreachable for dead_after_s.
  """
  addresses = list(addresses)
  channels = check_workers(addresses, connect_timeout_s)
  contexts = [native.execution_context(tff.framework.RemoteExecutorGrpcStub(c))
              for c in channels]
  watcher = _Watcher(addresses, channels, dead_after_s)
  watcher.start()
  try:
    with tff.framework.get_context_stack().install(
        RemoteContext(contexts, addresses)):
      yield addresses
  except BaseException:
    watcher.stop()
    # Closing cancels calls still retrying on a dead worker, so no thread
    # keeps calling it after the run. Only then: closing races with gRPC's
    # connectivity polling, which may print a harmless traceback.
    for c in channels:
      c.close()
    raise
  watcher.stop()
