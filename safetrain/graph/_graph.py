"""Pure graph walking: which tensors a tensor depends on, and how.

Everything here reads a ``tf.Graph`` and never changes it: no ops are created
in it, no collection is touched, no session runs (a called ``tf.function``'s
body is read into a graph of its own). A walk follows *data* inputs only
(a control dependency adds nothing to a value) and, in its differentiable
form, only the edges a gradient can flow along, which is what decides whether
a regularization loss takes part in training.

Tensors are keyed by ``(op, output_index)``: graph-mode ``tf.Tensor`` objects
are unhashable when TF2 behaviour is on, operations are not.
"""

import collections
from typing import (
  Any,
  Callable,
  Dict,
  FrozenSet,
  Iterable,
  Iterator,
  List,
  NamedTuple,
  Optional,
  Set,
  Tuple,
)
import weakref

import tensorflow as tf

# A called function's body, as a graph of its own, to walk it.
from tensorflow.python.framework import function_def_to_graph as _fdef_to_graph

# The gradient registry is the only place that says whether TensorFlow can
# differentiate an op; tf.gradients consults the same function.
# Op signatures, to tell which ops' attributes are only their dtypes.
from tensorflow.python.framework import op_def_registry as _op_def_registry
from tensorflow.python.framework import ops as _tf_ops

_GRADIENT_REGISTRY = (getattr(_tf_ops, "gradient_registry", None) or
                      _tf_ops._gradient_registry)  # pylint: disable=protected-access

__all__ = (
    "TensorKey",
    "Memo",
    "Walk",
    "READ_OPS",
    "VARIABLE_OPS",
    "ancestor_ops",
    "descendant_ops",
    "has_op",
    "variable_op_of",
    "captured_outer_tensors",
    "carries_gradient",
    "copies",
    "depth_and_leaves",
    "is_lazy_tensor",
    "key",
    "lazy_copies",
    "op_is_differentiable",
    "same_computation",
    "variable_key_ops",
)

TensorKey = Tuple[tf.Operation, int]

# Ops that have a registered gradient function which always returns None:
# tf.gradients treats them as cutting the path, like StopGradient does.
# (tensorflow/python/ops/math_grad.py and control_flow_grad.py; a test checks
# the floating-point ones against tf.gradients. ArgMax, ArgMin and LoopCond
# have integer or boolean outputs, which block a gradient anyway.)
NONE_GRADIENT_OPS: FrozenSet[str] = frozenset({
    "ArgMax", "ArgMin", "Ceil", "Floor", "FloorDiv", "LoopCond", "Rint",
    "Round", "TruncateDiv",
})

# Calls of a tf.function (or a defun) in a graph.
FUNCTION_CALL_OPS: FrozenSet[str] = frozenset({"PartitionedCall",
                                               "StatefulPartitionedCall"})

# Ops that pass values but never gradients. StopGradient and PreventGradient
# are registered as not differentiable; listed here so the rule reads plainly.
BLOCKING_OPS: FrozenSet[str] = frozenset({"StopGradient", "PreventGradient"})


def key(tensor) -> TensorKey:
  """The hashable identity of a graph tensor."""
  return (tensor.op, tensor.value_index)


def is_lazy_tensor(tensor) -> bool:
  """Whether ``tensor`` builds new ops each time it is used.

  ``tf.compat.v1.get_variable(regularizer=...)`` (partitioned or not) puts
  its regularization into the collection as such a lazy tensor: each
  conversion (``tf.add_n(collection)``, say) builds a fresh copy of the
  regularizer, so the copy in a loss is never the tensor in the collection.
  """
  return hasattr(tensor, "_master_tensor") and hasattr(tensor, "_thunk")


_carries: Dict[tf.DType, bool] = {}


