"""TF2: which variables Keras regularizes, and the terms a loss computed.

In TF2 there is no ``REGULARIZATION_LOSSES`` collection. A Keras layer keeps
each weight's regularizer and builds a fresh term, ``regularizer(weight)``,
every time ``model.losses`` is read. So the check asks two things:

* **Which variables are regularized.** A Keras 3 variable carries its
  regularizer (``variable.regularizer``). A tf_keras (Keras 2) layer keeps a
  zero-argument callable per weight in ``layer._callable_losses``; those
  layers are found once per set of variables (``_legacy_terms``).
* **Which terms a loss computed.** While a checking tape is recording, each
  call of a Keras ``Regularizer`` appends ``(term, variable)`` to that tape's
  record (``recording``). The check then knows the very tensors that
  regularize each variable, in eager mode and in a ``tf.function`` alike,
  without matching anything by name.

The recording costs one thread-local read per regularizer call, and nothing
when no checking tape is active.
"""

import contextlib
import dataclasses
import functools
import sys
import threading
from typing import (
  Any,
  Callable,
  Dict,
  Iterator,
  List,
  Optional,
  Sequence,
  Tuple,
)

from absl import logging
import tensorflow as tf

from safetrain import _errors
from safetrain.rule import _check
from safetrain.rule import _policy
from safetrain.rule import _report
from safetrain.terms import _keras

__all__ = (
    "Regularized",
    "act",
    "passed_through",
    "TapeReport",
    "patch_regularizers",
    "pop",
    "push",
    "recording",
    "regularized_variables",
    "replica_rule",
    "variable_name",
)

_local = threading.local()
_PATCHED = "_safetrain_recording"
# Keras packages whose Regularizer classes are recorded, once loaded.
_KERAS_MODULES = ("keras", "tf_keras")


def _stack() -> List[List]:
  stack = getattr(_local, "stack", None)
  if stack is None:
    stack = _local.stack = []
  return stack


@contextlib.contextmanager
def recording(record: List) -> Iterator[List]:
  """Appends ``(term, variable, regularizer)`` to ``record`` inside."""
  push(record)
  try:
    yield record
  finally:
    pop(record)


def push(record: List) -> None:
  """Makes ``record`` the list that regularizer calls append to."""
  _stack().append(record)


def pop(record: List) -> None:
  """Undoes ``push(record)`` (by identity: two empty records are equal)."""
  stack = _stack()
  for i in range(len(stack) - 1, -1, -1):
    if stack[i] is record:
      del stack[i]
      return


@contextlib.contextmanager
def suspended() -> Iterator[None]:
  """No recording inside: terms the check itself builds are not the user's."""
  stack = _stack()
  saved = stack[:]
  del stack[:]
  try:
    yield
  finally:
    stack[:] = saved


def _recording_call(original: Callable) -> Callable:
  @functools.wraps(original)
  def __call__(self, x, *args, **kwargs):  # pylint: disable=invalid-name
    term = original(self, x, *args, **kwargs)
    stack = getattr(_local, "stack", None)
    if stack:
      stack[-1].append((term, x, self))
    return term
  setattr(__call__, _PATCHED, original)
  return __call__


def _subclasses(cls) -> Iterator[type]:
  yield cls
  for sub in cls.__subclasses__():
    yield from _subclasses(sub)


def patch_regularizers() -> None:
  """Records calls of every Keras Regularizer class loaded so far.

  Cheap to repeat: classes already patched are skipped. Only modules already
  imported are looked at; nothing is imported here.
  """
  for module_name in _KERAS_MODULES:
    module = sys.modules.get(module_name)
    base = getattr(getattr(module, "regularizers", None), "Regularizer", None)
    if base is None:
      continue
    for cls in _subclasses(base):
      call = cls.__dict__.get("__call__")
      if call is not None and not hasattr(call, _PATCHED):
        setattr(cls, "__call__", _recording_call(call))  # noqa: B010


def is_recordable(regularizer) -> bool:
  call = type(regularizer).__dict__.get("__call__") or next(
      (c.__dict__["__call__"] for c in type(regularizer).__mro__
       if "__call__" in c.__dict__), None)
  return call is not None and hasattr(call, _PATCHED)


def variable_name(variable) -> str:
  """``dense/kernel`` for Keras 3 and tf_keras variables alike."""
  path = getattr(variable, "path", None)
  if isinstance(path, str):
    return path
  name = getattr(variable, "name", None) or type(variable).__name__
  return name[:-2] if name.endswith(":0") else name


