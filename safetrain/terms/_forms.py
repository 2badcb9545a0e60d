"""The form of a regularization term on one variable: ``c*sum(w^2)``, ...

A term's effect on a variable is a per-step factor only when the term is
``l2 * sum(w^2) + l1 * sum(|w|)`` in that variable, with constant ``l2`` and
``l1``: what ``slim.l2_regularizer``, Keras' ``L1``/``L2`` and weight decay
written by hand (``wd * tf.nn.l2_loss(w)``) compute. ``form`` reads
those from the graph; the ledger shows them, and the rule uses them to tell
a term that decays a variable from one whose form it cannot see.
"""

from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from safetrain.graph import _coefficient
from safetrain.graph import _graph

__all__ = ("form",)

# Ops a variable's value passes through unchanged on its way to a norm.
_READS = _graph.READ_OPS | {"Cast"}


def _owner(tensor) -> Optional[tf.Operation]:
  return _graph.variable_op_of(tensor, _READS)


def _term_tensor(term) -> tf.Tensor:
  """A term as a graph tensor: a lazy term's master copy."""
  master = getattr(term, "_master_tensor", None)
  if master is not None:
    return master
  return term.op.outputs[term.value_index]


def _direct_factors(tensor, variable_op
                    ) -> Optional[Tuple[Optional[float], Optional[float]]]:
  """``form``'s coefficients of the shapes regularizers build, no walk.

  ``c * L2Loss(w)`` (slim's ``l2_regularizer``), ``c * sum(square(w))``
  (Keras ``L2``) and ``c * sum(abs(w))`` (``L1``), ``c`` a scalar constant
  expression; None for anything else, which ``_read`` reads in full.
  """
  op = tensor.op
  if op.type != "Mul" or len(op.inputs) != 2:
    return None
  for const_index in (0, 1):
    c = _coefficient.scalar_constant(op.inputs[const_index])
    if c is None:
      continue
    inner = op.inputs[1 - const_index].op
    if inner.type == "L2Loss" and _owner(inner.inputs[0]) is variable_op:
      return 0.5 * c, None
    if (inner.type == "Sum" and inner.outputs[0].shape.ndims == 0 and
        inner.inputs[0].op.type in ("Square", "Abs")):
      atom = inner.inputs[0].op
      if _owner(atom.inputs[0]) is variable_op:
        return (c, None) if atom.type == "Square" else (None, c)
    return None
  return None


def form(term, variable_op
         ) -> Tuple[str, Optional[float], Optional[float]]:
  """(kind, l2, l1): ``term == l2*sum(w^2) + l1*sum|w|`` in variable ``w``.

  ``kind`` is ``"L2"``, ``"L1"`` or ``"L1L2"`` when the term is such a sum
  in ``w`` (whatever its coefficients), else ``"other"``; ``l2`` and ``l1``
  are the coefficients where the graph shows them as constants (a
  placeholder's or a schedule's is None).
  """
  tensor = _term_tensor(term)
  direct = _direct_factors(tensor, variable_op)
  if direct is not None:
    l2, l1 = direct
    return ("L2" if l2 is not None else "L1"), l2, l1
  kinds, l2, l1 = _read(tensor, variable_op)
  if kinds == {"l2", "l1"}:
    return "L1L2", l2, l1
  if kinds == {"l2"}:
    return "L2", l2, None
  if kinds == {"l1"}:
    return "L1", None, l1
  return "other", None, None


def _read(tensor, variable_op):
  """(atom kinds, l2, l1) of ``tensor`` in ``variable_op``, by a walk.

  The atoms are ``L2Loss(w)`` (``sum(w^2)/2``), ``Square(w)`` and ``Abs(w)``
  of the variable's value; their coefficients in ``tensor`` are read with
  ``_coefficient`` (sums, constant factors, means). No kinds when the term
  uses the variable any other way; no coefficients where one is not a
  constant.
  """
  # Data edges only (no gradient registry lookups); an op without a
  # gradient still passes no coefficient (see _coefficient).
  walk = _graph.Walk([tensor], differentiable=False)
  atoms: Dict[int, Tuple] = {}
  kinds: List[Tuple[str, float]] = []
  for op in walk.ops:
    for index, value in enumerate(op.inputs):
      if _owner(value) is not variable_op or op.type in _READS:
        continue
      if op.type not in ("L2Loss", "Square", "Abs") or index != 0:
        return set(), None, None  # The term uses w another way (activity).
      atoms[len(kinds)] = (_graph.key(op.outputs[0]),)
      kinds.append(("l1", 1.0) if op.type == "Abs" else
                   ("l2", 0.5 if op.type == "L2Loss" else 1.0))
  present = {name for name, _ in kinds}
  if not atoms:
    return present, None, None
  found = _coefficient.coefficients(tensor, atoms, walk)
  totals: Dict[str, float] = {}
  for ident, (name, unit) in enumerate(kinds):
    value = found.get(ident)
    if value is None:
      return present, None, None
    totals[name] = totals.get(name, 0.0) + value * unit
  return present, totals.get("l2"), totals.get("l1")
