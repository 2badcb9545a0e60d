"""``safetrain.GradientTape``: the regularization check on TF2 gradients.

``tape.gradient(target, sources)`` first checks that ``target`` includes,
exactly once, the regularization of every regularized variable among
``sources`` (once per replica rule under a strategy, see
``_tf2.replica_rule``), then acts as ``on_missing`` says.

While the tape records, every Keras regularizer call is recorded with the
variable it regularizes (``_tf2.recording``), so the check knows the terms
the loss could contain. Then:

* **In a ``tf.function``** (and in a v1 graph) the Python code of a step runs
  once per trace, so the check runs once per trace, on the traced graph:
  ``_check.analyze`` says whether ``target`` depends on each recorded term
  along a differentiable path, and with which coefficient, as in v1 graphs.
  The function that runs afterwards is the one TensorFlow traced: nothing is
  added to it (except the terms ``on_missing="add"`` adds).
* **In eager mode** the first ``gradient`` call of each *loss structure* (the
  line that calls ``gradient``, the sources, and which variables'
  regularizers were called while recording)
  asks the tape for the gradient with respect to the recorded terms too, in
  the same backward pass. d(target)/d(term) is the coefficient of the term
  in the loss; None means the loss left it out. The verdict is cached for
  the structure, so later steps cost a dictionary lookup.

``guard_optimizers()`` and ``safetrain run`` put the same check on
``tf.GradientTape`` itself (``patch``), so unchanged scripts and Keras's own
``fit`` (whose ``train_step`` uses ``tf.GradientTape``) are checked too.
"""

import os
import sys
import threading
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from safetrain import _errors
from safetrain.rule import _args
from safetrain.rule import _check
from safetrain.rule import _installed
from safetrain.rule import _report
from safetrain.tf2 import _keras_decay
from safetrain.tf2 import _tf2

__all__ = ("GradientTape", "clear_cache", "patch", "unpatch")

Status = _report.Status
_Tape = tf.GradientTape
# ``safetrain run`` may have put a trampoline there
# (see safetrain/guard/_run_hook/sitecustomize.py).
_ORIGINALS = {
    name: getattr(_Tape.__dict__[name], "_safetrain_original",
                  _Tape.__dict__[name])
    for name in ("__enter__", "__exit__", "gradient")}
_GUARD_MARK = "_safetrain_guard"
# AutoGraph would convert our code when a converted step calls it.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert
_local = threading.local()
_CACHE_LIMIT = 1024
# Eager verdicts: structure key -> Regularized terms to add at each step.
_eager_verdicts: Dict[Tuple, Tuple] = {}


def clear_cache() -> None:
  """Forgets eager verdicts (tests; a program never needs it)."""
  _eager_verdicts.clear()


def _bypassed() -> bool:
  return getattr(_local, "bypass", 0) > 0


def _guard_policy() -> Optional[str]:
  return _installed.installed()


def _policy(tape) -> Optional[str]:
  if _bypassed():
    return None
  own = tape.__dict__.get("_safetrain_on_missing")
  return own if own is not None else _guard_policy()


def _enter(tape, original):
  result = original(tape)
  if _policy(tape) is not None:
    _tf2.patch_regularizers()
    record = tape.__dict__.setdefault("_safetrain_record", [])
    _tf2.push(record)
    tape.__dict__.setdefault("_safetrain_pushed", []).append(record)
  return result


def _exit(tape, original, *exc):
  pushed = tape.__dict__.get("_safetrain_pushed")
  if pushed:
    _tf2.pop(pushed.pop())
  return original(tape, *exc)


def _gradient(tape, original, target, sources, output_gradients=None,
              unconnected_gradients=tf.UnconnectedGradients.NONE):
  on_missing = _policy(tape)
  record = tape.__dict__.get("_safetrain_record")
  if on_missing is None or record is None:
    return original(tape, target, sources, output_gradients,
                    unconnected_gradients)
  flat = tf.nest.flatten(sources)
  caller = f"{type(tape).__name__}.gradient"
  try:
    return tf.nest.pack_sequence_as(sources, _checked(
        tape, original, target, flat, output_gradients,
        unconnected_gradients, record, on_missing, caller))
  except _errors.Error as e:
    e.ag_pass_through = True  # AutoGraph re-raises it as it is.
    raise


def _checked(tape, original, target, flat, output_gradients,
             unconnected_gradients, record, on_missing, caller) -> List:
  if tf.executing_eagerly():
    return _eager_gradient(tape, original, target, flat,
                                 output_gradients, unconnected_gradients,
                                 list(record), on_missing, caller)
  else:
    add = _graph_check(target, flat, list(record), on_missing, caller)
    flat_grads = original(tape, target, flat, output_gradients,
                          unconnected_gradients)
    flat_grads = _plus_terms(flat, flat_grads, add)
  return flat_grads