@dataclasses.dataclass(frozen=True)
class Regularized:
  """A variable, its regularizer, and how to build its term afresh.

  Attributes:
    variable: the variable as the caller passed it (a Keras 3 variable, a
      ``tf.Variable``, a distributed variable).
    regularizer: the Keras regularizer (or callable) that Keras applies.
    build: builds one new term, unrecorded; the tensor ``model.losses`` has.
  """

  variable: Any
  regularizer: Any
  build: Callable[[], Any] = dataclasses.field(compare=False)

  @property
  def name(self) -> str:
    return f"{type(self.regularizer).__name__}({variable_name(self.variable)})"


def _keras3_term(variable) -> Optional[Regularized]:
  regularizer = getattr(variable, "regularizer", None)
  if regularizer is None or not callable(regularizer):
    return None
  return Regularized(variable, regularizer,
                     functools.partial(regularizer, variable))


def _legacy_layers() -> List[Any]:
  """Every live Keras 2 layer (tf_keras; tf.keras before TF 2.16)."""
  return [layer for layer in _keras.live_layers()
          if _keras.generation(layer) == 2]


def _legacy_terms(wanted: Dict[int, Any]) -> Dict[int, Regularized]:
  """tf_keras regularizers of the variables in ``wanted`` (id -> variable)."""
  found = {}
  for layer in _legacy_layers():
    for loss in getattr(layer, "_callable_losses", ()):
      variable, regularizer = _keras.weight_callable(loss)
      if variable is not None and id(variable) in wanted:
        found[id(variable)] = Regularized(variable, regularizer, loss)
  return found


def regularized_variables(variables: Sequence) -> Dict[int, Regularized]:
  """The regularized variables among ``variables``, keyed by ``id``.

  Only regularizers whose calls can be recorded (instances of a Keras
  ``Regularizer`` class) are checked: a plain function given as
  ``kernel_regularizer`` makes its term without a trace the tape could
  follow, so its variable is left out of the check (and logged once) rather
  than reported missing while its term may well be in the loss.
  """
  patch_regularizers()  # Classes defined since the guard was installed.
  found = {}
  legacy = {}
  for variable in variables:
    term = _keras3_term(variable)
    if term is not None:
      found[id(variable)] = term
    elif isinstance(variable, tf.Variable) or hasattr(variable, "_values"):
      legacy[id(variable)] = variable
  if legacy:
    found.update(_legacy_terms(legacy))
  for key, term in list(found.items()):
    if not is_recordable(term.regularizer):
      del found[key]
      _warn_unrecordable(term)
  return found


_unrecordable_seen: set = set()


def _warn_unrecordable(term: "Regularized") -> None:
  name = variable_name(term.variable)
  if name in _unrecordable_seen:
    return
  _unrecordable_seen.add(name)
  logging.warning(
      "safetrain: the regularizer of %s (%r) is not a Keras Regularizer, so "
      "TF2 loops cannot see where its term goes; it is not checked. Give a "
      "keras.regularizers.Regularizer (e.g. L2(...)) to have it checked.",
      name, term.regularizer)


def replica_rule() -> Tuple[float, str]:
  """The coefficient each regularization term must have, and why.

  In a replica context of a strategy with N replicas, the replicas'
  gradients are summed, so each replica's loss must count the terms 1/N
  times (``tf.nn.scale_regularization_loss``); elsewhere once.
  """
  replicas = _check.replicas_summing()
  if replicas > 1:
    return 1.0 / replicas, (
        f"replica rule: {replicas} replicas, gradients summed, so each "
        f"replica's loss counts each term x1/{replicas} "
        "(tf.nn.scale_regularization_loss(tf.add_n(model.losses)))")
  return 1.0, "single device: each term counted x1"


_MISSING_ADVICE_TF2 = (
    "Add the model's regularization to the loss you differentiate:\n"
    "    loss = safetrain.total_loss_from(data_loss, model=model)\n"
    "(the same as data_loss + tf.add_n(model.losses) on one device, and "
    "scaled by tf.nn.scale_regularization_loss in a replica context).")

_BLOCKED_ADVICE_TF2 = (
    "A tf.stop_gradient, an integer cast or an op without a gradient lies "
    "between the loss and these terms, so their gradient never reaches the "
    "weights. Add them directly:\n"
    "    loss = data_loss + tf.add_n(model.losses)")

_OVERCOUNTED_ADVICE_TF2 = (
    "Fix: add the model's regularization once, scaled for the strategy:\n"
    "    loss = safetrain.total_loss_from(data_loss, model=model)\n"
    "which counts each term once (x1/N per replica under a strategy).")