def carries_gradient(dtype) -> bool:
  """Whether a tensor of ``dtype`` can carry a gradient (float, resource)."""
  result = _carries.get(dtype)
  if result is None:
    base = dtype.base_dtype
    result = (base.is_floating or base.is_complex or
              base in (tf.resource, tf.variant))
    _carries[dtype] = result
  return result


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
  if not op.inputs:
    return False  # Nothing to send a gradient to (variables, constants).
  if getattr(op, "_gradient_function", None) is not None:
    return True  # A tf.function call carries its own gradient function.
  if op_type in FUNCTION_CALL_OPS:
    # The same call imported from a MetaGraph: its gradient function lived
    # on the Python object and is gone, but the saved backward pass shows
    # TensorFlow differentiated it. Judged as the live call is.
    return True
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


# Per graph, per called function: for each output, the inputs it sends a
# gradient to (None where the body cannot be read).
_CallInputs = Optional[Tuple[FrozenSet[int], ...]]
_call_inputs_cache: "weakref.WeakKeyDictionary[Any, Dict[str, _CallInputs]]" = (
    weakref.WeakKeyDictionary())


def call_gradient_inputs(op) -> _CallInputs:
  """For a ``tf.function`` call, the inputs each output's gradient reaches.

  The body is walked as the outer graph is, so a ``tf.stop_gradient`` (or an
  integer cast, ...) inside the function blocks as it would outside it:
  TensorFlow's gradient of the call sends zeros to such an input. None when
  the body cannot be read (then every float input counts as reached).
  """
  try:
    name = op.get_attr("f").name
  except (ValueError, AttributeError):
    return None
  graph = op.graph
  cache = _call_inputs_cache.setdefault(graph, {})
  if name in cache:
    return cache[name]
  cache[name] = None  # A function that (indirectly) calls itself.
  result: _CallInputs = None
  function = None
  library = graph
  while function is None and library is not None:
    # A body read here knows none of the functions it calls; the graph it
    # was called from (its outer graph, and that one's) does.
    function = library._get_function(name)  # pylint: disable=protected-access
    library = getattr(library, "outer_graph", None)
  definition = getattr(function, "definition", None)
  if definition is not None:
    try:
      with graph.as_default():
        body = _fdef_to_graph.function_def_to_graph(definition)
    except Exception:  # pylint: disable=broad-except
      body = None  # An unreadable body: judged as before, by its inputs.
    if (body is not None and len(body.inputs) == len(op.inputs) and
        len(body.outputs) == len(op.outputs)):
      positions = {key(t): i for i, t in enumerate(body.inputs)}
      masks = []
      for output in body.outputs:
        walk = Walk([output], differentiable=True)
        masks.append(frozenset(i for k, i in positions.items()
                               if k in walk.reached))
      result = tuple(masks)
  cache[name] = result
  return result


def _data_inputs(op, differentiable: bool):
  if not differentiable:
    return op.inputs
  if not op_is_differentiable(op):
    return ()
  carries = _carries
  return [t for t in op.inputs
          if carries.get(t.dtype) or (t.dtype not in carries and
                                      carries_gradient(t.dtype))]


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
    # Ops to visit, and (call, output index) pairs: a differentiable walk
    # enters a tf.function call per output, whose gradients reach different
    # inputs. ``calls`` holds each call met so far with its per-output inputs.
    queue: "collections.deque[Any]" = collections.deque()
    calls: Dict[tf.Operation, Tuple[FrozenSet[int], ...]] = {}
    entered: Set[TensorKey] = set()
    for tensor in starts:
      if differentiable and not carries_gradient(tensor.dtype):
        continue
      self.reached.add(key(tensor))
      queue.append(tensor.op)
    reached, ops = self.reached, self.ops
    while queue:
      item = queue.popleft()
      if item.__class__ is tuple:
        if item in entered:
          continue
        entered.add(item)
        call, index = item
        inputs = [t for t in (call.inputs[i] for i in calls[call][index])
                  if carries_gradient(t.dtype)]
      else:
        op = item
        if op in ops:
          continue
        ops.add(op)
        if stop_at is not None and op in stop_at:
          continue
        if differentiable and op.type in FUNCTION_CALL_OPS:
          masks = call_gradient_inputs(op)
          if masks is not None:
            calls[op] = masks
            queue.extend((op, i) for i in range(len(op.outputs))
                         if (op, i) in reached)
            continue
        inputs = _data_inputs(op, differentiable)
      for tensor in inputs:
        producer = tensor.op
        reached.add((producer, tensor.value_index))
        if producer in calls:
          queue.append((producer, tensor.value_index))
        elif producer not in ops:
          queue.append(producer)

  def __contains__(self, tensor_key: TensorKey) -> bool:
    return tensor_key in self.reached


