"""Weight decay registered by hand, found by what it computes.

Not every script puts its weight decay in ``REGULARIZATION_LOSSES``.
TensorFlow's own CIFAR-10 tutorial adds ``wd * tf.nn.l2_loss(w)`` to the
``losses`` collection and trains on ``tf.add_n(tf.get_collection('losses'))``;
others keep a collection of their own, or write the sum into the loss:
``loss + wd * tf.add_n([tf.nn.l2_loss(v) for v in tf.trainable_variables()])``.
This module finds such terms in a graph, whichever collection holds them or
none, so the rule can check them like any other.

A *penalty* starts at a *core*: a scalar that is a norm of one variable's
value (read through identities, reads and casts): ``L2Loss(w)``,
``Sum(Square(w))``, ``Sum(w * w)``, ``Sum(Pow(w, 2))`` or ``Sum(Abs(w))``,
summed over every element. From a core it grows through what keeps it a
penalty: identities and casts, multiplication or division by a scalar
coefficient (a constant, a placeholder, a schedule), sums of penalties
(and constants: Python's ``sum()`` starts from 0), stacking and summing
penalties. Where it stops growing (a sum with the
data loss, a ``sqrt``, a summary) is the *term*: ``wd * sum(...)`` as a
whole, whose coefficient in the loss is then 1 when it is added once.

A term is a term of a loss only when it was built as one; a weight norm
computed for a summary, a metric, a max-norm constraint or LARS's trust
ratio is not. So a penalty counts when its term, or a penalty inside it:

* is in a collection (``losses``, a collection of one's own), or
* is added to something that is not a constant (a data loss), or
* is scaled by a coefficient and used by nothing at all (``reg = wd * ...``
  that the script forgot to add).

``0.5 * tf.reduce_sum(tf.square(w))`` written for a weight summary (as
tf_slim's nets examples do), or ``tf.global_norm(params)`` (whose sum of
``L2Loss`` is doubled before its square root) is therefore no term.

A core already inside a known term (a ``REGULARIZATION_LOSSES`` entry, a
Keras term) is not found again, nor one inside another copy of a known
term (a lazy regularizer's copy in the loss, a Keras term built again by a
second read of ``model.losses``).

Everything here reads the graph; nothing is added to it.
"""

import re
from typing import Dict, List, Optional, Sequence, Set

import tensorflow as tf

from safetrain.graph import _graph

__all__ = ("penalty_terms",)

# What lies between a variable and a norm of it.
_READS = _graph.READ_OPS | {"Cast"}
# Cores: a norm over every element of ``w``.
_SUMS = frozenset({"Sum"})
_SQUARES = frozenset({"Square", "Abs"})
# Ops through which a penalty stays a penalty.
_PASS = frozenset({"Identity", "Cast", "CheckNumerics", "Snapshot"})
_PRODUCTS = frozenset({"Mul", "MulNoNan"})
_SCALES = _PRODUCTS | {"RealDiv", "Div", "TrueDiv", "DivNoNan"}
_SUMMING = frozenset({"Add", "AddV2", "AddN"})
_STACKS = frozenset({"Pack"})
_REDUCTIONS = frozenset({"Sum", "Mean"})
# The backward pass: tf.gradients builds ops under this scope, and the
# gradient of ``wd * L2Loss(w)`` with respect to ``wd`` multiplies the core
# by a scalar too. Nothing joins a gradient op to the forward pass but its
# name scope (see ``rule._trace``).
_GRADIENTS = re.compile(r"(^|/)gradients(_\d+)?/")
# Ops that add their inputs: adding a penalty to anything that is not a
# constant makes it a term of that sum.
_ADDERS = frozenset({"Add", "AddV2", "AddN", "Sub"})


def _variable_of(tensor) -> Optional[tf.Operation]:
  return _graph.variable_op_of(tensor, _READS)


def _is_scalar(tensor) -> bool:
  return tensor.shape.ndims == 0


def _maybe_scalar(tensor) -> bool:
  """A scalar, or of unknown shape (a shapeless placeholder, say)."""
  return tensor.shape.ndims in (0, None)


def _core_variable(op) -> Optional[tf.Operation]:
  """The variable whose norm ``op`` computes, if it is a core."""
  if not op.outputs or not _is_scalar(op.outputs[0]):
    return None
  if not op.outputs[0].dtype.is_floating:
    return None
  if op.type == "L2Loss":
    return _variable_of(op.inputs[0])
  if op.type not in _SUMS or not op.inputs:
    return None
  atom = op.inputs[0].op
  if atom.type in _SQUARES:
    return _variable_of(atom.inputs[0])
  if atom.type == "Mul" and len(atom.inputs) == 2:
    first, second = (_variable_of(t) for t in atom.inputs)
    return first if first is not None and first is second else None
  if atom.type == "Pow" and len(atom.inputs) == 2:
    exponent = _constant(atom.inputs[1])
    return _variable_of(atom.inputs[0]) if exponent == 2.0 else None
  return None