def _eager_gradient(tape, original, target, flat, output_gradients,
                    unconnected_gradients, record, on_missing, caller):
  expected, rule = _tf2.replica_rule()
  key = (_call_site(), tuple(map(id, flat)),
         tuple(id(x) for _, x, _ in record), expected, on_missing)
  add = _eager_verdicts.get(key)
  if add is not None:
    grads = original(tape, target, flat, output_gradients,
                     unconnected_gradients)
    return _plus_terms(flat, grads, add)
  regularized = _tf2.regularized_variables(flat)
  terms = [(t, x) for t, x, _ in record if tf.is_tensor(t)]
  if not regularized and not terms:
    _remember(key, ())
    return original(tape, target, flat, output_gradients,
                    unconnected_gradients)
  grads = original(tape, target, flat + [t for t, _ in terms],
                   output_gradients, unconnected_gradients)
  found = {}
  for (_, variable), grad in zip(terms, grads[len(flat):], strict=True):
    if grad is None:
      entry = (Status.MISSING, None)
    else:
      coefficient = float(tf.reduce_sum(grad))
      entry = ((Status.INCLUDED, coefficient) if coefficient else
               (Status.MISSING, None))
    found.setdefault(id(variable), (variable, []))[1].append(entry)
  report = _build_report(_eager_description(target), flat, regularized,
                         found, expected, rule)
  add = _act(report, on_missing, caller)
  _remember(key, add)
  return _plus_terms(flat, list(grads[:len(flat)]), add)


_HERE = os.path.dirname(os.path.abspath(__file__))


def _call_site() -> Tuple:
  """The code and line that called ``gradient``: part of the structure."""
  frame: Optional[types.FrameType] = sys._getframe(3)  # pylint: disable=protected-access
  while frame is not None and frame.f_code.co_filename.startswith(_HERE):
    frame = frame.f_back
  if frame is None:
    return ()
  return (frame.f_code, frame.f_lineno)


def _remember(key, add) -> None:
  if len(_eager_verdicts) >= _CACHE_LIMIT:
    _eager_verdicts.clear()
  _eager_verdicts[key] = add


def _eager_description(target) -> str:
  shapes = [f"{t.dtype.name} {'scalar' if t.shape.ndims == 0 else t.shape}"
            for t in tf.nest.flatten(target) if tf.is_tensor(t)]
  return f"the tape's target ({', '.join(shapes) or 'no tensor'}, eager)"


def _graph_check(target, flat, record, on_missing, caller) -> Tuple:
  """The check on the traced graph; returns the terms to add."""
  expected, rule = _tf2.replica_rule()
  regularized = _tf2.regularized_variables(flat)
  targets = [t for t in tf.nest.flatten(target)
             if tf.is_tensor(t) and hasattr(t, "graph") and
             not isinstance(t, tf.Variable)]
  if not regularized and not record:
    return ()
  if not targets:
    return ()
  graph = targets[0].graph
  terms = [(t, x) for t, x, _ in record
           if tf.is_tensor(t) and getattr(t, "graph", None) is not None]
  found: Dict[int, Tuple[Any, List]] = {}
  for _, variable in terms:
    found.setdefault(id(variable), (variable, []))
  statuses: Dict[int, List] = {}
  scale = 1.0
  for loss in targets:
    if loss.graph is not graph:
      continue
    report = _check.analyze(loss, [], regularization=[t for t, _ in terms],
                            with_coefficients=True)
    if len(targets) == 1 and expected == 1.0:
      scale = report.scale  # 0.5 * (data + decay), as the graph API reads.
    for index, term in enumerate(report.terms):
      statuses.setdefault(index, []).append(
          (term.status, term.coefficient))
  for index, (_, variable) in enumerate(terms):
    per_target = statuses.get(index, [(Status.MISSING, None)])
    found[id(variable)][1].append(_sum_targets(per_target))
  report = _build_report(
      _check._describe_loss(targets[0]),  # pylint: disable=protected-access
      flat, regularized, found, expected, rule, loss_name=targets[0].name,
      scale=scale)
  return _act(report, on_missing, caller)


def _sum_targets(entries: Sequence) -> Tuple:
  """One term's status and coefficient over several targets (summed)."""
  included = [c for s, c in entries if s is Status.INCLUDED]
  if included:
    total = None if any(c is None for c in included) else sum(included)
    return Status.INCLUDED, total
  for status in (Status.BLOCKED, Status.UNREACHABLE):
    if any(s is status for s, _ in entries):
      return status, None
  return Status.MISSING, None


def _combine(entries: Sequence) -> Tuple[Status, Optional[float]]:
  """A variable's status and coefficient over its recorded terms."""
  return _sum_targets([(Status.MISSING if s is Status.FROZEN else s, c)
                       for s, c in entries])


