"""From a train op back to the loss it minimizes and the variables it updates.

``slim.learning.train`` is handed a train op, and an audited MetaGraph holds
nothing but ops, so both need to recover what ``create_train_op`` knew: the
optimized loss and the variables. This reads the graph only.

* Variables: the optimizer's apply ops (``ApplyGradientDescent``,
  ``ResourceApplyAdam``, ``ResourceSparseApplyMomentum``, ...) among the train
  op's ancestors, data and control edges both; each names its variable as its
  first input.
* Loss: what the apply ops' gradients were computed from, found where
  ``tf.gradients`` seeded the backward pass (its ``gradients/grad_ys_0`` op):
  the seed's consumers are the gradient ops of the loss's op, or of its
  inputs when the loss's own gradient makes no op (``AddN``, ``Identity``);
  their name scopes ``gradients/<op>_grad`` name the forward ops. This is
  preferred to the value a slim train op returns (the loss passed through an
  ``Identity`` that waits for the updates), which is the fallback: under the
  guard with ``on_missing="add"`` the two differ. Every ``tf.gradients`` call
  whose result reaches an apply op (one per clone under model_deploy) gives
  one loss; together they are the update the rule judges.

Names are read only where the graph has no edge to follow: nothing joins a
gradient op to the forward op it differentiates except its name scope, and
the seed's shape is a constant. Op *types* (``Apply*``, variable ops) and
data and control edges (``_graph.ancestor_ops``) do the rest. The live guard
does not need names: it records each loss as it differentiates it.
"""

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _graph

__all__ = ("TrainOpTrace", "find_train_ops", "losses_of_gradients",
           "trace_train_op")

_OPTIMIZER_APPLY = re.compile(r"^(Resource)?(Sparse)?Apply[A-Z]\w*$")
_GRAD_SCOPE = re.compile(
    r"^(?P<prefix>(?:.*/)?gradients(?:_\d+)?)/(?P<fwd>.+?)_grad/")
_SEED = re.compile(
    r"^(?P<prefix>(?:.*/)?gradients(?:_\d+)?)/(grad_ys_\d+|Fill)$")


@dataclasses.dataclass(frozen=True)
class TrainOpTrace:
  """What a train op minimizes and updates.

  Attributes:
    train_op: the op traced.
    losses: the loss tensors found, one per ``tf.gradients`` call that feeds
      an apply op (usually one); empty if none could be found.
    variables: names of the variables the optimizer updates.
    variable_ops: the ops that own those variables' storage.
  """

  train_op: tf.Operation
  losses: Tuple[tf.Tensor, ...]
  variables: Tuple[str, ...]
  variable_ops: Tuple[tf.Operation, ...]


def _as_op(train_op) -> Optional[tf.Operation]:
  """The op of a train op given as an op or a tensor; None for anything else."""
  if isinstance(train_op, tf.Operation):
    return train_op
  op = getattr(train_op, "op", None)
  return op if isinstance(op, tf.Operation) else None


def _peel_check_numerics(tensor) -> tf.Tensor:
  """The user's loss under slim's ``check_numerics`` wrapper.

  ``create_train_op(check_numerics=True)`` (the default) optimizes
  ``CheckNumerics(total_loss)``; the check passes values and gradients
  through, so the loss the user built is its input.
  """
  while tensor.op.type == "CheckNumerics" and tensor.op.inputs:
    tensor = tensor.op.inputs[0]
  return tensor


def _gradient_prefix_of(op) -> Optional[str]:
  match = _GRAD_SCOPE.match(op.name) or _SEED.match(op.name)
  return match.group("prefix") if match else None


def _gradient_prefixes(apply_op) -> List[str]:
  """The ``gradients`` scopes whose results this apply op consumes.

  Walks back from its inputs (the gradient, the learning rate) through what
  lies between (sums of clone gradients, clipping, multipliers, the terms
  the guard adds) and stops at the first op of each gradient computation:
  one scope per ``tf.gradients`` call whose result reaches the update.
  """
  return _prefixes_reached([t.op for t in apply_op.inputs[1:]])


def _prefixes_reached(starts) -> List[str]:
  reached = _graph.ancestor_ops(
      starts, control=False,
      stop=lambda op: _gradient_prefix_of(op) is not None)
  prefixes: List[str] = []
  for op in reached:
    prefix = _gradient_prefix_of(op)
    if prefix is not None and prefix not in prefixes:
      prefixes.append(prefix)
  return prefixes


def _loss_from_seed(graph, prefix: str) -> Optional[tf.Tensor]:
  seeds = [graph.get_operation_by_name(f"{prefix}/{name}")
           for name in ("grad_ys_0", "Fill")
           if _has_op(graph, f"{prefix}/{name}")]
  if not seeds:
    return None
  forward = []
  for consumer in seeds[0].outputs[0].consumers():
    match = _GRAD_SCOPE.match(consumer.name)
    if match and _has_op(graph, match.group("fwd")):
      op = graph.get_operation_by_name(match.group("fwd"))
      if op not in forward:
        forward.append(op)
  if len(forward) == 1:
    return _seeded_output(forward[0], prefix)
  if not forward:
    return None
  common = None
  for op in forward:
    consumers = {c for t in op.outputs for c in t.consumers()
                 if not _GRAD_SCOPE.match(c.name)}
    common = consumers if common is None else common & consumers
  candidates = [t for c in sorted(common or (), key=lambda o: o.name)
                if (t := _float_scalar(c)) is not None]
  return candidates[0] if len(candidates) == 1 else None


def _has_op(graph, name: str) -> bool:
  try:
    graph.get_operation_by_name(name)
  except (KeyError, ValueError):
    return False
  return True


