"""A federated computation of any shape as one TensorFlow graph, in-process.

A round with one broadcast, one client map and one aggregation compiles to
a MapReduceForm (inprocess.MapReduceRound). A computation with more phases,
such as the lockstep diagnostic round (K + 1 aggregations, results placed
at the clients), has none; TFF's native runtime would run it and carry
every value across its gRPC boundary, which at m = 2048 took 4x the
round's TensorFlow work (reports/perf/PROFILE_round.md, section 7). Here:

  1. TFF's compiler pipeline for its native runtime lowers it:
     `replace_intrinsics_with_bodies` turns sums and (weighted) means into
     federated_aggregate with TFF's own zero, plus and divide computations,
     and `to_call_dominant` leaves a block of calls of intrinsics and of
     compiled TensorFlow computations.
  2. That block is evaluated symbolically, for the number n of clients of
     the call, into one graph: a value placed at the clients is the list of
     its n members; a compiled computation is imported into the graph
     (tf_graph.TFGraph.inline); an aggregation accumulates the members in
     client order from its zero, then reports; a broadcast gives each
     client the server's value.

One call of the computation is then one graph call, and no value leaves
TensorFlow in between. `initialize`, which has no clients' input, runs the
same way when nothing in it is placed at the clients. A computation that
calls an intrinsic outside SUPPORTED (secure sums, sequences,
federated_select), reads data, or has an all-equal value at the clients in
its argument or result is not compiled (`lower` returns None) and runs on
the native runtime.
"""

import functools
import itertools

import tensorflow as tf
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.environments.tensorflow_backend import tensorflow_tree_transformations
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.compiler import transformations
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.types import computation_types

from tff_localsgd.engines import tf_graph

SUPPORTED = frozenset({
    'federated_aggregate', 'federated_apply', 'federated_broadcast',
    'federated_eval_at_server', 'federated_map', 'federated_map_all_equal',
    'federated_value_at_clients', 'federated_value_at_server',
    'federated_zip_at_clients', 'federated_zip_at_server'})


def _children(block) -> list:
  if isinstance(block, building_blocks.Block):
    return [v for _, v in block.locals] + [block.result]
  if isinstance(block, building_blocks.Struct):
    return [v for _, v in structure.iter_elements(block)]
  return [c for c in (getattr(block, a, None) for a in
                      ('source', 'function', 'argument', 'result'))
          if isinstance(c, building_blocks.ComputationBuildingBlock)]


def _nodes(block):
  yield block
  for child in _children(block):
    yield from _nodes(child)


def _clients_at_boundary(type_spec) -> list:
  """The federated types at the clients among type_spec's elements."""
  if tf_graph.at_clients(type_spec):
    return [type_spec]
  if isinstance(type_spec, computation_types.StructType):
    return [t for _, e in structure.iter_elements(type_spec)
            for t in _clients_at_boundary(e)]
  return []


def lower(comp):
  """comp lowered as TFF lowers it for its native runtime (intrinsics
  replaced by their bodies, call-dominant form), or None if this module
  cannot run it: it needs the number of clients from the argument (a
  computation without clients' input may have no value at the clients:
  `initialize`)."""
  signature = comp.type_signature
  inputs = _clients_at_boundary(signature.parameter)
  outputs = _clients_at_boundary(signature.result)
  if any(t.all_equal for t in inputs + outputs):
    return None  # an all-equal value: the native runtime's
  block = building_blocks.ComputationBuildingBlock.from_proto(
      computation_impl.ConcreteComputation.get_proto(comp))
  block, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(
      block)
  block = transformations.to_call_dominant(block)
  for node in _nodes(block):
    if isinstance(node, building_blocks.Data) or (
        isinstance(node, building_blocks.Intrinsic)
        and node.uri not in SUPPORTED) or (
            not inputs and tf_graph.at_clients(node.type_signature)):
      return None
  return block


def _structured(type_spec, tensors, clients: int):
  """The evaluator's value of type_spec from an iterator of its tensors:
  a tensor, a Struct, or (placed at the clients) the list of members."""
  if tf_graph.at_clients(type_spec):
    return [_structured(type_spec.member, tensors, clients)
            for _ in range(clients)]
  if isinstance(type_spec, computation_types.FederatedType):
    return _structured(type_spec.member, tensors, clients)
  if isinstance(type_spec, computation_types.TensorType):
    return next(tensors)
  return structure.Struct([(name, _structured(t, tensors, clients))
                           for name, t in structure.iter_elements(type_spec)])


