"""The in-process engine: TFF computations run by this process's TensorFlow.

TFF's native runtime executes every TensorFlow computation inside its
`worker_binary`, which links its own CPU-only TensorFlow: it never sees a GPU.
TFF compiles a round with one broadcast, one client map and one aggregation
into a MapReduceForm (`tff.backends.mapreduce`), whose pieces are plain
TensorFlow graphs:

    (<S@SERVER, {D}@CLIENTS> -> <S@SERVER, X@SERVER>)
    c = prepare(s);  u_i = work(d_i, c)[0] for each client i;
    a = report(accumulate(...accumulate(zero(), u_1)..., u_n));
    <s', x> = update(s, <a, <>, <>, <>>)

This engine compiles each such computation once and runs those graphs here,
on `device` (the GPU when TensorFlow sees one): the whole round as one graph,
one call per round (MapReduceRound), with the same bits as the pieces run
one by one. A computation of type (<S@SERVER, {D}@CLIENTS> ->
X@SERVER) (evaluation) is compiled as the round <s, d> -> <s, comp(s, d)>.
Plain `tff.tensorflow.computation`s (server-side diagnostics) run here too.

A computation with clients' input but no MapReduceForm, the lockstep
diagnostic round (K + 1 aggregations, results placed at the clients), runs
here too, as one graph of the form TFF lowers it to for its native runtime
(federated_graph.py), and so does `initialize` (no clients' input). What
federated_graph does not support goes to a native worker, which this
engine starts beside itself at the first such call.

MapReduceForm computations carry no secure aggregation here; a form that has
one is refused rather than run without it.
"""

import collections
import contextlib
import functools
import weakref

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.mapreduce import form_utils
from tensorflow_federated.python.core.impl.types import computation_types

from tff_localsgd.engines import federated_graph
from tff_localsgd.engines import native
from tff_localsgd.engines import tf_graph


def best_device() -> str:
  """'/GPU:0' if TensorFlow sees a GPU, else '/CPU:0'."""
  return '/GPU:0' if tf.config.list_physical_devices('GPU') else '/CPU:0'




# Clients per call of a fused round: one call for the suite's rounds (4 to
# 16 clients); a larger cohort runs in chunks, so a graph holds at most this
# many copies of the client's work.
CLIENTS_PER_CALL = 16


# Read-only client arrays whose tensors a round keeps for the next rounds
# (the first converted go first): the suite's 4 to 16 clients' x and y.
HELD_DATA = 64
# device -> {id(array): (array, tensor)}: the state the last round on the
# device returned, read-only, and its tensors, which the next round and the
# evaluations of that state take as they are (no conversion, no copy).
_HELD_STATE = {}


