"""The rule: which regularization losses a train op must include, and does.

A regularization loss is *required* when it depends, along a differentiable
path, on a variable the train op updates; regularization of frozen variables
is reported but never required. It is *included* when the optimized loss
depends on it along a differentiable path. Required but not included is what
``create_train_op_safe`` refuses to build.

Everything reads the graph (see ``_graph``); nothing here adds to it.
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from safetrain import _args
from safetrain import _coefficient
from safetrain import _graph
from safetrain import _keras
from safetrain import _report

__all__ = ("all_variables", "analyze", "check_regularization", "in_scope",
           "regularization_losses")

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


def regularization_losses(graph, scope: Optional[str] = None) -> List:
  """The graph's REGULARIZATION_LOSSES, then its Keras terms, each once."""
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
  for term in _keras.regularization_terms(graph):  # Keras: layer.losses.
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


def _describe(loss) -> str:
  shape = "scalar" if loss.shape.ndims == 0 else f"shape {loss.shape}"
  return f"'{loss.name}' ({loss.dtype.base_dtype.name} {shape})"


def analyze(loss, variables_to_train: Sequence, *,
            regularization: Optional[Sequence] = None,
            expected_coefficient: Optional[float] = None,
            with_coefficients: bool = False,
            memo: Optional[_graph.Memo] = None
            ) -> _report.RegularizationReport:
  """The report for ``loss``, whose arguments are already validated.

  ``memo`` may be shared by analyses of one graph (an audit's train ops).
  """
  graph = loss.graph
  memo = memo if memo is not None else _graph.Memo()
  if regularization is None:
    regularization = regularization_losses(graph)
  trained_owners = _graph.variable_key_ops(variables_to_train)
  all_owners = trained_owners
  if regularization:  # Frozen terms are named after untrained variables too.
    all_owners = _graph.variable_key_ops(all_variables(graph))
    all_owners.update(trained_owners)

  walk = _graph.Walk([loss], differentiable=True) if regularization else None
  data_walk = None  # Built only if something is left out.
  terms = []
  included_keys = {}
  for tensor in regularization:
    variables = _regularized_variables(tensor, graph, all_owners, memo)
    required = any(v.op in trained_owners for v in variables)
    names = tuple(_variable_name(v) for v in variables)
    if tensor.graph is not graph:
      status = Status.UNREACHABLE
    else:
      copies = _copies(tensor, walk, memo)
      if copies:
        status = Status.INCLUDED
        included_keys[len(terms)] = copies
      else:
        if data_walk is None:
          data_walk = _graph.Walk([loss], differentiable=False)
        if _copies(tensor, data_walk, memo):
          status = Status.BLOCKED
        else:
          status = Status.MISSING if required else Status.FROZEN
    terms.append(_report.RegularizationTerm(
        name=tensor.name, variables=names, status=status, required=required,
        tensor=tensor))
  if with_coefficients and included_keys:
    coefficients = _coefficient.coefficients(
        loss, {i: keys for i, keys in included_keys.items()}, walk)
    terms = [
        _replace_coefficient(t, coefficients.get(i))
        for i, t in enumerate(terms)
    ]
  return _report.RegularizationReport(
      loss_name=loss.name,
      loss_description=_describe(loss),
      terms=tuple(terms),
      trained_variables=tuple(
          sorted(v.op.name for v in trained_owners.values())),
      expected_coefficient=expected_coefficient)


def _replace_coefficient(term, coefficient):
  if coefficient is None:
    return term
  return _report.RegularizationTerm(
      name=term.name, variables=term.variables, status=term.status,
      required=term.required, coefficient=coefficient, tensor=term.tensor)


def _copies(tensor, walk, memo) -> Tuple:
  if _graph.is_lazy_tensor(tensor):
    return _graph.lazy_copies(tensor, walk, memo)
  tensor_key = _graph.key(tensor)
  return (tensor_key,) if tensor_key in walk.reached else ()


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
    out, and ``ok`` is true when there are none (and none overcounted).
  """
  caller = "check_regularization"
  _args.require_graph_mode(caller)
  loss = _args.graph_loss(loss, caller, "loss")
  variables = _args.trained_variables(variables_to_train, loss.graph, caller)
  return analyze(loss, variables, expected_coefficient=expected_coefficient,
                 with_coefficients=expected_coefficient is not None)