def _constant(tensor) -> Optional[float]:
  op = tensor.op
  while op.type in ("Identity", "Cast") and op.inputs:
    op = op.inputs[0].op
  if op.type != "Const":
    return None
  try:
    value = tf.make_ndarray(op.get_attr("value"))
  except (TypeError, ValueError):
    return None
  return float(value) if value.size == 1 else None


def _is_constant(tensor) -> bool:
  return _constant(tensor) is not None


class _Growth:
  """The penalties grown from the cores of one graph, in the order found."""

  def __init__(self, cores: Sequence[tf.Operation]):
    self.tensors: List[tf.Tensor] = []
    self._keys: Set[_graph.TensorKey] = set()
    self.scaled: Set[_graph.TensorKey] = set()  # Those with a coefficient.
    self.parts: Dict[_graph.TensorKey, List[_graph.TensorKey]] = {}
    frontier = [c.outputs[0] for c in cores]
    for tensor in frontier:
      self._add(tensor, (), scaled=False)
    while frontier:
      grown = []
      for tensor in frontier:
        for consumer in tensor.consumers():
          grown.extend(self._grow(consumer))
      frontier = grown

  def has(self, tensor) -> bool:
    return _graph.key(tensor) in self._keys

  def _add(self, tensor, parts, scaled: bool) -> bool:
    tensor_key = _graph.key(tensor)
    if tensor_key in self._keys:
      return False
    self._keys.add(tensor_key)
    self.tensors.append(tensor)
    self.parts[tensor_key] = list(parts)
    if scaled:
      self.scaled.add(tensor_key)
    return True

  def _grow(self, op) -> List[tf.Tensor]:
    """The output of ``op`` if it is a penalty not found before."""
    if (not op.outputs or not op.outputs[0].dtype.is_floating or
        _GRADIENTS.search(op.name)):
      return []
    out = op.outputs[0]
    inputs = list(op.inputs)
    penal = [self.has(t) for t in inputs]
    scaled = False
    if op.type in _PASS:
      ok = penal[0]
    elif op.type in _SCALES and len(inputs) == 2:
      # A penalty times a coefficient (either side), or over one.
      sides = (0, 1) if op.type in _PRODUCTS else (0,)
      ok = scaled = any(
          penal[i] and not penal[1 - i] and _maybe_scalar(inputs[1 - i])
          for i in sides)
    elif op.type in _SUMMING:
      # Penalties, and constants (Python's sum() starts from 0).
      ok = any(penal) and all(p or _is_constant(t)
                              for t, p in zip(inputs, penal, strict=True))
    elif op.type in _STACKS:
      ok = bool(inputs) and all(penal)
    elif op.type in _REDUCTIONS:
      ok = penal[0] and _maybe_scalar(out)
    else:
      ok = False
    if not ok or not _maybe_scalar(out) and op.type not in _STACKS:
      return []
    parts = [_graph.key(t) for t, p in zip(inputs, penal, strict=True) if p]
    return [out] if self._add(out, parts, scaled) else []


def _ends(growth: _Growth) -> List[tf.Tensor]:
  """The scalar penalties that grow no further."""
  ends = []
  for tensor in growth.tensors:
    if not _maybe_scalar(tensor):
      continue
    if not any(growth.has(o) for c in tensor.consumers()
               for o in c.outputs[:1]):
      ends.append(tensor)
  return ends


def _added_to_a_loss(growth: _Growth, tensor) -> bool:
  """Whether ``tensor`` is added to (or from) something not constant."""
  for consumer in tensor.consumers():
    if consumer.type not in _ADDERS:
      continue
    others = [t for t in consumer.inputs if _graph.key(t) != _graph.key(tensor)]
    if any(not growth.has(t) and not _is_constant(t) for t in others):
      return True
  return False


def _used(tensor) -> bool:
  """Whether any op outside the backward pass reads ``tensor``."""
  return any(not _GRADIENTS.search(c.name) for c in tensor.consumers())


def _closure(growth: _Growth, tensor_key) -> Set[_graph.TensorKey]:
  seen = set()
  stack = [tensor_key]
  while stack:
    current = stack.pop()
    if current in seen:
      continue
    seen.add(current)
    stack.extend(growth.parts.get(current, ()))
  return seen


