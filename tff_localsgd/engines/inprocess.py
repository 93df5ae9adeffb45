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
on `device` (the GPU when TensorFlow sees one), keeping the intermediate
values on the device. A computation of type (<S@SERVER, {D}@CLIENTS> ->
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
import weakref

from absl import logging
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


def _unflatten(type_spec, tensors):
  """A Python value of type_spec (containers as the type says) from tensors."""
  if isinstance(type_spec, computation_types.FederatedType):
    type_spec = type_spec.member
  if isinstance(type_spec, computation_types.TensorType):
    return next(tensors).numpy()
  elements = [(name, _unflatten(t, tensors))
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
  into a tf.function placed on `device`.
  """

  def __init__(self, comp, device: str):
    proto = tff.framework.ConcreteComputation.get_proto(comp).tensorflow
    graph_def = serialization_utils.unpack_graph_def(proto.graph_def)
    inputs = _binding_names(proto.parameter)
    outputs = _binding_names(proto.result)
    token = proto.session_token_tensor_name
    if proto.initialize_op:
      raise NotImplementedError('computations with variables (an initialize '
                                'op) are not supported in-process')
    self.parameter_leaves = _leaves(comp.type_signature.parameter)
    self.num_results = len(outputs)

    def body(*args):
      input_map = dict(zip(inputs, args))
      if token:
        input_map[token] = tf.constant('')
      return tf.graph_util.import_graph_def(
          graph_def, input_map=input_map, return_elements=outputs, name='')

    specs = [tf.TensorSpec(t.shape, t.dtype) for t in self.parameter_leaves]
    with tf.device(device):
      self._fn = tf.compat.v1.wrap_function(body, specs)

  def __call__(self, *flat):
    return list(self._fn(*flat))


class MapReduceRound:
  """A (<S@SERVER, {D}@CLIENTS> -> <S@SERVER, X@SERVER>) round, run in-process.

  Called with (state, [client values]) as Python values, returns
  (state', server output) as Python values of the computation's result type.
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
    work_result = form.work.type_signature.result
    self.num_updates = len(_leaves(work_result[0]))

  def __call__(self, state, clients):
    state_type, clients_type = self.parameter_type[0], self.parameter_type[1]
    with tf.device(self.device):
      flat_state = [tf.convert_to_tensor(v) for v in _flatten(state,
                                                             state_type)]
      broadcast = self.prepare(*flat_state)
      accumulator = self.zero()
      for client in clients:
        data = [tf.convert_to_tensor(v)
                for v in _flatten(client, clients_type.member)]
        update = self.work(*data, *broadcast)[:self.num_updates]
        accumulator = self.accumulate(*accumulator, *update)
      result = self.update(*flat_state, *self.report(*accumulator))
    return _unflatten(self.result_type, iter(result))


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
      return lambda arg: _unflatten(result, iter(graph(
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
    return lambda arg: runner(arg[0], arg[1])[1]

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
