"""Regularization counted exactly once across clones and replicas.

One synchronous step over N clones or replicas with a global batch B must
update the weights as one single-device step with batch B does,
regularization included. The rule each mode needs to meet that:

* In-graph clones (TF-Slim's ``model_deploy``): the gradients of all clones
  are summed, so each clone's data loss is scaled by 1/N and the
  regularization is added once, on the first clone. ``create_clones`` and
  ``sum_clone_losses`` build that, and check the sum.
* ``tf.distribute.MirroredStrategy`` in graph mode with a
  ``tf.compat.v1.train`` optimizer: replica gradients are summed, so each
  replica's data loss is scaled by 1/N. The regularization losses in the
  collection were built by the first replica from its copy of each variable
  (the other replicas reuse the variables and build none), so only the first
  replica's gradient carries them: adding them to every replica's loss counts
  them once. ``replica_total_loss`` builds that.
* Parameter servers with ``SyncReplicasOptimizer``: the workers' gradients
  are averaged, so each worker's loss is its data loss plus the
  regularization, exactly once (``safetrain.total_loss_from``).

Each builder ends with ``assert_counted_once``: the coefficient with which
every regularization loss enters the built loss, read from the graph, must
be the expected one, else ``DoubleCountedRegularizationError`` names the
doubled terms and the ops through which each was added. Inside
``strategy.run`` with N replicas it also requires each data loss at 1/N and
each regularization loss at exactly 1 (``ReplicaScalingError``), which
catches an unscaled replica loss and ``(data + regularization) / N``.
"""

import collections
import contextlib
from typing import Any, Callable, Iterable, List, Optional, Sequence

import tensorflow as tf

from safetrain import _errors
from safetrain.rule import _args
from safetrain.rule import _check
from safetrain.rule import _report
from safetrain.tf1 import _train

__all__ = (
    "Clone",
    "assert_counted_once",
    "clone_device",
    "clone_loss",
    "clone_scope",
    "create_clones",
    "replica_total_loss",
    "sum_clone_losses",
)

_DATA_ONLY_HINT = (
    "Pass each clone's (or replica's) data loss only, without "
    "regularization: {caller} adds the regularization once itself.")


class Clone(collections.namedtuple("Clone", ("outputs", "scope", "device"))):
  """One copy of the model, as ``model_deploy.Clone``.

  Attributes:
    outputs: whatever ``model_fn`` returned for this clone.
    scope: its name scope, e.g. ``'clone_1/'`` (``''`` with one clone).
    device: the device its ops are placed on (``''``: not placed).
  """


def clone_scope(index: int, num_clones: int) -> str:
  """``'clone_<index>'``, or ``''`` when there is only one clone."""
  return f"clone_{index}" if num_clones > 1 else ""


def clone_device(index: int, num_clones: int, *,
                 clone_on_cpu: bool = False) -> str:
  """The device of clone ``index``: ``/device:GPU:<index>`` or the CPU.

  With one clone and ``clone_on_cpu=False`` the clone is not placed at all,
  so TensorFlow's default placement applies (and a CPU-only machine works).
  No job is named: under ``tf.compat.v1.train.replica_device_setter`` the
  setter puts ops on the worker and variables on the parameter servers.
  """
  if clone_on_cpu:
    return "/device:CPU:0"
  if num_clones == 1:
    return ""
  return f"/device:GPU:{index}"


def create_clones(model_fn: Callable[..., Any], *, num_clones: int = 1,
                  clone_on_cpu: bool = False, args: Sequence[Any] = (),
                  kwargs: Optional[dict] = None,
                  variables_device: Optional[Any] = None) -> List[Clone]:
  """Calls ``model_fn`` once per clone, sharing its variables.

  As ``model_deploy.create_clones``: clone ``i`` is built in name scope
  ``clone_i`` on its device, the variables are created by the first clone and
  reused by the others. ``model_fn`` adds its data losses to the ``LOSSES``
  collection (``tf.compat.v1.losses`` does), and its layers add regularization
  losses, which the first clone creates once for each shared variable.

  Args:
    model_fn: builds one clone's model and losses; called with ``args`` and
      ``kwargs``.
    num_clones: how many clones to build.
    clone_on_cpu: place every clone on the CPU.
    args: positional arguments for ``model_fn``.
    kwargs: keyword arguments for ``model_fn``.
    variables_device: where slim variables go; by default the CPU when there
      are several clones (as ``model_deploy`` does), else unplaced.

  Returns:
    One ``Clone`` per clone.
  """
  caller = "create_clones"
  _args.require_graph_mode(caller)
  if not callable(model_fn):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: model_fn must be callable, got {type(model_fn).__name__}.")
  _positive_int(num_clones, "num_clones", caller)
  kwargs = dict(kwargs or {})
  if variables_device is None and num_clones > 1:
    variables_device = "/device:CPU:0"
  import tf_slim as slim  # pylint: disable=g-import-not-at-top
  clones = []
  with slim.arg_scope([slim.model_variable, slim.variable],
                      device=variables_device):
    for index in range(num_clones):
      scope = clone_scope(index, num_clones)
      device = clone_device(index, num_clones, clone_on_cpu=clone_on_cpu)
      with _name_scope(scope) as name_scope:
        with tf.device(device):
          with tf.compat.v1.variable_scope(
              tf.compat.v1.get_variable_scope(),
              reuse=True if index > 0 else None):
            outputs = model_fn(*args, **kwargs)
      clones.append(Clone(outputs, name_scope or "", device))
  return clones


