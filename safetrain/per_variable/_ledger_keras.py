"""The ledger of a TF2 Keras model and its Keras optimizer.

There is no loss graph to read here, so each variable's kind comes from the
layer attribute that holds it (``Dense.kernel``, ``DepthwiseConv2D.kernel``,
``BatchNormalization.gamma``, ``Embedding.embeddings``, ...; "other" for a
weight a layer of one's own made with ``add_weight``), its regularizer from
Keras itself (Keras 3: ``variable.regularizer``; Keras 2 and tf_keras: the
layer's ``<weight>_regularizer`` when it reaches ``layer.losses``, or the
regularizer ``add_weight`` was given), with the factor its config states
(``L1``, ``L2``, ``L1L2``; any other regularizer is "other"). Its status is
``declared``: it acts if the loss adds ``model.losses`` once, as ``fit`` and
``safetrain.total_loss_from`` do, and the effective decay says so.

The optimizer's decoupled decay (``AdamW``, any Keras optimizer with
``weight_decay=``) comes from the optimizer: its rate, and for each variable
whether ``optimizer._use_weight_decay(variable)`` keeps it; a name given to
``exclude_from_weight_decay`` that matches no variable is a finding.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from safetrain import _errors
from safetrain.per_variable import _rows
from safetrain.rule import _report
from safetrain.terms import _keras
from safetrain.tf2 import _keras_decay
from safetrain.tf2 import _tf2

__all__ = ("is_keras_model", "ledger_of_model")

# Layer attribute -> (kind, the layer attribute holding its regularizer).
_WEIGHTS: Tuple[Tuple[str, str, str], ...] = (
    ("kernel", "kernel", "kernel_regularizer"),
    ("depthwise_kernel", "kernel", "depthwise_regularizer"),
    ("pointwise_kernel", "kernel", "pointwise_regularizer"),
    ("recurrent_kernel", "kernel", "recurrent_regularizer"),
    ("embeddings", "embedding", "embeddings_regularizer"),
    ("gamma", "normalization scale", "gamma_regularizer"),
    ("beta", "normalization offset", "beta_regularizer"),
    ("bias", "bias", "bias_regularizer"),
)
_KNOWN_REGULARIZERS = frozenset({"L1", "L2", "L1L2"})
# A weight a layer made with add_weight and holds under no attribute above.
_ADD_WEIGHT = "add_weight"


def is_keras_model(target: Any) -> bool:
  """Whether ``target`` is a Keras layer with weights (a model, say)."""
  return any(cls.__name__ == "Layer" and
             cls.__module__.split(".")[0] in ("keras", "tf_keras")
             for cls in type(target).__mro__)


def _layers(model) -> List:
  flatten = getattr(model, "_flatten_layers", None)
  if flatten is not None:
    return list(flatten(include_self=True, recursive=True))
  return [model] + list(getattr(model, "submodules", ()))


def _factors(regularizer) -> Tuple[Optional[float], Optional[float], str]:
  """(l2, l1, kind) as the regularizer's config states them."""
  if type(regularizer).__name__ not in _KNOWN_REGULARIZERS or not hasattr(
      regularizer, "get_config"):
    return None, None, "other"
  config = regularizer.get_config()
  l2 = float(config["l2"]) if config.get("l2") else None
  l1 = float(config["l1"]) if config.get("l1") else None
  kind = ("L1L2" if l1 is not None and l2 is not None else
          "L2" if l2 is not None else "L1" if l1 is not None else "other")
  return l2, l1, kind


def _keras_version(variable) -> int:
  """3 for a Keras 3 variable (it carries its regularizer), else 2."""
  return 3 if hasattr(variable, "regularizer") else 2


def _regularizer(layer, variable, attribute: str) -> Tuple[Any, str]:
  """(regularizer, status) of a layer's weight: 'declared' if it acts.

  ``attribute``: the layer attribute holding the weight's regularizer, or
  "" for a weight made with ``add_weight(regularizer=...)``, whose
  regularizer always acts.
  """
  own = getattr(variable, "regularizer", None)
  if own is not None:  # Keras 3 keeps it on the variable: that one acts.
    return own, "declared"
  if not attribute:  # Keras 2 keeps it in the layer's weight callables.
    for loss in getattr(layer, "_callable_losses", ()) or ():
      weight, regularizer = _keras.weight_callable(loss)
      if weight is variable:
        return regularizer, "declared"
    return None, ""
  regularizer = getattr(layer, attribute, None)
  if regularizer is None or not callable(regularizer):
    return None, ""
  if _keras._reaches_losses(layer, variable, regularizer,
                            _keras_version(variable)):
    return regularizer, "declared"
  return regularizer, "ineffective"


def _own_weights(layer) -> List:
  """The trainable weights ``layer`` made itself (not its sublayers')."""
  for name in ("_trainable_variables", "_trainable_weights"):  # Keras 3, 2.
    own = getattr(layer, name, None)
    if own is not None:
      return list(own)
  return []


