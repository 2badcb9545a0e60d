"""Pure graph walking: which tensors a tensor depends on, and how.

Everything here reads a ``tf.Graph`` and never changes it: no ops are created,
no collection is touched, no session runs. A walk follows *data* inputs only
(a control dependency adds nothing to a value) and, in its differentiable
form, only the edges a gradient can flow along, which is what decides whether
a regularization loss takes part in training.

Tensors are keyed by ``(op, output_index)``: graph-mode ``tf.Tensor`` objects
are unhashable when TF2 behaviour is on, operations are not.
"""

import collections
from typing import Dict, FrozenSet, Hashable, Iterable, Iterator, Optional, Set, Tuple

import tensorflow as tf
# The gradient registry is the only place that says whether TensorFlow can
# differentiate an op; tf.gradients consults the same function.
from tensorflow.python.framework import ops as _tf_ops

_GRADIENT_REGISTRY = getattr(_tf_ops, "gradient_registry", None) or getattr(
    _tf_ops, "_gradient_registry")

__all__ = (
    "TensorKey",
    "Walk",
    "captured_outer_tensors",
    "carries_gradient",
    "is_lazy_tensor",
    "key",
    "lazy_copies",
    "op_is_differentiable",
    "variable_key_ops",
)

TensorKey = Tuple[tf.Operation, int]

# Ops that have a registered gradient function which always returns None:
# tf.gradients treats them as cutting the path, like StopGradient does.
# (tensorflow/python/ops/math_grad.py and control_flow_grad.py; a test checks
# every entry against tf.gradients.)
NONE_GRADIENT_OPS: FrozenSet[str] = frozenset({
    "ArgMax", "ArgMin", "Ceil", "Floor", "FloorDiv", "LoopCond", "Rint",
    "Round", "TruncateDiv",
})

# Ops that pass values but never gradients. StopGradient and PreventGradient
# are registered as not differentiable; listed here so the rule reads plainly.
BLOCKING_OPS: FrozenSet[str] = frozenset({"StopGradient", "PreventGradient"})


def key(tensor) -> TensorKey:
  """The hashable identity of a graph tensor."""
  return (tensor.op, tensor.value_index)


def is_lazy_tensor(tensor) -> bool:
  """Whether ``tensor`` builds new ops each time it is used.

  Partitioned variables put their regularization into the collection as such
  lazy tensors: each conversion (``tf.add_n(collection)``, say) builds a fresh
  copy of the regularizer, so the copy in a loss is never the tensor in the
  collection.
  """
  return hasattr(tensor, "_master_tensor") and hasattr(tensor, "_thunk")


def carries_gradient(dtype) -> bool:
  base = dtype.base_dtype
  return base.is_floating or base.is_complex or base in (tf.resource,
                                                         tf.variant)


_differentiable_cache: Dict[str, bool] = {}


def _type_is_differentiable(op_type: str) -> bool:
  cached = _differentiable_cache.get(op_type)
  if cached is None:
    if op_type in BLOCKING_OPS or op_type in NONE_GRADIENT_OPS:
      cached = False
    else:
      try:
        cached = _GRADIENT_REGISTRY.lookup(op_type) is not None
      except LookupError:
        cached = False  # No gradient registered: tf.gradients fails here.
    _differentiable_cache[op_type] = cached
  return cached


def op_is_differentiable(op) -> bool:
  """Whether TensorFlow can send a gradient through ``op`` at all.

  Decided by op type, except for a ``tf.function`` call, which carries its
  own gradient function, and an op given another gradient through
  ``gradient_override_map`` or ``tf.custom_gradient`` (a straight-through
  ``Round``, say), which carries the type whose gradient it uses.
  """
  op_type = op.type
  result = _type_is_differentiable(op_type)
  if result and op_type != "IdentityN":
    return result
  if getattr(op, "_gradient_function", None) is not None:
    return True  # A tf.function call carries its own gradient function.
  try:
    override = op.get_attr("_gradient_op_type")
  except ValueError:
    return result
  if isinstance(override, bytes):
    override = override.decode()
  if override in BLOCKING_OPS or override in NONE_GRADIENT_OPS:
    return False
  try:
    return _GRADIENT_REGISTRY.lookup(override) is not None
  except LookupError:
    return False


def _data_inputs(op, differentiable: bool) -> Iterator:
  if differentiable and not op_is_differentiable(op):
    return iter(())
  inputs = op.inputs
  if not differentiable:
    return iter(inputs)
  return (t for t in inputs if carries_gradient(t.dtype))


