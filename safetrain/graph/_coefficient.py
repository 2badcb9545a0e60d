"""The coefficient with which a tensor enters a loss, read from the graph.

For a loss built from terms by sums, constant scaling, negation, means and
identities, the loss is linear in each regularization term and the
coefficient is d(loss)/d(term). That is what "counted once" means: 1 for a
single-device loss or for a sum of clone losses, more when a term was added
in every clone. The coefficient is propagated backwards from the loss, in
topological order, over the differentiable ancestors a ``_graph.Walk``
already found. Through any op whose effect is not a known constant factor
(a product of two tensors, a slice, a ``tf.function`` call, a loop), it
becomes unknown (None): the report then says nothing rather than guess.

Each tensor carries one coefficient for every one of its elements, so an op
that treats elements differently (a slice, a weighted sum) is not linear in
this sense; broadcasting multiplies by the number of copies made.

Constant factors may be written any way TensorFlow builds them:
``0.5 * x``, ``x / 2``, ``tf.compat.v1.div(x, 2.0)``, ``tf.math.scalar_mul``,
``tf.math.multiply_no_nan``, ``x * (1.0 / tf.cast(num_clones, tf.float32))``:
small scalar expressions of constants are folded here, without running
anything.
"""

import collections
import enum
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from safetrain.graph import _graph

__all__ = ("Contribution", "coefficients", "contributions", "scalar_constant")

# Ops that pass each element of their first input to the output unchanged,
# or (Sum) add it into one output element: d(output)/d(input element), summed
# over the outputs it reaches, is 1, so the coefficient passes unchanged.
_PASS_FIRST = frozenset({
    "Identity", "CheckNumerics", "Snapshot", "Cast", "Reshape", "ExpandDims",
    "Squeeze", "EnsureShape", "PreventGradientPassThrough", "Sum",
})
_PASS_ALL = frozenset({"Pack", "AddN"})
# Elementwise sums that broadcast their inputs.
_BROADCASTING_SUMS = frozenset({"Add", "AddV2", "BiasAdd"})
_DIVISIONS = frozenset({"RealDiv", "Div", "DivNoNan", "TrueDiv"})
_PRODUCTS = frozenset({"Mul", "MulNoNan"})

# Scalar constant folding: how deep an expression of constants may be.
_FOLD_DEPTH = 8


class Contribution(collections.namedtuple(
    "Contribution", ("op_name", "input_indices", "coefficient"))):
  """How one consumer op passes a term on towards the loss.

  Attributes:
    op_name: the name of the op that takes the term as an input, e.g.
      ``'clone_1/regularization_loss'``.
    input_indices: at which of its inputs (more than one when it adds the
      same tensor twice).
    coefficient: the coefficient of the term along this route, None where
      the graph does not show it.
  """


def scalar_constant(tensor, depth: int = _FOLD_DEPTH) -> Optional[float]:
  """The value of a scalar expression of constants, or None."""
  if depth <= 0:
    return None
  op = tensor.op
  op_type = op.type
  if op_type == "Const":
    return _const_value(op)
  inputs = list(op.inputs)
  if op_type in ("Identity", "Cast", "Reshape", "Squeeze", "ExpandDims",
                 "Snapshot") and inputs:
    return scalar_constant(inputs[0], depth - 1)
  if op_type in ("Neg", "Reciprocal", "Inv") and inputs:
    value = scalar_constant(inputs[0], depth - 1)
    if value is None:
      return None
    if op_type == "Neg":
      return -value
    return 1.0 / value if value else None
  if len(inputs) != 2 or op_type not in (
      _PRODUCTS | _DIVISIONS | {"Add", "AddV2", "Sub"}):
    return None
  left = scalar_constant(inputs[0], depth - 1)
  if left is None:
    return None
  right = scalar_constant(inputs[1], depth - 1)
  if right is None:
    return None
  if op_type in _PRODUCTS:
    return left * right
  if op_type in _DIVISIONS:
    return left / right if right else None
  if op_type == "Sub":
    return left - right
  return left + right


# TensorProto fields that hold a scalar's value as a Python number.
_SCALAR_FIELDS = ("float_val", "double_val", "int_val", "int64_val")


def _const_value(op) -> Optional[float]:
  """The value of a one-element numeric constant, or None.

  A scalar written in one of ``_SCALAR_FIELDS`` is read from there (most
  constants; parsing the whole tensor costs far more); anything else goes
  through ``tf.make_ndarray``.
  """
  proto = op.get_attr("value")
  if not proto.tensor_shape.dim and not proto.tensor_content:
    for field in _SCALAR_FIELDS:
      values = getattr(proto, field)
      if len(values) == 1:
        return float(values[0])
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  array = np.asarray(tf.make_ndarray(proto))
  if array.size != 1 or array.dtype.kind not in "biuf":
    return None
  return float(array.reshape(()))