def _zip(value, i=None):
  """A struct of federated values as the federated value of its structs:
  member i of each at the clients (i given), or the server's."""
  if isinstance(value, list):
    return value if i is None else value[i]
  if isinstance(value, structure.Struct):
    return structure.Struct([(name, _zip(v, i))
                             for name, v in structure.iter_elements(value)])
  return value


class _Evaluator:
  """Evaluates a lowered computation into the graph being built."""

  def __init__(self, clients: int, device: str):
    self.clients, self.device = clients, device
    self._scopes = itertools.count()

  def intrinsic(self, uri: str):
    n = self.clients

    def each(arg):  # a map or an apply: each member, or the server's value
      fn, x = arg
      return [fn(v) for v in x] if isinstance(x, list) else fn(x)

    def aggregate(arg):
      values, accumulator, accumulate, _, report = arg
      for value in values:  # in client order, as the native runtime
        accumulator = accumulate(structure.Struct([(None, accumulator),
                                                   (None, value)]))
      return report(accumulator)

    return {
        'federated_aggregate': aggregate,
        'federated_apply': each,
        'federated_broadcast': lambda x: [x] * n,
        'federated_eval_at_server': lambda fn: fn(),
        'federated_map': each,
        'federated_map_all_equal': each,
        'federated_value_at_clients': lambda x: [x] * n,
        'federated_value_at_server': lambda x: x,
        'federated_zip_at_clients': lambda x: [_zip(x, i) for i in range(n)],
        'federated_zip_at_server': _zip,
    }[uri]

  def compiled(self, block):
    graph = tf_graph.TFGraph(block, self.device)
    signature = block.type_signature

    def call(arg=None):
      out = graph.inline(*tf_graph.flatten(arg, signature.parameter),
                         scope=f'c{next(self._scopes)}')
      return _structured(signature.result, iter(out), self.clients)
    return call

  def __call__(self, block, env: dict):
    """block's value in env (names -> values)."""
    b = building_blocks
    if isinstance(block, b.Reference):
      return env[block.name]
    if isinstance(block, b.Selection):
      source = self(block.source, env)
      return source[block.name if block.name is not None else block.index]
    if isinstance(block, b.Struct):
      return structure.Struct([(name, self(v, env)) for name, v in
                               structure.iter_elements(block)])
    if isinstance(block, b.Block):
      env = dict(env)
      for name, value in block.locals:
        env[name] = self(value, env)
      return self(block.result, env)
    if isinstance(block, b.Lambda):
      name = block.parameter_name
      return lambda arg=None: self(block.result, {**env, name: arg}
                                   if name else env)
    if isinstance(block, b.Call):
      fn = self(block.function, env)
      return fn() if block.argument is None else fn(self(block.argument, env))
    if isinstance(block, b.Intrinsic):
      return self.intrinsic(block.uri)
    if isinstance(block, b.CompiledComputation):
      return self.compiled(block)
    if isinstance(block, b.Literal):
      return tf.constant(block.value, block.type_signature.dtype)
    raise NotImplementedError(f'{type(block).__name__} in-process')


class FederatedGraph:
  """A lowered computation (`lower`) run as one graph on `device`:
  argument -> result as Python values, placed at the clients as lists."""

  def __init__(self, comp, block, device: str):
    self.block, self.device = block, device
    self.parameter_type = comp.type_signature.parameter
    self.result_type = comp.type_signature.result
    self._calls = {}  # clients -> its concrete function

  def _body(self, clients: int, *flat):
    fn = _Evaluator(clients, self.device)(self.block, {})
    result = (fn() if self.parameter_type is None else
              fn(_structured(self.parameter_type, iter(flat), clients)))
    return tf_graph.flatten(result, self.result_type, clients)

  def _clients(self, arg) -> int:
    """n: the length of the argument's values at the clients (0: none)."""
    if tf_graph.at_clients(self.parameter_type):
      return len(arg)
    if isinstance(self.parameter_type, computation_types.StructType):
      for i, (_, t) in enumerate(
          structure.iter_elements(self.parameter_type)):
        if tf_graph.at_clients(t):
          return len(arg[i])
    return 0

  def __call__(self, arg):
    clients = self._clients(arg)
    if clients not in self._calls:
      specs = tf_graph.specs(tf_graph.leaves(self.parameter_type, clients))
      with tf.device(self.device):
        self._calls[clients] = tf.compat.v1.wrap_function(
            functools.partial(self._body, clients), specs)
    call = self._calls[clients]
    with tf.device(self.device):
      flat = [tf.convert_to_tensor(v) for v in
              tf_graph.flatten(arg, self.parameter_type, clients)]
      out = call._call_flat(flat, call.captured_inputs)
    return tf_graph.unflatten(self.result_type, (t.numpy() for t in out),
                              clients)
