"""The safe API: ``total_loss_from`` and ``create_train_op_safe``.

Both wrap what tf_slim does and keep its names, parameters and defaults;
safetrain's own options are keyword-only. ``enforce`` checks one loss and
acts through the one policy (``_policy.apply``); ``check_update`` does the
same for the losses of a train op that is already built.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from absl import logging
import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _graph
from safetrain.rule import _args
from safetrain.rule import _check
from safetrain.rule import _policy
from safetrain.rule import _report
from safetrain.rule import _trace
from safetrain.terms import _decoupled
from safetrain.terms import _keras
from safetrain.tf2 import _tf2

__all__ = (
    "MissingRegularizationWarning",
    "check_train_op",
    "check_update",
    "create_train_op_safe",
    "enforce",
    "total_loss_from",
)

Status = _report.Status
MissingRegularizationWarning = _errors.MissingRegularizationWarning

_USE_GLOBAL_STEP = 0  # tf_slim.learning._USE_GLOBAL_STEP.
_GATE_OP = tf.compat.v1.train.Optimizer.GATE_OP


def sum_in_dtype(tensors: Sequence, dtype, name: str) -> tf.Tensor:
  """The sum of ``tensors``, each cast to ``dtype`` where it differs."""
  values = []
  for tensor in tensors:
    value = tf.convert_to_tensor(tensor)  # Builds a lazy tensor's copy.
    if value.dtype.base_dtype != dtype:
      value = tf.cast(value, dtype)
    values.append(value)
  return tf.add_n(values, name=name)


def _add_terms(loss, terms: Sequence, name: str):
  """``loss`` plus each term, in the loss's dtype."""
  return sum_in_dtype([loss, *terms], loss.dtype.base_dtype, name)


def update_report(losses: Sequence, variables: Sequence, *,
                  expected_coefficient: Optional[float] = 1.0,
                  memo: Optional[_graph.Memo] = None,
                  regularization: Optional[Sequence] = None,
                  train_op: Optional[tf.Operation] = None
                  ) -> _report.RegularizationReport:
  """The report every entry point judges: one update and its losses.

  ``losses`` are validated graph losses whose gradients one update applies
  (one for ``create_train_op``; one per clone for model_deploy's per-clone
  gradients); ``variables`` the variables it changes. Coefficients are read
  unless ``expected_coefficient`` is None, and inside ``strategy.run`` the
  replica rule applies. With the built ``train_op``, decay inside its update
  (``terms._decoupled``) counts too.
  """
  losses = list(losses)
  report = _check.analyze(
      losses, variables, regularization=regularization,
      expected_coefficient=expected_coefficient,
      with_coefficients=expected_coefficient is not None,
      replicas=_check.replicas_summing(),
      ineffective=_keras.ineffective_regularizers(losses[0].graph), memo=memo)
  if train_op is not None:
    report = _check.with_decoupled(report, decoupled_of(train_op, variables))
  return report


def decoupled_of(train_op, variables: Sequence) -> Dict:
  """Variable op -> the decoupled decay ``train_op``'s update applies."""
  return _decoupled.decoupled_decay(
      train_op, list(_graph.variable_key_ops(variables)))


def judge(losses: Sequence, report: _report.RegularizationReport,
          on_missing: str, caller: str, *,
          opt_out: _report.OptOut = _report.OPT_OUT) -> Sequence:
  """``_policy.apply`` for ``report``, naming the routes of doubled terms."""
  return _policy.apply(
      report, on_missing, caller, opt_out=opt_out,
      routes=lambda: _check.routes(losses, report.overcounted))


def enforce(loss, variables_to_train: Optional[Iterable], on_missing: str,
            caller: str, *, expected_coefficient: Optional[float] = 1.0,
            opt_out: _report.OptOut = _report.OPT_OUT):
  """Checks ``loss`` and acts on the verdict as ``on_missing`` says.

  Returns the loss to optimize: ``loss`` itself, or with ``on_missing="add"``
  the loss plus the terms it left out. Every other verdict (a term counted
  twice or too weakly, a replica loss not scaled for N) raises its
  ``RegularizationError`` (or, with ``on_missing="warn"``, warns). With
  ``expected_coefficient=None`` coefficients are not read.
  """
  _args.on_missing(on_missing, caller)
  _args.require_graph_mode(caller)
  loss = _args.graph_loss(loss, caller)
  variables = _args.trained_variables(variables_to_train, loss.graph, caller)
  report = update_report([loss], variables,
                         expected_coefficient=expected_coefficient)
  to_add = judge([loss], report, on_missing, caller, opt_out=opt_out)
  if not to_add:
    return loss
  with loss.graph.as_default():
    return _add_terms(loss, [t.tensor for t in to_add],
                      name="total_loss_with_regularization")