def clone_loss(clone: Clone, *, name: str = "clone_loss") -> tf.Tensor:
  """The sum of the data losses that ``clone`` added to ``LOSSES``.

  Only losses in the clone's name scope count, with a '/' boundary
  (``clone_1`` does not take ``clone_10/...``). Regularization losses are not
  part of it: ``sum_clone_losses`` adds them once.
  """
  caller = "clone_loss"
  if not isinstance(clone, Clone):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: clone must be a safetrain.Clone from create_clones, got "
        f"{type(clone).__name__}.")
  graph = tf.compat.v1.get_default_graph()
  losses = [t for t in graph.get_collection(tf.compat.v1.GraphKeys.LOSSES)
            if _check.in_scope(t.name, clone.scope)]
  if not losses:
    where = f" in scope {clone.scope!r}" if clone.scope else ""
    raise _errors.InvalidArgumentError(
        f"{caller}: the clone added no losses{where}. Build its loss with "
        "tf.compat.v1.losses (which adds to the LOSSES collection) inside "
        "model_fn.")
  losses = _args.graph_losses(losses, caller, "LOSSES")
  with _name_scope(clone.scope), tf.device(clone.device):
    if len(losses) == 1:
      return tf.identity(losses[0], name=name)
    return tf.add_n(losses, name=name)


def sum_clone_losses(
    clone_losses: Sequence[tf.Tensor],
    *,
    num_clones: Optional[int] = None,
    regularization_losses: Optional[Sequence[tf.Tensor]] = None,
    name: str = "total_loss",
) -> tf.Tensor:
  """The loss to optimize for N clones: data losses / N + regularization once.

  ``model_deploy``'s convention: each clone's data loss is scaled by
  1/``num_clones`` on its own device, and the regularization is added once,
  on the first clone's device. The gradient of the result is the sum of the
  clones' gradients, and equals the gradient of one device's loss over the
  whole batch. Then the result is checked (``assert_counted_once``).

  Args:
    clone_losses: each clone's data loss, a scalar tensor (see
      ``clone_loss``). They must not include regularization.
    num_clones: the N to divide by; by default ``len(clone_losses)``.
    regularization_losses: the terms to add once; by default the graph's
      ``REGULARIZATION_LOSSES``, each tensor once.
    name: the name of the sum.

  Returns:
    A scalar tensor: the total loss.

  Raises:
    DoubleCountedRegularizationError: a clone loss already includes
      regularization, so the total would count it more than once.
    MissingRegularizationError: a required regularization loss cannot be
      added (it lives in another graph).
  """
  caller = "sum_clone_losses"
  _args.require_graph_mode(caller)
  if isinstance(clone_losses, tf.Tensor) or not isinstance(
      clone_losses, (list, tuple)):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: clone_losses must be a list of scalar loss tensors, one "
        f"per clone, got {type(clone_losses).__name__}. For one loss, pass "
        f"[loss].")
  if not clone_losses:
    raise _errors.InvalidArgumentError(
        f"{caller}: clone_losses is empty. Pass one data loss per clone: "
        f"[safetrain.clone_loss(c) for c in clones].")
  losses = _args.graph_losses(clone_losses, caller, "clone_losses")
  if num_clones is None:
    num_clones = len(losses)
  _positive_int(num_clones, "num_clones", caller)
  if num_clones < len(losses):
    raise _errors.InvalidArgumentError(
        f"{caller}: num_clones={num_clones} is less than the "
        f"{len(losses)} clone losses given.")
  graph = losses[0].graph
  if regularization_losses is None:
    regularization_losses = _check.regularization_losses(graph)
  dtype = losses[0].dtype.base_dtype
  with graph.as_default():
    parts = []
    for index, loss in enumerate(losses):
      with _scope_of(loss), tf.device(loss.device):
        if loss.dtype.base_dtype != dtype:
          loss = tf.cast(loss, dtype)
        if num_clones > 1:
          loss = tf.math.divide(loss, float(num_clones),
                                name="scaled_clone_loss")
        if index == 0 and regularization_losses:
          loss = tf.add_n(
              [loss, _train.sum_in_dtype(regularization_losses, dtype,
                                         "regularization_loss")],
              name="clone_total_loss")
      parts.append(loss)
    total = tf.add_n(parts, name=name)
  _assert_counted_once(total, None, 1.0, caller,
                       _DATA_ONLY_HINT.format(caller=caller))
  return total