def _broadcast_copies(tensor, output) -> Optional[float]:
  """How many times broadcasting repeats each element of ``tensor``."""
  if tensor.shape.ndims == 0 and output.shape.ndims == 0:
    return 1.0
  if not (tensor.shape.is_fully_defined() and
          output.shape.is_fully_defined()):
    return None
  size = tensor.shape.num_elements()
  if not size:
    return None
  return output.shape.num_elements() / size


def _local_factors(op) -> Optional[Tuple[Tuple[int, Optional[float]], ...]]:
  """(input index, factor) pairs for a linear op; None if not linear.

  A factor is d(output element)/d(input element) summed over the output
  elements each input element reaches; None where that is unknown.
  """
  op_type = op.type
  inputs = op.inputs
  output = op.outputs[0] if op.outputs else None
  if op_type in _PASS_FIRST:
    return ((0, 1.0),)
  if op_type in _PASS_ALL:
    return tuple((i, 1.0) for i in range(len(inputs)))
  if op_type == "ConcatV2":
    return tuple((i, 1.0) for i in range(len(inputs) - 1))
  if op_type in _BROADCASTING_SUMS:
    return tuple((i, _broadcast_copies(t, output))
                 for i, t in enumerate(inputs))
  if op_type == "Neg":
    return ((0, -1.0),)
  if op_type == "Sub":
    return ((0, _broadcast_copies(inputs[0], output)),
            (1, _negate(_broadcast_copies(inputs[1], output))))
  if op_type in _PRODUCTS:
    for const_index, other in ((0, 1), (1, 0)):
      k = scalar_constant(inputs[const_index])
      if k is not None:
        copies = _broadcast_copies(inputs[other], output)
        return ((other, None if copies is None else k * copies),)
    return None
  if op_type in _DIVISIONS:
    k = scalar_constant(inputs[1])
    if k:
      copies = _broadcast_copies(inputs[0], output)
      return ((0, None if copies is None else copies / k),)
    return None
  if op_type in ("BroadcastTo", "Tile"):
    return ((0, _broadcast_copies(inputs[0], output)),)
  if op_type == "Mean" and output is not None:
    shape = inputs[0].shape
    if shape.ndims == 0:
      return ((0, 1.0),)
    if shape.is_fully_defined() and output.shape.is_fully_defined():
      reduced = shape.num_elements() / max(1, output.shape.num_elements())
      return ((0, 1.0 / max(1.0, reduced)),)
    return None
  return None


def _negate(value: Optional[float]) -> Optional[float]:
  return None if value is None else -value


class _Unknown(enum.Enum):
  """A coefficient the graph does not show (a product of tensors, a loop)."""

  UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN
Coefficient = Union[float, _Unknown]


def _add(previous: Coefficient, contribution: Coefficient) -> Coefficient:
  if previous is UNKNOWN or contribution is UNKNOWN:
    return UNKNOWN
  return previous + contribution


def _between(walk: "_graph.Walk", targets) -> set:
  """Ops of the walk that lie on a path from a target tensor to the loss.

  Only they carry a target's coefficient; the rest of the model (its
  forward pass, most of the walk) need not be visited.
  """
  ops = walk.ops
  found = set()
  queue = collections.deque(op for op, _ in targets if op in ops)
  while queue:
    op = queue.popleft()
    if op in found:
      continue
    found.add(op)
    for output in op.outputs:
      for consumer in output.consumers():
        if consumer in ops and consumer not in found:
          queue.append(consumer)
  return found


def _consumers_first(last, ops: set) -> Iterator:
  """The ops of ``ops``, each after every op of ``ops`` that consumes it.

  Starts from ``last`` (the loss's op). An op on a cycle (a v1 while loop)
  is never ready, so it is never yielded: its coefficient stays unread.
  """
  pending: "collections.Counter[Any]" = collections.Counter()
  for op in ops:
    for tensor in op.inputs:
      if tensor.op in ops:
        pending[tensor.op] += 1
  queue = collections.deque([last])
  while queue:
    op = queue.popleft()
    yield op
    for tensor in op.inputs:
      if tensor.op in ops:
        pending[tensor.op] -= 1
        if pending[tensor.op] == 0:
          queue.append(tensor.op)


def _output_coefficient(op, coefficient: Dict) -> Union[Coefficient, List]:
  """The coefficient of ``op``'s output, or a list for ``IdentityN``.

  An op with several outputs other than ``IdentityN`` passes a known
  coefficient only if none of its outputs reaches the loss.
  """
  outputs = [coefficient.get((op, i), 0.0) for i in range(len(op.outputs))]
  if any(c is UNKNOWN for c in outputs):
    return UNKNOWN
  if len(outputs) == 1:
    return outputs[0]
  if op.type == "IdentityN":
    return outputs
  return UNKNOWN if any(outputs) else 0.0