def _seeded_output(op, prefix: str) -> Optional[tf.Tensor]:
  """The float scalar output of ``op`` that the gradient under ``prefix``
  starts from.

  A ``tf.function`` call's gradient takes one for every output: TensorFlow
  gives each output that is not the loss zeros (a ``ZerosLike`` of it, under
  the same prefix), so the loss is the one output without.
  """
  outputs = _float_scalars(op)
  if len(outputs) > 1:
    seeded = [t for t in outputs if not any(
        c.type == "ZerosLike" and c.name.startswith(prefix + "/")
        for c in t.consumers())]
    if len(seeded) == 1:
      return seeded[0]
  return outputs[0] if outputs else None


def _float_scalars(op) -> List[tf.Tensor]:
  return [t for t in op.outputs
          if t.dtype.base_dtype.is_floating and t.shape.ndims in (0, None)]


def _float_scalar(op) -> Optional[tf.Tensor]:
  outputs = _float_scalars(op)
  return outputs[0] if outputs else None


def _losses_of_prefixes(graph, prefixes: List[str]) -> List[tf.Tensor]:
  losses: List[tf.Tensor] = []
  for prefix in prefixes:
    loss = _loss_from_seed(graph, prefix)
    if loss is not None:
      loss = _peel_check_numerics(loss)
      if all(loss is not seen for seen in losses):
        losses.append(loss)
  return losses


def losses_of_gradients(gradients) -> List[tf.Tensor]:
  """The losses that ``gradients`` (graph tensors) were computed from.

  For gradients made by ``tf.gradients`` directly, which no optimizer's
  ``compute_gradients`` saw: found as ``trace_train_op`` finds them.
  """
  gradients = list(gradients)
  if not gradients:
    return []
  return _losses_of_prefixes(gradients[0].graph,
                             _prefixes_reached([g.op for g in gradients]))


def trace_train_op(train_op) -> TrainOpTrace:
  """Finds the loss(es) and variables of ``train_op`` (a tensor or an op)."""
  op = _as_op(train_op)
  if op is None:
    raise _errors.InvalidArgumentTypeError(
        "trace_train_op: train_op must be a graph tf.Operation or tf.Tensor, "
        f"got {type(train_op).__name__}.")
  graph = op.graph
  # Every TF1 API runs its updates through control dependencies (slim's
  # train op waits for the global step's AssignAdd, which waits for the
  # update group, which waits for the apply ops), so that short walk comes
  # first; the walk over all data ancestors is the fallback.
  apply_ops = [a for a in _graph.ancestor_ops([op], data=False)
               if _OPTIMIZER_APPLY.match(a.type)]
  if not apply_ops:
    apply_ops = [a for a in _graph.ancestor_ops([op])
                 if _OPTIMIZER_APPLY.match(a.type)]
  owners: Dict[str, tf.Operation] = {}
  prefixes: List[str] = []
  for apply_op in apply_ops:
    owner = (_graph.variable_op_of(apply_op.inputs[0]) if apply_op.inputs
             else None)
    if owner is not None:
      owners.setdefault(owner.name, owner)
    for prefix in _gradient_prefixes(apply_op):
      if prefix not in prefixes:
        prefixes.append(prefix)
  # What the apply ops were computed from is the truth: the loss a guard
  # with on_missing="add" augments is not the one slim's train op returns.
  losses = _losses_of_prefixes(graph, prefixes)
  if (not losses and op.type == "Identity" and op.control_inputs and
      op.inputs and op.outputs[0].dtype.base_dtype.is_floating):
    losses.append(_peel_check_numerics(op.inputs[0]))  # create_train_op.
  names = tuple(sorted(owners))
  return TrainOpTrace(train_op=op, losses=tuple(losses), variables=names,
                      variable_ops=tuple(owners[n] for n in names))


def find_train_ops(graph) -> Tuple[tf.Operation, ...]:
  """The graph's train ops: the ``train_op`` collection, else apply-op sinks.

  The ``train_op`` collection is filled by slim's ``create_train_op`` and also
  by every ``Optimizer.apply_gradients`` call (with its own op, the global
  step's ``AssignAdd`` when there is a global step). An entry that another
  entry runs through control dependencies (as slim's train op waits for the
  ``AssignAdd``) is part of that train op, not a train op of its own, so it
  is dropped: a slim graph yields slim's train op alone. Without the
  collection, a train op is an op that runs optimizer apply ops (through data
  or control edges) and that nothing else runs.
  """
  listed = []
  for item in graph.get_collection(tf.compat.v1.GraphKeys.TRAIN_OP):
    op = _as_op(item)
    if op is not None and op.graph is graph and op not in listed:
      listed.append(op)
  if len(listed) > 1:
    run_by_others = _strict_ancestors(listed)
    return tuple(op for op in listed if op not in run_by_others)
  if listed:
    return tuple(listed)
  apply_ops = {op for op in graph.get_operations()
               if _OPTIMIZER_APPLY.match(op.type)}
  if not apply_ops:
    return ()
  runs_apply = _graph.descendant_ops(apply_ops, graph)
  waited_for = {parent for op in runs_apply
                for parent in [t.op for t in op.inputs] + op.control_inputs}
  sinks = runs_apply - apply_ops - waited_for
  return tuple(sorted(sinks, key=lambda o: o.name))


def _strict_ancestors(ops: List[tf.Operation]) -> set:
  """Ops that some op of ``ops`` waits for through control dependencies.

  Only control edges are followed (and, from an op reached that way, its
  control edges again): that is how a train op runs the optimizer's update,
  and it keeps the walk away from the loss's (large) data ancestry.
  """
  return set(_graph.ancestor_ops(
      [p for op in ops for p in op.control_inputs], data=False))