def replica_total_loss(data_loss: tf.Tensor, *,
                       name: str = "replica_total_loss") -> tf.Tensor:
  """A replica's loss under ``MirroredStrategy``: data / N + regularization.

  Call it inside ``strategy.run`` (graph mode, a ``tf.compat.v1.train``
  optimizer, which sums the replicas' gradients), then build the train op
  from it, e.g. with ``create_train_op_safe``. The data loss is scaled by
  1/``num_replicas_in_sync``; the graph's regularization losses are added
  whole. They were built by the first replica from its own copy of each
  variable, so only the first replica's gradient carries them and the summed
  update counts them once. Outside a strategy (one replica) this is the data
  loss plus the regularization. The result is checked
  (``assert_counted_once``).

  Args:
    data_loss: this replica's data loss over its share of the batch, without
      regularization.
    name: the name of the result.

  Returns:
    A scalar tensor.
  """
  caller = "replica_total_loss"
  _args.require_graph_mode(caller)
  data_loss = _args.graph_loss(data_loss, caller, "data_loss")
  context = tf.distribute.get_replica_context()
  if context is None:
    raise _errors.InvalidArgumentError(
        f"{caller}: called in a cross-replica context. Call it inside the "
        "function given to strategy.run, once per replica.")
  replicas = context.num_replicas_in_sync
  graph = data_loss.graph
  dtype = data_loss.dtype.base_dtype
  regularization = _check.regularization_losses(graph)
  with graph.as_default():
    loss = data_loss
    if replicas > 1:
      loss = tf.math.divide(loss, float(replicas), name="scaled_replica_loss")
    if regularization:
      loss = tf.add_n(
          [loss, _train.sum_in_dtype(regularization, dtype,
                                     "regularization_loss")],
          name=name)
    else:
      loss = tf.identity(loss, name=name)
  _assert_counted_once(loss, None, 1.0, caller,
                       _DATA_ONLY_HINT.format(caller=caller))
  return loss


def assert_counted_once(
    loss: tf.Tensor,
    variables_to_train: Optional[Iterable[tf.Variable]] = None,
    *,
    expected_coefficient: float = 1.0,
) -> _report.RegularizationReport:
  """Raises unless ``loss`` includes each required regularization loss once.

  "Once" means with coefficient ``expected_coefficient`` (1 for a
  single-device loss, a sum of clone losses or a parameter-server worker's
  loss; 1/N for a replica whose gradient is summed with N-1 others when the
  regularization is spread over all of them), read from the graph where
  sums, constant scaling and means show it. Where the graph does not show it
  (a product of tensors, a ``tf.function`` call), the term is not flagged.

  Args:
    loss: the loss a train op minimizes.
    variables_to_train: as for ``check_regularization``.
    expected_coefficient: the coefficient that counts as once.

  Returns:
    The ``RegularizationReport``, with each term's coefficient.

  Raises:
    DoubleCountedRegularizationError: some term enters with a larger
      coefficient; its ``overcounted`` terms name them, and the message the
      ops through which each was added.
    MissingRegularizationError: some required term is left out.
    ReplicaScalingError: inside ``strategy.run`` of an N-replica
      ``MirroredStrategy``, a data loss (of the ``LOSSES`` collection) does
      not enter with 1/N, or a regularization loss not with exactly 1.
  """
  caller = "assert_counted_once"
  if isinstance(expected_coefficient, bool) or not isinstance(
      expected_coefficient, (int, float)) or not expected_coefficient > 0:
    raise _errors.InvalidArgumentError(
        f"{caller}: expected_coefficient must be a positive number, got "
        f"{expected_coefficient!r}.")
  return _assert_counted_once(loss, variables_to_train,
                              float(expected_coefficient), caller, None)


def _assert_counted_once(loss, variables_to_train, expected: float,
                         caller: str, hint: Optional[str]
                         ) -> _report.RegularizationReport:
  """The one policy, with ``on_missing="raise"``, on ``loss``."""
  _args.require_graph_mode(caller)
  loss = _args.graph_loss(loss, caller, "loss")
  variables = _args.trained_variables(variables_to_train, loss.graph, caller)
  report = _train.update_report([loss], variables,
                                expected_coefficient=expected)
  try:
    _train.judge([loss], report, "raise", caller)
  except _errors.DoubleCountedRegularizationError as e:
    if hint:  # Say how this builder's input went wrong.
      raise type(e)(f"{e}\n{hint}", e.report, e.verdicts) from None
    raise
  return report


def _name_scope(scope: str):
  """Enters ``scope`` (re-enters it exactly if it ends in '/'); '' is none."""
  if not scope:
    return contextlib.nullcontext("")
  return tf.compat.v1.name_scope(scope)


def _scope_of(tensor):
  """Re-enters the name scope ``tensor`` was built in (no new suffix)."""
  scope = tensor.op.name.rpartition("/")[0]
  return _name_scope(scope + "/" if scope else "")


def _positive_int(value, argument: str, caller: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: {argument} must be an int, got {type(value).__name__} "
        f"{value!r}.")
  if value < 1:
    raise _errors.InvalidArgumentError(
        f"{caller}: {argument} must be at least 1, got {value}.")
  return value
