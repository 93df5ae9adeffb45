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

Everything else goes to the native engine, which this engine starts beside
itself: `initialize` (no client input), and the lockstep diagnostic round
(K + 1 aggregations, results placed at the clients).

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
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.mapreduce import form_utils
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.tensorflow_libs import serialization_utils

from tff_localsgd.engines import native


def best_device() -> str:
  """'/GPU:0' if TensorFlow sees a GPU, else '/CPU:0'."""
  return '/GPU:0' if tf.config.list_physical_devices('GPU') else '/CPU:0'


def _leaves(type_spec) -> list:
  """The TensorTypes of type_spec, in TFF's flattening order."""
  if type_spec is None:
    return []
  if isinstance(type_spec, computation_types.FederatedType):
    return _leaves(type_spec.member)
  if isinstance(type_spec, computation_types.TensorType):
    return [type_spec]
  return [leaf for _, t in structure.iter_elements(type_spec)
          for leaf in _leaves(t)]


def _flatten(value, type_spec) -> list:
  """The tensors of a Python value of type_spec, in TFF's order."""
  if isinstance(type_spec, computation_types.FederatedType):
    type_spec = type_spec.member
  if isinstance(type_spec, computation_types.TensorType):
    return [value]
  if isinstance(value, structure.Struct):
    value = structure.to_odict_or_tuple(value)
  out = []
  for i, (name, t) in enumerate(structure.iter_elements(type_spec)):
    element = (value[name] if name and isinstance(value, collections.abc.Mapping)
               else value[i])
    out.extend(_flatten(element, t))
  return out


def _unflatten(type_spec, arrays):
  """A Python value of type_spec (containers as the type says) from an
  iterator of its leaves' arrays."""
  if isinstance(type_spec, computation_types.FederatedType):
    type_spec = type_spec.member
  if isinstance(type_spec, computation_types.TensorType):
    return next(arrays)
  elements = [(name, _unflatten(t, arrays))
              for name, t in structure.iter_elements(type_spec)]
  container = getattr(type_spec, 'python_container', None)
  named = all(name for name, _ in elements) and elements
  if container is None:
    container = collections.OrderedDict if named else tuple
  if named and issubclass(container, collections.abc.Mapping):
    return container(elements)
  return container(v for _, v in elements)


def _binding_names(binding) -> list[str]:
  kind = binding.WhichOneof('binding')
  if kind is None:
    return []
  if kind == 'tensor':
    return [binding.tensor.tensor_name]
  if kind == 'struct':
    return [n for e in binding.struct.element for n in _binding_names(e)]
  raise NotImplementedError(f'{kind} bindings (datasets) are not supported '
                            'by the in-process engine')


class TFGraph:
  """A TFF TensorFlow computation as a function of flat tensor lists.

  (flat parameter tensors -> flat result tensors), its graph imported once
  into a function placed on `device`; `inline` imports it into the graph
  being built instead (MapReduceRound's fused round).
  """

  def __init__(self, comp, device: str):
    proto = tff.framework.ConcreteComputation.get_proto(comp).tensorflow
    self._graph_def = serialization_utils.unpack_graph_def(proto.graph_def)
    self._inputs = _binding_names(proto.parameter)
    self._outputs = _binding_names(proto.result)
    self._token = proto.session_token_tensor_name
    if proto.initialize_op:
      raise NotImplementedError('computations with variables (an initialize '
                                'op) are not supported in-process')
    self.parameter_leaves = _leaves(comp.type_signature.parameter)
    self.result_leaves = _leaves(comp.type_signature.result)
    self.device = device
    with tf.device(device):
      self._fn = tf.compat.v1.wrap_function(self.inline,
                                            _specs(self.parameter_leaves))

  def inline(self, *args, scope: str = '') -> list:
    """The computation's result tensors for `args`: its ops imported into
    the graph being built, under `scope`."""
    input_map = dict(zip(self._inputs, args))
    if self._token:
      input_map[self._token] = tf.constant('')
    graph_def = _in_frames(self._graph_def, scope) if scope else self._graph_def
    return tf.graph_util.import_graph_def(
        graph_def, input_map=input_map, return_elements=self._outputs,
        name=scope)

  def __call__(self, *flat):
    # The call's device places the function: its tracing scope does not.
    with tf.device(self.device):
      return list(self._fn(*flat))