def ancestor_ops(ops: Iterable[tf.Operation], *, data: bool = True,
                 control: bool = True,
                 stop: Optional[Callable[[tf.Operation], bool]] = None
                 ) -> List[tf.Operation]:
  """``ops`` and the ops they wait for, breadth first, each once.

  Follows data inputs, control inputs or both. An op for which ``stop`` is
  true is listed but not walked past. The walk ends when nothing new is
  reached, so it needs no limit: every op is visited once.
  """
  order = []
  seen: Set[tf.Operation] = set()
  queue: "collections.deque[tf.Operation]" = collections.deque(ops)
  while queue:
    op = queue.popleft()
    if op in seen:
      continue
    seen.add(op)
    order.append(op)
    if stop is not None and stop(op):
      continue
    if data:
      queue.extend(t.op for t in op.inputs if t.op not in seen)
    if control:
      queue.extend(p for p in op.control_inputs if p not in seen)
  return order


def descendant_ops(ops: Iterable[tf.Operation], graph) -> Set[tf.Operation]:
  """``ops`` and every op that depends on them, by data or control edges."""
  consumers = collections.defaultdict(set)
  for op in graph.get_operations():
    for parent in [t.op for t in op.inputs] + list(op.control_inputs):
      consumers[parent].add(op)
  found = set(ops)
  queue = collections.deque(found)
  while queue:
    for child in consumers[queue.popleft()]:
      if child not in found:
        found.add(child)
        queue.append(child)
  return found


# Ops that own a variable's storage, and ops that pass its value (or its
# handle) on unchanged: what lies between a variable and its use.
VARIABLE_OPS: FrozenSet[str] = frozenset({"VarHandleOp", "VariableV2",
                                          "Variable", "_VarHandlesOp"})
READ_OPS: FrozenSet[str] = frozenset({
    "Identity", "ReadVariableOp", "Enter", "Switch", "RefIdentity",
    "RefEnter", "RefSwitch"})


def has_op(graph, name: str) -> bool:
  """Whether ``graph`` has an op named ``name``."""
  try:
    graph.get_operation_by_name(name)
  except (KeyError, ValueError):
    return False
  return True


def variable_op_of(tensor, through: FrozenSet[str] = READ_OPS
                   ) -> Optional[tf.Operation]:
  """The variable op whose storage ``tensor`` reads, through ``through`` ops.

  None when anything else lies between. A chain of reads ends, so the walk
  needs no limit: each op is seen once.
  """
  op = tensor.op
  seen = set()
  while op not in seen:
    seen.add(op)
    if op.type in VARIABLE_OPS:
      return op
    if op.type not in through or not op.inputs:
      return None
    op = op.inputs[0].op
  return None


def variable_key_ops(variables: Iterable) -> Dict[tf.Operation, Any]:
  """Maps the op that owns each variable's storage to the variable.

  That op is ``VarHandleOp`` for a resource variable and ``VariableV2`` for a
  ref variable; reads of either lead back to it along gradient-carrying edges.
  """
  owners = {}
  plain = tf.Variable
  for variable in variables:
    if isinstance(variable, plain) and not hasattr(variable, "_values"):
      owners[variable.op] = variable
      continue
    for part in _shards(variable):
      owners[part.op] = part
  return owners


def _shards(variable) -> Iterator:
  # PartitionedVariable iterates over its shards; a distributed variable
  # (MirroredVariable) keeps one per device; plain variables are their own.
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