class MapReduceRound:
  """A (<S@SERVER, {D}@CLIENTS> -> <S@SERVER, X@SERVER>) round, run in-process.

  Called with (state, [client values]) as Python values, returns
  (state', server output) as Python values of the computation's result type.

  The round is one call of one graph (up to CLIENTS_PER_CALL clients; more
  are run in chunks of that many, carrying the accumulator): prepare, then
  work and accumulate of each client in cohort order, then report and
  update, each piece of the form imported as it is. The clients' work is
  independent, so TensorFlow may run it concurrently; every op gets the same
  inputs as when the pieces run one call at a time, so the result has the
  same bits (tests/test_engines.py).
  """

  def __init__(self, comp, form, device: str):
    self.device = device
    self.parameter_type = comp.type_signature.parameter
    self.result_type = comp.type_signature.result
    for name in ('secure_sum_bitwidth', 'secure_sum_max_input',
                 'secure_modular_sum_modulus'):
      if tf_graph.leaves(getattr(form, name).type_signature.result):
        raise NotImplementedError(f'{name}: secure aggregation is not '
                                  'supported in-process')
    self.prepare = tf_graph.TFGraph(form.prepare, device)
    self.work = tf_graph.TFGraph(form.work, device)
    self.zero = tf_graph.TFGraph(form.zero, device)
    self.accumulate = tf_graph.TFGraph(form.accumulate, device)
    self.report = tf_graph.TFGraph(form.report, device)
    self.update = tf_graph.TFGraph(form.update, device)
    self.num_updates = len(tf_graph.leaves(form.work.type_signature.result[0]))
    self._state = tf_graph.leaves(self.parameter_type[0])
    self._client = tf_graph.leaves(self.parameter_type[1].member)
    self._calls = {}  # (clients, first, last) -> its concrete function
    # id(array) -> (array, tensor), for read-only arrays: clients' data (up
    # to HELD_DATA arrays); the state the last round returned is
    # _HELD_STATE[device]'s.
    self._held_data = collections.OrderedDict()

  def _body(self, num_clients: int, first: bool, last: bool, *flat):
    """A chunk of the round on flat tensors.

    flat: the state, then (unless first) the broadcast and the accumulator,
    then each client's data. Returns the round's result if last, else the
    broadcast and the accumulator.
    """
    flat = list(flat)
    state = [flat.pop(0) for _ in self._state]
    if first:
      broadcast = self.prepare.inline(*state, scope='prepare')
      accumulator = self.zero.inline(scope='zero')
    else:
      broadcast = [flat.pop(0) for _ in self.prepare.result_leaves]
      accumulator = [flat.pop(0) for _ in self.zero.result_leaves]
    for i in range(num_clients):
      data = flat[i * len(self._client):(i + 1) * len(self._client)]
      update = self.work.inline(*data, *broadcast, scope=f'work_{i}')
      accumulator = self.accumulate.inline(
          *accumulator, *update[:self.num_updates], scope=f'accumulate_{i}')
    if not last:
      return list(broadcast) + list(accumulator)
    return self.update.inline(
        *state, *self.report.inline(*accumulator, scope='report'),
        scope='update')

  def _call(self, num_clients: int, first: bool, last: bool):
    """The concrete function of _body (built once per kind of chunk)."""
    key = (num_clients, first, last)
    if key not in self._calls:
      carried = [] if first else (self.prepare.result_leaves +
                                  self.zero.result_leaves)
      specs = tf_graph.specs(self._state + carried + self._client * num_clients)
      with tf.device(self.device):
        # wrap_function, not tf.function: automatic control dependencies
        # would tie the output to ops inside the TF1 while loops' frames.
        self._calls[key] = tf.compat.v1.wrap_function(
            functools.partial(self._body, *key), specs)
    return self._calls[key]

  def _tensor(self, value, held):
    """value as a tensor. A read-only array is converted once and then
    passed on as its tensor while `held` holds it (a round's state, given
    back as the next round's; a client's data, the same every round)."""
    if not isinstance(value, np.ndarray) or value.flags.writeable:
      return tf.convert_to_tensor(value)
    entry = held.get(id(value))
    if entry is None or entry[0] is not value:
      entry = held[id(value)] = (value, tf.convert_to_tensor(value))
    return entry[1]

  def __call__(self, state, clients, returns_state=True):
    """(state', output) of the round; returns_state=False (an evaluation,
    whose state' is its state): (None, output), and the state's tensors are
    left held for the next round."""
    state_type, clients_type = self.parameter_type[0], self.parameter_type[1]
    held = _HELD_STATE.setdefault(self.device, {})
    with tf.device(self.device):
      state = [self._tensor(v, held)
               for v in tf_graph.flatten(state, state_type)]
      carried = []
      for start in range(0, max(len(clients), 1), CLIENTS_PER_CALL):
        chunk = clients[start:start + CLIENTS_PER_CALL]
        data = [self._tensor(v, self._held_data) for client in chunk
                for v in tf_graph.flatten(client, clients_type.member)]
        call = self._call(len(chunk), start == 0,
                          start + CLIENTS_PER_CALL >= len(clients))
        # _call_flat: the flat tensors as they are, without __call__'s
        # structuring of its arguments.
        carried = call._call_flat([*state, *carried, *data],
                                  call.captured_inputs)
    while len(self._held_data) > HELD_DATA:
      self._held_data.popitem(last=False)
    if not returns_state:
      return None, tf_graph.unflatten(self.result_type[1], (
          t.numpy() for t in carried[len(self._state):]))
    arrays = [t.numpy() for t in carried]
    held.clear()
    for array, tensor in zip(arrays, carried[:len(self._state)]):
      array.setflags(write=False)
      held[id(array)] = (array, tensor)
    return tf_graph.unflatten(self.result_type, iter(arrays))


