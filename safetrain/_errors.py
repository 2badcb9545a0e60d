"""Every exception safetrain raises, in one place.

Every exception derives from ``safetrain.Error`` and from the builtin a caller
already catches: misuse of an argument is a ``TypeError`` or ``ValueError``;
graph-mode APIs called eagerly are a ``RuntimeError`` and, as tf_slim raises
there, a ``ValueError``.

The verdicts of the rule share one base, ``RegularizationError``, so
``except safetrain.RegularizationError`` means exactly "the regularization
of this update is wrong" and catches nothing else::

    Error
    ├── RegularizationError (ValueError)     the loss's regularization is wrong
    │   ├── MissingRegularizationError       terms left out
    │   ├── DoubleCountedRegularizationError terms counted more than once
    │   ├── TooWeakRegularizationError       terms counted less than once
    │   │   └── ReplicaScalingError          replica losses not scaled for N
    │   ├── IneffectiveRegularizerError      a regularizer that never acts
    │   └── UnmatchedExclusionError          an exclusion matching nothing
    ├── InvalidArgumentError (ValueError)    an unusable argument value
    │   └── AuditInputError                  the audited file is unusable
    │       └── NoTrainOpError               ... it holds no train op
    ├── InvalidArgumentTypeError (TypeError) an argument of the wrong type
    └── EagerModeError (RuntimeError, ValueError)
"""

from typing import Any, Dict, Sequence, Tuple

__all__ = (
    "AuditInputError",
    "DoubleCountedRegularizationError",
    "EagerModeError",
    "Error",
    "IneffectiveRegularizerError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "MissingRegularizationError",
    "MissingRegularizationWarning",
    "NoTrainOpError",
    "RegularizationError",
    "ReplicaScalingError",
    "TooWeakRegularizationError",
    "UnmatchedExclusionError",
)

PREFIX = "[safetrain] "


class Error(Exception):
  """Base class of every exception safetrain raises."""

  def __init__(self, message: str):
    if not message.startswith(PREFIX):
      message = PREFIX + message
    super().__init__(message)


class InvalidArgumentTypeError(Error, TypeError):
  """An argument has the wrong type (a Python number as a loss, say)."""


class InvalidArgumentError(Error, ValueError):
  """An argument has the right type but an unusable value."""


class EagerModeError(Error, RuntimeError, ValueError):
  """A graph-mode API was called while eager execution is on.

  A ``ValueError`` too, as tf_slim's own functions raise there, so a script
  that catches that keeps working.
  """


class RegularizationError(Error, ValueError):
  """The loss an update optimizes gets its regularization wrong.

  Raised by the one policy (``safetrain.rule._policy``) for every verdict other
  than "ok", whichever entry point built or checked the update.

  Attributes:
    report: the full ``RegularizationReport``.
    verdicts: every ``Verdict`` the report got (the exception's class names
      the first of them).
    loss_name: the name of the (first) optimized loss tensor.
  """

  def __init__(self, message: str, report: Any,
               verdicts: Sequence[Any] = ()):
    super().__init__(message)
    self.report = report
    self.verdicts: Tuple[Any, ...] = tuple(verdicts)
    self.loss_name: str = report.loss_name

  @property
  def missing(self) -> Tuple[Any, ...]:
    """The report's terms that are required but not included."""
    return tuple(self.report.missing)

  @property
  def overcounted(self) -> Tuple[Any, ...]:
    """The report's terms counted more often than once."""
    return tuple(self.report.overcounted)

  @property
  def undercounted(self) -> Tuple[Any, ...]:
    """The report's terms counted less than once."""
    return tuple(self.report.undercounted)


class MissingRegularizationError(RegularizationError):
  """The optimized loss leaves out regularization it must include."""


class DoubleCountedRegularizationError(RegularizationError):
  """The optimized loss counts some regularization more than once."""


class TooWeakRegularizationError(RegularizationError):
  """The optimized loss counts some regularization less than once."""


class ReplicaScalingError(TooWeakRegularizationError):
  """A replica's loss is not scaled for the replicas' summed gradients.

  Under ``MirroredStrategy`` with a ``tf.compat.v1.train`` optimizer the
  replicas' gradients are summed, so each replica's data loss must enter its
  loss with coefficient 1/N and the regularization with coefficient 1 (only
  the first replica's gradient carries it). Anything else changes the
  balance of data and weight decay by a factor of N.

  Attributes:
    num_replicas: N.
    data_losses: (name, coefficient) of each data loss not at 1/N.
    regularization: (name, coefficient) of each regularization loss not at 1.
  """

  def __init__(self, message: str, report: Any,
               verdicts: Sequence[Any] = ()):
    super().__init__(message, report, verdicts)
    self.num_replicas: int = report.replicas
    self.data_losses: Tuple[Tuple[str, float], ...] = tuple(
        report.misscaled_data)
    self.regularization: Tuple[Tuple[str, float], ...] = tuple(
        (t.name, t.coefficient) for t in report.misscaled_regularization)


class IneffectiveRegularizerError(RegularizationError):
  """A regularizer was set where it never reaches any loss.

  Keras reads a layer's ``kernel_regularizer`` once, when it builds the
  layer; one set afterwards is never applied.

  Attributes:
    ineffective: what the report found (layer, attribute, variable).
  """

  @property
  def ineffective(self) -> Tuple[Any, ...]:
    return tuple(self.report.ineffective)


class UnmatchedExclusionError(RegularizationError):
  """An exclusion from decay or training matches no variable.

  A decay mask's name (``exclude_from_weight_decay(var_names=[...])``) or a
  trainable scope that names no variable excludes nothing, so the variables
  it was meant for are decayed (or trained) like all others. Found by the
  per-variable ledger (``safetrain.ledger``); the patterns are in
  ``error.report.findings``.
  """


class MissingRegularizationWarning(UserWarning):
  """Issued instead of a ``RegularizationError`` with ``on_missing="warn"``.

  The message is the error's, whatever the verdict (left out, counted twice,
  too weak, not scaled for replicas, never applied).
  """


class AuditInputError(InvalidArgumentError):
  """The audited path is missing or holds no usable MetaGraph.

  Attributes:
    path: the path as given.
  """

  def __init__(self, message: str, path: str):
    super().__init__(message)
    self.path = path


class NoTrainOpError(AuditInputError):
  """The MetaGraph holds no train op.

  Attributes:
    found: what the graph holds instead (op, variable and loss counts).
  """

  def __init__(self, message: str, path: str, found: Dict[str, Any]):
    super().__init__(message, path)
    self.found = found