def _learning_rate(optimizer) -> Optional[float]:
  raw = getattr(optimizer, "_learning_rate", None)
  if raw is not None and any("Schedule" in cls.__name__
                             for cls in type(raw).__mro__):
    return None
  try:
    return float(np.asarray(optimizer.learning_rate))
  except (TypeError, ValueError, AttributeError, RuntimeError):
    return None


def _step(optimizer):
  if optimizer is None:
    return _rows.Step("unknown", None, "the optimizer is not known")
  name = type(optimizer).__name__
  lr = _learning_rate(optimizer)
  momentum = getattr(optimizer, "momentum", 0.0)
  note = ""
  if name != "SGD" or momentum:
    note = f"{_rows.STATE_DEPENDENT} ({name})"
  elif lr is None:
    note = "lr is a schedule, not a constant"
  text = f"{name}, lr {lr:g}" if lr is not None else f"{name}, lr schedule"
  return _rows.Step(text, lr, note)


def _model_rows(model, optimizer) -> Tuple[List, List, List]:
  trainable = {id(v): v for v in model.trainable_variables}
  owner: Dict[int, Tuple[Any, str, str, str]] = {}
  for layer in _layers(model):
    for attribute, kind, reg_attribute in _WEIGHTS:
      try:
        variable = getattr(layer, attribute, None)
      except Exception:  # pylint: disable=broad-except
        variable = None  # A property that fails on an unbuilt layer.
      if variable is not None and id(variable) in trainable:
        owner.setdefault(id(variable), (layer, attribute, kind,
                                        reg_attribute))
  # Then the weights a layer of the user's own made with add_weight.
  for layer in _layers(model):
    for variable in _own_weights(layer):
      if id(variable) in trainable:
        owner.setdefault(id(variable), (layer, _ADD_WEIGHT, _rows.OTHER,
                                        ""))
  step = _step(optimizer)
  rate = _keras_decay.decay_rate(optimizer) if optimizer is not None else 0.0
  decays = rate and hasattr(optimizer, "_use_weight_decay")
  rows = []
  ineffective = []
  for variable in model.trainable_variables:
    layer, attribute, kind, reg_attribute = owner.get(
        id(variable), (None, "", _rows.OTHER, ""))
    used_by = (f"{type(layer).__name__}.{attribute}" if layer is not None
               else "no layer attribute")
    mechanisms = []
    regularizer, status = None, ""
    if layer is not None:
      regularizer, status = _regularizer(layer, variable, reg_attribute)
    if status == "ineffective":
      ineffective.append(_keras.IneffectiveRegularizer(
          layer=layer.name, attribute=reg_attribute,
          variable=_tf2.variable_name(variable), weight=attribute,
          keras=_keras_version(variable), regularizer=regularizer))
    if regularizer is not None:
      l2, l1, form = _factors(regularizer)
      mechanisms.append(_rows.Mechanism(
          kind=form, source=f"{type(regularizer).__name__} ({used_by})",
          status=status, l2=l2, l1=l1))
    training, by = _rows.TRAINED, ""
    if decays:
      if optimizer._use_weight_decay(variable):
        mechanisms.append(_rows.Mechanism(
            kind="decoupled", status="applied", rate=rate,
            source=f"{type(optimizer).__name__}(weight_decay={rate:g})"))
      else:
        training, by = _rows.EXCLUDED, "exclude_from_weight_decay"
    decay, note = _rows.decay_of(tuple(mechanisms), step, training)
    rows.append(_rows.Row(
        variable=_tf2.variable_name(variable), shape=tuple(variable.shape),
        kind=kind,
        used_by=used_by, training=training, by=by,
        mechanisms=tuple(mechanisms), decay=decay, decay_note=note))
  unmatched = []
  if decays:
    unmatched = [(p, "exclude_from_weight_decay name") for p in
                 _keras_decay.unmatched_exclusions(
                     optimizer, model.trainable_variables)]
  return rows, unmatched, ineffective


def ledger_of_model(model, optimizer: Any = None):
  """The ledger of a Keras model trained by a Keras optimizer."""
  optimizer = optimizer if optimizer is not None else getattr(
      model, "optimizer", None)
  if not getattr(model, "built", True) or not model.trainable_variables:
    raise _errors.InvalidArgumentError(
        f"ledger: Keras model {getattr(model, 'name', model)!r} has no "
        "trainable variables yet; build it first (call it on a batch, or "
        "model.build(input_shape)).")
  rows, unmatched, ineffective = _model_rows(model, optimizer)
  step = _step(optimizer)
  report = _report.RegularizationReport(
      loss_name=f"{model.name}.losses",
      loss_description=f"Keras model {model.name!r} with {step.optimizer}",
      terms=(), trained_variables=tuple(r.variable for r in rows),
      ineffective=tuple(ineffective))
  report = dataclasses.replace(
      report, findings=_rows.findings(rows, unmatched))
  return _rows.Ledger(source=f"Keras model '{model.name}'",
                        optimizer=step.optimizer, rows=tuple(rows),
                        report=report)