def _state_and(comp):
  """<s, d> -> <s, comp(s, d)>: an evaluation as a MapReduceForm round."""
  server_type, clients_type = comp.type_signature.parameter

  @tff.federated_computation(server_type, clients_type)
  def round_fn(state, data):
    return state, comp(state, data)
  return round_fn


# (id(comp), device) -> runner or None, while comp lives: a computation
# shared by the runs of one process (training's cache) compiles once.
_compiled = {}


class InProcessContext(tff.framework.SyncContext):
  """Runs what compiles to a MapReduceForm, or to one graph, here; the rest
  on a native worker started at the first such call (`start_fallback`:
  () -> its execution context)."""

  def __init__(self, device: str, start_fallback):
    self.device = device
    self._start_fallback = start_fallback
    self._fallback = None

  @property
  def fallback(self):
    """The native worker's execution context, started now if not yet."""
    if self._fallback is None:
      self._fallback = self._start_fallback()
    return self._fallback

  def _runner(self, comp):
    key = (id(comp), self.device)
    if key not in _compiled:
      _compiled[key] = self._compile(comp)
      weakref.finalize(comp, _compiled.pop, key, None)
    return _compiled[key]

  def runs_here(self, comp) -> bool:
    """Whether a call of comp ran (or would run) in this process."""
    return _compiled.get((id(comp), self.device)) is not None

  def prepare(self, computations):
    """Compiles the computations now rather than at their first call."""
    for comp in computations:
      self._runner(comp)

  def _compile(self, comp):
    """The runner of comp: (argument -> result); it holds comp's types, not
    comp, so that comp can be collected."""
    kind = tff.framework.ConcreteComputation.get_proto(comp).WhichOneof(
        'computation')
    parameter, result = comp.type_signature.parameter, comp.type_signature.result
    if kind == 'tensorflow':
      graph = tf_graph.TFGraph(comp, self.device)
      return lambda arg: tf_graph.unflatten(result, (t.numpy() for t in graph(
          *tf_graph.flatten(arg, parameter))))
    runner = self._map_reduce(comp)
    if runner is not None:
      return runner
    # No MapReduceForm (the lockstep round's K + 1 aggregations, initialize's
    # missing clients): one graph of its lowered form, or TFF's native
    # runtime if it has what that lacks.
    block = federated_graph.lower(comp)
    logging.info('in-process engine: %s has no MapReduceForm; it runs %s',
                 comp.type_signature, 'as one graph' if block else 'natively')
    return block and federated_graph.FederatedGraph(comp, block, self.device)

  def _map_reduce(self, comp):
    """comp's runner as a MapReduceRound, or None if it has no
    MapReduceForm."""
    parameter, result = comp.type_signature.parameter, comp.type_signature.result
    if not (isinstance(parameter, computation_types.StructType)
            and len(parameter) == 2):
      return None
    as_round = (comp if isinstance(result, computation_types.StructType)
                else _state_and(comp))
    try:
      form = form_utils.get_map_reduce_form_for_computation(as_round)
    except Exception:  # pylint: disable=broad-except
      return None
    runner = MapReduceRound(as_round, form, self.device)
    if as_round is comp:
      return lambda arg: runner(arg[0], arg[1])
    return lambda arg: runner(arg[0], arg[1], returns_state=False)[1]

  def invoke(self, comp, arg):
    runner = self._runner(comp)
    if runner is None:
      return self.fallback.invoke(comp, arg)
    return runner(arg)  # a Struct of the arguments: indexable by position


@contextlib.contextmanager
def inprocess_engine(device: str = '', log_path: str | None = None):
  """Runs TFF computations inside the block in-process on `device`.

  device '' means best_device(). A native worker, started when first
  needed, serves what runs neither as a MapReduceForm nor as one graph.
  """
  device = device or best_device()
  if log_path:
    open(log_path, 'ab').close()  # the run's files, with or without one
  with contextlib.ExitStack() as stack:
    context = InProcessContext(device, lambda: stack.enter_context(
        native.started(log_path))[1])
    with tff.framework.get_context_stack().install(context):
      yield context
