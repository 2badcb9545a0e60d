"""The rule: which regularization losses a train op must include, and does.

A regularization loss is *required* when it depends, along a differentiable
path, on a variable the train op updates; regularization of frozen variables
is reported but never required. It is *included* when the optimized loss
depends on it along a differentiable path. Required but not included is what
``create_train_op_safe`` refuses to build.

Everything reads the graph (see ``_graph``); nothing here adds to it.
"""

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from safetrain.graph import _coefficient
from safetrain.graph import _graph
from safetrain.rule import _args
from safetrain.rule import _report
from safetrain.terms import _forms
from safetrain.terms import _keras
from safetrain.terms import _penalties

__all__ = ("all_variables", "analyze", "check_regularization", "in_scope",
           "regularization_losses", "regularizing", "replicas_summing",
           "routes", "with_decoupled")

Status = _report.Status


def in_scope(name: str, scope: Optional[str]) -> bool:
  """Whether ``name`` lies in name scope ``scope``, with a '/' boundary.

  ``clone_1`` takes ``clone_1/...`` but not ``clone_10/...`` (TensorFlow's own
  ``scope=`` filters are regular-expression prefixes and take both).
  """
  if not scope:
    return True
  scope = scope.rstrip("/")
  return name == scope or name.startswith(scope + "/")


def regularization_losses(graph, scope: Optional[str] = None, *,
                          keras_terms: Optional[Sequence] = None,
                          memo: Optional[_graph.Memo] = None) -> List:
  """Every regularization term of ``graph``, each once.

  The ``REGULARIZATION_LOSSES`` collection, then the Keras terms (those of
  live layers, or ``keras_terms`` when given: a saved graph's), then the
  weight decay registered by hand that neither holds (``terms._penalties``:
  a ``losses`` collection, a collection of one's own, a sum in the loss).
  """
  seen = set()
  result = []
  for tensor in graph.get_collection(
      tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES):
    if not hasattr(tensor, "value_index"):
      logging.warning(
          "REGULARIZATION_LOSSES holds %r, which is not a tensor; it is "
          "skipped (only tensors can be added to a loss).", tensor)
      continue
    tensor_key = _graph.key(tensor)  # A lazy tensor is keyed by its master.
    if tensor_key in seen or not in_scope(tensor.name, scope):
      continue
    seen.add(tensor_key)
    result.append(tensor)
  if keras_terms is None:
    keras_terms = _keras.regularization_terms(graph)  # Keras: layer.losses.
  for term in keras_terms:
    if _graph.key(term) not in seen and in_scope(term.name, scope):
      seen.add(_graph.key(term))
      result.append(term)
  for term in _penalties.penalty_terms(graph, known=result, memo=memo):
    if _graph.key(term) not in seen and in_scope(term.name, scope):
      seen.add(_graph.key(term))
      result.append(term)
  return result


def all_variables(graph) -> List:
  keys = tf.compat.v1.GraphKeys
  found = []
  for collection in (keys.GLOBAL_VARIABLES, keys.LOCAL_VARIABLES,
                     keys.TRAINABLE_VARIABLES, keys.MODEL_VARIABLES):
    found.extend(graph.get_collection(collection))
  return found


def _variable_name(variable) -> str:
  return variable.op.name


def _regularized_variables(tensor, graph, owners: Dict,
                           memo: _graph.Memo) -> Tuple:
  """The variables (of ``owners``) a regularization loss depends on."""
  if _graph.is_lazy_tensor(tensor):
    tensor = tensor._master_tensor  # pylint: disable=protected-access
  tensor_key = _graph.key(tensor)
  leaves = memo.leaves.get(tensor_key)
  if leaves is None:
    if tensor.graph is not graph:
      starts = _graph.captured_outer_tensors(tensor, graph)
    else:
      starts = (tensor,)
    walk = _graph.Walk(starts, differentiable=True)
    leaves = memo.leaves[tensor_key] = tuple(
        sorted((op for op in walk.ops if not op.inputs),
               key=lambda op: op.name))
  return tuple(owners[op] for op in leaves if op in owners)


def _describe_loss(loss) -> str:
  shape = "scalar" if loss.shape.ndims == 0 else f"shape {loss.shape}"
  return f"'{loss.name}' ({loss.dtype.base_dtype.name} {shape})"