def _build_report(description: str, flat: Sequence, regularized: Dict,
                  found: Dict, expected: float, rule: str,
                  loss_name: str = "tape target",
                  scale: float = 1.0) -> _tf2.TapeReport:
  terms = []
  for ident, reg in regularized.items():
    _, entries = found.get(ident, (None, []))
    status, coefficient = _combine(entries)
    terms.append(_report.RegularizationTerm(
        name=reg.name, variables=(_tf2.variable_name(reg.variable),),
        status=status, required=True, coefficient=coefficient, tensor=reg))
  for ident, (variable, entries) in found.items():
    if ident in regularized:
      continue
    status, coefficient = _combine(entries)
    if status is Status.MISSING:
      status = Status.FROZEN
    terms.append(_report.RegularizationTerm(
        name=f"regularizer({_tf2.variable_name(variable)})",
        variables=(_tf2.variable_name(variable),), status=status,
        required=False, coefficient=coefficient))
  return _tf2.TapeReport(
      loss_name=loss_name, loss_description=description, terms=tuple(terms),
      trained_variables=tuple(sorted(_tf2.variable_name(v) for v in flat)),
      expected_coefficient=expected, rule=rule, scale=scale)


def _act(report, on_missing: str, caller: str) -> Tuple:
  """Acts on the report; returns the Regularized terms to add.

  Each required term carries its ``Regularized`` (``term.tensor``): names
  are for people, and two models' variables may share one.
  """
  added = _tf2.act(report, on_missing, caller)
  expected = report.expected_coefficient or 1.0
  return tuple((t.tensor, expected) for t in added
               if isinstance(t.tensor, _tf2.Regularized))


def _plus_terms(flat: Sequence, grads: List, add: Tuple) -> List:
  """``grads`` plus the gradients of the terms in ``add``."""
  if not add:
    return grads
  _local.bypass = getattr(_local, "bypass", 0) + 1
  try:
    with _tf2.suspended(), tf.GradientTape() as tape:
      total = tf.add_n([tf.cast(reg.build(), tf.float32) * coefficient
                        for reg, coefficient in add])
    variables = [reg.variable for reg, _ in add]
    extra = dict(zip(map(id, variables), tape.gradient(total, variables),
                     strict=True))
  finally:
    _local.bypass -= 1
  result = []
  for source, grad in zip(flat, grads, strict=True):
    more = extra.get(id(source))
    if more is None:
      result.append(grad)
    elif grad is None:
      result.append(tf.cast(more, source.dtype))
    else:
      result.append(grad + tf.cast(more, grad.dtype))
  return result


class GradientTape(tf.GradientTape):
  """``tf.GradientTape`` whose ``gradient`` checks the regularization.

      with safetrain.GradientTape() as tape:
        logits = model(images, training=True)
        loss = loss_fn(labels, logits)           # model.losses left out
      grads = tape.gradient(loss, model.trainable_variables)   # raises

  Args:
    persistent, watch_accessed_variables: as ``tf.GradientTape``.
    on_missing: ``"raise"`` (``MissingRegularizationError``,
      ``DoubleCountedRegularizationError``), ``"add"`` (the gradients of the
      left-out terms are added, scaled by the replica rule) or ``"warn"``
      (``MissingRegularizationWarning``; the gradients are the loss's).
  """

  def __init__(self, persistent: bool = False,
               watch_accessed_variables: bool = True, *,
               on_missing: str = "raise"):
    _args.on_missing(on_missing, "GradientTape")
    super().__init__(persistent=persistent,
                     watch_accessed_variables=watch_accessed_variables)
    self._safetrain_on_missing = on_missing

  @_NOT_CONVERTED
  def __enter__(self):
    return _enter(self, _ORIGINALS["__enter__"])

  @_NOT_CONVERTED
  def __exit__(self, typ, value, traceback):
    return _exit(self, _ORIGINALS["__exit__"], typ, value, traceback)

  @_NOT_CONVERTED
  def gradient(self, target, sources, output_gradients=None,
               unconnected_gradients=tf.UnconnectedGradients.NONE):
    return _gradient(self, _ORIGINALS["gradient"], target, sources,
                     output_gradients, unconnected_gradients)


def _guarded(name: str):
  original = _ORIGINALS[name]
  handlers = {"__enter__": _enter, "__exit__": _exit, "gradient": _gradient}
  handler = handlers[name]

  @_NOT_CONVERTED
  def method(self, *args, **kwargs):
    return handler(self, original, *args, **kwargs)
  method.__name__ = name
  method.__doc__ = original.__doc__
  method.__wrapped__ = original
  setattr(method, _GUARD_MARK, True)
  return method


def patch() -> None:
  """Puts the check on ``tf.GradientTape`` and Keras optimizers' decay."""
  for name in _ORIGINALS:
    if not getattr(_Tape.__dict__[name], _GUARD_MARK, False):
      setattr(_Tape, name, _guarded(name))
  _keras_decay.patch()


def unpatch() -> None:
  for name, original in _ORIGINALS.items():
    setattr(_Tape, name, original)
  _keras_decay.unpatch()