def total_loss_from(losses: Union[None, tf.Tensor, Sequence[tf.Tensor]] = None,
                    *, scope: Optional[str] = None,
                    name: str = "total_loss", model: Any = None) -> tf.Tensor:
  """The sum of ``losses`` plus every regularization loss it leaves out.

  Like ``tf.compat.v1.losses.get_total_loss``, but a regularization loss the
  sum already includes is not added again: a tensor listed twice in the
  collection counts once, and ``total_loss_from(total_loss_from(x))`` or
  ``total_loss_from(tf.compat.v1.losses.get_total_loss())`` add nothing.

  Args:
    losses: a scalar loss tensor, a list of them, or None for the default
      graph's ``LOSSES`` collection.
    scope: only losses (and regularization losses) in this name scope, with
      a '/' boundary: ``clone_1`` does not take ``clone_10/...``.
    name: the name of the sum, when a new op is needed. When the single loss
      given already includes every regularization loss, it is returned as is.
    model: TF2 (eager, ``tf.function``, Keras): a Keras model or layer;
      returns ``losses`` plus each term of ``model.losses`` once, scaled by
      ``tf.nn.scale_regularization_loss`` in a replica context (see
      ``safetrain.tf2._tf2.total_loss``). Without it, eager mode raises
      ``EagerModeError``.

  Returns:
    A scalar tensor.
  """
  caller = "total_loss_from"
  if model is not None:
    return _tf2.total_loss(losses, model, name)
  if tf.executing_eagerly():
    raise _errors.EagerModeError(_tf2.EAGER_TOTAL_LOSS)
  if losses is None:
    graph = tf.compat.v1.get_default_graph()
    collected = _dedup(graph.get_collection(tf.compat.v1.GraphKeys.LOSSES))
    given = [t for t in collected if _check.in_scope(t.name, scope)]
    if not given and not _check.regularization_losses(graph, scope):
      where = f" in scope {scope!r}" if scope else ""
      raise _errors.InvalidArgumentError(
          f"{caller}: there are no losses{where}: the LOSSES collection is "
          "empty. Build the loss with tf.compat.v1.losses (which adds to "
          "it), or pass it: total_loss_from(loss).")
    given = _args.graph_losses(given, caller, "LOSSES collection")
  else:
    if isinstance(losses, (list, tuple)):
      if not losses:
        raise _errors.InvalidArgumentError(
            f"{caller}: losses is an empty list. Pass at least one loss, or "
            "None for the LOSSES collection.")
      given = _dedup(_args.graph_losses(losses, caller))
    else:
      given = [_args.graph_loss(losses, caller, "losses")]
    graph = given[0].graph
  regularization = _check.regularization_losses(graph, scope)
  with graph.as_default():
    if not given:  # Only regularization losses in the graph.
      return _add_terms(tf.convert_to_tensor(regularization[0]),
                        regularization[1:], name)
    dtype = given[0].dtype.base_dtype
    given = [t if t.dtype.base_dtype == dtype else tf.cast(t, dtype)
             for t in given]
    base = given[0] if len(given) == 1 else tf.add_n(given)
    absent = _left_out(base, regularization, caller) if regularization else []
    if absent:
      return _add_terms(base, absent, name)
    if losses is not None and len(given) == 1:
      return base  # Already complete: nothing to add, no op built.
    return tf.identity(base, name=name)


def _left_out(base, regularization: Sequence, caller: str) -> List:
  """The regularization tensors that ``base`` does not depend on at all."""
  graph = base.graph
  variables = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
  report = _check.analyze(base, variables, regularization=regularization)
  for term in report.terms:
    if term.status is Status.UNREACHABLE:
      logging.warning(
          "%s: regularization loss %s lives in another graph (a layer built "
          "inside a tf.cond branch?) and cannot be added to the loss.",
          caller, term.name)
    elif term.status is Status.BLOCKED:
      logging.warning(
          "%s: regularization loss %s is in the loss's value but behind a "
          "stop-gradient or integer cast; it is not added again.",
          caller, term.name)
  return [t.tensor for t in report.terms
          if t.status in (Status.MISSING, Status.FROZEN)]


def _dedup(tensors: Iterable) -> List:
  seen = set()
  result = []
  for tensor in tensors:
    tensor_key = _graph.key(tensor)
    if tensor_key not in seen:
      seen.add(tensor_key)
      result.append(tensor)
  return result