def analyze(losses, variables_to_train: Sequence, *,
            regularization: Optional[Sequence] = None,
            expected_coefficient: Optional[float] = None,
            with_coefficients: bool = False,
            replicas: int = 1,
            ineffective: Sequence = (),
            memo: Optional[_graph.Memo] = None
            ) -> _report.RegularizationReport:
  """The report for one update, whose arguments are already validated.

  Args:
    losses: the loss tensor, or the losses whose gradients one update sums
      (model_deploy's per-clone gradients), all of one graph.
    variables_to_train: the variables the update changes.
    regularization: the terms to look for; by default the graph's.
    expected_coefficient: the coefficient that counts as once, if read.
    with_coefficients: read each included term's coefficient, summed over
      the losses.
    replicas: N when each loss is a replica's whose gradient is summed with
      N-1 others: then every data loss of the ``LOSSES`` collection in it
      must enter with 1/N.
    ineffective: regularizers found set where they never act.
    memo: shared by analyses of one graph (an audit's train ops).

  Returns:
    A ``RegularizationReport``.
  """
  if not isinstance(losses, (list, tuple)):
    losses = [losses]
  graph = losses[0].graph
  memo = memo if memo is not None else _graph.Memo()
  if regularization is None:
    regularization = regularization_losses(graph, memo=memo)
  trained_owners = _graph.variable_key_ops(variables_to_train)
  all_owners = trained_owners
  if regularization:  # Frozen terms are named after untrained variables too.
    all_owners = _graph.variable_key_ops(all_variables(graph))
    all_owners.update(trained_owners)

  walks = ([_graph.Walk([loss], differentiable=True) for loss in losses]
           if regularization or replicas > 1 else [])
  data_walks = None  # Built only if something is left out.
  terms: List[_report.RegularizationTerm] = []
  # Term index -> {loss index: keys of the term's copies in that loss}.
  copies_of: Dict[int, Dict[int, Tuple]] = {}
  # A term of its own is no copy of another term that computes the same
  # (each tower of TensorFlow's multi-GPU CIFAR-10 tutorial builds its own
  # wd * l2_loss(w) of the shared variables, and includes it in its own
  # loss) unless the term itself is in no loss (a Keras 3 term built by one
  # read of model.losses for a summary, the same term built by another read
  # for the loss): then the identical term in a loss stands for it.
  own = frozenset(_graph.key(_master(t)) for t in regularization)
  for tensor in regularization:
    variables = _regularized_variables(tensor, graph, all_owners, memo)
    required = any(v.op in trained_owners for v in variables)
    names = tuple(_variable_name(v) for v in variables)
    if tensor.graph is not graph:
      status = Status.UNREACHABLE
    else:
      found = {i: keys for i, walk in enumerate(walks)
               if (keys := _keys_in_walk(tensor, walk, memo, own))}
      if not found and _graph.is_lazy_tensor(tensor):
        found = {i: keys for i, walk in enumerate(walks)
                 if (keys := _keys_in_walk(tensor, walk, memo))}
      if found:
        status = Status.INCLUDED
        copies_of[len(terms)] = found
      else:
        if data_walks is None:
          data_walks = [_graph.Walk([loss], differentiable=False)
                        for loss in losses]
        if any(_keys_in_walk(tensor, walk, memo, own)
               for walk in data_walks):
          status = Status.BLOCKED
        else:
          status = Status.MISSING if required else Status.FROZEN
    terms.append(_report.RegularizationTerm(
        name=tensor.name, variables=names, status=status, required=required,
        tensor=tensor))
  if with_coefficients and copies_of:
    summed = _summed_coefficients(losses, walks, copies_of)
    terms = [dataclasses.replace(t, coefficient=summed[i])
             if summed.get(i) is not None else t
             for i, t in enumerate(terms)]
  scale = 1.0
  if with_coefficients and len(losses) == 1 and replicas == 1:
    scale = _coefficient.whole_scale(losses[0])
  misscaled = ()
  if replicas > 1:
    misscaled = tuple(_misscaled_data(losses, walks, replicas))
  return _report.RegularizationReport(
      loss_name=losses[0].name,
      loss_description=_describe_loss(losses[0]),
      terms=tuple(terms),
      trained_variables=tuple(
          sorted(v.op.name for v in trained_owners.values())),
      expected_coefficient=expected_coefficient,
      losses=tuple(loss.name for loss in losses),
      scale=scale,
      replicas=replicas,
      misscaled_data=misscaled,
      ineffective=tuple(ineffective))


def regularizing(graph, terms: Sequence, variables: Sequence,
                 memo: Optional[_graph.Memo] = None) -> List:
  """The ``terms`` that regularize one of ``variables``."""
  memo = memo if memo is not None else _graph.Memo()
  owners = _graph.variable_key_ops(variables)
  return [t for t in terms
          if _regularized_variables(t, graph, owners, memo)]


def with_decoupled(report: _report.RegularizationReport,
                   decoupled: Dict) -> _report.RegularizationReport:
  """``report`` with a ``DECAYED_TWICE`` finding per doubly decayed variable.

  ``decoupled`` maps variable ops to the decay the optimizer's own update
  applies (``terms._decoupled``). A trained variable that an included term
  of the loss decays as well (an L2 term: ``terms._forms``) is decayed
  twice: the ``DOUBLED`` verdict, as for a Keras optimizer's
  ``weight_decay`` over a regularized layer, and as the ledger's rows say.
  """
  trained = set(report.trained_variables)
  found = []
  for variable_op, decay in sorted(decoupled.items(),
                                   key=lambda item: item[0].name):
    name = variable_op.name
    terms = [t.name for t in report.terms
             if t.status is Status.INCLUDED and name in t.variables and
             _forms.form(t.tensor, variable_op)[0] in ("L2", "L1L2")]
    if name in trained and terms:
      found.append(_report.Finding(
          _report.FindingKind.DECAYED_TWICE, (name,),
          f"{name}: '{terms[0]}' in the loss and {decay.describe()}"))
  if not found:
    return report
  return dataclasses.replace(report, findings=report.findings + tuple(found))


