"""Decoupled weight decay inside a TF1 optimizer's update, read from it.

Some optimizers decay the weights in their update, outside the loss: BERT's
``AdamWeightDecayOptimizer`` writes each variable's new value as
``w - lr * (adam_update + wd * w)`` with plain assigns, and
``tf.contrib.opt``'s ``AdamWOptimizer`` (``DecoupledWeightDecayExtension``)
runs ``w.assign_sub(wd * w)`` before its update. That is weight decay too:
with an L2 term of the loss on the same variable, the variable is decayed
twice. This module finds it in a train op's update, by what the update
computes:

* in an assign of the variable whose new value is computed from gradients,
  a product of a scalar constant ``wd`` and the variable's own value, added
  to the rest of the update: decay ``lr * wd`` per step (``rate`` is
  ``wd``);
* an ``AssignSub`` of the variable by a scalar constant times its own
  value: ``w -= c * w`` each step, whatever the learning rate
  (``per_step`` is ``c``);
* an apply op with an ``l2`` input above 0 (``Ftrl``, ``ProximalAdagrad``,
  ``ProximalGradientDescent``, sparse and resource ones too): the
  optimizer's own L2 regularization. Its ``l1`` moves weights to zero by a
  step, not a factor, and is no decay here.

Only the graph is read.
"""

import dataclasses
import re
from typing import Dict, Optional, Sequence

import tensorflow as tf

from safetrain.graph import _coefficient
from safetrain.graph import _graph

__all__ = ("Decoupled", "decoupled_decay")

_ASSIGNS = frozenset({"Assign", "AssignVariableOp"})
_ASSIGN_SUBS = frozenset({"AssignSub", "AssignSubVariableOp"})
_READS = _graph.READ_OPS | {"Cast"}
_ADDS = frozenset({"Add", "AddV2", "AddN"})
_GRADIENTS = re.compile(r"(^|/)gradients(_\d+)?/")
_APPLY = re.compile(r"^(Resource)?(Sparse)?Apply\w+$")


@dataclasses.dataclass(frozen=True)
class Decoupled:
  """A variable's decay inside the optimizer's update.

  Attributes:
    rate: ``wd`` of ``w -= lr * wd * w``, or None.
    per_step: ``c`` of ``w -= c * w`` (not scaled by the learning rate), or
      None.
    source: the op that applies it.
    l2: the ``l2`` strength of an optimizer that regularizes in its own
      update (Ftrl, ProximalAdagrad), or None.
  """

  rate: Optional[float]
  per_step: Optional[float]
  source: str
  l2: Optional[float] = None

  def describe(self) -> str:
    if self.rate is not None:
      return f"decoupled wd={self.rate:g} in {self.source}"
    if self.per_step is not None:
      return f"decoupled w-={self.per_step:g}*w in {self.source}"
    return f"the optimizer's own L2 ({self.source})"


def _own_value_times_constant(op, variable_op) -> Optional[float]:
  """``c`` when ``op`` is ``c * w`` (either order), ``w`` read from
  ``variable_op`` and ``c`` a scalar constant; else None."""
  if op.type != "Mul" or len(op.inputs) != 2:
    return None
  for index in (0, 1):
    if _graph.variable_op_of(op.inputs[index], _READS) is variable_op:
      value = _coefficient.scalar_constant(op.inputs[1 - index])
      if value is not None:
        return value
  return None


def _in_update(assign, variable_op) -> Optional[float]:
  """``wd`` of ``wd * w`` added into the new value ``assign`` writes."""
  stack = [assign.inputs[1].op]
  seen = set()
  while stack:
    op = stack.pop()
    if op in seen or _GRADIENTS.search(op.name):
      continue
    seen.add(op)
    if op.type in _ADDS:
      for value in op.inputs:
        rate = _own_value_times_constant(value.op, variable_op)
        if rate is not None:
          return rate
    if op.type in _graph.VARIABLE_OPS:
      continue
    stack.extend(t.op for t in op.inputs)
  return None


def decoupled_decay(train_op, variable_ops: Sequence[tf.Operation]
                    ) -> Dict[tf.Operation, Decoupled]:
  """Variable op -> its decoupled decay in ``train_op``'s update."""
  runs = set(_graph.ancestor_ops([train_op], data=False))
  found: Dict[tf.Operation, Decoupled] = {}
  for variable_op in variable_ops:
    for output in variable_op.outputs:
      for consumer in output.consumers():
        if (consumer not in runs or len(consumer.inputs) < 2 or
            consumer.inputs[0] is not output):
          continue
        if consumer.type in _ASSIGN_SUBS:
          per_step = _own_value_times_constant(consumer.inputs[1].op,
                                               variable_op)
          if per_step is not None:
            found[variable_op] = Decoupled(None, per_step, consumer.name)
        elif consumer.type in _ASSIGNS:
          rate = _in_update(consumer, variable_op)
          if rate is not None:
            found[variable_op] = Decoupled(rate, None, consumer.name)
        else:
          l2 = _optimizer_l2(consumer)
          if l2:
            found[variable_op] = Decoupled(
                None, None, f"{consumer.type} l2={l2:g}", l2=l2)
  return found


def _optimizer_l2(op) -> Optional[float]:
  """The constant ``l2`` input of an apply op that has one (Ftrl, the
  proximal optimizers: their own L2 regularization, applied in the
  update), or None."""
  if not _APPLY.match(op.type):
    return None
  try:
    names = [arg.name for arg in op.op_def.input_arg]
  except (AttributeError, ValueError):
    return None
  if "l2" not in names:
    return None
  return _coefficient.scalar_constant(op.inputs[names.index("l2")])