class Walk:
  """The ancestors of some tensors, following data edges backwards.

  Attributes:
    differentiable: whether only gradient-carrying edges were followed.
    reached: keys of every tensor reached, the start tensors included.
    ops: every op reached.
  """

  def __init__(self, starts: Iterable, *, differentiable: bool,
               stop_at: Optional[Set[tf.Operation]] = None):
    self.differentiable = differentiable
    self.reached: Set[TensorKey] = set()
    self.ops: Set[tf.Operation] = set()
    queue = collections.deque()
    for tensor in starts:
      if differentiable and not carries_gradient(tensor.dtype):
        continue
      self.reached.add(key(tensor))
      queue.append(tensor.op)
    reached, ops = self.reached, self.ops
    while queue:
      op = queue.popleft()
      if op in ops:
        continue
      ops.add(op)
      if stop_at is not None and op in stop_at:
        continue
      for tensor in _data_inputs(op, differentiable):
        reached.add((tensor.op, tensor.value_index))
        if tensor.op not in ops:
          queue.append(tensor.op)

  def __contains__(self, tensor_key: TensorKey) -> bool:
    return tensor_key in self.reached


def variable_key_ops(variables: Iterable) -> Dict[tf.Operation, object]:
  """Maps the op that owns each variable's storage to the variable.

  That op is ``VarHandleOp`` for a resource variable and ``VariableV2`` for a
  ref variable; reads of either lead back to it along gradient-carrying edges.
  """
  owners = {}
  for variable in variables:
    for part in _shards(variable):
      owners[part.op] = part
  return owners


def _shards(variable) -> Iterator:
  # PartitionedVariable iterates over its shards; plain variables do not.
  if hasattr(variable, "_get_variable_list"):
    yield from variable._get_variable_list()  # pylint: disable=protected-access
  elif hasattr(variable, "_values") and hasattr(variable, "_primary"):
    yield from variable._values  # pylint: disable=protected-access
  else:
    yield variable


def captured_outer_tensors(tensor, outer_graph) -> Tuple[object, ...]:
  """Outer-graph tensors a function-graph tensor's value is computed from.

  A layer built inside a ``tf.cond`` branch (control flow v2) puts a tensor of
  the branch's function graph into the outer collection. It can never be
  added to an outer loss, but the variables it regularizes are still the
  outer ones its graph captured.
  """
  found = []
  graph = tensor.graph
  tensors = [tensor]
  while graph is not outer_graph and hasattr(graph, "captures"):
    internal_to_external = {}
    for external, internal in graph.captures:
      internal_to_external[key(internal)] = external
    walk = Walk(tensors, differentiable=True)
    tensors = [internal_to_external[k] for k in walk.reached
               if k in internal_to_external]
    graph = getattr(graph, "outer_graph", None)
    if graph is None:
      break
  if graph is outer_graph:
    found = tensors
  return tuple(found)


def _signature(tensor, memo: Dict[TensorKey, Hashable]) -> Hashable:
  """A value that is equal for two tensors computed the same way.

  Names and private attributes (colocation, for one) are left out; leaves
  are variables and placeholders by identity and constants by value.
  """
  stack = [tensor]
  while stack:
    current = stack[-1]
    current_key = key(current)
    if current_key in memo:
      stack.pop()
      continue
    op = current.op
    pending = [t for t in op.inputs if key(t) not in memo]
    if pending:
      stack.extend(pending)
      continue
    stack.pop()
    if op.type == "Const":
      value = op.node_def.attr["value"].SerializeToString(deterministic=True)
      memo[current_key] = ("Const", value)
      continue
    if not op.inputs:
      memo[current_key] = ("leaf", id(op))
      continue
    attrs = tuple(sorted(
        (name, value.SerializeToString(deterministic=True))
        for name, value in op.node_def.attr.items()
        if not name.startswith("_")))
    memo[current_key] = (op.type, current.value_index, attrs,
                         tuple(memo[key(t)] for t in op.inputs))
  return memo[key(tensor)]


def lazy_copies(lazy_tensor, walk: Walk,
                memo: Dict[TensorKey, Hashable]) -> Tuple[TensorKey, ...]:
  """Keys in ``walk`` of tensors built by converting ``lazy_tensor``."""
  master = lazy_tensor._master_tensor  # pylint: disable=protected-access
  master_key = key(master)
  if master_key in walk.reached:
    return (master_key,)
  wanted = _signature(master, memo)
  candidates = [
      k for k in walk.reached
      if k[0].type == master.op.type and k[1] == master.value_index
  ]
  return tuple(k for k in candidates
               if _signature(k[0].outputs[k[1]], memo) == wanted)
