"""The guard: the regularization check on every TF1 optimizer's updates.

Every TF1 training path computes gradients through
``tf.compat.v1.train.Optimizer.compute_gradients`` and applies them through
``apply_gradients``: slim's ``create_train_op``, ``optimizer.minimize``,
``SyncReplicasOptimizer`` (which calls its inner optimizer's) and
hand-written loops. The rule judges one *update*: the losses whose gradients
one ``apply_gradients`` applies. research/slim's model_deploy computes each
clone's gradients separately (regularization in the first clone's loss only)
and applies their sum once; that is correct, and only the update as a whole
shows it. So the guard

* at ``compute_gradients``, records which loss each gradient came from;
* at ``apply_gradients``, finds the recorded losses whose gradients reach the
  ones applied (through sums, clipping, multipliers) - or, where the applied
  gradients no longer show it (``SyncReplicasOptimizer``'s accumulators), the
  losses this optimizer differentiated since its last update - and judges
  them together with the one policy (``_train.check_update``). With
  ``on_missing="add"`` it adds the gradient of the left-out terms to the
  gradients it applies, as if they were in the loss.

Three ways in:

* ``guard_optimizers(on_missing=...)``, a context manager;
* ``SafeOptimizer(optimizer, on_missing=...)``, a wrapper for code that
  builds its optimizer itself;
* ``safetrain run -- python train.py ...``, which installs the guard in the
  script's process through ``safetrain/guard/_run_hook/sitecustomize.py``.

A check in progress turns further checks off for the same thread, so an
optimizer wrapping another (``SafeOptimizer`` around a guarded one,
``SyncReplicasOptimizer``) is checked once. Code that computes gradients and
never calls ``apply_gradients`` (a hand-written ``assign_sub``) is not
checked.
"""

import contextlib
import threading
from typing import Any, Dict, Iterator, List, Tuple
import weakref

from absl import logging
import tensorflow as tf

from safetrain import _errors
from safetrain.graph import _graph
from safetrain.rule import _args
from safetrain.rule import _installed
from safetrain.rule import _report
from safetrain.rule import _trace
from safetrain.tf1 import _train

__all__ = (
    "SafeOptimizer",
    "patch",
    "unpatch",
)

# How the user of SafeOptimizer changes the policy, for messages.
_OPT_OUT_WRAPPER = _report.OptOut('pass on_missing="{mode}" to SafeOptimizer')

_Optimizer = tf.compat.v1.train.Optimizer
_ORIGINAL = "_safetrain_original"
_METHODS = ("compute_gradients", "apply_gradients")

_local = threading.local()


def _checking() -> bool:
  return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def _check_scope() -> Iterator[None]:
  _local.depth = getattr(_local, "depth", 0) + 1
  try:
    yield
  finally:
    _local.depth -= 1


class _Records:
  """Which loss each gradient of a graph came from, and what is pending.

  Kept per graph and dropped with it; an optimizer's pending losses are
  those it differentiated since its last ``apply_gradients``.
  """

  def __init__(self):
    self.loss_of: Dict[tf.Operation, Any] = {}  # Gradient op -> loss.
    self.pending: "weakref.WeakKeyDictionary[Any, List[Any]]" = (
        weakref.WeakKeyDictionary())


_records: "weakref.WeakKeyDictionary[tf.Graph, _Records]" = (
    weakref.WeakKeyDictionary())


def _records_of(graph) -> _Records:
  found = _records.get(graph)
  if found is None:
    found = _records[graph] = _Records()
  return found


def _gradient_tensor(gradient):
  """The tensor carrying ``gradient``'s values (IndexedSlices have two)."""
  return getattr(gradient, "values", gradient)


