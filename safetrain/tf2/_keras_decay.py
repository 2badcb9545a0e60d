"""Keras optimizers' decoupled weight decay, checked like a regularization term.

``AdamW`` and any Keras optimizer built with ``weight_decay=`` shrink each
variable they decay by ``lr * weight_decay * w`` at every step, outside the
loss. That is regularization too, so:

* a variable that the optimizer decays *and* whose regularizer the loss
  includes (``kernel_regularizer=L2(...)`` with ``model.losses`` added) is
  regularized twice: reported under the same policy as a doubled term
  (``DoubleCountedRegularizationError``, a warning with ``"warn"``);
* ``optimizer.exclude_from_weight_decay(var_names=[...])`` with a name that
  matches no variable the optimizer updates is the UNMATCHED verdict
  (``UnmatchedExclusionError``, a warning with ``"warn"``).
  Keras 3 matches each pattern against the *short* variable name
  (``kernel``), so ``var_names=["dense_1"]`` silently excludes nothing.

``check_weight_decay`` runs the check; the guard runs it at the first
``apply_gradients`` of each optimizer with each set of variables.
"""

import re
import sys
from typing import Any, Iterable, List, Optional

import tensorflow as tf

from safetrain import _errors
from safetrain.rule import _args
from safetrain.rule import _installed
from safetrain.rule import _report
from safetrain.tf2 import _tf2

__all__ = ("check_weight_decay", "patch", "unpatch")

_MODULES = ("keras", "tf_keras")
_ORIGINAL = "_safetrain_original"
_CHECKED = "_safetrain_decay_checked"


def exclusion_names(optimizer) -> List[str]:
  """The ``var_names`` given to ``exclude_from_weight_decay``."""
  names = getattr(optimizer, "_exclude_from_weight_decay_names", None)
  if names:  # Keras 2, tf_keras: the list itself.
    return list(names)
  pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
  if pattern is None:
    return []
  parts = pattern.pattern.split("|")  # Keras 3 joins the names with "|".
  try:
    for part in parts:
      re.compile(part)
  except re.error:
    return [pattern.pattern]
  return parts


def unmatched_exclusions(optimizer, variables: Iterable) -> List[str]:
  """The ``exclude_from_weight_decay`` names that match none of ``variables``.

  Keras matches each name with ``re.search`` against ``variable.name``.
  """
  names = [getattr(v, "name", "") for v in variables]
  return [p for p in exclusion_names(optimizer)
          if not any(re.search(p, n) for n in names)]


def decay_rate(optimizer) -> float:
  rate = getattr(optimizer, "weight_decay", None)
  try:
    return float(rate) if rate is not None else 0.0
  except (TypeError, ValueError):
    return 0.0  # A schedule or tensor: decayed, but not read here.