class Memo:
  """Results about a graph's ops that stay true while the graph only grows.

  One analysis, or several over one graph (an audit checks each train op),
  share a memo so that no regularizer is examined twice.
  """

  def __init__(self):
    self.attrs: Dict[tf.Operation, Tuple] = {}
    self.depth_and_leaves: Dict[TensorKey, Computation] = {}
    self.leaves: Dict[TensorKey, Tuple[tf.Operation, ...]] = {}
    # Answers to questions about the whole graph (the audit's regularization
    # terms, which every train op of a saved graph shares), by question.
    self.graph_answers: Dict[Any, Any] = {}
    self.copies: Dict[TensorKey, List[TensorKey]] = {}
    self.same: Dict[Tuple[TensorKey, TensorKey], bool] = {}

  def op_attrs(self, op) -> Tuple:
    """``op``'s public attributes, serialized, for comparing computations."""
    found = self.attrs.get(op)
    if found is None:
      found = tuple(sorted(
          (name, value.SerializeToString(deterministic=True))
          for name, value in op.node_def.attr.items()
          if not name.startswith("_")))
      self.attrs[op] = found
    return found


def _same_computation(a, b, depth: int, memo: Memo) -> bool:
  """Whether tensors ``a`` and ``b`` compute the same value the same way.

  Names and private attributes (colocation, for one) are ignored; leaves
  must be the very same op (a variable, a placeholder), or constants of
  equal value. Gives up (False) below ``depth`` levels.
  """
  if a.value_index != b.value_index:
    return False
  op_a, op_b = a.op, b.op
  if op_a is op_b:
    return True
  if depth <= 0 or op_a.type != op_b.type:
    return False
  inputs_a, inputs_b = op_a.inputs, op_b.inputs
  if not inputs_a and op_a.type != "Const":
    return False  # Distinct variables or placeholders.
  # The cheap comparisons first: most candidates differ in an input's type.
  if len(inputs_a) != len(inputs_b) or any(
      x.op.type != y.op.type or x.value_index != y.value_index
      for x, y in zip(inputs_a, inputs_b, strict=True)):
    return False
  if not all(_same_computation(x, y, depth - 1, memo)
             for x, y in zip(inputs_a, inputs_b, strict=True)):
    return False
  if _attrs_follow_dtypes(op_a):  # Equal inputs: equal input dtypes.
    return all(x.dtype == y.dtype
               for x, y in zip(op_a.outputs, op_b.outputs, strict=True))
  return memo.op_attrs(op_a) == memo.op_attrs(op_b)


_FOLLOW_DTYPES: Dict[str, bool] = {}


def _attrs_follow_dtypes(op) -> bool:
  """Whether ``op``'s attributes are all dtypes of its inputs and outputs.

  Then two ops of its type with inputs of equal dtypes and outputs of equal
  dtypes have equal attributes (``Mul``'s ``T``, ``ReadVariableOp``'s
  ``dtype``), and reading them (a NodeDef each) can be skipped.
  """
  found = _FOLLOW_DTYPES.get(op.type)
  if found is None:
    # Registered ops only: a call of a graph's function (its type is the
    # function's name, which another graph may give another function) and
    # an unknown op have all their attributes compared.
    op_def = _op_def_registry.get(op.type)
    found = False
    if op_def is not None:
      bound = {arg.type_attr for arg in (*op_def.input_arg,
                                         *op_def.output_arg)}
      found = all(attr.type == "type" and attr.name in bound
                  for attr in op_def.attr)
    _FOLLOW_DTYPES[op.type] = found
  return found


def same_computation(a, b, memo: Optional[Memo] = None) -> bool:
  """Whether ``a`` computes what ``b`` does, the same way, to ``b``'s depth.

  Names and private attributes are ignored; the leaves must be the same ops
  (variables, placeholders) or equal constants (see ``_same_computation``).
  """
  memo = memo if memo is not None else Memo()
  b_key = key(b)
  found = memo.depth_and_leaves.get(b_key)
  if found is None:
    found = memo.depth_and_leaves[b_key] = depth_and_leaves(b)
  return _same_memoized(a, b, found[0], memo)


def _same_memoized(a, b, depth: int, memo: Memo) -> bool:
  pair = (key(a), key(b))
  answer = memo.same.get(pair)
  if answer is None:
    answer = memo.same[pair] = _same_computation(a, b, depth, memo)
  return answer