def _summed_coefficients(losses, walks,
                         copies_of) -> Dict[int, Optional[float]]:
  """Each term's coefficient summed over the losses; None if any is unknown."""
  summed: Dict[int, Optional[float]] = {}
  for i, (loss, walk) in enumerate(zip(losses, walks, strict=True)):
    wanted = {t: found[i] for t, found in copies_of.items() if i in found}
    if not wanted:
      continue
    for term, value in _coefficient.coefficients(loss, wanted, walk).items():
      previous = summed.get(term, 0.0)
      if previous is None:
        continue
      summed[term] = None if value is None else previous + value
  return summed


def _misscaled_data(losses, walks, replicas: int):
  """(name, coefficient) of each collected data loss not at 1/N."""
  expected = 1.0 / replicas
  collected = losses[0].graph.get_collection(tf.compat.v1.GraphKeys.LOSSES)
  for loss, walk in zip(losses, walks, strict=True):
    data = [t for t in collected if _graph.key(t) in walk.reached]
    found = _coefficient.coefficients(
        loss, {i: (_graph.key(t),) for i, t in enumerate(data)}, walk)
    for i, tensor in enumerate(data):
      value = found[i]
      if value is not None and not _report.close(value, expected):
        yield (tensor.name, value)


def _master(tensor):
  master = getattr(tensor, "_master_tensor", None)
  return tensor if master is None else master


def _keys_in_walk(tensor, walk, memo, terms: frozenset = frozenset()
                  ) -> Tuple:
  """Keys of ``tensor`` (or, for a lazy tensor, of its copies) in ``walk``.

  A copy that is itself one of ``terms`` (keys of the terms' masters) is
  that term, not a copy of this one.
  """
  if _graph.is_lazy_tensor(tensor):
    own = _graph.key(_master(tensor))
    return tuple(k for k in _graph.lazy_copies(tensor, walk, memo)
                 if k == own or k not in terms)
  tensor_key = _graph.key(tensor)
  return (tensor_key,) if tensor_key in walk.reached else ()


def replicas_summing() -> int:
  """N when building inside ``strategy.run`` of an N-replica strategy, else 1.

  There a ``tf.compat.v1.train`` optimizer sums the replicas' gradients.
  """
  if (not tf.distribute.has_strategy() or
      tf.distribute.in_cross_replica_context()):
    return 1
  context = tf.distribute.get_replica_context()
  return context.num_replicas_in_sync if context is not None else 1


def routes(losses: Sequence, terms: Sequence) -> str:
  """Text naming, for each term, the ops through which it enters the losses.

  For the message of a doubled term: which path counted it, and how often.
  """
  found: Dict[int, List] = {i: [] for i in range(len(terms))}
  for loss in losses:
    walk = _graph.Walk([loss], differentiable=True)
    own = frozenset(_graph.key(_master(t.tensor)) for t in terms)
    wanted = {i: _keys_in_walk(term.tensor, walk, None, own)
              for i, term in enumerate(terms)}
    for i, contributions in _coefficient.contributions(
        loss, wanted, walk).items():
      found[i].extend(contributions)
  lines = ["  where each is added (the op that adds it, and the coefficient "
           "along that route):"]
  for index, term in enumerate(terms[:_report.MESSAGE_LIMIT]):
    parts = []
    for route in found.get(index, ()):
      times = len(route.input_indices)
      count = f" {times} times" if times > 1 else ""
      value = "?" if route.coefficient is None else f"{route.coefficient:g}"
      parts.append(f"'{route.op_name}'{count} x{value}")
    lines.append(f"    '{term.name}': " +
                 (", ".join(parts) or "(not shown)"))
  return "\n".join(lines)


def check_regularization(
    loss: tf.Tensor,
    variables_to_train: Optional[Iterable[tf.Variable]] = None,
    *,
    expected_coefficient: Optional[float] = None,
) -> _report.RegularizationReport:
  """Reports how each regularization loss of the graph enters ``loss``.

  Reads the graph only: no ops are added and no session runs.

  Args:
    loss: the scalar loss a train op minimizes.
    variables_to_train: the variables the train op updates; by default the
      graph's trainable variables, as in ``create_train_op``.
    expected_coefficient: if given, each included term's coefficient in the
      loss is read from the graph where possible, and terms counted with a
      larger coefficient (added twice, say) are reported as overcounted. Use
      1.0 for a single-device loss.

  Returns:
    A ``RegularizationReport``; its ``missing`` terms are required but left
    out, and ``ok`` is true when nothing is wrong with it (see
    ``safetrain.rule._report.verdicts``).
  """
  caller = "check_regularization"
  _args.require_graph_mode(caller)
  loss = _args.graph_loss(loss, caller, "loss")
  variables = _args.trained_variables(variables_to_train, loss.graph, caller)
  return analyze(loss, variables, expected_coefficient=expected_coefficient,
                 with_coefficients=expected_coefficient is not None,
                 replicas=replicas_summing())