@dataclasses.dataclass(frozen=True)
class TapeReport(_report.RegularizationReport):
  """A ``RegularizationReport`` for a TF2 gradient, with the rule it used.

  Attributes:
    rule: the coefficient rule, e.g. the replica rule under a strategy.
    fix: the advice for a doubled term, where it is not the loss's.
  """

  rule: str = ""
  fix: str = ""

  def to_dict(self) -> Dict[str, Any]:
    result = super().to_dict()
    result["rule"] = self.rule
    return result

  def to_text(self) -> str:
    return super().to_text() + f"\n  {self.rule}"

  def missing_message(self, caller: str,
                      opt_out: _report.OptOut = _report.OPT_OUT, *,
                      addable: bool = False) -> str:
    text = super().missing_message(caller, opt_out, addable=addable)
    advice = _report._ADVICE  # pylint: disable=protected-access
    text = text.replace(advice[_report.Status.MISSING], _MISSING_ADVICE_TF2)
    text = text.replace(advice[_report.Status.BLOCKED], _BLOCKED_ADVICE_TF2)
    return _with_rule(text, self.rule)

  def overcounted_message(self, caller: str,
                          opt_out: _report.OptOut = _report.OPT_OUT,
                          routes: str = "") -> str:
    text = super().overcounted_message(caller, opt_out, routes)
    text = "\n".join([text[:text.index("Fix:")] +
                      (self.fix or _OVERCOUNTED_ADVICE_TF2)] +
                     opt_out.lines("count them so"))
    return _with_rule(text, self.rule)

  def undercounted_message(self, caller: str,
                           opt_out: _report.OptOut = _report.OPT_OUT) -> str:
    return _with_rule(super().undercounted_message(caller, opt_out),
                      self.rule)


def _with_rule(text: str, rule: str) -> str:
  first, _, rest = text.partition("\n")
  return f"{first}\n  {rule}\n{rest}"


def passed_through(error: Exception) -> Exception:
  """``error``, marked so that AutoGraph re-raises it unchanged.

  Raised while a ``tf.function`` traces, it would otherwise reach the caller
  as a ``StagingError`` that no ``except safetrain.Error`` catches.
  """
  setattr(error, "ag_pass_through", True)  # noqa: B010 (AutoGraph's name)
  return error


def act(report: _report.RegularizationReport, on_missing: str,
        caller: str) -> Tuple[_report.RegularizationTerm, ...]:
  """The one policy (``_policy.apply``) on a TF2 report.

  Returns the left-out terms to add (``"add"``); () when nothing is added.
  Errors are marked to pass through AutoGraph unchanged.
  """
  try:
    added = _policy.apply(report, on_missing, caller)
  except _errors.RegularizationError as e:
    raise passed_through(e) from None
  return tuple(added)


EAGER_TOTAL_LOSS = (
    "total_loss_from: under eager execution there is no LOSSES or "
    "REGULARIZATION_LOSSES collection to read. Pass the model whose "
    "regularization the loss must include: "
    "loss = safetrain.total_loss_from(data_loss, model=model).")


def total_loss(losses, model, name: str):
  """``losses`` plus each term of ``model.losses`` once (TF2).

  In a replica context of a strategy with N > 1 replicas the terms are
  scaled by ``tf.nn.scale_regularization_loss`` (x1/N), since the replicas'
  gradients are summed. ``model.losses`` builds its terms afresh, so call
  this inside the ``GradientTape`` block, and pass the data loss only.
  """
  caller = "total_loss_from"
  if not hasattr(model, "losses"):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: model must be a Keras model or layer (with .losses), got "
        f"{type(model).__name__}.")
  if losses is None:
    raise _errors.InvalidArgumentError(
        f"{caller}: with model=, pass the data loss too: "
        "total_loss_from(data_loss, model=model).")
  given = list(losses) if isinstance(losses, (list, tuple)) else [losses]
  if not given or not all(tf.is_tensor(t) for t in given):
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: losses must be a tensor or a non-empty list of tensors, "
        f"got {type(losses).__name__}. Compute the data loss with "
        "TensorFlow ops, e.g. loss_fn(labels, logits).")
  dtype = given[0].dtype.base_dtype
  if not dtype.is_floating:
    raise _errors.InvalidArgumentTypeError(
        f"{caller}: the loss has dtype {dtype.name}; gradients need a "
        "floating-point loss.")
  data = given[0] if len(given) == 1 else tf.add_n(
      [tf.cast(t, dtype) for t in given])
  terms = [tf.cast(t, dtype) for t in model.losses]
  if not terms:
    return data
  regularization = tf.add_n(terms)
  expected, _ = replica_rule()
  if expected != 1.0:
    regularization = tf.nn.scale_regularization_loss(regularization)
  return tf.add(data, regularization, name=name)