def lazy_copies(lazy_tensor, walk: Walk,
                memo: Optional[Memo] = None) -> Tuple[TensorKey, ...]:
  """Keys in ``walk`` of tensors built by converting ``lazy_tensor``.

  Each conversion of a lazy regularizer builds the same small computation
  on the same variable again. So the copies are found by going forward from
  the variables (the leaves of the master copy's computation) for as many
  steps as that computation is deep, and comparing what is found there with
  the master copy, op by op. The cost depends on the regularizer's size, not
  on the graph's.
  """
  master = lazy_tensor._master_tensor  # pylint: disable=protected-access
  master_key = key(master)
  if master_key in walk.reached:
    return (master_key,)
  return tuple(k for k in copies(master, memo,
                                 within=lambda k: k in walk.reached))


def copies(master, memo: Optional[Memo] = None,
           within: Optional[Callable[[TensorKey], bool]] = None
           ) -> List[TensorKey]:
  """Keys of the other tensors that compute what ``master`` does, the same way.

  Found by going forward from the variables (the leaves of ``master``'s
  computation) for as many steps as that computation is deep, and comparing
  what is found there with ``master``, op by op: the cost depends on
  ``master``'s size, not on the graph's. ``within`` limits the answer.
  """
  master_key = key(master)
  memo = memo if memo is not None else Memo()
  if master_key not in memo.copies:  # The graph only grows while memo lives.
    memo.copies[master_key] = _all_copies(master, master_key, memo)
  return [k for k in memo.copies[master_key] if within is None or within(k)]


def _all_copies(master, master_key: TensorKey, memo: Memo) -> List[TensorKey]:
  # One search per master and memo, whatever each caller keeps: a term is
  # asked about by the penalty search, then by every train op's walks.
  found_depth = memo.depth_and_leaves.get(master_key)
  if found_depth is None:
    found_depth = memo.depth_and_leaves[master_key] = depth_and_leaves(master)
  depth, leaves, types = found_depth
  # Every op between a copy's leaves and its top is one of the copy's ops,
  # so of a type found in the master: nothing else needs to be entered (a
  # variable has many consumers: its reads, initializer, updates, layers).
  found = []
  frontier = set(leaves)
  seen = set(frontier)
  for _ in range(depth):
    following = set()
    for op in frontier:
      for output in op.outputs:
        for consumer in output.consumers():
          if consumer not in seen:
            seen.add(consumer)
            if types is None or consumer.type in types:
              following.add(consumer)
    for op in following:
      candidate_key = (op, master.value_index)
      if (op.type == master.op.type and candidate_key != master_key and
          _same_memoized(op.outputs[master.value_index], master, depth,
                         memo)):
        found.append(candidate_key)
    frontier = following
  return found


_MAX_DEPTH = 64


class Computation(NamedTuple):
  """What a tensor's computation is made of (see ``depth_and_leaves``)."""
  depth: int
  leaves: Set[tf.Operation]  # Its non-constant leaves: variables, inputs.
  types: Optional[FrozenSet[str]]  # Its op types; None if too deep to list.


def depth_and_leaves(tensor) -> Computation:
  """The depth of ``tensor``'s computation, its leaves and its op types."""
  depth_of: Dict[tf.Operation, int] = {}
  leaves: Set[tf.Operation] = set()
  stack = [tensor.op]
  capped = False
  while stack:
    op = stack[-1]
    pending = [t.op for t in op.inputs if t.op not in depth_of]
    if pending:
      if len(stack) < _MAX_DEPTH:
        stack.extend(pending)
        continue
      capped = True
    stack.pop()
    if not op.inputs:
      depth_of[op] = 0
      if op.type != "Const":
        leaves.add(op)
    else:
      depth_of[op] = 1 + max(depth_of.get(t.op, _MAX_DEPTH) for t in op.inputs)
  types = None if capped else frozenset(op.type for op in depth_of)
  return Computation(depth_of[tensor.op], leaves, types)