@tf.autograph.experimental.do_not_convert
def check_weight_decay(optimizer: Any, variables: Iterable, *,
                       on_missing: str = "raise") -> Optional[
                           _tf2.TapeReport]:
  """Checks a Keras optimizer's decoupled weight decay against ``variables``.

  Args:
    optimizer: a Keras 3, Keras 2 or tf_keras optimizer.
    variables: the variables it updates (``model.trainable_variables``).
    on_missing: as everywhere: ``"raise"`` or ``"add"`` raise
      ``DoubleCountedRegularizationError`` for a variable both decayed and
      regularized in the loss; ``"warn"`` warns.

  Returns:
    The report (None when the optimizer has no weight decay).

  Raises:
    UnmatchedExclusionError: a name given to ``exclude_from_weight_decay``
      matches no variable, so it excludes nothing (the one policy's
      UNMATCHED verdict, as the ledger reports it).
  """
  caller = f"{type(optimizer).__name__}.apply_gradients"
  _args.on_missing(on_missing, caller)
  variables = list(variables)
  rate = decay_rate(optimizer)
  if not rate or not hasattr(optimizer, "_use_weight_decay"):
    return None
  names = [getattr(v, "name", "") for v in variables]
  unmatched = unmatched_exclusions(optimizer, variables)
  if unmatched:
    shown = ", ".join(sorted(set(names))[:6])
    finding = _report.Finding(
        _report.FindingKind.UNMATCHED, tuple(unmatched),
        f"exclude_from_weight_decay(var_names={unmatched!r}) matches none of "
        f"the {len(variables)} variables this optimizer updates, so it "
        "excludes nothing and weight decay applies to all of them. The names "
        "are matched with re.search against variable.name "
        f"({shown}{', ...' if len(set(names)) > 6 else ''}). Fix: pass the "
        "variables, optimizer.exclude_from_weight_decay("
        "var_list=model.get_layer('dense_1').trainable_variables), or a "
        "pattern for those names.")
    _tf2.act(_tf2.TapeReport(
        loss_name="decoupled weight decay",
        loss_description=f"{type(optimizer).__name__}(weight_decay={rate:g})",
        terms=(), trained_variables=tuple(sorted(set(names))),
        findings=(finding,)), on_missing, caller)
  regularized = _tf2.regularized_variables(variables)
  terms = []
  for variable in variables:
    reg = regularized.get(id(variable))
    if reg is None or not optimizer._use_weight_decay(variable):  # pylint: disable=protected-access
      continue
    terms.append(_report.RegularizationTerm(
        name=f"{reg.name} + {type(optimizer).__name__}(weight_decay={rate:g})",
        variables=(_tf2.variable_name(variable),),
        status=_report.Status.INCLUDED, required=True, coefficient=2.0))
  report = _tf2.TapeReport(
      loss_name="decoupled weight decay",
      loss_description=f"{type(optimizer).__name__}(weight_decay={rate:g}) "
      "and the loss's regularizers",
      terms=tuple(terms),
      trained_variables=tuple(sorted(_tf2.variable_name(v) for v in variables)),
      expected_coefficient=1.0,
      rule="decoupled weight decay counts as one regularization of each "
      "variable it decays; a regularizer in the loss is a second",
      fix="Fix: regularize each variable once. Either drop the layer's "
      "kernel_regularizer, or keep it and exclude those variables from the "
      "optimizer's decay:\n"
      "    optimizer.exclude_from_weight_decay(var_list=[...])")
  _tf2.act(report, on_missing, caller)
  return report


def _guarded(original):
  @tf.autograph.experimental.do_not_convert
  def apply_gradients(self, grads_and_vars, *args, **kwargs):
    policy = _installed.installed()
    if policy is not None:
      grads_and_vars = list(grads_and_vars)
      variables = [v for _, v in grads_and_vars]
      key = tuple(map(id, variables))
      checked = self.__dict__.setdefault(_CHECKED, set())
      if key not in checked:
        try:
          check_weight_decay(self, variables, on_missing=policy)
        except _errors.Error as e:
          e.ag_pass_through = True  # AutoGraph re-raises it as it is.
          raise
        checked.add(key)
    return original(self, grads_and_vars, *args, **kwargs)
  apply_gradients.__wrapped__ = original
  setattr(apply_gradients, _ORIGINAL, original)
  return apply_gradients


def _optimizer_classes():
  for name in _MODULES:
    module = sys.modules.get(name)
    cls = getattr(getattr(module, "optimizers", None), "Optimizer", None)
    if cls is not None and hasattr(cls, "apply_gradients"):
      yield cls


def patch() -> None:
  """Checks decay at each Keras optimizer's first ``apply_gradients``."""
  for cls in _optimizer_classes():
    current = cls.__dict__.get("apply_gradients")
    if current is not None and hasattr(current, _ORIGINAL):
      continue
    cls.apply_gradients = _guarded(cls.apply_gradients)


def unpatch() -> None:
  for cls in _optimizer_classes():
    current = cls.__dict__.get("apply_gradients")
    if current is None or not hasattr(current, _ORIGINAL):
      continue
    original = getattr(current, _ORIGINAL)
    if original is getattr(super(cls, cls), "apply_gradients", None):
      del cls.apply_gradients
    else:
      cls.apply_gradients = original