def _input_contributions(op, out, ops: set) -> Iterator[Tuple[int, Any,
                                                              Coefficient]]:
  """(index, input, coefficient it gets through ``op``) for inputs in ``ops``.

  The per-op rule: no gradient passes an op without one or an input that
  carries none; a known coefficient passes a linear op times its factor
  (``_local_factors``, read only when needed); anything else is unknown.
  """
  passes = _graph.op_is_differentiable(op)
  factor_of: Optional[Dict[int, Optional[float]]] = None
  for i, tensor in enumerate(op.inputs):
    if tensor.op not in ops:
      continue
    if not passes or not _graph.carries_gradient(tensor.dtype):
      yield i, tensor, 0.0
    elif isinstance(out, list):  # IdentityN: output i is input i.
      yield i, tensor, out[i]
    elif out is UNKNOWN or out == 0.0:
      yield i, tensor, out
    else:
      if factor_of is None:
        factors = _local_factors(op)  # None: not linear, nothing passes.
        factor_of = ({j: None for j in range(len(op.inputs))}
                     if factors is None else dict(factors))
      factor = factor_of.get(i, 0.0)
      yield i, tensor, UNKNOWN if factor is None else out * factor


def _propagate(loss, walk: "_graph.Walk", targets: frozenset,
               watched: frozenset):
  """Coefficients of the tensors between ``targets`` and the loss.

  Returns (coefficient by tensor key, ops done, routes) where routes maps
  each key in ``watched`` to {consumer op: ([input indices], coefficient)}.
  """
  ops = _between(walk, targets)
  ops.add(loss.op)
  coefficient: Dict = {_graph.key(loss): 1.0}
  routes: Dict = collections.defaultdict(dict)
  done = set()
  for op in _consumers_first(loss.op, ops):
    done.add(op)
    out = _output_coefficient(op, coefficient)
    for i, tensor, contribution in _input_contributions(op, out, ops):
      input_key = _graph.key(tensor)
      coefficient[input_key] = _add(coefficient.get(input_key, 0.0),
                                    contribution)
      if input_key in watched and contribution != 0.0:
        indices, total = routes[input_key].get(op, ([], 0.0))
        indices.append(i)
        routes[input_key][op] = (indices, _add(total, contribution))
  return coefficient, done, routes


def whole_scale(loss) -> float:
  """The constant factor by which the whole of ``loss`` is scaled.

  ``0.5 * (data + regularization)`` is scaled by 0.5: every term in it, data
  and decay alike, is halved, so their balance is unchanged. Read down the
  chain of linear ops from one scalar to one scalar at the top of the loss
  (constant scaling, identities, casts); 1 when there is none. A mean over a
  vector is not such a scale: what it averages may repeat a term. The scale
  is a magnitude: a negative factor flips every term's sign, and a term's own
  coefficient keeps that sign, so ``-(log_likelihood - decay)`` minimizes
  the decay (coefficient +1, scale 1) and ``-(data + decay)`` maximizes it
  (coefficient -1, scale 1).
  """
  scale = 1.0
  op = loss.op
  seen = set()
  while op not in seen:
    seen.add(op)
    factors = _local_factors(op)
    if not factors or len(factors) != 1:
      break
    index, factor = factors[0]
    tensor = op.inputs[index]
    if factor is None or factor == 0 or tensor.shape.ndims != 0:
      break
    scale *= abs(factor)
    op = tensor.op
  return scale


def coefficients(loss, wanted: Dict[int, Tuple], walk: "_graph.Walk"
                 ) -> Dict[int, Optional[float]]:
  """Coefficients of tensors in ``loss``.

  Args:
    loss: the loss tensor the walk started from.
    wanted: maps an id of the caller's choice to the keys of the tensors
      whose coefficients add up to it (a lazy tensor can have several copies).
    walk: the differentiable walk from ``loss``.

  Returns:
    The coefficient for each id, None where the graph does not show it.
  """
  targets = frozenset(k for keys in wanted.values() for k in keys)
  coefficient, done, _ = _propagate(loss, walk, targets, frozenset())
  result: Dict[int, Optional[float]] = {}
  for ident, keys in wanted.items():
    total: Coefficient = 0.0
    for tensor_key in keys:
      if tensor_key[0] not in done:  # A cycle (a v1 while loop) left it out.
        total = UNKNOWN
        break
      total = _add(total, coefficient.get(tensor_key, 0.0))
      if total is UNKNOWN:
        break
    result[ident] = None if total is UNKNOWN else total
  return result


def contributions(loss, wanted: Dict[int, Tuple], walk: "_graph.Walk"
                  ) -> Dict[int, List[Contribution]]:
  """For each id, the consumer ops through which its tensors reach ``loss``.

  This says *which path* counted a term: the summands of its coefficient,
  one per op that takes it as an input, in graph order of the op names.

  Args:
    loss, wanted, walk: as for ``coefficients``.

  Returns:
    A list of ``Contribution`` for each id (empty if it is not reached).
  """
  watched = frozenset(k for keys in wanted.values() for k in keys)
  _, _, routes = _propagate(loss, walk, watched, watched)
  result = {}
  for ident, keys in wanted.items():
    found = []
    for tensor_key in keys:
      for op, (indices, total) in routes.get(tensor_key, {}).items():
        found.append(Contribution(
            op_name=op.name, input_indices=tuple(indices),
            coefficient=None if total is UNKNOWN else total))
    result[ident] = sorted(found, key=lambda c: c.op_name)
  return result