def _collected(graph) -> Set[_graph.TensorKey]:
  """Keys of every tensor held by a collection of ``graph``."""
  found = set()
  for name in graph.get_all_collection_keys():
    for item in graph.get_collection(name):
      if isinstance(item, tf.Tensor) and item.graph is graph:
        found.add(_graph.key(item))
  return found


def _masters(known: Sequence) -> List[tf.Tensor]:
  found = []
  for term in known:
    tensor = getattr(term, "_master_tensor", None)
    tensor = term if tensor is None else tensor
    if isinstance(tensor, tf.Tensor):
      found.append(tensor)
  return found


def _leaves(master, memo: _graph.Memo) -> Set[tf.Operation]:
  master_key = _graph.key(master)
  if master_key not in memo.depth_and_leaves:
    memo.depth_and_leaves[master_key] = _graph.depth_and_leaves(master)
  return memo.depth_and_leaves[master_key][1]


def _covered(masters: Sequence[tf.Tensor]) -> Set[tf.Operation]:
  """The ops inside known terms."""
  if not masters:
    return set()
  return set(_graph.ancestor_ops([t.op for t in masters], control=False))


def penalty_terms(graph, known: Sequence = (),
                  memo: Optional[_graph.Memo] = None) -> List[tf.Tensor]:
  """The hand-registered weight-decay terms of ``graph`` (see module doc).

  Args:
    graph: the graph to search.
    known: terms already known (``REGULARIZATION_LOSSES``, Keras terms);
      penalties inside them, or copies of the lazy ones, are left out.
    memo: shared by the checks of one graph.

  Returns:
    The terms, in graph order, each once.
  """
  memo = memo if memo is not None else _graph.Memo()
  masters = _masters(known)
  covered = _covered(masters)
  cores = [op for op in graph.get_operations()
           if op.type in ("L2Loss", "Sum") and op not in covered and
           not _GRADIENTS.search(op.name) and _core_variable(op) is not None]
  if cores and masters:
    # A lazy term (get_variable(regularizer=...), a Keras weight term) is
    # built anew each time it is used, so the loss holds a copy of it, not
    # the tensor the collection holds, and a saved graph no longer says
    # which entries were lazy: a tensor that computes what a known term of
    # the same variable does, the same way, is that term.
    # Each copy is searched for once (and kept in ``memo`` for the check),
    # and only for the terms of variables that have an uncovered penalty.
    masters_of: Dict[tf.Operation, List[tf.Tensor]] = {}
    for master in masters:
      for leaf in _leaves(master, memo):
        masters_of.setdefault(leaf, []).append(master)
    searched: Set[tf.Operation] = set()
    for variable in {_core_variable(op) for op in cores}:
      for master in masters_of.get(variable, ()):
        if master.op not in searched:
          searched.add(master.op)
          covered.update(_graph.ancestor_ops(
              [k[0] for k in _graph.copies(master, memo)], control=False,
              stop=covered.__contains__))
    cores = [op for op in cores if op not in covered]
  if not cores:
    return []
  growth = _Growth(cores)
  collected = _collected(graph)
  registered = []
  for end in _ends(growth):
    closure = _closure(growth, _graph.key(end))
    if (closure & collected or _added_to_a_loss(growth, end) or
        (closure & growth.scaled and not _used(end))):
      registered.append(end)  # Else a norm for a summary, a metric, ...
  terms = []
  seen = set()
  for term in _split_shared(growth, registered):
    if _graph.key(term) not in seen:
      seen.add(_graph.key(term))
      terms.append(term)
  return terms


def _split_shared(growth: _Growth, ends: Sequence[tf.Tensor]
                  ) -> List[tf.Tensor]:
  """``ends``, each split where a part of it is a part of another too.

  Two losses of one graph may sum overlapping parts of one collection (a
  script that builds its model twice: ``add_n(get_collection('losses'))``
  over two terms, then over four). As terms, the two sums would overlap,
  and the first update would seem to leave out the second sum. So an end
  that shares a part with another is replaced by its parts, recursively,
  until each piece is shared by the same ends throughout.
  """
  by_key = {_graph.key(t): t for t in growth.tensors}
  owners: Dict[_graph.TensorKey, Set[_graph.TensorKey]] = {}
  for end in ends:
    for part in _closure(growth, _graph.key(end)):
      owners.setdefault(part, set()).add(_graph.key(end))
  pieces = []
  stack = [_graph.key(end) for end in reversed(ends)]
  while stack:
    current = stack.pop()
    closure = _closure(growth, current)
    if all(owners[part] == owners[current] for part in closure):
      pieces.append(by_key[current])
    else:
      stack.extend(reversed(growth.parts[current]))
  return pieces