def _specs(leaves) -> list:
  return [tf.TensorSpec(t.shape, t.dtype) for t in leaves]


def _in_frames(graph_def, scope: str):
  """graph_def with the frames of its (TF1) while loops renamed into scope:
  two imports of one loop into a graph must not share a frame."""
  renamed = type(graph_def)()
  renamed.CopyFrom(graph_def)
  for node in renamed.node:
    if node.op in ('Enter', 'RefEnter'):
      frame = node.attr['frame_name'].s.decode()
      node.attr['frame_name'].s = f'{scope}/{frame}'.encode()
  return renamed


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
      if _leaves(getattr(form, name).type_signature.result):
        raise NotImplementedError(f'{name}: secure aggregation is not '
                                  'supported in-process')
    self.prepare = TFGraph(form.prepare, device)
    self.work = TFGraph(form.work, device)
    self.zero = TFGraph(form.zero, device)
    self.accumulate = TFGraph(form.accumulate, device)
    self.report = TFGraph(form.report, device)
    self.update = TFGraph(form.update, device)
    self.num_updates = len(_leaves(form.work.type_signature.result[0]))
    self._state = _leaves(self.parameter_type[0])
    self._client = _leaves(self.parameter_type[1].member)
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
      specs = _specs(self._state + carried + self._client * num_clients)
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
      state = [self._tensor(v, held) for v in _flatten(state, state_type)]
      carried = []
      for start in range(0, max(len(clients), 1), CLIENTS_PER_CALL):
        chunk = clients[start:start + CLIENTS_PER_CALL]
        data = [self._tensor(v, self._held_data) for client in chunk
                for v in _flatten(client, clients_type.member)]
        call = self._call(len(chunk), start == 0,
                          start + CLIENTS_PER_CALL >= len(clients))
        # _call_flat: the flat tensors as they are, without __call__'s
        # structuring of its arguments.
        carried = call._call_flat([*state, *carried, *data],
                                  call.captured_inputs)
    while len(self._held_data) > HELD_DATA:
      self._held_data.popitem(last=False)
    if not returns_state:
      return None, _unflatten(self.result_type[1], (
          t.numpy() for t in carried[len(self._state):]))
    arrays = [t.numpy() for t in carried]
    held.clear()
    for array, tensor in zip(arrays, carried[:len(self._state)]):
      array.setflags(write=False)
      held[id(array)] = (array, tensor)
    return _unflatten(self.result_type, iter(arrays))


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
  """Runs what compiles to a MapReduceForm here; the rest on `fallback`."""

  def __init__(self, device: str, fallback):
    self.device = device
    self._fallback = fallback

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
      graph = TFGraph(comp, self.device)
      return lambda arg: _unflatten(result, (t.numpy() for t in graph(
          *_flatten(arg, parameter))))
    if not (isinstance(parameter, computation_types.StructType)
            and len(parameter) == 2):
      return None
    as_round = (comp if isinstance(result, computation_types.StructType)
                else _state_and(comp))
    try:
      form = form_utils.get_map_reduce_form_for_computation(as_round)
    except Exception as e:  # pylint: disable=broad-except
      # Not a single-aggregation round: TFF's native runtime runs it.
      logging.info('in-process engine: %s runs natively (%s)',
                   comp.type_signature, type(e).__name__)
      return None
    runner = MapReduceRound(as_round, form, self.device)
    if as_round is comp:
      return lambda arg: runner(arg[0], arg[1])
    return lambda arg: runner(arg[0], arg[1], returns_state=False)[1]

  def invoke(self, comp, arg):
    runner = self._runner(comp) if arg is not None else None
    if runner is None:
      return self._fallback.invoke(comp, arg)
    return runner(arg)  # a Struct of the arguments: indexable by position


@contextlib.contextmanager
def inprocess_engine(device: str = '', log_path: str | None = None):
  """Runs TFF computations inside the block in-process on `device`.

  device '' means best_device(). A native worker serves what has no
  MapReduceForm.
  """
  device = device or best_device()
  with native.native_engine(log_path=log_path):
    fallback = tff.framework.get_context_stack().current
    context = InProcessContext(device, fallback)
    with tff.framework.get_context_stack().install(context):
      yield context
