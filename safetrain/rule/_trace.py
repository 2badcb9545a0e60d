"""From a train op back to the loss it minimizes and the variables it updates.

``slim.learning.train`` is handed a train op, and an audited MetaGraph holds
nothing but ops, so both need to recover what ``create_train_op`` knew: the
optimized loss and the variables. This reads the graph only.

* Variables: the optimizer's apply ops (``ApplyGradientDescent``,
  ``ResourceApplyAdam``, ``ResourceSparseApplyMomentum``, ...) among the train
  op's ancestors, data and control edges both; each names its variable as its
  first input. An optimizer written by hand (BERT's
  ``AdamWeightDecayOptimizer``, a Keras 2 optimizer in a TF1 graph) has no
  apply op: its updates are the assigns whose new value is computed from
  gradients, and the variables it trains are those among them that the loss
  reads (its slots, written from the gradients too, are not).
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
from typing import Dict, List, Optional, Set, Tuple

import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _graph

__all__ = ("TrainOpTrace", "find_train_ops", "losses_of_gradients",
           "trace_train_op")

_OPTIMIZER_APPLY = re.compile(r"^(Resource)?(Sparse)?Apply[A-Z]\w*$")
# Ops that write a variable's new value. An optimizer written by hand (BERT's
# AdamWeightDecayOptimizer, a Keras 1/2 optimizer in a TF1 graph, a
# tf.assign loop) updates with these instead of an Apply op; such an update
# is one whose new value is computed from gradients.
_ASSIGNS = frozenset({"Assign", "AssignSub", "AssignAdd", "AssignVariableOp",
                      "AssignSubVariableOp", "AssignAddVariableOp"})
# A sparse gradient (an embedding lookup's IndexedSlices) makes plain SGD
# update with a scatter of the scaled rows, not an Apply op: the variable is
# its first input, the rows its third.
_SCATTERS = frozenset({"ScatterSub", "ScatterAdd", "ResourceScatterSub",
                       "ResourceScatterAdd"})
_GRAD_SCOPE = re.compile(
    r"^(?P<prefix>(?:.*/)?gradients(?:_\d+)?)/(?P<fwd>.+?)_grad/")
# Ops whose gradient passes the seed on without an op of its own.
_PASS_THROUGH = frozenset({"Add", "AddV2", "AddN", "Identity", "CheckNumerics",
                           "Snapshot"})
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
  prefix_of: Dict[tf.Operation, Optional[str]] = {}

  def is_gradient(op) -> bool:
    prefix_of[op] = prefix = _gradient_prefix_of(op)
    return prefix is not None

  reached = _graph.ancestor_ops(starts, control=False, stop=is_gradient)
  prefixes: List[str] = []
  for op in reached:
    prefix = prefix_of[op]
    if prefix is not None and prefix not in prefixes:
      prefixes.append(prefix)
  return prefixes


def _seed_consumers(graph, prefix: str) -> List[tf.Operation]:
  """The ops the seed of the gradients under ``prefix`` feeds.

  Today's TensorFlow seeds a scalar loss's gradient with a ``grad_ys_0``
  constant that the loss's gradient ops read. TensorFlow 1.5 to 1.15 made
  ``grad_ys_0`` the scalar one and filled the seed from it:
  ``Fill(Shape(loss), grad_ys_0)``, named ``Fill``, which the gradient ops
  read; before 1.5 the constant was named ``Const``. A seed that only feeds
  another seed leads on to that one's consumers.
  """
  consumers: List[tf.Operation] = []
  for name in ("grad_ys_0", "Fill"):
    if not _graph.has_op(graph, f"{prefix}/{name}"):
      continue
    for consumer in graph.get_operation_by_name(
        f"{prefix}/{name}").outputs[0].consumers():
      if _SEED.match(consumer.name) is None and consumer not in consumers:
        consumers.append(consumer)
  return consumers


def _loss_from_seed(graph, prefix: str) -> Optional[tf.Tensor]:
  forward = []
  for consumer in _seed_consumers(graph, prefix):
    match = _GRAD_SCOPE.match(consumer.name)
    if match and _graph.has_op(graph, match.group("fwd")):
      op = graph.get_operation_by_name(match.group("fwd"))
      if op not in forward:
        forward.append(op)
  if len(forward) == 1:
    return _seeded_output(forward[0], prefix)
  if not forward:
    return None
  return _joining_loss(forward)


def _joining_loss(forward: List[tf.Operation]) -> Optional[tf.Tensor]:
  """The loss whose gradient makes no op of its own before ``forward``'s.

  The gradient of a sum (``Add`` of equal shapes, ``AddN``) or an identity
  passes the seed on unchanged, so the seed's first consumers can be the
  gradient ops of several forward ops, each reaching the loss through such
  ops only (``cross_entropy + tf.add_n(regularization)``). The loss is where
  those paths first join: the op of that kind that every forward op
  reaches, and that no other such op lies below.
  """
  below: Dict[tf.Operation, int] = {}  # Op -> bit set of forward ops below.
  order: List[tf.Operation] = []
  queue = list(forward)
  for i, op in enumerate(forward):
    below[op] = below.get(op, 0) | (1 << i)
  while queue:
    op = queue.pop(0)
    order.append(op)
    for output in op.outputs:
      for consumer in output.consumers():
        if (consumer.type in _PASS_THROUGH and consumer not in below and
            not _GRAD_SCOPE.match(consumer.name)):
          below[consumer] = 0
          queue.append(consumer)
  for op in order:  # Forward ops first, then in the order reached.
    for output in op.outputs:
      for consumer in output.consumers():
        if consumer in below:
          below[consumer] |= below[op]
  every = (1 << len(forward)) - 1
  for _ in range(len(order)):  # Until nothing changes: the paths are short.
    changed = False
    for op in order:
      merged = below[op]
      for value in op.inputs:
        merged |= below.get(value.op, 0)
      if merged != below[op]:
        below[op], changed = merged, True
    if not changed:
      break
  joins = [op for op in order if below[op] == every and op not in forward and
           _float_scalar(op) is not None]
  lowest = [op for op in joins
            if not any(value.op in joins for value in op.inputs)]
  return _float_scalar(lowest[0]) if len(lowest) == 1 else None


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


class _GradientReach:
  """Which ops compute their value from gradients, memoized per graph walk.

  An op does when a gradient op (one under a ``gradients`` scope) is among
  its data ancestors. Each op is visited once, however many assigns ask.
  """

  def __init__(self):
    self._known: Dict[tf.Operation, bool] = {}

  def __call__(self, op) -> bool:
    stack = [op]
    while stack:
      current = stack[-1]
      if current in self._known:
        stack.pop()
        continue
      if _gradient_prefix_of(current) is not None:
        self._known[current] = True
        stack.pop()
        continue
      pending = [t.op for t in current.inputs if t.op not in self._known]
      if pending:
        stack.extend(pending)
        if len(stack) > 100000:  # A cycle (while loops) or absurd depth.
          break
        continue
      stack.pop()
      self._known[current] = any(self._known.get(t.op, False)
                                 for t in current.inputs)
    return self._known.get(op, False)


def _gradient_assigns(ops, reach: _GradientReach) -> List[tf.Operation]:
  """The assigns among ``ops`` whose new value is computed from gradients."""
  return [op for op in ops if op.type in _ASSIGNS and len(op.inputs) >= 2
          and reach(op.inputs[1].op)]


def _gradient_scatters(ops, reach: _GradientReach) -> List[tf.Operation]:
  """The scatters among ``ops`` whose rows are computed from gradients."""
  return [op for op in ops if op.type in _SCATTERS and len(op.inputs) >= 3
          and reach(op.inputs[2].op)]


def _updates(op) -> Tuple[List[tf.Operation], List[tf.Operation]]:
  """(apply ops, gradient assigns) that train op ``op`` runs."""
  # Every TF1 API runs its updates through control dependencies (slim's
  # train op waits for the global step's AssignAdd, which waits for the
  # update group, which waits for the apply ops), so that short walk comes
  # first; the walk over all data ancestors is the fallback.
  reach = _GradientReach()
  ancestors = _graph.ancestor_ops([op], data=False)
  apply_ops = [a for a in ancestors if _OPTIMIZER_APPLY.match(a.type)]
  apply_ops += _gradient_scatters(ancestors, reach)
  if not apply_ops:
    ancestors = _graph.ancestor_ops([op])
    apply_ops = [a for a in ancestors if _OPTIMIZER_APPLY.match(a.type)]
    apply_ops += _gradient_scatters(ancestors, reach)
  if apply_ops:
    return apply_ops, []
  return [], _gradient_assigns(ancestors, reach)


def _differentiated(losses, owners: Dict[str, tf.Operation]) -> Set[str]:
  """The names in ``owners`` of variables some loss depends on."""
  reached = set()
  for loss in losses:
    reached.update(_graph.Walk([loss], differentiable=False).ops)
  return {name for name, op in owners.items() if op in reached}


def trace_train_op(train_op) -> TrainOpTrace:
  """Finds the loss(es) and variables of ``train_op`` (a tensor or an op)."""
  op = _as_op(train_op)
  if op is None:
    raise _errors.InvalidArgumentTypeError(
        "trace_train_op: train_op must be a graph tf.Operation or tf.Tensor, "
        f"got {type(train_op).__name__}.")
  graph = op.graph
  apply_ops, assigns = _updates(op)
  owners: Dict[str, tf.Operation] = {}
  assigned: Dict[str, tf.Operation] = {}
  prefixes: List[str] = []
  for update in apply_ops + assigns:
    owner = (_graph.variable_op_of(update.inputs[0]) if update.inputs
             else None)
    if owner is not None:
      (owners if update in apply_ops else assigned).setdefault(owner.name,
                                                              owner)
    for prefix in _gradient_prefixes(update):
      if prefix not in prefixes:
        prefixes.append(prefix)
  # What the apply ops were computed from is the truth: the loss a guard
  # with on_missing="add" augments is not the one slim's train op returns.
  losses = _losses_of_prefixes(graph, prefixes)
  if (not losses and op.type == "Identity" and op.control_inputs and
      op.inputs and op.outputs[0].dtype.base_dtype.is_floating):
    losses.append(_peel_check_numerics(op.inputs[0]))  # create_train_op.
  if assigned:
    # An assign-based optimizer also writes its slots (m, v) from the
    # gradients; the variables it trains are those the loss reads.
    kept = _differentiated(losses, assigned)
    for name in sorted(kept):
      owners.setdefault(name, assigned[name])
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
  reach = _GradientReach()
  apply_ops = {op for op in graph.get_operations()
               if _OPTIMIZER_APPLY.match(op.type)}
  apply_ops |= set(_gradient_scatters(graph.get_operations(), reach))
  if not apply_ops:
    # An optimizer written by hand: its updates are assigns computed from
    # gradients (BERT's AdamWeightDecayOptimizer, Keras 2's get_updates).
    apply_ops = set(_gradient_assigns(graph.get_operations(), reach))
  if not apply_ops:
    return ()
  runs_apply = _graph.descendant_ops(apply_ops, graph)
  waited_for = {parent for op in runs_apply
                for parent in [t.op for t in op.inputs] + op.control_inputs}
  # A read of a variable after its update (what tf.compat.v1.assign returns
  # for a resource variable) is no train op beside the group that runs the
  # updates; where nothing else is left (a Keras optimizer's train op is
  # the read of its incremented iterations), it is the train op.
  sinks = runs_apply - apply_ops - waited_for
  sinks = {op for op in sinks if op.type != "ReadVariableOp"} or sinks
  return tuple(sorted(sinks, key=lambda o: o.name))


def _strict_ancestors(ops: List[tf.Operation]) -> set:
  """Ops that some op of ``ops`` waits for through control dependencies.

  Only control edges are followed (and, from an op reached that way, its
  control edges again): that is how a train op runs the optimizer's update,
  and it keeps the walk away from the loss's (large) data ancestry.
  """
  return set(_graph.ancestor_ops(
      [p for op in ops for p in op.control_inputs], data=False))
