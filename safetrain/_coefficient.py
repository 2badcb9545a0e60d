"""The coefficient with which a tensor enters a loss, read from the graph.

For a loss built from terms by sums, constant scaling, negation, means and
identities, the loss is linear in each regularization term and the
coefficient is d(loss)/d(term). That is what "counted once" means: 1 for a
single-device loss, 1/N on each of N replicas whose gradients are summed. The
coefficient is propagated backwards from the loss, in topological order, over
the differentiable ancestors a ``_graph.Walk`` already found. Through any op
whose effect is not a known constant factor, it becomes unknown (None).
"""

import collections
from typing import Dict, Optional, Tuple

import numpy as np

from safetrain import _graph

__all__ = ("coefficients",)

# Ops whose output equals one input (or each input, elementwise).
_PASS = frozenset({
    "Identity", "CheckNumerics", "Snapshot", "Cast", "Reshape",
    "ExpandDims", "Squeeze", "Pack", "ConcatV2", "Sum", "AddN", "Add",
    "AddV2", "BiasAdd", "EnsureShape", "PreventGradientPassThrough",
})


def _scalar_constant(tensor) -> Optional[float]:
  op = tensor.op
  while op.type in ("Identity", "Cast") and op.inputs:
    op = op.inputs[0].op
  if op.type != "Const":
    return None
  value = np.asarray(_make_ndarray(op))
  if value.size != 1:
    return None
  return float(value.reshape(()))


def _make_ndarray(op):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.make_ndarray(op.get_attr("value"))


def _local_factors(op) -> Optional[Tuple[Tuple[int, float], ...]]:
  """(input index, factor) pairs for a linear op; None if not linear."""
  op_type = op.type
  inputs = op.inputs
  if op_type in _PASS:
    if op_type in ("Reshape", "ExpandDims", "Squeeze", "Cast", "Sum",
                   "CheckNumerics", "EnsureShape"):
      return ((0, 1.0),)
    if op_type == "ConcatV2":
      return tuple((i, 1.0) for i in range(len(inputs) - 1))
    return tuple((i, 1.0) for i in range(len(inputs)))
  if op_type == "Neg":
    return ((0, -1.0),)
  if op_type == "Sub":
    return ((0, 1.0), (1, -1.0))
  if op_type == "Mul":
    for const_index, other in ((0, 1), (1, 0)):
      k = _scalar_constant(inputs[const_index])
      if k is not None:
        return ((other, k),)
    return None
  if op_type in ("RealDiv", "Div", "DivNoNan"):
    k = _scalar_constant(inputs[1])
    if k:
      return ((0, 1.0 / k),)
    return None
  if op_type == "Mean":
    shape = inputs[0].shape
    if shape.ndims == 0:
      return ((0, 1.0),)
    if shape.is_fully_defined() and op.outputs[0].shape.ndims == 0:
      return ((0, 1.0 / max(1, shape.num_elements())),)
    return None
  return None


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
  ops = walk.ops
  pending = collections.Counter()
  for op in ops:
    for tensor in op.inputs:
      if tensor.op in ops:
        pending[tensor.op] += 1
  coefficient: Dict = {_graph.key(loss): 1.0}
  unknown = object()
  queue = collections.deque([loss.op])
  done = set()
  while queue:
    op = queue.popleft()
    done.add(op)
    factors = _local_factors(op)
    passes = _graph.op_is_differentiable(op)
    outputs = [coefficient.get((op, i), 0.0) for i in range(len(op.outputs))]
    if any(c is unknown for c in outputs):
      out = unknown
    elif len(outputs) == 1:
      out = outputs[0]
    elif op.type == "IdentityN":
      out = None  # Handled per output below.
    else:
      out = unknown if any(outputs) else 0.0
    for i, tensor in enumerate(op.inputs):
      if tensor.op not in ops:
        continue
      if not passes or not _graph.carries_gradient(tensor.dtype):
        contribution = 0.0
      elif op.type == "IdentityN" and out is None:
        contribution = outputs[i]
      elif out is unknown or (factors is None and out != 0.0):
        contribution = unknown
      else:
        factor = dict(factors or ()).get(i, 0.0)
        contribution = out * factor if out else 0.0
      input_key = _graph.key(tensor)
      previous = coefficient.get(input_key, 0.0)
      if previous is unknown or contribution is unknown:
        coefficient[input_key] = unknown
      else:
        coefficient[input_key] = previous + contribution
      pending[tensor.op] -= 1
      if pending[tensor.op] == 0 and tensor.op not in done:
        queue.append(tensor.op)
  result = {}
  for ident, keys in wanted.items():
    total = 0.0
    for tensor_key in keys:
      if tensor_key[0] not in done:  # A cycle (a v1 while loop) left it out.
        total = unknown
        break
      value = coefficient.get(tensor_key, 0.0)
      if value is unknown:
        total = unknown
        break
      total += value
    result[ident] = None if total is unknown else total
  return result
