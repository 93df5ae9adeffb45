"""TFF TensorFlow computations as TensorFlow functions of flat tensor lists.

The pieces both in-process runners build on (inprocess.MapReduceRound,
federated_graph.FederatedGraph): a type's tensor leaves in TFF's flattening
order, Python values flattened to them and rebuilt from them, and TFGraph,
a compiled TFF computation imported as a TensorFlow graph.
"""

import collections
import functools

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.tensorflow_libs import serialization_utils


def at_clients(type_spec) -> bool:
  """Whether type_spec is a federated type placed at the clients."""
  return (isinstance(type_spec, computation_types.FederatedType)
          and type_spec.placement == placements.CLIENTS)


def _per_client(type_spec, clients) -> bool:
  """Whether type_spec is a value of each of `clients` clients (a list)."""
  return (clients is not None and at_clients(type_spec)
          and not type_spec.all_equal)


def leaves(type_spec, clients: int | None = None) -> list:
  """The TensorTypes of type_spec, in TFF's flattening order. clients: the
  number of clients, whose values placed there are lists (client by
  client); None: a federated type is its member."""
  if type_spec is None:
    return []
  if _per_client(type_spec, clients):
    return leaves(type_spec.member) * clients
  if isinstance(type_spec, computation_types.FederatedType):
    return leaves(type_spec.member)
  if isinstance(type_spec, computation_types.TensorType):
    return [type_spec]
  return [leaf for _, t in structure.iter_elements(type_spec)
          for leaf in leaves(t, clients)]


def flatten(value, type_spec, clients: int | None = None) -> list:
  """The tensors of a Python value of type_spec, in TFF's order (clients:
  as for `leaves`)."""
  if type_spec is None:
    return []
  if _per_client(type_spec, clients):
    if len(value) != clients:
      raise ValueError(f'{len(value)} client values for {clients} clients')
    return [t for v in value for t in flatten(v, type_spec.member)]
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
    out.extend(flatten(element, t, clients))
  return out


def unflatten(type_spec, arrays, clients: int | None = None):
  """A Python value of type_spec (containers as the type says) from an
  iterator of its leaves' arrays (clients: as for `leaves`)."""
  if _per_client(type_spec, clients):
    return [unflatten(type_spec.member, arrays) for _ in range(clients)]
  if isinstance(type_spec, computation_types.FederatedType):
    type_spec = type_spec.member
  if isinstance(type_spec, computation_types.TensorType):
    return next(arrays)
  elements = [(name, unflatten(t, arrays, clients))
              for name, t in structure.iter_elements(type_spec)]
  container = getattr(type_spec, 'python_container', None)
  named = all(name for name, _ in elements) and elements
  if container is None:
    container = collections.OrderedDict if named else tuple
  if named and issubclass(container, collections.abc.Mapping):
    return container(elements)
  return container(v for _, v in elements)


def binding_names(binding) -> list[str]:
  kind = binding.WhichOneof('binding')
  if kind is None:
    return []
  if kind == 'tensor':
    return [binding.tensor.tensor_name]
  if kind == 'struct':
    return [n for e in binding.struct.element for n in binding_names(e)]
  raise NotImplementedError(f'{kind} bindings (datasets) are not supported '
                            'by the in-process engine')


class TFGraph:
  """A TFF TensorFlow computation as a function of flat tensor lists.

  comp: a computation (tff.Computation) or a compiled building block.
  Called: (flat parameter tensors -> flat result tensors), its graph imported
  once into a function placed on `device`; `inline` imports it into the
  graph being built instead (the in-process runners' fused graphs).
  """

  def __init__(self, comp, device: str):
    proto = (comp.proto if isinstance(comp, building_blocks.CompiledComputation)
             else tff.framework.ConcreteComputation.get_proto(comp)).tensorflow
    self._graph_def = serialization_utils.unpack_graph_def(proto.graph_def)
    self._inputs = binding_names(proto.parameter)
    self._outputs = binding_names(proto.result)
    self._token = proto.session_token_tensor_name
    if proto.initialize_op:
      raise NotImplementedError('computations with variables (an initialize '
                                'op) are not supported in-process')
    self.parameter_leaves = leaves(comp.type_signature.parameter)
    self.result_leaves = leaves(comp.type_signature.result)
    self.device = device

  @functools.cached_property
  def _fn(self):
    with tf.device(self.device):
      return tf.compat.v1.wrap_function(self.inline,
                                        specs(self.parameter_leaves))

  def inline(self, *args, scope: str = '') -> list:
    """The computation's result tensors for `args`: its ops imported into
    the graph being built, under `scope`."""
    input_map = dict(zip(self._inputs, args))
    if self._token:
      input_map[self._token] = tf.constant('')
    graph_def = in_frames(self._graph_def, scope) if scope else self._graph_def
    return tf.graph_util.import_graph_def(
        graph_def, input_map=input_map, return_elements=self._outputs,
        name=scope)

  def __call__(self, *flat):
    # The call's device places the function: its tracing scope does not.
    with tf.device(self.device):
      return list(self._fn(*flat))


def specs(types) -> list:
  return [tf.TensorSpec(t.shape, t.dtype) for t in types]


def in_frames(graph_def, scope: str):
  """graph_def with the frames of its (TF1) while loops renamed into scope:
  two imports of one loop into a graph must not share a frame."""
  renamed = type(graph_def)()
  renamed.CopyFrom(graph_def)
  for node in renamed.node:
    if node.op in ('Enter', 'RefEnter'):
      frame = node.attr['frame_name'].s.decode()
      node.attr['frame_name'].s = f'{scope}/{frame}'.encode()
  return renamed