def _checkable(loss) -> bool:
  """Whether the check applies to ``loss``; logs why not when it does not.

  A loss TensorFlow accepts but the check does not (a vector loss, which TF1
  optimizers sum) must still train as before.
  """
  if callable(loss) or tf.executing_eagerly():
    return False  # Eager TF1 optimizers take a callable; nothing to check.
  try:
    _args.graph_loss(loss, "safetrain guard")
  except (_errors.InvalidArgumentError, _errors.InvalidArgumentTypeError,
          _errors.EagerModeError) as e:
    logging.warning("safetrain guard: regularization not checked: %s", e)
    return False
  return True


def _users_loss(loss):
  """The loss the user built, under the identities wrappers add.

  slim's ``create_train_op`` differentiates ``CheckNumerics`` of an
  ``Identity`` that waits for the update ops; both pass values and
  gradients unchanged, so messages name the tensor beneath.
  """
  while loss.op.type in ("Identity", "CheckNumerics") and loss.op.inputs:
    loss = loss.op.inputs[0]
  return loss


def _record(optimizer, loss, grads_and_vars) -> None:
  loss = _users_loss(loss)
  records = _records_of(loss.graph)
  for gradient, _ in grads_and_vars:
    if gradient is not None:
      records.loss_of[_gradient_tensor(gradient).op] = loss
  records.pending.setdefault(optimizer, []).append(loss)


def _losses_of_update(optimizer, grads_and_vars) -> List[Any]:
  """The recorded losses whose gradients the update applies."""
  gradients = [_gradient_tensor(g) for g, _ in grads_and_vars if g is not None]
  if not gradients:
    return []
  records = _records.get(gradients[0].graph)
  if records is None:
    return []
  pending = records.pending.pop(optimizer, [])
  recorded = set(records.loss_of)
  walk = _graph.Walk(gradients, differentiable=False, stop_at=recorded)
  losses: List[Any] = []
  for op in walk.ops & recorded:
    loss = records.loss_of[op]
    if all(loss is not seen for seen in losses):
      losses.append(loss)
  if not losses:  # The gradients went through state (accumulators).
    for loss in pending:
      if all(loss is not seen for seen in losses):
        losses.append(loss)
  return sorted(losses, key=lambda t: t.name)


def _traced_losses(grads_and_vars) -> List[Any]:
  """Losses of gradients no guarded ``compute_gradients`` recorded."""
  if tf.executing_eagerly():
    return []
  gradients = [_gradient_tensor(g) for g, _ in grads_and_vars if g is not None]
  return [loss for loss in _trace.losses_of_gradients(gradients)
          if _checkable(loss)]


def _compute(optimizer, compute, loss, var_list, args, kwargs):
  """``compute`` (the original ``compute_gradients``), recorded."""
  if var_list is not None:
    var_list = list(tf.nest.flatten(var_list))
  grads_and_vars = compute(loss, var_list, *args, **kwargs)
  if _checkable(loss):
    _record(optimizer, loss, grads_and_vars)
  return grads_and_vars


def _apply(optimizer, apply, grads_and_vars, global_step, name,
           on_missing: str, opt_out: _report.OptOut):
  """``apply`` (the original ``apply_gradients``), after judging the update."""
  grads_and_vars = list(grads_and_vars)
  losses = (_losses_of_update(optimizer, grads_and_vars) or
            _traced_losses(grads_and_vars))
  if losses:
    caller = f"{type(optimizer).__name__}.apply_gradients"
    variables = [v for g, v in grads_and_vars if g is not None]
    variable_ops = list(_graph.variable_key_ops(variables))
    to_add = _train.check_update(losses, variable_ops, on_missing, caller,
                                 opt_out=opt_out)
    if to_add:
      grads_and_vars = _with_terms(grads_and_vars, to_add)
  return apply(grads_and_vars, global_step=global_step, name=name)