def create_train_op_safe(
    total_loss: tf.Tensor,
    optimizer: Any,
    global_step: Any = _USE_GLOBAL_STEP,
    update_ops: Optional[Iterable[tf.Operation]] = None,
    variables_to_train: Optional[Iterable[tf.Variable]] = None,
    clip_gradient_norm: float = 0,
    summarize_gradients: bool = False,
    gate_gradients: int = _GATE_OP,
    aggregation_method: Any = None,
    colocate_gradients_with_ops: bool = False,
    gradient_multipliers: Optional[Dict[Any, float]] = None,
    check_numerics: bool = True,
    *,
    on_missing: str = "raise",
) -> tf.Tensor:
  """``tf_slim.learning.create_train_op``, checked before anything is built.

  Same parameters, defaults and result as slim's function. First it checks
  that ``total_loss`` includes every regularization loss of the variables it
  trains (see ``check_regularization``).

  Args:
    total_loss ... check_numerics: as ``tf_slim.learning.create_train_op``.
    on_missing: what to do about every verdict of the one policy.
      ``"raise"`` (default) raises the verdict's ``RegularizationError``
      (``MissingRegularizationError``, ``DoubleCountedRegularizationError``,
      ...); ``"add"`` adds left-out terms to the loss and logs that it did
      (and raises for the other verdicts); ``"warn"`` warns
      (``MissingRegularizationWarning``) and builds as given.

  Returns:
    A tensor that, when evaluated, applies the gradients and returns the loss.
  """
  return learning_train_op(
      "create_train_op_safe", total_loss, optimizer, global_step=global_step,
      update_ops=update_ops, variables_to_train=variables_to_train,
      clip_gradient_norm=clip_gradient_norm,
      summarize_gradients=summarize_gradients,
      gate_gradients=gate_gradients, aggregation_method=aggregation_method,
      colocate_gradients_with_ops=colocate_gradients_with_ops,
      gradient_multipliers=gradient_multipliers,
      check_numerics=check_numerics, on_missing=on_missing)


def learning_train_op(caller: str, total_loss, optimizer, *, global_step,
                      update_ops, variables_to_train, clip_gradient_norm,
                      summarize_gradients, gate_gradients, aggregation_method,
                      colocate_gradients_with_ops, gradient_multipliers,
                      check_numerics, on_missing: str):
  """create_train_op_safe's body; ``caller`` names the function in errors."""
  _args.optimizer(optimizer, caller)
  total_loss = enforce(total_loss, variables_to_train, on_missing, caller)
  from tf_slim import learning  # pylint: disable=g-import-not-at-top
  return learning.create_train_op(
      total_loss, optimizer, global_step=global_step, update_ops=update_ops,
      variables_to_train=variables_to_train,
      clip_gradient_norm=clip_gradient_norm,
      summarize_gradients=summarize_gradients,
      gate_gradients=gate_gradients, aggregation_method=aggregation_method,
      colocate_gradients_with_ops=colocate_gradients_with_ops,
      gradient_multipliers=gradient_multipliers,
      check_numerics=check_numerics)


def check_train_op(train_op, on_missing: str, caller: str) -> None:
  """Checks a train op that is already built, for ``slim.learning.train``.

  The losses and the variables are traced from the op (see ``_trace``): all
  the losses whose gradients it applies are judged as one update, so
  model_deploy's per-clone gradients (regularization in the first clone's
  loss only) pass. A built train op cannot be changed, so
  ``on_missing="add"`` is refused here.
  """
  if on_missing == "add":
    raise _errors.InvalidArgumentError(
        f"{caller}: on_missing='add' cannot change a train op that is already "
        "built. Add the regularization when building it: "
        "train_op = slim.learning.create_train_op(loss, optimizer, "
        "on_missing='add').")
  _args.on_missing(on_missing, caller)
  _args.require_graph_mode(caller)
  if not isinstance(train_op, (tf.Tensor, tf.Operation)):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: train_op must be the tensor create_train_op returned, got "
        f"{type(train_op).__name__}.")
  trace = _trace.trace_train_op(train_op)
  if not trace.losses:
    logging.warning("%s: could not find the loss that %s minimizes; its "
                    "regularization was not checked.", caller, train_op.name)
    return
  check_update(trace.losses, trace.variable_ops, on_missing, caller,
               train_op=trace.train_op)


def check_update(losses: Sequence, variable_ops: Sequence, on_missing: str,
                 caller: str, *,
                 opt_out: _report.OptOut = _report.OPT_OUT,
                 train_op: Optional[tf.Operation] = None) -> Sequence:
  """Judges the losses of one update that changes ``variable_ops``.

  Returns the terms to add (``on_missing="add"``), for a caller that can
  still add their gradients (the guard, at ``apply_gradients``).
  """
  graph = losses[0].graph
  owners = _graph.variable_key_ops(_check.all_variables(graph))
  variables = [owners[op] for op in variable_ops if op in owners]
  if not variables:
    variables = _args.trained_variables(None, graph, caller)
  report = update_report(losses, variables, train_op=train_op)
  return judge(losses, report, on_missing, caller, opt_out=opt_out)