def _with_terms(grads_and_vars, terms) -> List[Tuple[Any, Any]]:
  """The gradients plus those of the left-out ``terms``, per variable."""
  variables = [v for _, v in grads_and_vars]
  graph = variables[0].graph
  with graph.as_default(), tf.compat.v1.name_scope("safetrain_added"):
    values = [tf.convert_to_tensor(t.tensor) for t in terms]  # Lazy: a copy.
    total = tf.add_n([tf.cast(v, tf.float32) for v in values])
    # An op with a gradient of its own, so that the backward pass names it
    # (``gradients/left_out_regularization_grad/``) and a trace of the update
    # (the audit of the saved graph) finds this loss as it finds the user's.
    total = tf.multiply(total, 1.0, name="left_out_regularization")
    extra = tf.gradients(total, variables)
  result = []
  for (gradient, variable), added in zip(grads_and_vars, extra, strict=True):
    if added is None:
      result.append((gradient, variable))
    elif gradient is None:
      result.append((added, variable))
    else:
      gradient = tf.convert_to_tensor(gradient)  # IndexedSlices, densified.
      result.append((gradient + tf.cast(added, gradient.dtype), variable))
  return result


def _guarded(method: str, original):
  """``Optimizer.<method>`` checked under the innermost installed policy."""
  if method == "compute_gradients":
    def compute_gradients(self, loss, var_list=None, *args, **kwargs):
      bound = original.__get__(self)
      if _installed.current() is None or _checking():
        return bound(loss, var_list, *args, **kwargs)
      with _check_scope():
        return _compute(self, bound, loss, var_list, args, kwargs)
    guarded = compute_gradients
  else:
    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
      bound = original.__get__(self)
      policy = _installed.current()
      if policy is None or _checking():
        return bound(grads_and_vars, global_step=global_step, name=name)
      on_missing, opt_out = policy
      with _check_scope():
        return _apply(self, bound, grads_and_vars, global_step, name,
                      on_missing, opt_out)
    guarded = apply_gradients
  guarded.__doc__ = original.__doc__
  setattr(guarded, "__wrapped__", original)  # noqa: B010 (mypy: no attr)
  setattr(guarded, _ORIGINAL, original)
  return guarded


def patch() -> None:
  """Checks every ``tf.compat.v1.train.Optimizer`` update (see ``guard``)."""
  for method in _METHODS:
    current = _Optimizer.__dict__[method]
    if getattr(current, _ORIGINAL, None) is None:
      setattr(_Optimizer, method, _guarded(method, current))


def unpatch() -> None:
  for method in _METHODS:
    current = _Optimizer.__dict__[method]
    setattr(_Optimizer, method, getattr(current, _ORIGINAL, current))


class SafeOptimizer(tf.compat.v1.train.Optimizer):
  """A TF1 optimizer that checks each update's losses before applying it.

      optimizer = safetrain.SafeOptimizer(
          tf.compat.v1.train.MomentumOptimizer(0.01, 0.9))
      train_op = optimizer.minimize(loss)   # raises if loss drops decay

  Everything else (slots, variables) is the wrapped optimizer's.
  """

  def __init__(self, optimizer: Any, *, on_missing: str = "raise"):
    caller = "SafeOptimizer"
    _args.optimizer(optimizer, caller)
    _args.on_missing(on_missing, caller)
    super().__init__(use_locking=False,
                     name=getattr(optimizer, "get_name", lambda: "Safe")())
    self._optimizer = optimizer
    self._on_missing = on_missing

  @property
  def optimizer(self) -> Any:
    """The wrapped optimizer."""
    return self._optimizer

  def compute_gradients(self, loss, var_list=None, *args, **kwargs):
    compute = self._optimizer.compute_gradients
    if _checking():
      return compute(loss, var_list, *args, **kwargs)
    with _check_scope():
      return _compute(self, compute, loss, var_list, args, kwargs)

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    apply = self._optimizer.apply_gradients
    if _checking():
      return apply(grads_and_vars, global_step=global_step, name=name)
    with _check_scope():
      return _apply(self, apply, grads_and_vars, global_step, name,
                    self._on_missing, _OPT_OUT_WRAPPER)

  def get_slot(self, var, name):
    return self._optimizer.get_slot(var, name)

  def get_slot_names(self):
    return self._optimizer.get_slot_names()

  def variables(self):
    return self._optimizer.variables()
